//! A user directory held in memory: the instances a server serves (and the domains that name
//! them), their organizations (and primary domains), their users (organization and language),
//! the bearer tokens that authenticate principals, and the permissions granted to them. One
//! value implements the three ports a host otherwise brings:
//! [`UserDirectory`], [`Authorizer`] and [`Authenticator`].
//!
//! The server builds one from its configuration file; tests, the example host and the
//! benchmark build theirs in code. A host with a real identity system implements the ports
//! over it instead.
//!
//! Tokens are kept as their SHA-256 digest, never as text, so a memory dump or a `Debug` line
//! shows none.
//!
//! ```
//! use otp_sms_core::{Authenticator, Authorizer, InstanceId, UserDirectory, USER_WRITE};
//! use otp_sms_directory::StaticDirectory;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let acme: InstanceId = "acme".parse().unwrap();
//! let directory = StaticDirectory::new()
//!     .with_instance_domain("id.acme.test", acme.clone())
//!     .with_user(acme.clone(), "alice".parse().unwrap(), "staff".parse().unwrap())
//!     .with_user(acme.clone(), "admin".parse().unwrap(), "staff".parse().unwrap())
//!     .with_token("admin-token-123", acme.clone(), "admin".parse().unwrap())
//!     .with_grant(acme.clone(), "admin".parse().unwrap(), "staff".parse().unwrap(), USER_WRITE);
//!
//! let caller = directory.authenticate("admin-token-123").await.unwrap().unwrap();
//! assert_eq!(caller.principal.as_str(), "admin");
//! let alice = directory.find_user(&acme, &"alice".parse().unwrap()).await.unwrap().unwrap();
//! assert!(directory
//!     .has_permission(&acme, &caller.principal, &alice.organization, USER_WRITE)
//!     .await
//!     .unwrap());
//! assert_eq!(directory.instance_by_domain("ID.acme.test").await.unwrap(), Some(acme));
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use otp_sms_core::{
    async_trait, Authenticator, Authorizer, Caller, InstanceId, OrganizationId, PortError,
    PrincipalId, UserDirectory, UserId, UserRecord,
};
use sha2::{Digest, Sha256};

mod users;

use users::Users;

/// One user: the organization it belongs to, and its preferred language, if known.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) organization: OrganizationId,
    pub(crate) language: Option<String>,
}

/// The tables every call looks up (the instance, the token, the grants): hashed with
/// foldhash (randomly seeded), as the user table is, rather than std's SipHash. Their entries
/// are the operator's; a caller only looks up, so chosen keys cannot crowd a table.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What one instance holds. Looked up by reference: no id is cloned on a lookup.
#[derive(Debug, Default)]
struct Tenant {
    users: Users,
    /// Lower-cased primary domain → organization.
    org_domains: HashMap<String, OrganizationId>,
    /// Principal → (organization, permission) pairs granted to it.
    grants: Map<PrincipalId, HashSet<(OrganizationId, String)>>,
}

/// The directory (see the crate's documentation). Built with [`StaticDirectory::new`] and its
/// `with_` methods; read-only once built, except for [`StaticDirectory::set_unavailable`].
#[derive(Default)]
pub struct StaticDirectory {
    tenants: Map<InstanceId, Tenant>,
    /// Lower-cased domain → instance.
    instance_domains: HashMap<String, InstanceId>,
    /// SHA-256 of the token → who it authenticates.
    tokens: Map<[u8; 32], Caller>,
    unavailable: AtomicBool,
}

