//! The PostgreSQL checkpoint store passes the shared checkpoint conformance suite, each case
//! in its own schema, subscribing to the PostgreSQL event store beside it.

otp_sms_testkit::checkpoint_conformance_tests!(otp_sms_postgres::testing::PgCheckpointsFactory);
