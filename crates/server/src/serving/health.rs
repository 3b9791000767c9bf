//! `/healthz` (the process answers) and `/readyz` (the store takes writes and the notifier, if
//! one runs, makes progress): answered outside the API's caps, so that an attacked API never
//! makes the process look dead to its load balancer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use crate::assembly::StoreCheck;

/// What `/readyz` checks: that the store takes writes and that the notifier, if one runs,
/// makes progress.
#[derive(Clone)]
pub(crate) struct Readiness {
    pub(crate) store: StoreCheck,
    pub(crate) notifier: Option<Arc<otp_sms_core::NotifierHeartbeat>>,
}

impl Readiness {
    async fn check(&self) -> Result<(), &'static str> {
        let reached = match &self.store {
            StoreCheck::Memory => Ok(()),
            StoreCheck::Postgres(store) => store.ping().await,
            StoreCheck::Sqlite(database) => database.ping().await,
        };
        if let Err(e) = reached {
            tracing::warn!(error = %e, "readiness: the event store takes no writes");
            return Err("event store unavailable");
        }
        if self
            .notifier
            .as_ref()
            .is_some_and(|beat| beat.stuck(std::time::Instant::now()))
        {
            tracing::warn!("readiness: the SMS notifier has made no progress");
            return Err("SMS notifier stuck");
        }
        Ok(())
    }
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn readyz(
    State(readiness): State<Readiness>,
) -> (StatusCode, Json<serde_json::Value>) {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"code": 14, "message": why, "details": []})),
        ),
    }
}