impl fmt::Debug for StaticDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticDirectory")
            .field("tenants", &self.tenants)
            .field("instance_domains", &self.instance_domains)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl StaticDirectory {
    /// An empty directory: no instance, no user, no token.
    pub fn new() -> Self {
        Self::default()
    }

    /// `domain` (any case) names `instance`, for hosts that tell instances apart by domain.
    pub fn with_instance_domain(mut self, domain: &str, instance: InstanceId) -> Self {
        self.instance_domains
            .insert(domain.to_ascii_lowercase(), instance.clone());
        self.tenants.entry(instance).or_default();
        self
    }

    /// `domain` (any case) is the primary domain of `organization` in `instance`.
    pub fn with_organization_domain(
        mut self,
        instance: InstanceId,
        domain: &str,
        organization: OrganizationId,
    ) -> Self {
        self.tenants
            .entry(instance)
            .or_default()
            .org_domains
            .insert(domain.to_ascii_lowercase(), organization);
        self
    }

    /// `user` of `organization` in `instance` (replacing an earlier entry of the same user).
    pub fn with_user(
        mut self,
        instance: InstanceId,
        user: UserId,
        organization: OrganizationId,
    ) -> Self {
        let users = &mut self.tenants.entry(instance).or_default().users;
        let language = users.get(&user).and_then(|u| u.language.clone());
        users.insert(
            user,
            User {
                organization,
                language,
            },
        );
        self
    }

    /// `user` of `instance` prefers `language` (a BCP 47 tag) for its SMS; the user must have
    /// been added, else nothing changes.
    pub fn with_language(mut self, instance: &InstanceId, user: &UserId, language: &str) -> Self {
        if let Some(entry) = self
            .tenants
            .get_mut(instance)
            .and_then(|t| t.users.get_mut(user))
        {
            entry.language = Some(language.to_owned());
        }
        self
    }

    /// `token` authenticates `principal` in `instance`. A token given twice authenticates the
    /// last principal given.
    pub fn with_token(mut self, token: &str, instance: InstanceId, principal: PrincipalId) -> Self {
        self.tokens
            .insert(digest(token), Caller::new(instance, principal));
        self
    }

    /// Whether `token` was given already (to refuse a configuration that lists one twice).
    pub fn has_token(&self, token: &str) -> bool {
        self.tokens.contains_key(&digest(token))
    }

    /// Grants `permission` in `organization` of `instance` to `principal`.
    pub fn with_grant(
        mut self,
        instance: InstanceId,
        principal: PrincipalId,
        organization: OrganizationId,
        permission: &str,
    ) -> Self {
        self.tenants
            .entry(instance)
            .or_default()
            .grants
            .entry(principal)
            .or_default()
            .insert((organization, permission.to_owned()));
        self
    }

    /// The organization of `user` in `instance`, if the directory has the user.
    pub fn organization_of(&self, instance: &InstanceId, user: &UserId) -> Option<&OrganizationId> {
        self.tenants
            .get(instance)?
            .users
            .get(user)
            .map(|u| &u.organization)
    }

    /// Makes every look-up fail as unreachable (`PortError::Unavailable`), or work again: for
    /// tests of what the service does when the host's directory is down.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), PortError> {
        if self.unavailable.load(Ordering::Relaxed) {
            return Err(PortError::Unavailable("the user directory is down".into()));
        }
        Ok(())
    }

    fn user(&self, instance: &InstanceId, user: &UserId) -> Option<&User> {
        self.tenants.get(instance)?.users.get(user)
    }
}

