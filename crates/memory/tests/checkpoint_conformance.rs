//! The in-process checkpoint store (`otp_sms_core::MemoryCheckpoints`) passes the shared
//! checkpoint conformance suite, subscribing to an in-memory event store.

use std::sync::Arc;

use otp_sms_core::{Event, EventStore, MemoryCheckpoints};
use otp_sms_memory::MemoryStore;
use otp_sms_testkit::checkpoints::CheckpointStoreFactory;

struct MemoryFactory;

#[async_trait::async_trait]
impl CheckpointStoreFactory for MemoryFactory {
    type Store = MemoryCheckpoints;
    async fn create(&self) -> (Self::Store, Arc<dyn EventStore<Event>>) {
        (
            MemoryCheckpoints::new(),
            Arc::new(MemoryStore::<Event>::new()),
        )
    }
}

otp_sms_testkit::checkpoint_conformance_tests!(MemoryFactory);
