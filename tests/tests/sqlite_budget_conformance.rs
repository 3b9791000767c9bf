//! The SQLite send budgets pass the shared budget conformance suite.

otp_sms_testkit::budget_conformance_tests!(otp_sms_sqlite::testing::SqliteBudgetsFactory);
