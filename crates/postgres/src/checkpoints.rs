//! Subscription checkpoints in PostgreSQL: one row per subscription name, moved forward only,
//! shared by every process on the schema.

use async_trait::async_trait;
use otp_sms_core::{CheckpointStore, PortError, StoreError};
use sqlx::postgres::PgPool;

use crate::{is_valid_schema, map_error};

/// The [`CheckpointStore`] of a schema (table `checkpoints`, migration 0012).
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), otp_sms_core::StoreError> {
/// let checkpoints = otp_sms_postgres::PgCheckpoints::new(pool, "otp_sms")?;
/// checkpoints.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgCheckpoints {
    pool: PgPool,
    schema: String,
    load: String,
    save: String,
}

impl PgCheckpoints {
    /// Checkpoints in `schema` (lowercase letters, digits and `_`).
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Internal(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and _"
            )));
        }
        let t = format!("\"{schema}\".checkpoints");
        Ok(Self {
            pool,
            schema: schema.to_owned(),
            load: format!("SELECT position FROM {t} WHERE name = $1"),
            save: format!(
                "INSERT INTO {t} AS c (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = GREATEST(c.position, EXCLUDED.position)"
            ),
        })
    }

    /// Creates the schema if needed and the checkpoints' table (its own migrations only).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::migrate(&self.pool, &self.schema, crate::Component::Checkpoints).await
    }
}

fn port(e: sqlx::Error) -> PortError {
    match map_error(e) {
        StoreError::Unavailable(m) => PortError::Unavailable(m),
        other => PortError::Internal(other.to_string()),
    }
}

#[async_trait]
impl CheckpointStore for PgCheckpoints {
    async fn load(&self, name: &str) -> Result<u64, PortError> {
        let position: Option<i64> = sqlx::query_scalar(&self.load)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(port)?;
        Ok(position.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
    }

    async fn save(&self, name: &str, position: u64) -> Result<(), PortError> {
        let position = i64::try_from(position)
            .map_err(|_| PortError::Internal(format!("position {position} out of range")))?;
        sqlx::query(&self.save)
            .bind(name)
            .bind(position)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(())
    }
}
