//! The SQLite event store passes the shared conformance suite, each case on a file of its own.

otp_sms_testkit::store_conformance_tests!(otp_sms_sqlite::testing::SqliteStoreFactory);
