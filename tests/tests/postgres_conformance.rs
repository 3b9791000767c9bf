//! The PostgreSQL store passes the shared conformance suite, each case in its own schema.

use std::sync::Arc;

use otp_sms_postgres::PgStore;
use otp_sms_testkit::{StoreFactory, TestEvent};
use otp_sms_tests::pg;

struct PgFactory;

#[async_trait::async_trait]
impl StoreFactory for PgFactory {
    type Store = PgStore<TestEvent>;

    async fn create(&self) -> Self::Store {
        pg::fresh_store().await
    }

    async fn dispose(&self, store: Arc<Self::Store>) {
        pg::drop_store(&store).await;
    }
}

otp_sms_testkit::store_conformance_tests!(PgFactory);
