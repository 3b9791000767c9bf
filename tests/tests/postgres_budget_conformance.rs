//! The PostgreSQL budget store passes the shared budget conformance suite, each case in its
//! own schema.

use std::sync::Arc;

use otp_sms_core::Event;
use otp_sms_postgres::{PgBudgets, PgStore};
use otp_sms_testkit::budgets::BudgetStoreFactory;
use otp_sms_tests::pg;

/// The budgets and the event store whose migration made their table.
struct Budgets {
    budgets: PgBudgets,
    store: PgStore<Event>,
}

#[async_trait::async_trait]
impl otp_sms_core::BudgetStore for Budgets {
    async fn take(
        &self,
        r: &otp_sms_core::TakeRequest,
    ) -> Result<otp_sms_core::TakeOutcome, otp_sms_core::PortError> {
        self.budgets.take(r).await
    }
    async fn release(&self, k: &str, m: &str) -> Result<bool, otp_sms_core::PortError> {
        self.budgets.release(k, m).await
    }
    async fn members(&self, k: &str) -> Result<Vec<otp_sms_core::Member>, otp_sms_core::PortError> {
        self.budgets.members(k).await
    }
    async fn clear(&self, k: &str) -> Result<u64, otp_sms_core::PortError> {
        self.budgets.clear(k).await
    }
}

struct PgFactory;

#[async_trait::async_trait]
impl BudgetStoreFactory for PgFactory {
    type Store = Budgets;

    async fn create(&self) -> Self::Store {
        let store = pg::fresh_store::<Event>().await;
        let budgets = PgBudgets::new(store.pool().clone(), store.schema()).expect("schema");
        Budgets { budgets, store }
    }

    async fn dispose(&self, budgets: Arc<Self::Store>) {
        pg::drop_store(&budgets.store).await;
    }
}

otp_sms_testkit::budget_conformance_tests!(PgFactory);
