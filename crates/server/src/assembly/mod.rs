//! What the server runs, assembled from the command line and the configuration: the user
//! directory, the code keys, the store (with the shared budgets and idempotency records), the
//! SMS sender, the command service and its notifier. No socket is opened here: serving is
//! [`crate::serving`].

mod senders;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::conversion::RangeSignal;
use otp_sms_core::{CommandService, Event, EventStore, Notifier};
use otp_sms_directory::StaticDirectory;

use crate::config::Config;
use crate::keys::load_keys;
use crate::{Args, StartError};

use storage::Storage;
pub(crate) use storage::StoreCheck;

/// Everything the server runs, built and started (the notifier drains the outbox), not yet
/// served.
pub(crate) struct Assembly {
    /// Users, organizations, tokens and grants: the authenticator of every call.
    pub(crate) directory: Arc<StaticDirectory>,
    /// The command service.
    pub(crate) service: CommandService,
    /// The event store, whose feed the metrics' conversion signal reads.
    pub(crate) store: Arc<dyn EventStore<Event>>,
    /// How readiness checks the store.
    pub(crate) store_check: StoreCheck,
    /// The conversion figures the send budgets read, which the metrics keep up to date.
    pub(crate) range_signal: RangeSignal,
    /// The notifier, when a sender is configured.
    pub(crate) notifier: Option<Notifier>,
}

impl Assembly {
    /// Builds the parts in order, each checked before the next: the directory and the code
    /// policy (the file's references and bounds), the keys, the store (connected and
    /// migrated), the SMS text and sender, the service, and the notifier.
    pub(crate) async fn build(args: &Args, config: &Config) -> Result<Self, StartError> {
        let directory = Arc::new(config.directory()?);
        let policy = config.policy.policy()?;
        let keys = load_keys(args)?;
        // Before the listener opens, so that no request waits for it.
        otp_sms_core::Phone::load_metadata();
        let storage = Storage::open(args, config).await?;
        // The SMS's text, checked now so that a template too long for one SMS stops the start.
        let templates = Arc::new(
            config
                .sms
                .text
                .templates(policy.length(), policy.lifetime())
                .map_err(StartError::Other)?,
        );
        let sender = senders::sender(config, args.dev, &templates)?;
        // The conversion signal's figures per range, for `[abuse.range_collapse]`: a code
        // counts as unanswered once it has outlived its lifetime.
        let range_signal = RangeSignal::new().settling(policy.lifetime());
        let store = Arc::clone(&storage.store);
        let store_check = storage.check.clone();
        let service = command_service(config, storage, directory.clone(), keys, policy)?
            .with_range_signal(range_signal.clone());
        let notifier = sender.map(|sender| {
            otp_sms_core::spawn_notifier(service.clone(), sender, config.notifier.settings())
        });
        Ok(Self {
            directory,
            service,
            store,
            store_check,
            range_signal,
            notifier,
        })
    }

    /// Stops the notifier after its current pass.
    pub(crate) async fn stop(self) {
        if let Some(notifier) = self.notifier {
            notifier.shutdown().await;
        }
    }
}

/// The command service over `storage`, with the file's policies.
fn command_service(
    config: &Config,
    storage: Storage,
    directory: Arc<StaticDirectory>,
    keys: otp_sms_core::CodeKeyRing,
    policy: otp_sms_core::CodePolicy,
) -> Result<CommandService, StartError> {
    let (abuse, instance_abuse) = config.abuse_policies()?;
    if config.service.idempotency_window_secs == 0 {
        return Err(StartError::Other(
            "[service] idempotency_window_secs must be at least 1".into(),
        ));
    }
    let mut service = CommandService::new(storage.store, directory.clone(), directory, keys)
        .with_policy(policy)
        .with_max_attempts(config.service.max_attempts)
        .with_delivery_policy(config.notifier.delivery_policy())
        .with_stream_cache(storage.stream_cache)
        .with_abuse_policy(abuse)
        .map_err(|e| StartError::Other(e.to_string()))?
        .with_idempotency_window(Duration::from_secs(config.service.idempotency_window_secs))
        .with_idempotency_keys_per_caller(config.service.idempotency_keys_per_caller);
    if let Some((budgets, records)) = storage.shared {
        service = service
            .with_budget_store(budgets)
            .with_idempotency_store(records);
    }
    for (instance, policy) in instance_abuse {
        service = service
            .with_instance_abuse_policy(instance, policy)
            .map_err(|e| StartError::Other(e.to_string()))?;
    }
    Ok(service)
}
