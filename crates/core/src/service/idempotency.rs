//! Where a call meets its idempotency key: once, before the command loop. Without a key the
//! call runs under a fresh command id; with one, under the key's record when the key stands
//! for the same request (so the loop finds the first call's events and answers from them, or
//! runs the command the first call never committed), or under a new record it claims.

use sha2::{Digest, Sha256};

use super::CommandService;
use crate::api::OrganizationRef;
use crate::caller::Caller;
use crate::code::VerificationCode;
use crate::error::Error;
use crate::idempotency::{Claim, IdempotencyRecord, IdempotencyScope};
use crate::ids::RegistrationId;
use crate::keys::CodeBinding;
use crate::store::CommandId;

/// A record's sealed code is bound to its registration under this number, which no real code
/// has (codes count from 1): it cannot pass for an outbox message's code, nor one for it.
const RECORD_CODE_NUMBER: u32 = 0;

/// What a call runs under.
#[derive(Debug)]
pub(super) struct Run {
    /// The command id of its append.
    pub command: CommandId,
    /// The registration it names (an add's: the one it creates).
    pub registration: RegistrationId,
    /// The code its answer carries, if any.
    pub code: Option<VerificationCode>,
}

/// The fields of a request that make it the same request, in a fixed order. Hashed only for
/// a call that sent an idempotency key: the others pay nothing for it.
pub(super) struct Fingerprint(Option<Sha256>);

impl Fingerprint {
    /// Starts with the call's name, if `caller` sent a key.
    pub(super) fn of(caller: &Caller, call: &str) -> Self {
        let mut f = Self(caller.idempotency_key.is_some().then(Sha256::new));
        f.field(call);
        f
    }

    /// Adds a field (length-prefixed, so no two field lists hash alike by shifting bytes).
    /// Inlined: without a key it is one test, paid by every call.
    #[inline]
    pub(super) fn field(&mut self, value: &str) -> &mut Self {
        if let Some(hash) = &mut self.0 {
            hash.update((value.len() as u64).to_be_bytes());
            hash.update(value.as_bytes());
        }
        self
    }

    /// Adds the request's `organization`.
    pub(super) fn organization(&mut self, org: Option<&OrganizationRef>) -> &mut Self {
        match org {
            None => self.field("-"),
            Some(OrganizationRef::Id(id)) => self.field("id").field(id),
            Some(OrganizationRef::Domain(d)) => self.field("domain").field(d),
        }
    }

    fn hex(self) -> String {
        self.0
            .map(|hash| hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    }
}

fn binding(registration: &RegistrationId) -> CodeBinding<'_> {
    CodeBinding {
        registration,
        number: RECORD_CODE_NUMBER,
    }
}

/// How many idempotency keys one caller may hold by default within the window a key stands
/// (24 hours): far above what a client that retries honestly sends, and a bound on what one
/// token can make the store keep (about 300 bytes a record).
pub const DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER: u32 = 100_000;

impl CommandService {
    /// Counts a new key against its caller's allowance (a key seen before is not counted
    /// again); past the allowance the call is RESOURCE_EXHAUSTED and nothing is stored. The
    /// count lives in the budget store, so it holds across every process on one store.
    async fn admit_key(&self, scope: &IdempotencyScope) -> Result<(), Error> {
        let max = self.idempotency_keys_per_caller;
        if max == 0 {
            return Ok(());
        }
        let take = crate::abuse::BudgetTake {
            key: format!(
                "idempotency|{}|{}",
                scope.instance.as_str(),
                scope.principal.as_str()
            ),
            member: scope.key.as_str().to_owned(),
            rules: vec![crate::abuse::Rule::Window {
                max,
                window: self.idempotency_window,
            }],
        };
        let request = crate::abuse::TakeRequest { takes: vec![take] };
        match self.budgets.take(&request).await? {
            crate::abuse::TakeOutcome::Taken => Ok(()),
            crate::abuse::TakeOutcome::Refused { .. } => Err(Error::QuotaExceeded(format!(
                "this caller holds {max} idempotency keys, the most allowed within {} s; \
                 retry with a key sent before, or without a key",
                self.idempotency_window.as_secs()
            ))),
        }
    }

    /// The command id, registration and code `caller`'s call runs under: `registration` and
    /// `code` (the answer's, or `None`) under a fresh command id without a key; with a key,
    /// the key's record. A key that stands for another request is INVALID_ARGUMENT.
    pub(super) async fn run_for(
        &self,
        caller: &Caller,
        fingerprint: Fingerprint,
        registration: RegistrationId,
        code: Option<VerificationCode>,
    ) -> Result<Run, Error> {
        let Some(key) = &caller.idempotency_key else {
            return Ok(Run {
                command: CommandId::generate(),
                registration,
                code,
            });
        };
        // Boxed: most calls send no key, and the store's round trips would weigh on their
        // futures.
        Box::pin(self.run_keyed(caller, key, fingerprint, registration, code)).await
    }

    /// [`Self::run_for`] for a call that sent `key`.
    async fn run_keyed(
        &self,
        caller: &Caller,
        key: &crate::idempotency_key::IdempotencyKey,
        fingerprint: Fingerprint,
        registration: RegistrationId,
        code: Option<VerificationCode>,
    ) -> Result<Run, Error> {
        let command = CommandId::generate();
        let scope = IdempotencyScope {
            instance: caller.instance.clone(),
            principal: caller.principal.clone(),
            key: key.clone(),
        };
        self.admit_key(&scope).await?;
        let sealed_code = code.as_ref().map(|c| {
            self.keys
                .seal(binding(&registration), c, &mut rand::thread_rng())
        });
        let record = IdempotencyRecord {
            fingerprint: fingerprint.hex(),
            command,
            registration,
            sealed_code,
        };
        match self
            .idempotency
            .claim(&scope, &record, self.idempotency_window)
            .await?
        {
            Claim::New => Ok(Run {
                command: record.command,
                registration: record.registration,
                code,
            }),
            Claim::Existing { record: first, .. } => {
                if first.fingerprint != record.fingerprint {
                    return Err(Error::invalid(
                        "Idempotency-Key",
                        "was sent before with a different request; use a new key",
                    ));
                }
                let code = match &first.sealed_code {
                    Some(sealed) => Some(
                        self.keys
                            .open(binding(&first.registration), sealed)
                            .map_err(|e| Error::Internal(e.to_string()))?,
                    ),
                    None => None,
                };
                tracing::debug!(command = %first.command, "idempotency key seen before: replaying");
                Ok(Run {
                    command: first.command,
                    registration: first.registration,
                    code,
                })
            }
        }
    }
}
