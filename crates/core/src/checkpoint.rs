//! Where subscriptions to the event feed keep how far they have read: one position per
//! subscription name, shared by every process on the store, moving only forward.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::ports::PortError;

/// How far each named subscription has handled the global feed.
///
/// A host implements it for its own store, or takes the in-process [`MemoryCheckpoints`] or
/// `otp_sms_postgres::PgCheckpoints`; the testkit's checkpoint conformance suite states the
/// contract.
///
/// ```
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use otp_sms_core::{CheckpointStore, MemoryCheckpoints};
/// let checkpoints = MemoryCheckpoints::new();
/// assert_eq!(checkpoints.load("phones").await.unwrap(), 0);
/// checkpoints.save("phones", 42).await.unwrap();
/// checkpoints.save("phones", 7).await.unwrap(); // behind: no effect
/// assert_eq!(checkpoints.load("phones").await.unwrap(), 42);
/// # }); }
/// ```
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The feed position `name` has handled up to: 0 when it has handled nothing.
    async fn load(&self, name: &str) -> Result<u64, PortError>;

    /// Records that `name` has handled the feed up to `position`. A position behind the one
    /// recorded changes nothing: a checkpoint only moves forward, so a slow process cannot
    /// send a faster one's subscription back over events it handled.
    async fn save(&self, name: &str, position: u64) -> Result<(), PortError>;
}

/// Checkpoints in the process's memory: for tests, development and one process whose read
/// models live in memory too.
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    positions: Mutex<HashMap<String, u64>>,
}

impl MemoryCheckpoints {
    /// No checkpoint yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpoints {
    async fn load(&self, name: &str) -> Result<u64, PortError> {
        Ok(self.positions.lock().get(name).copied().unwrap_or(0))
    }

    async fn save(&self, name: &str, position: u64) -> Result<(), PortError> {
        let mut positions = self.positions.lock();
        let at = positions.entry(name.to_owned()).or_default();
        *at = (*at).max(position);
        Ok(())
    }
}
