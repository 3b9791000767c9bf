//! `[[instances]]`, `[[organizations]]`, `[[users]]` and `[[tokens]]`: who the server knows,
//! as a [`StaticDirectory`] (the server's user directory, authorizer and authenticator). Every
//! reference is checked: a user of an undefined organization, a token of an undefined user or
//! a token listed twice stops the start.

use std::collections::HashSet;

use otp_sms_core::{InstanceId, OrganizationId, PrincipalId, UserId};
use otp_sms_directory::StaticDirectory;
use serde::Deserialize;

use super::{id, AbuseConfig, Config, ConfigError};

/// `[[instances]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The instance id.
    pub id: String,
    /// Domains that name it (`instance.domain`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// This instance's abuse rules, laid over `[abuse]`.
    #[serde(default)]
    pub abuse: Option<AbuseConfig>,
}

/// `[[organizations]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    /// The instance it belongs to.
    pub instance: String,
    /// The organization id.
    pub id: String,
    /// Its primary domain (`organization.org_domain`), if any.
    #[serde(default)]
    pub domain: Option<String>,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The instance.
    pub instance: String,
    /// The user id.
    pub id: String,
    /// The user's organization.
    pub organization: String,
    /// The user's preferred language (a BCP 47 tag such as `de`), for the text of the SMS.
    #[serde(default)]
    pub language: Option<String>,
}

/// `[[tokens]]`: a personal access token of a user. `Debug` hides the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret token, as sent in `Authorization: Bearer`.
    pub token: String,
    /// The instance.
    pub instance: String,
    /// The user the token acts as.
    pub user: String,
    /// Permissions the token holds in the user's organization, e.g. `user.write`.
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("instance", &self.instance)
            .field("user", &self.user)
            .field("permissions", &self.permissions)
            .finish()
    }
}

impl Config {
    /// The directory of the file's instances, organizations, users and tokens, each
    /// reference checked.
    pub fn directory(&self) -> Result<StaticDirectory, ConfigError> {
        let mut d = StaticDirectory::new();
        let mut instances = HashSet::new();
        for i in &self.instances {
            let instance = id(InstanceId::parse, "instances.id", &i.id)?;
            for domain in &i.domains {
                d = d.with_instance_domain(domain, instance.clone());
            }
            instances.insert(instance);
        }
        let known_instance = |name: &str| -> Result<InstanceId, ConfigError> {
            let instance = id(InstanceId::parse, "instance", name)?;
            if instances.contains(&instance) {
                Ok(instance)
            } else {
                Err(ConfigError::Invalid(format!(
                    "instance `{name}` is not defined"
                )))
            }
        };
        let mut orgs = HashSet::new();
        for o in &self.organizations {
            let instance = known_instance(&o.instance)?;
            let org = id(OrganizationId::parse, "organizations.id", &o.id)?;
            if let Some(domain) = &o.domain {
                d = d.with_organization_domain(instance.clone(), domain, org.clone());
            }
            orgs.insert((instance, org));
        }
        for u in &self.users {
            let instance = known_instance(&u.instance)?;
            let org = id(OrganizationId::parse, "users.organization", &u.organization)?;
            if !orgs.contains(&(instance.clone(), org.clone())) {
                return Err(ConfigError::Invalid(format!(
                    "user `{}`: organization `{}` is not defined",
                    u.id, u.organization
                )));
            }
            let user = id(UserId::parse, "users.id", &u.id)?;
            d = d.with_user(instance.clone(), user.clone(), org);
            if let Some(language) = &u.language {
                d = d.with_language(&instance, &user, language);
            }
        }
        for t in &self.tokens {
            if t.token.len() < 8 {
                return Err(ConfigError::Invalid(format!(
                    "token of user `{}` is shorter than 8 characters",
                    t.user
                )));
            }
            let instance = known_instance(&t.instance)?;
            let user = id(UserId::parse, "tokens.user", &t.user)?;
            let Some(org) = d.organization_of(&instance, &user).cloned() else {
                return Err(ConfigError::Invalid(format!(
                    "token: user `{}` is not defined in instance `{}`",
                    t.user, t.instance
                )));
            };
            let principal = id(PrincipalId::parse, "tokens.user", &t.user)?;
            for permission in &t.permissions {
                d = d.with_grant(instance.clone(), principal.clone(), org.clone(), permission);
            }
            if d.has_token(&t.token) {
                return Err(ConfigError::Invalid("a token is listed twice".into()));
            }
            d = d.with_token(&t.token, instance, principal);
        }
        Ok(d)
    }
}
