//! Idempotency records in the database file: one [`IdempotencyStore`] shared by every process
//! on it.

use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{
    Claim, CommandId, IdempotencyRecord, IdempotencyScope, IdempotencyStore, PortError,
    RegistrationId, SealedCode,
};
use uuid::Uuid;

use crate::database::Database;
use crate::error::{map_error, port};
use crate::time::{from_micros, micros, micros_after};
use crate::writer::{Isolation, Outcome};

/// What each client key stands for, per instance and principal, in a SQLite file. A claim
/// runs in the database's one writer: it inserts the record, or takes over a lapsed one, or
/// reads the key's record, with no other claim between, so of racing claims exactly one
/// records. Lapsed records of other keys are swept a few at a time by later claims. Passes
/// `otp-sms-testkit`'s idempotency conformance suite.
#[derive(Debug, Clone)]
pub struct SqliteIdempotency {
    database: Database,
}

impl SqliteIdempotency {
    /// The records in `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

type Row = (String, String, String, Option<String>, i64);

fn internal(e: impl std::fmt::Display) -> otp_sms_core::StoreError {
    otp_sms_core::StoreError::Internal(e.to_string())
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotency {
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
        let (instance, principal, key) = (
            scope.instance.as_str().to_owned(),
            scope.principal.as_str().to_owned(),
            scope.key.as_str().to_owned(),
        );
        let record = record.clone();
        self.database
            .inner
            .writer
            .write(
                Isolation::Statement,
                Box::new(move |conn, now| {
                    Box::pin(async move {
                        let now_us = micros(now);
                        let claimed = sqlx::query(
                        "INSERT INTO idempotency_keys (instance_id, principal, key, fingerprint, \
                           command_id, registration_id, sealed_code, created_at, expires_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                         ON CONFLICT (instance_id, principal, key) DO UPDATE SET \
                           fingerprint = excluded.fingerprint, command_id = excluded.command_id, \
                           registration_id = excluded.registration_id, \
                           sealed_code = excluded.sealed_code, created_at = excluded.created_at, \
                           expires_at = excluded.expires_at \
                         WHERE idempotency_keys.expires_at <= ?8",
                    )
                    .bind(&instance)
                    .bind(&principal)
                    .bind(&key)
                    .bind(&record.fingerprint)
                    .bind(record.command.0.to_string())
                    .bind(record.registration.as_str())
                    .bind(sealed.as_deref())
                    .bind(now_us)
                    .bind(micros_after(now, keep))
                    .execute(&mut *conn)
                    .await
                    .map_err(map_error)?;
                        sqlx::query(
                            "DELETE FROM idempotency_keys WHERE (instance_id, principal, key) IN \
                         (SELECT instance_id, principal, key FROM idempotency_keys \
                          WHERE expires_at <= ?1 ORDER BY expires_at LIMIT 8)",
                        )
                        .bind(now_us)
                        .execute(&mut *conn)
                        .await
                        .map_err(map_error)?;
                        if claimed.rows_affected() > 0 {
                            return Ok(Outcome::Keep(Claim::New));
                        }
                        let (fingerprint, command, registration, sealed, at): Row = sqlx::query_as(
                            "SELECT fingerprint, command_id, registration_id, sealed_code, \
                         created_at FROM idempotency_keys \
                         WHERE instance_id = ?1 AND principal = ?2 AND key = ?3",
                        )
                        .bind(&instance)
                        .bind(&principal)
                        .bind(&key)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(map_error)?;
                        let sealed_code: Option<SealedCode> = sealed
                            .map(|s| serde_json::from_str(&s))
                            .transpose()
                            .map_err(internal)?;
                        Ok(Outcome::Keep(Claim::Existing {
                            record: IdempotencyRecord {
                                fingerprint,
                                command: CommandId(Uuid::parse_str(&command).map_err(internal)?),
                                registration: RegistrationId::parse(
                                    "registration_id",
                                    registration,
                                )
                                .map_err(internal)?,
                                sealed_code,
                            },
                            at: from_micros(at),
                        }))
                    })
                }),
            )
            .await
            .map_err(port)
    }
}
