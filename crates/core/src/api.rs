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
