//! The SMS notifier as a ready task: what the server runs, for hosts that send codes by SMS
//! (feature `notifier`, on by default; it needs a Tokio runtime).
//!
//! A registration added with `send_code` leaves its code in the delivery outbox; the notifier
//! drains it with [`CommandService::deliver_pending`], one pass every
//! [`NotifierSettings::interval`]. Any number of notifiers, in one process or many, may drain
//! one store: leases keep them from sharing a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ports::SmsSender;
use crate::service::CommandService;

/// How often and how much the notifier sends. The send concurrency, back-off and attempts are
/// the service's [`DeliveryPolicy`](crate::DeliveryPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifierSettings {
    /// The pause between two passes over the outbox.
    pub interval: Duration,
    /// Messages per pass.
    pub batch: usize,
    /// How long a fetched message stays with this notifier before another may take it. Each
    /// send must end a quarter of it before it runs out.
    pub lease: Duration,
}

impl Default for NotifierSettings {
    /// The server's defaults: a pass every 500 ms, 100 messages, leased for 60 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            batch: 100,
            lease: Duration::from_secs(60),
        }
    }
}

/// When a notifier last made progress (a pass began or ended), for a readiness check. A pass's
/// sends end before its lease does and its store calls are bounded, so a notifier silent for
/// longer than a lease, an interval and a margin is stuck (its task died, or the runtime is
/// blocked).
#[derive(Debug)]
pub struct NotifierHeartbeat {
    started: Instant,
    /// Milliseconds from `started` at the last beat.
    last: AtomicU64,
    stuck_after: Duration,
}

impl NotifierHeartbeat {
    /// A heartbeat that calls a notifier stuck after `stuck_after` without a beat.
    pub fn new(stuck_after: Duration) -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            stuck_after,
        }
    }

    /// The heartbeat of a notifier with `settings`: stuck after a lease, an interval and ten
    /// seconds of silence.
    pub fn for_settings(settings: &NotifierSettings) -> Self {
        Self::new(settings.lease + settings.interval + Duration::from_secs(10))
    }

    /// Progress now.
    pub fn beat(&self) {
        let at = self.started.elapsed().as_millis() as u64;
        self.last.store(at, Ordering::Relaxed);
    }

    /// Whether no beat came within the allowed silence before `now`.
    pub fn stuck(&self, now: Instant) -> bool {
        let last = self.started + Duration::from_millis(self.last.load(Ordering::Relaxed));
        now.saturating_duration_since(last) > self.stuck_after
    }
}

/// A running notifier, from [`spawn_notifier`]. Dropping it stops the notifier as
/// [`Notifier::shutdown`] does, without waiting.
#[derive(Debug)]
pub struct Notifier {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    heartbeat: Arc<NotifierHeartbeat>,
}

impl Notifier {
    /// The notifier's heartbeat, for the host's readiness check.
    pub fn heartbeat(&self) -> Arc<NotifierHeartbeat> {
        Arc::clone(&self.heartbeat)
    }

    /// Stops the notifier: a pass in progress ends (its sends and records complete; nothing is
    /// cut half-way), no other begins, and this returns when the task has ended.
    pub async fn shutdown(self) {
        let Notifier { stop, task, .. } = self;
        let _ = stop.send(true);
        // A task that panicked has stopped too; the runtime reported the panic.
        let _ = task.await;
    }
}

/// Starts the SMS notifier on the current Tokio runtime: a pass of
/// [`CommandService::deliver_pending`] every [`NotifierSettings::interval`], handing codes to
/// `sender`, until [`Notifier::shutdown`]. A pass that fails (the store is down) is logged and
/// the next one tries again; each pass with work logs what it did.
///
/// ```no_run
/// # async fn host(service: otp_sms_core::CommandService, sender: std::sync::Arc<dyn otp_sms_core::SmsSender>) {
/// use otp_sms_core::{spawn_notifier, NotifierSettings};
/// let notifier = spawn_notifier(service, sender, NotifierSettings::default());
/// // … serve until told to stop …
/// notifier.shutdown().await;
/// # }
/// ```
pub fn spawn_notifier(
    service: CommandService,
    sender: Arc<dyn SmsSender>,
    settings: NotifierSettings,
) -> Notifier {
    let heartbeat = Arc::new(NotifierHeartbeat::for_settings(&settings));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(
        service,
        sender,
        settings,
        Arc::clone(&heartbeat),
        stopped,
    ));
    Notifier {
        stop,
        task,
        heartbeat,
    }
}

async fn run(
    service: CommandService,
    sender: Arc<dyn SmsSender>,
    settings: NotifierSettings,
    heartbeat: Arc<NotifierHeartbeat>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = settings.interval.max(Duration::from_millis(10));
    let lease = settings.lease.max(Duration::from_secs(1));
    loop {
        heartbeat.beat();
        let pass = service
            .deliver_pending(sender.as_ref(), settings.batch.max(1), lease)
            .await;
        heartbeat.beat();
        match pass {
            Ok(report) if report != Default::default() => {
                tracing::info!(
                    sent = report.sent,
                    dropped = report.dropped,
                    deferred = report.deferred,
                    undeliverable = report.undeliverable,
                    failed = report.failed,
                    "notifier pass"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "notifier pass failed"),
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // A stop, or the handle dropped.
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notifier_is_stuck_only_after_a_silence_longer_than_allowed() {
        let beat = NotifierHeartbeat::new(Duration::from_secs(70));
        let start = Instant::now();
        beat.beat();
        assert!(!beat.stuck(start + Duration::from_secs(60)));
        assert!(beat.stuck(start + Duration::from_secs(71)));
        beat.beat();
        assert!(!beat.stuck(Instant::now() + Duration::from_secs(69)));
    }
}
