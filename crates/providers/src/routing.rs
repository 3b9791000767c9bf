//! Routing and failover between SMS providers: an ordered provider list per destination region
//! (ISO 3166 country of the number) with a default list, and a circuit breaker per provider.
//!
//! A message goes to the first provider of its list whose breaker lets it through. On a
//! temporary failure (`Unavailable`: throttled, down, timed out) the next provider takes it, in
//! the same send; a final refusal (`Internal`) is final. Providers are tried one after the
//! other, each attempt over before the next begins, so a message is never with two providers at
//! once (a provider that timed out may still have delivered it: the hand-over is at least once,
//! as everywhere in the notifier).
//!
//! The breaker opens after `failure_threshold` temporary failures in a row and stays open for
//! `open_for`; then it is half-open: one send probes the provider, and its outcome closes the
//! breaker or opens it again. While a provider is open the list skips it; when every provider
//! of a list is open, the send fails temporarily without trying any, and the notifier backs off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use otp_sms_core::{PortError, Sms, SmsSender};

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sends pass; `failures` temporary failures in a row so far.
    Closed {
        /// Consecutive temporary failures.
        failures: u32,
    },
    /// Sends are skipped until `until`.
    Open {
        /// When it turns half-open.
        until: Instant,
    },
    /// One probe is on its way; other sends skip the provider until it ends.
    HalfOpen,
}

/// A circuit breaker for one provider.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<BreakerState>,
    failure_threshold: u32,
    open_for: Duration,
}

impl CircuitBreaker {
    /// Opens after `failure_threshold` temporary failures in a row, for `open_for`.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            failure_threshold: failure_threshold.max(1),
            open_for,
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a send may go to the provider at `now`; an open breaker whose time is up lets
    /// exactly one probe through (and is half-open while it runs).
    pub fn admit(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// A send the provider took: the breaker closes.
    pub fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) =
            BreakerState::Closed { failures: 0 };
    }

    /// A send the provider failed temporarily at `now`.
    pub fn failed(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = match *state {
            BreakerState::Closed { failures } if failures + 1 < self.failure_threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            // The threshold reached, or the probe failed.
            _ => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }

    /// A send the provider refused for good: the provider works, so a probe closes the
    /// breaker, and a closed one keeps its count.
    pub fn answered(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state == BreakerState::HalfOpen {
            *state = BreakerState::Closed { failures: 0 };
        }
    }
}

/// One provider of the routes: a name (for logs and reasons), its sender and its breaker.
#[non_exhaustive]
pub struct Provider {
    /// The provider's name, e.g. `twilio`.
    pub name: String,
    /// Its sender.
    pub sender: Arc<dyn SmsSender>,
    /// Its breaker.
    pub breaker: CircuitBreaker,
}

impl Provider {
    /// Provider `name`, sending through `sender`, guarded by `breaker`.
    pub fn new(
        name: impl Into<String>,
        sender: Arc<dyn SmsSender>,
        breaker: CircuitBreaker,
    ) -> Self {
        Self {
            name: name.into(),
            sender,
            breaker,
        }
    }
}

/// Routes each SMS by its destination's region, failing over between providers.
pub struct RoutingSender {
    providers: Vec<Provider>,
    /// Region (`CH`) → indexes into `providers`, in order.
    routes: BTreeMap<String, Vec<usize>>,
    default: Vec<usize>,
}

impl RoutingSender {
    /// Routes over `providers`: `routes` maps a region to provider names in order, `default`
    /// serves every other region. Every name must be a provider's.
    pub fn new<N: AsRef<str>>(
        providers: Vec<Provider>,
        routes: &BTreeMap<String, Vec<N>>,
        default: &[N],
    ) -> Result<Self, String> {
        let index = |name: &N| {
            let name = name.as_ref();
            providers
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| format!("[sms.routes] no provider `{name}` is configured"))
        };
        let default: Vec<usize> = default.iter().map(index).collect::<Result<_, _>>()?;
        if default.is_empty() {
            return Err("[sms.routes] default must name at least one provider".into());
        }
        let mut by_region = BTreeMap::new();
        for (region, names) in routes {
            let region = region.to_ascii_uppercase();
            if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "[sms.routes] `{region}` is not a region (two letters, ISO 3166)"
                ));
            }
            let list: Vec<usize> = names.iter().map(index).collect::<Result<_, _>>()?;
            if list.is_empty() {
                return Err(format!("[sms.routes] {region} names no provider"));
            }
            by_region.insert(region, list);
        }
        Ok(Self {
            providers,
            routes: by_region,
            default,
        })
    }

    /// The providers, for their breakers' state.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }
}

#[async_trait]
impl SmsSender for RoutingSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let list = sms
            .phone
            .region()
            .and_then(|region| self.routes.get(region))
            .unwrap_or(&self.default);
        let mut reasons = Vec::new();
        for &i in list {
            let provider = &self.providers[i];
            if chrono::Utc::now() >= sms.deadline {
                reasons.push("the send's deadline passed".to_owned());
                break;
            }
            if !provider.breaker.admit(Instant::now()) {
                reasons.push(format!("{}: breaker open", provider.name));
                continue;
            }
            match provider.sender.send(sms).await {
                Ok(()) => {
                    provider.breaker.succeeded();
                    if !reasons.is_empty() {
                        tracing::info!(provider = %provider.name, skipped = %reasons.join("; "), registration = %sms.registration, "SMS failed over");
                    }
                    return Ok(());
                }
                Err(PortError::Unavailable(reason)) => {
                    provider.breaker.failed(Instant::now());
                    reasons.push(format!("{}: {reason}", provider.name));
                }
                Err(PortError::Internal(reason)) => {
                    provider.breaker.answered();
                    return Err(PortError::Internal(format!("{}: {reason}", provider.name)));
                }
            }
        }
        Err(PortError::Unavailable(reasons.join("; ")))
    }

    /// A send may try every provider of its route in turn: the sum of theirs (unknown if
    /// one's is).
    fn max_send_time(&self) -> Option<Duration> {
        self.providers
            .iter()
            .map(|p| p.sender.max_send_time())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_after_the_threshold_probes_once_then_closes_or_reopens() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(breaker.admit(t0));
            breaker.failed(t0);
        }
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 2 });
        breaker.failed(t0);
        assert!(!breaker.admit(t0 + Duration::from_secs(29)));
        // Half-open: one probe, no second one while it runs.
        assert!(breaker.admit(t0 + Duration::from_secs(30)));
        assert!(!breaker.admit(t0 + Duration::from_secs(30)));
        // The probe fails: open again, for a new period.
        breaker.failed(t0 + Duration::from_secs(31));
        assert!(!breaker.admit(t0 + Duration::from_secs(60)));
        assert!(breaker.admit(t0 + Duration::from_secs(61)));
        // The probe succeeds: closed, counting from zero.
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        // A success in between resets the count.
        breaker.failed(t0);
        breaker.failed(t0);
        breaker.succeeded();
        breaker.failed(t0);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 1 });
    }
}
