//! The PostgreSQL store passes the shared conformance suite, each case in its own schema.

otp_sms_testkit::store_conformance_tests!(otp_sms_postgres::testing::PgStoreFactory);
