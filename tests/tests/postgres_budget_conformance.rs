//! The PostgreSQL budget store passes the shared budget conformance suite, each case in its
//! own schema.

otp_sms_testkit::budget_conformance_tests!(otp_sms_postgres::testing::PgBudgetsFactory);
