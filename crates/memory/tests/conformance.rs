//! The in-memory store passes the shared conformance suite.

use otp_sms_memory::MemoryStore;
use otp_sms_testkit::{StoreFactory, TestEvent};

struct MemoryFactory;

#[async_trait::async_trait]
impl StoreFactory for MemoryFactory {
    type Store = MemoryStore<TestEvent>;
    async fn create(&self) -> Self::Store {
        MemoryStore::new()
    }
}

otp_sms_testkit::store_conformance_tests!(MemoryFactory);
