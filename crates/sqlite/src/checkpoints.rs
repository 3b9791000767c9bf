//! Subscription checkpoints in the database file: one [`CheckpointStore`] shared by every
//! process on it.

use async_trait::async_trait;
use otp_sms_core::{CheckpointStore, PortError};

use crate::database::Database;
use crate::error::{map_error, port};

/// How far each named subscription has handled the event feed, in a SQLite file. A save only
/// moves a checkpoint forward, so a slow process cannot send a faster one's back. Passes
/// `otp-sms-testkit`'s checkpoint conformance suite.
#[derive(Debug, Clone)]
pub struct SqliteCheckpoints {
    database: Database,
}

impl SqliteCheckpoints {
    /// The checkpoints in `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn load(&self, name: &str) -> Result<u64, PortError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.database.inner.readers)
                .await
                .map_err(|e| port(map_error(e)))?;
        Ok(position.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
    }

    async fn save(&self, name: &str, position: u64) -> Result<(), PortError> {
        let position = i64::try_from(position)
            .map_err(|_| PortError::Internal(format!("position {position} out of range")))?;
        let name = name.to_owned();
        self.database
            .changed(move |_| {
                sqlx::query(
                    "INSERT INTO checkpoints (name, position) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)",
                )
                .bind(name)
                .bind(position)
            })
            .await
            .map(|_| ())
            .map_err(port)
    }
}
