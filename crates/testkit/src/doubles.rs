//! Test doubles for the ports other than the event store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use otp_sms_core::{
    Authenticator, Authorizer, Caller, InstanceId, OrganizationId, PortError, PrincipalId, Sms,
    SmsSender, UserDirectory, UserId, UserRecord,
};
use otp_sms_directory::StaticDirectory;

/// The library's [`StaticDirectory`] with builders that take plain strings, for tests: users
/// and their organizations' domains, grants, bearer tokens and instance domains, in one value
/// that is the user directory, the authorizer and the authenticator. Invalid ids panic: they
/// are test input.
///
/// [`StaticUsers`], [`StaticAuthorizer`] and [`StaticTokens`] name it by the port a test
/// uses it for.
#[derive(Debug, Default)]
pub struct TestDirectory(StaticDirectory);

/// A [`TestDirectory`] used as the user directory.
pub type StaticUsers = TestDirectory;
/// A [`TestDirectory`] used as the authorizer.
pub type StaticAuthorizer = TestDirectory;
/// A [`TestDirectory`] used as the authenticator.
pub type StaticTokens = TestDirectory;

fn id<T: std::str::FromStr>(what: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| panic!("test {what} `{value}` is not a valid id"))
}

impl TestDirectory {
    /// An empty directory: no users, no grants (only users themselves may act), no tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds user `user` of organization `org` in `instance`.
    pub fn with_user(self, instance: &str, user: &str, org: &str) -> Self {
        Self(self.0.with_user(
            id("instance", instance),
            id("user", user),
            id("organization", org),
        ))
    }

    /// Adds the primary domain of an organization.
    pub fn with_domain(self, instance: &str, domain: &str, org: &str) -> Self {
        Self(self.0.with_organization_domain(
            id("instance", instance),
            domain,
            id("organization", org),
        ))
    }

    /// Grants `permission` in `org` of `instance` to `principal`.
    pub fn grant(self, instance: &str, principal: &str, org: &str, permission: &str) -> Self {
        Self(self.0.with_grant(
            id("instance", instance),
            id("principal", principal),
            id("organization", org),
            permission,
        ))
    }

    /// `token` authenticates `principal` in `instance`.
    pub fn with_token(self, token: &str, instance: &str, principal: &str) -> Self {
        Self(
            self.0
                .with_token(token, id("instance", instance), id("principal", principal)),
        )
    }

    /// `domain` names `instance`.
    pub fn with_instance_domain(self, domain: &str, instance: &str) -> Self {
        Self(
            self.0
                .with_instance_domain(domain, id("instance", instance)),
        )
    }

    /// Makes every look-up fail as unreachable (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.0.set_unavailable(unavailable);
    }

    /// The library's directory inside.
    pub fn directory(&self) -> &StaticDirectory {
        &self.0
    }
}

#[async_trait]
impl UserDirectory for TestDirectory {
    async fn find_user(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<UserRecord>, PortError> {
        self.0.find_user(instance, user).await
    }

    async fn organization_by_domain(
        &self,
        instance: &InstanceId,
        domain: &str,
    ) -> Result<Option<OrganizationId>, PortError> {
        self.0.organization_by_domain(instance, domain).await
    }

    async fn preferred_language(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<String>, PortError> {
        self.0.preferred_language(instance, user).await
    }
}

#[async_trait]
impl Authorizer for TestDirectory {
    async fn has_permission(
        &self,
        instance: &InstanceId,
        principal: &PrincipalId,
        organization: &OrganizationId,
        permission: &str,
    ) -> Result<bool, PortError> {
        self.0
            .has_permission(instance, principal, organization, permission)
            .await
    }
}

#[async_trait]
impl Authenticator for TestDirectory {
    async fn authenticate(&self, bearer_token: &str) -> Result<Option<Caller>, PortError> {
        self.0.authenticate(bearer_token).await
    }

    async fn instance_by_domain(&self, domain: &str) -> Result<Option<InstanceId>, PortError> {
        self.0.instance_by_domain(domain).await
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
