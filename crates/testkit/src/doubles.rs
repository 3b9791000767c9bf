//! Test doubles for the ports other than the event store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use otp_sms_core::{
    Authorizer, InstanceId, OrganizationId, PortError, PrincipalId, Sms, SmsSender, UserDirectory,
    UserId, UserRecord,
};

/// A user directory held in memory.
#[derive(Debug, Default)]
pub struct StaticUsers {
    users: HashMap<(InstanceId, UserId), OrganizationId>,
    domains: HashMap<(InstanceId, String), OrganizationId>,
    unavailable: AtomicBool,
}

impl StaticUsers {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds user `user` of organization `org` in `instance` (panics on invalid ids: test input).
    pub fn with_user(mut self, instance: &str, user: &str, org: &str) -> Self {
        self.users.insert(
            (
                InstanceId::parse("instance", instance).expect("test instance id"),
                UserId::parse("id", user).expect("test user id"),
            ),
            OrganizationId::parse("organization", org).expect("test org id"),
        );
        self
    }

    /// Adds the primary domain of an organization.
    pub fn with_domain(mut self, instance: &str, domain: &str, org: &str) -> Self {
        self.domains.insert(
            (
                InstanceId::parse("instance", instance).expect("test instance id"),
                domain.to_owned(),
            ),
            OrganizationId::parse("organization", org).expect("test org id"),
        );
        self
    }

    /// Makes every lookup fail as unreachable (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), PortError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("user directory is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl UserDirectory for StaticUsers {
    async fn find_user(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<UserRecord>, PortError> {
        self.check()?;
        Ok(self
            .users
            .get(&(instance.clone(), user.clone()))
            .map(|org| UserRecord {
                id: user.clone(),
                organization: org.clone(),
            }))
    }

    async fn organization_by_domain(
        &self,
        instance: &InstanceId,
        domain: &str,
    ) -> Result<Option<OrganizationId>, PortError> {
        self.check()?;
        Ok(self
            .domains
            .get(&(instance.clone(), domain.to_owned()))
            .cloned())
    }
}

/// An authorizer with a fixed set of grants: (instance, principal, organization, permission).
#[derive(Debug, Default)]
pub struct StaticAuthorizer {
    grants: HashSet<(String, String, String, String)>,
}

impl StaticAuthorizer {
    /// No grants: only users themselves may act.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `permission` in `org` of `instance` to `principal`.
    pub fn grant(mut self, instance: &str, principal: &str, org: &str, permission: &str) -> Self {
        self.grants.insert((
            instance.to_owned(),
            principal.to_owned(),
            org.to_owned(),
            permission.to_owned(),
        ));
        self
    }
}

#[async_trait]
impl Authorizer for StaticAuthorizer {
    async fn has_permission(
        &self,
        instance: &InstanceId,
        principal: &PrincipalId,
        organization: &OrganizationId,
        permission: &str,
    ) -> Result<bool, PortError> {
        Ok(self.grants.contains(&(
            instance.as_str().to_owned(),
            principal.as_str().to_owned(),
            organization.as_str().to_owned(),
            permission.to_owned(),
        )))
    }
}

/// An SMS sender that keeps what it was asked to send, and can be made to fail: for a while
/// (`Unavailable`, retried), for good (`Internal`, a refusal), or for some numbers only.
#[derive(Debug, Default)]
pub struct RecordingSender {
    sent: Mutex<Vec<Sms>>,
    failing: AtomicBool,
    refusing: AtomicBool,
    failing_numbers: Mutex<Vec<String>>,
    attempts: std::sync::atomic::AtomicUsize,
}

impl RecordingSender {
    /// A sender that succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every send fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every send fail for good, as a provider refusing the number (or not).
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Makes sends to `e164` fail for a while (`Unavailable`).
    pub fn fail_for(&self, e164: &str) {
        self.failing_numbers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e164.to_owned());
    }

    /// Sends asked for so far, failed ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Everything sent so far.
    pub fn sent(&self) -> Vec<Sms> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl SmsSender for RecordingSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.refusing.load(Ordering::SeqCst) {
            return Err(PortError::Internal(
                "SMS provider refused the number".into(),
            ));
        }
        let number_fails = self
            .failing_numbers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|n| n == sms.phone.as_e164());
        if self.failing.load(Ordering::SeqCst) || number_fails {
            return Err(PortError::Unavailable("SMS provider is down".into()));
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sms.clone());
        Ok(())
    }
}

/// An authenticator with fixed bearer tokens and instance domains.
#[derive(Debug, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, otp_sms_core::Caller>,
    domains: HashMap<String, InstanceId>,
}

impl StaticTokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// `token` authenticates `principal` in `instance`.
    pub fn with_token(mut self, token: &str, instance: &str, principal: &str) -> Self {
        self.tokens.insert(
            token.to_owned(),
            otp_sms_core::Caller {
                instance: InstanceId::parse("instance", instance).expect("test instance id"),
                principal: PrincipalId::parse("principal", principal).expect("test principal"),
                address: None,
                idempotency_key: None,
            },
        );
        self
    }

    /// `domain` names `instance`.
    pub fn with_instance_domain(mut self, domain: &str, instance: &str) -> Self {
        self.domains.insert(
            domain.to_owned(),
            InstanceId::parse("instance", instance).expect("test instance id"),
        );
        self
    }
}

#[async_trait]
impl otp_sms_core::Authenticator for StaticTokens {
    async fn authenticate(
        &self,
        bearer_token: &str,
    ) -> Result<Option<otp_sms_core::Caller>, PortError> {
        Ok(self.tokens.get(bearer_token).cloned())
    }

    async fn instance_by_domain(&self, domain: &str) -> Result<Option<InstanceId>, PortError> {
        Ok(self.domains.get(domain).cloned())
    }
}
