//! Delivery reports: what a provider says of a code it was handed, recorded in the store and
//! counted.

use axum::http::StatusCode;
use otp_sms_core::{CommandService, Error, InstanceId, RegistrationId};

/// Counter: providers' delivery reports, by `provider` (`twilio`, `vonage`) and `outcome`:
/// `delivered` and `failed` (recorded as events), `ignored` (an interim status, or nothing
/// left to record), `refused` (a missing or bad signature, a stale or misplaced report: 403),
/// `unavailable` (the store could not write: 503, the provider retries).
pub const DELIVERY_REPORTS: &str = "otp_sms_delivery_reports_total";

/// Counts one delivery report of `provider` with `outcome` (see [`DELIVERY_REPORTS`]).
pub(crate) fn count(provider: &'static str, outcome: &'static str) {
    metrics::counter!(DELIVERY_REPORTS, "provider" => provider, "outcome" => outcome).increment(1);
}

/// The largest delivery report body a provider endpoint reads (a real one is well under 1 KiB);
/// a larger one is refused (413) before it is parsed.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// What a provider's delivery report says of one code.
pub(crate) enum Report<'a> {
    /// It reached the phone.
    Delivered,
    /// It did not: the provider's status, and its error code, kept only when it is a number
    /// (a provider's words may quote the phone number).
    Failed {
        status: &'a str,
        code: Option<&'a str>,
    },
    /// An interim status (queued, sent, accepted, buffered, …): nothing to record.
    Interim,
}

/// Records a provider's delivery report and answers the provider: 204 when recorded or when
/// there is nothing to record (an interim status; the code was superseded, verified meanwhile,
/// or the registration removed: a provider must not retry those), 503 when the store is
/// unavailable, so that the provider retries. Each report is counted on `/metrics`.
pub(crate) async fn record_report(
    provider: &'static str,
    service: &CommandService,
    instance: &InstanceId,
    registration: &RegistrationId,
    number: u32,
    report: Report<'_>,
) -> StatusCode {
    let (outcome, failure) = match report {
        Report::Delivered => ("delivered", None),
        Report::Failed { status, code } => {
            let code = code
                .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
                .map(|c| format!(", error {c}"))
                .unwrap_or_default();
            ("failed", Some(format!("{provider}: {status}{code}")))
        }
        Report::Interim => {
            crate::report::count(provider, "ignored");
            return StatusCode::NO_CONTENT;
        }
    };
    match service
        .record_delivery_report(instance, registration, number, failure)
        .await
    {
        Ok(_) => {
            crate::report::count(provider, outcome);
            StatusCode::NO_CONTENT
        }
        Err(Error::Unavailable(_)) => {
            crate::report::count(provider, "unavailable");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Err(e) => {
            crate::report::count(provider, "ignored");
            tracing::info!(error = %e, "a delivery report changed nothing");
            StatusCode::NO_CONTENT
        }
    }
}
