//! The PostgreSQL idempotency store passes the shared idempotency conformance suite, each case
//! in its own schema.

otp_sms_testkit::idempotency_conformance_tests!(otp_sms_postgres::testing::PgIdempotencyFactory);
