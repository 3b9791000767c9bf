//! The SQLite idempotency records pass the shared idempotency conformance suite.

otp_sms_testkit::idempotency_conformance_tests!(otp_sms_sqlite::testing::SqliteIdempotencyFactory);
