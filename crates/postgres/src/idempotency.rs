//! Idempotency records in PostgreSQL: one [`IdempotencyStore`] shared by every server on the
//! database.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use otp_sms_core::{
    Claim, CommandId, IdempotencyRecord, IdempotencyScope, IdempotencyStore, PortError,
    RegistrationId, SealedCode, StoreError,
};
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::{is_valid_schema, map_error, Timeouts};

/// The idempotency records of `otp_sms_core`, in the `idempotency_keys` table of a store's
/// schema (migration 0008, applied by [`PgIdempotency::migrate`]).
///
/// A claim is one statement that inserts the record, or takes over the key's lapsed one, and
/// sweeps a few lapsed records of other keys; when the key stands, a second statement reads
/// its record. Of claims racing on one key, PostgreSQL's `ON CONFLICT` lets exactly one insert.
/// Records lapse on the database's clock, and are written with the pool's (synchronous)
/// commit: a record must survive a crash whenever the append it guards does.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), otp_sms_core::StoreError> {
/// let records = otp_sms_postgres::PgIdempotency::new(pool, "otp_sms")?;
/// // service.with_idempotency_store(std::sync::Arc::new(records))
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgIdempotency {
    pool: PgPool,
    schema: String,
    claim: String,
    read: String,
    timeouts: Timeouts,
}

/// Claims retried when the key's record lapses between the claim and the read.
const CLAIM_TRIES: usize = 4;

fn port(e: sqlx::Error) -> PortError {
    match map_error(e) {
        StoreError::Unavailable(m) => PortError::Unavailable(m),
        other => PortError::Internal(other.to_string()),
    }
}

impl PgIdempotency {
    /// Records in `schema` (migrated by [`PgIdempotency::migrate`]), on `pool`.
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Internal(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and _"
            )));
        }
        let t = format!("\"{schema}\".idempotency_keys");
        Ok(Self {
            schema: schema.to_owned(),
            pool,
            claim: format!(
                "WITH claimed AS ( \
                   INSERT INTO {t} AS k (instance_id, principal, key, fingerprint, command_id, \
                     registration_id, sealed_code, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, clock_timestamp(), \
                     clock_timestamp() + make_interval(secs => $8)) \
                   ON CONFLICT (instance_id, principal, key) DO UPDATE SET \
                     fingerprint = EXCLUDED.fingerprint, command_id = EXCLUDED.command_id, \
                     registration_id = EXCLUDED.registration_id, \
                     sealed_code = EXCLUDED.sealed_code, created_at = EXCLUDED.created_at, \
                     expires_at = EXCLUDED.expires_at \
                   WHERE k.expires_at <= clock_timestamp() \
                   RETURNING 1), \
                 swept AS ( \
                   DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} \
                     WHERE expires_at <= clock_timestamp() \
                       AND (instance_id, principal, key) <> ($1, $2, $3) \
                     ORDER BY expires_at LIMIT 8)) \
                 SELECT count(*) FROM claimed"
            ),
            read: format!(
                "SELECT fingerprint, command_id, registration_id, sealed_code::text, created_at \
                 FROM {t} WHERE instance_id = $1 AND principal = $2 AND key = $3 \
                   AND expires_at > clock_timestamp()"
            ),
            timeouts: Timeouts::default(),
        })
    }

    /// Creates the schema if needed and applies this store's migrations to it (the idempotency records table),
    /// whoever keeps the events. Safe on every start and from several servers at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::migrate(&self.pool, &self.schema, crate::Component::Idempotency).await
    }

    /// Records with other [`Timeouts`] (`operation` bounds each statement's wait).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
}

type Row = (String, Uuid, String, Option<String>, DateTime<Utc>);

#[async_trait]
impl IdempotencyStore for PgIdempotency {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        record: &IdempotencyRecord,
        keep: Duration,
    ) -> Result<Claim, PortError> {
        let sealed = record
            .sealed_code
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| PortError::Internal(e.to_string()))?;
        for _ in 0..CLAIM_TRIES {
            let inserted: i64 = crate::within(
                self.timeouts.operation,
                sqlx::query_scalar(&self.claim)
                    .bind(scope.instance.as_str())
                    .bind(scope.principal.as_str())
                    .bind(scope.key.as_str())
                    .bind(&record.fingerprint)
                    .bind(record.command.0)
                    .bind(record.registration.as_str())
                    .bind(sealed.as_deref())
                    .bind(keep.as_secs_f64())
                    .fetch_one(&self.pool),
            )
            .await
            .map_err(port)?;
            if inserted > 0 {
                return Ok(Claim::New);
            }
            let row: Option<Row> = crate::within(
                self.timeouts.operation,
                sqlx::query_as(&self.read)
                    .bind(scope.instance.as_str())
                    .bind(scope.principal.as_str())
                    .bind(scope.key.as_str())
                    .fetch_optional(&self.pool),
            )
            .await
            .map_err(port)?;
            // None: the record lapsed since the claim; claim again.
            if let Some((fingerprint, command, registration, sealed, at)) = row {
                let registration = RegistrationId::parse("registration_id", registration)
                    .map_err(|e| PortError::Internal(e.to_string()))?;
                let sealed_code: Option<SealedCode> = sealed
                    .map(|s| serde_json::from_str(&s))
                    .transpose()
                    .map_err(|e| PortError::Internal(e.to_string()))?;
                return Ok(Claim::Existing {
                    record: IdempotencyRecord {
                        fingerprint,
                        command: CommandId(command),
                        registration,
                        sealed_code,
                    },
                    at,
                });
            }
        }
        Err(PortError::Unavailable(
            "an idempotency key's record kept lapsing during its claim".to_owned(),
        ))
    }
}