#[async_trait]
impl UserDirectory for StaticDirectory {
    async fn find_user(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<UserRecord>, PortError> {
        self.check()?;
        Ok(self
            .user(instance, user)
            .map(|u| UserRecord::new(user.clone(), u.organization.clone())))
    }

    async fn organization_by_domain(
        &self,
        instance: &InstanceId,
        domain: &str,
    ) -> Result<Option<OrganizationId>, PortError> {
        self.check()?;
        Ok(self
            .tenants
            .get(instance)
            .and_then(|t| t.org_domains.get(&domain.to_ascii_lowercase()))
            .cloned())
    }

    async fn preferred_language(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<String>, PortError> {
        self.check()?;
        Ok(self.user(instance, user).and_then(|u| u.language.clone()))
    }
}

#[async_trait]
impl Authorizer for StaticDirectory {
    async fn has_permission(
        &self,
        instance: &InstanceId,
        principal: &PrincipalId,
        organization: &OrganizationId,
        permission: &str,
    ) -> Result<bool, PortError> {
        self.check()?;
        Ok(self
            .tenants
            .get(instance)
            .and_then(|t| t.grants.get(principal))
            .is_some_and(|granted| {
                granted
                    .iter()
                    .any(|(org, p)| org == organization && p == permission)
            }))
    }
}

#[async_trait]
impl Authenticator for StaticDirectory {
    async fn authenticate(&self, bearer_token: &str) -> Result<Option<Caller>, PortError> {
        self.check()?;
        Ok(self.tokens.get(&digest(bearer_token)).cloned())
    }

    async fn instance_by_domain(&self, domain: &str) -> Result<Option<InstanceId>, PortError> {
        self.check()?;
        Ok(self
            .instance_domains
            .get(&domain.to_ascii_lowercase())
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: fmt::Debug,
    {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn users_tokens_and_grants_are_kept_apart_by_instance() {
        let directory = StaticDirectory::new()
            .with_user(id("a"), id("u"), id("o"))
            .with_language(&id("a"), &id("u"), "de-CH")
            .with_organization_domain(id("a"), "O.example", id("o"))
            .with_token("token-of-p", id("a"), id("p"))
            .with_grant(id("a"), id("p"), id("o"), "user.write");
        let (a, b): (InstanceId, InstanceId) = (id("a"), id("b"));
        let u: UserId = id("u");
        assert!(directory.find_user(&a, &u).await.unwrap().is_some());
        assert!(directory.find_user(&b, &u).await.unwrap().is_none());
        assert_eq!(
            directory
                .preferred_language(&a, &u)
                .await
                .unwrap()
                .as_deref(),
            Some("de-CH")
        );
        assert_eq!(
            directory
                .organization_by_domain(&a, "o.EXAMPLE")
                .await
                .unwrap(),
            Some(id("o"))
        );
        assert!(directory
            .organization_by_domain(&b, "o.example")
            .await
            .unwrap()
            .is_none());
        let p: PrincipalId = id("p");
        let o: OrganizationId = id("o");
        assert!(directory
            .has_permission(&a, &p, &o, "user.write")
            .await
            .unwrap());
        assert!(!directory
            .has_permission(&b, &p, &o, "user.write")
            .await
            .unwrap());
        assert!(!directory
            .has_permission(&a, &p, &id("o2"), "user.write")
            .await
            .unwrap());
        assert!(!directory
            .has_permission(&a, &p, &o, "user.read")
            .await
            .unwrap());
        let caller = directory.authenticate("token-of-p").await.unwrap().unwrap();
        assert_eq!((caller.instance, caller.principal), (a, p));
        assert!(directory
            .authenticate("token-of-q")
            .await
            .unwrap()
            .is_none());
        assert!(directory.has_token("token-of-p"));
    }

    #[tokio::test]
    async fn a_language_set_before_its_user_is_ignored_and_kept_when_the_user_is_replaced() {
        let directory = StaticDirectory::new()
            .with_language(&id("a"), &id("u"), "fr")
            .with_user(id("a"), id("u"), id("o"));
        assert!(directory
            .preferred_language(&id("a"), &id("u"))
            .await
            .unwrap()
            .is_none());
        let directory =
            directory
                .with_language(&id("a"), &id("u"), "fr")
                .with_user(id("a"), id("u"), id("o2"));
        assert_eq!(
            directory
                .preferred_language(&id("a"), &id("u"))
                .await
                .unwrap()
                .as_deref(),
            Some("fr")
        );
        assert_eq!(
            directory.organization_of(&id("a"), &id("u")),
            Some(&id("o2"))
        );
    }

    #[tokio::test]
    async fn an_unavailable_directory_fails_every_look_up_and_debug_shows_no_token() {
        let directory = StaticDirectory::new().with_token("secret-token-1", id("a"), id("p"));
        directory.set_unavailable(true);
        assert!(matches!(
            directory.authenticate("secret-token-1").await,
            Err(PortError::Unavailable(_))
        ));
        assert!(directory.find_user(&id("a"), &id("u")).await.is_err());
        directory.set_unavailable(false);
        assert!(directory
            .authenticate("secret-token-1")
            .await
            .unwrap()
            .is_some());
        assert!(!format!("{directory:?}").contains("secret-token-1"));
    }
}
