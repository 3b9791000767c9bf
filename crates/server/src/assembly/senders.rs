//! The SMS sender `[sms]` names: none, the development printer, one provider, or the routes
//! over several, each built with `otp-sms-providers`.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::message::MessageTemplates;
use otp_sms_core::SmsSender;
use otp_sms_providers::{routing, twilio, vonage, webhook};

use crate::config::{self, Config, SenderKind};
use crate::StartError;

/// The sender `[sms] sender` names (`None`: codes to send wait in the outbox). The printing
/// sender is for `--dev` only.
pub(crate) fn sender(
    config: &Config,
    dev: bool,
    templates: &Arc<MessageTemplates>,
) -> Result<Option<Arc<dyn SmsSender>>, StartError> {
    Ok(match config.sms.sender {
        None if dev => Some(Arc::new(otp_sms_providers::print::PrintSender::new(
            templates.clone(),
        ))),
        None => {
            tracing::warn!("no SMS sender configured ([sms] sender): codes to send wait in the outbox until one is");
            None
        }
        Some(SenderKind::Log) if dev => Some(Arc::new(
            otp_sms_providers::print::PrintSender::new(templates.clone()),
        )),
        Some(SenderKind::Log) => {
            return Err(StartError::Other(
                "the `log` SMS sender prints codes and is for --dev only; configure [sms] sender = \"webhook\", \"twilio\", \"vonage\" or \"routes\"".into(),
            ))
        }
        Some(SenderKind::Routes) => {
            let routes = config.sms.routes.as_ref().ok_or_else(|| {
                StartError::Other("[sms] sender = \"routes\" needs [sms.routes]".into())
            })?;
            // Each provider the routes name, once.
            let mut kinds: Vec<SenderKind> = routes.default.clone();
            kinds.extend(routes.regions.values().flatten());
            kinds.sort();
            kinds.dedup();
            let providers = kinds
                .into_iter()
                .map(|kind| {
                    Ok(routing::Provider::new(
                        kind.name(),
                        provider(&config.sms, kind, templates)?,
                        routing::CircuitBreaker::new(
                            routes.failure_threshold,
                            Duration::from_secs(routes.open_secs),
                        ),
                    ))
                })
                .collect::<Result<Vec<_>, StartError>>()?;
            Some(Arc::new(
                routing::RoutingSender::new(providers, &routes.regions, &routes.default)
                    .map_err(StartError::Other)?,
            ))
        }
        Some(kind) => Some(provider(&config.sms, kind, templates)?),
    })
}

/// The sender of one provider, from its table of `[sms]`.
fn provider(
    sms_config: &config::SmsConfig,
    kind: SenderKind,
    templates: &Arc<MessageTemplates>,
) -> Result<Arc<dyn SmsSender>, StartError> {
    let needs = |table: &str| StartError::Other(format!("[sms] this sender needs [{table}]"));
    Ok(match kind {
        SenderKind::Twilio => {
            let options = sms_config
                .twilio
                .as_ref()
                .ok_or_else(|| needs("sms.twilio"))?
                .options(templates.clone())
                .map_err(StartError::Other)?;
            Arc::new(twilio::TwilioSender::new(options).map_err(StartError::Other)?)
        }
        SenderKind::Vonage => {
            let options = sms_config
                .vonage
                .as_ref()
                .ok_or_else(|| needs("sms.vonage"))?
                .options(templates.clone())
                .map_err(StartError::Other)?;
            Arc::new(vonage::VonageSender::new(options).map_err(StartError::Other)?)
        }
        SenderKind::Webhook => {
            let url = sms_config.webhook_url.clone().ok_or_else(|| {
                StartError::Other("[sms] the webhook sender needs webhook_url".into())
            })?;
            let secret = sms_config.webhook_secret.as_deref().ok_or_else(|| {
                StartError::Other("[sms] the webhook sender needs webhook_secret (`whsec_` and the base64 of 32 random bytes: `echo whsec_$(openssl rand -base64 32)`)".into())
            })?;
            let secret = webhook::WebhookSecret::parse(secret)
                .map_err(|e| StartError::Other(format!("[sms] webhook_secret: {e}")))?;
            Arc::new(
                webhook::WebhookSender::new(
                    webhook::WebhookOptions::new(url, secret, templates.clone())
                        .with_plain_http_to_private_addresses(sms_config.allow_http)
                        .with_timeout(Duration::from_millis(sms_config.timeout_ms))
                        .with_retries(sms_config.retries),
                )
                .map_err(StartError::Other)?,
            )
        }
        SenderKind::Log | SenderKind::Routes => {
            return Err(StartError::Other(format!(
                "[sms.routes] `{}` is not a provider (twilio, vonage, webhook)",
                kind.name()
            )))
        }
    })
}
