//! The SQLite checkpoints pass the shared checkpoint conformance suite.

otp_sms_testkit::checkpoint_conformance_tests!(otp_sms_sqlite::testing::SqliteCheckpointsFactory);
