//! The request and response types of the calls, with fields as the contract names them.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::code::VerificationCode;
use crate::ids::RegistrationId;
use crate::phone::mask_number;

/// The request's optional `organization`: where the caller expects the user to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrganizationRef {
    /// `organization.org_id`.
    Id(String),
    /// `organization.org_domain`.
    Domain(String),
}

/// The `verification` oneof of `SetPhone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhoneVerification {
    /// `send_code`, also the default when nothing is set.
    #[default]
    SendCode,
    /// `return_code`.
    ReturnCode,
    /// `is_verified`, which must be `true` when set.
    IsVerified(bool),
}

/// `AddOTPSMSAuthenticator`, with fields as the caller sent them. `Debug` masks the number.
#[derive(Clone, PartialEq, Eq)]
pub struct AddRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
    /// `phone.number`.
    pub phone: String,
    /// `phone.verification`.
    pub verification: PhoneVerification,
}

/// `VerifyOTPSMSRegistration`, with fields as the caller sent them. `Debug` hides the code.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
    /// `otp_sms_id`.
    pub registration_id: String,
    /// `code`.
    pub code: String,
}

impl fmt::Debug for AddRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddRequest")
            .field("user_id", &self.user_id)
            .field("organization", &self.organization)
            .field("phone", &mask_number(&self.phone))
            .field("verification", &self.verification)
            .finish()
    }
}

impl fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("user_id", &self.user_id)
            .field("organization", &self.organization)
            .field("registration_id", &self.registration_id)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// A user-level call (the unlock extension), as the caller sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
}

/// `RemoveOTPSMSAuthenticator` (and the target of a resend), as the caller sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
    /// `otp_sms_id`.
    pub registration_id: String,
}

/// `zitadel.object.v3alpha.OwnerType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerType {
    /// `OWNER_TYPE_UNSPECIFIED` = 0.
    Unspecified = 0,
    /// `OWNER_TYPE_SYSTEM` = 1.
    System = 1,
    /// `OWNER_TYPE_INSTANCE` = 2.
    Instance = 2,
    /// `OWNER_TYPE_ORG` = 3.
    Org = 3,
}

/// `zitadel.object.v3alpha.Owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `type`.
    pub owner_type: OwnerType,
    /// `id`.
    pub id: String,
}

/// `zitadel.resources.object.v3alpha.Details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// `id`: the registration id.
    pub id: RegistrationId,
    /// `created`: time of the registration's first event.
    pub created: DateTime<Utc>,
    /// `changed`: time of the last event applied.
    pub changed: DateTime<Utc>,
    /// `owner`: the user's organization.
    pub owner: Owner,
}

/// The result of an add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResponse {
    /// `details`.
    pub details: Details,
    /// `otp_sms_id`.
    pub registration_id: RegistrationId,
    /// `verification_code`: present only with `return_code`.
    pub verification_code: Option<VerificationCode>,
}

/// The result of a resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendResponse {
    /// `details`.
    pub details: Details,
    /// The new code, when it was asked for with [`Delivery::Return`](crate::Delivery::Return).
    pub verification_code: Option<VerificationCode>,
}

/// A sign-in challenge (ZITADEL's session API: `RequestChallenges.otp_sms`): a code sent to, or
/// returned for, one of the user's verified registrations, bound to the host's `binding`.
///
/// Built with [`ChallengeRequest::new`]; fields may be added in a minor release.
///
/// ```
/// use otp_sms_core::ChallengeRequest;
/// let req = ChallengeRequest::new("user-1", "session-7f3a").for_registration("reg-1");
/// assert_eq!(req.registration_id.as_deref(), Some("reg-1"));
/// assert!(!req.return_code);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChallengeRequest {
    /// `user_id`.
    pub user_id: String,
    /// `organization`: where the caller expects the user.
    pub organization: Option<OrganizationRef>,
    /// The registration to send to; `None`: the user's most recently verified one.
    pub registration_id: Option<String>,
    /// The host's binding: its session or transaction id (1..=200 characters). Only a check
    /// under the same binding can complete the challenge.
    pub binding: String,
    /// Return the code instead of sending it (`user.write`, as for a registration code).
    pub return_code: bool,
}

impl ChallengeRequest {
    /// A challenge for `user_id`'s most recently verified registration, sent by SMS, bound to
    /// `binding`.
    pub fn new(user_id: impl Into<String>, binding: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            organization: None,
            registration_id: None,
            binding: binding.into(),
            return_code: false,
        }
    }

    /// The same, for the registration `id`.
    pub fn for_registration(mut self, id: impl Into<String>) -> Self {
        self.registration_id = Some(id.into());
        self
    }

    /// The same, with the user expected in `organization`.
    pub fn in_organization(mut self, organization: OrganizationRef) -> Self {
        self.organization = Some(organization);
        self
    }

    /// The same, with the code returned instead of sent.
    pub fn returning_code(mut self) -> Self {
        self.return_code = true;
        self
    }
}

/// The answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChallengeResponse {
    /// `details` of the registration the challenge was issued for.
    pub details: Details,
    /// The registration the code went to.
    pub registration_id: RegistrationId,
    /// The code, when it was asked for with `return_code`.
    pub code: Option<VerificationCode>,
}

/// A sign-in check (ZITADEL's session API: `Checks.otp_sms`): the code the user typed, under
/// the host's `binding`.
///
/// Built with [`CheckRequest::new`]; fields may be added in a minor release.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckRequest {
    /// `user_id`.
    pub user_id: String,
    /// `organization`: where the caller expects the user.
    pub organization: Option<OrganizationRef>,
    /// The registration the challenge was issued for; `None`: the user's registration that
    /// holds a challenge under `binding`.
    pub registration_id: Option<String>,
    /// The binding the challenge was issued under.
    pub binding: String,
    /// The code (1..=200 characters).
    pub code: String,
}

impl CheckRequest {
    /// A check of `code` for `user_id` under `binding`.
    pub fn new(
        user_id: impl Into<String>,
        binding: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        Self {
            user_id: user_id.into(),
            organization: None,
            registration_id: None,
            binding: binding.into(),
            code: code.into(),
        }
    }

    /// The same, for the registration `id`.
    pub fn for_registration(mut self, id: impl Into<String>) -> Self {
        self.registration_id = Some(id.into());
        self
    }

    /// The same, with the user expected in `organization`.
    pub fn in_organization(mut self, organization: OrganizationRef) -> Self {
        self.organization = Some(organization);
        self
    }
}

impl fmt::Debug for CheckRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckRequest")
            .field("user_id", &self.user_id)
            .field("organization", &self.organization)
            .field("registration_id", &self.registration_id)
            .field("binding", &"<redacted>")
            .field("code", &"<redacted>")
            .finish()
    }
}

/// The answer to a successful check: the factor a host stamps on its session (`sms`), at
/// `details.changed` (when the success was recorded), by `registration_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckResponse {
    /// `details` of the registration that proved the factor.
    pub details: Details,
    /// The registration whose code was checked.
    pub registration_id: RegistrationId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_request_shows_neither_the_whole_number_nor_the_code() {
        let add = AddRequest {
            user_id: "alice".into(),
            organization: None,
            phone: "+41791234567".into(),
            verification: PhoneVerification::SendCode,
        };
        let shown = format!("{add:?}");
        assert!(
            !shown.contains("+41791234567") && shown.contains("+41*******67"),
            "{shown}"
        );
        let verify = VerifyRequest {
            user_id: "alice".into(),
            organization: None,
            registration_id: "r".into(),
            code: "24682468".into(),
        };
        let shown = format!("{verify:?}");
        assert!(
            !shown.contains("24682468") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
