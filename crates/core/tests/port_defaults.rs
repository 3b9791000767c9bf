//! A host's port written against an older release keeps compiling: methods added since have
//! honest defaults. Given an event store that implements only the first five methods, the two
//! added later answer as documented.

use std::time::Duration;

use otp_sms_core::{
    async_trait, Append, AppendOutcome, Event, EventStore, OutboxMessage, Recorded, StoreError,
    StreamId, Uuid,
};

/// A store as a host wrote it before `retry_outbox` and `outbox_stats` existed.
struct OldStore;

#[async_trait]
impl EventStore<Event> for OldStore {
    async fn read_stream(&self, _: &StreamId) -> Result<Recorded<Event>, StoreError> {
        Ok(Vec::new())
    }
    async fn append(&self, _: Append<Event>) -> Result<AppendOutcome, StoreError> {
        Err(StoreError::Internal("read-only".into()))
    }
    async fn read_all(&self, _: u64, _: usize) -> Result<Recorded<Event>, StoreError> {
        Ok(Vec::new())
    }
    async fn fetch_outbox(&self, _: usize, _: Duration) -> Result<Vec<OutboxMessage>, StoreError> {
        Ok(Vec::new())
    }
    async fn delete_outbox(&self, _: Uuid) -> Result<bool, StoreError> {
        Ok(false)
    }
}

#[tokio::test]
async fn an_old_store_leaves_retries_to_its_lease_and_says_it_cannot_count_its_outbox() {
    let store = OldStore;
    assert_eq!(
        store
            .retry_outbox(Uuid::now_v7(), Duration::from_secs(5))
            .await,
        Ok(true),
        "the message is kept; its lease brings it back"
    );
    assert!(matches!(
        store.outbox_stats().await,
        Err(StoreError::Internal(_))
    ));
}
