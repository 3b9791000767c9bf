//! The in-process budget store (`otp_sms_core::MemoryBudgets`, kept beside the in-memory event
//! store's tests) passes the shared budget conformance suite.

use otp_sms_core::MemoryBudgets;
use otp_sms_testkit::budgets::BudgetStoreFactory;

struct MemoryFactory;

#[async_trait::async_trait]
impl BudgetStoreFactory for MemoryFactory {
    type Store = MemoryBudgets;
    async fn create(&self) -> Self::Store {
        MemoryBudgets::new()
    }
}

otp_sms_testkit::budget_conformance_tests!(MemoryFactory);
