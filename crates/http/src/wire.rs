//! The JSON shapes of the contract, by the proto3 JSON mapping: lowerCamelCase out, both
//! spellings in, RFC 3339 timestamps, enums by name.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use otp_sms_core::{Details, OwnerType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// RFC 3339 in UTC with `Z` and 0, 3, 6 or 9 fractional digits, as proto3 JSON wants.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `zitadel.object.v3alpha.Owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = v3alphaOwner)]
pub struct OwnerJson {
    /// `OwnerType` by name, e.g. `OWNER_TYPE_ORG`.
    #[serde(rename = "type")]
    #[schema(example = "OWNER_TYPE_ORG")]
    pub owner_type: String,
    /// The owner's id.
    pub id: String,
}

/// `zitadel.resources.object.v3alpha.Details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = v3alphaDetails)]
pub struct DetailsJson {
    /// The registration id.
    pub id: String,
    /// The timestamp of the first event applied to the object.
    #[schema(example = "2024-11-22T09:27:10.421Z")]
    pub created: String,
    /// The timestamp of the last event applied to the object.
    #[schema(example = "2024-11-22T09:27:10.421Z")]
    pub changed: String,
    /// The parent object representing the returned object's context.
    pub owner: OwnerJson,
}

fn owner_type_name(t: OwnerType) -> &'static str {
    match t {
        OwnerType::Unspecified => "OWNER_TYPE_UNSPECIFIED",
        OwnerType::System => "OWNER_TYPE_SYSTEM",
        OwnerType::Instance => "OWNER_TYPE_INSTANCE",
        OwnerType::Org => "OWNER_TYPE_ORG",
    }
}

impl From<&Details> for DetailsJson {
    fn from(d: &Details) -> Self {
        Self {
            id: d.id.to_string(),
            created: timestamp(d.created),
            changed: timestamp(d.changed),
            owner: OwnerJson {
                owner_type: owner_type_name(d.owner.owner_type).to_owned(),
                id: d.owner.id.clone(),
            },
        }
    }
}

/// `UnlockOTPSMSVerificationResponse`: an empty message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = v1UnlockOTPSMSVerificationResponse)]
pub struct Empty {}

/// `SendPhoneVerificationCode`: the code goes out by SMS. An empty message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = v3alphaSendPhoneVerificationCode)]
pub struct SendPhoneVerificationCode {}

/// `ReturnPhoneVerificationCode`: the code comes back in the answer. An empty message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = v3alphaReturnPhoneVerificationCode)]
pub struct ReturnPhoneVerificationCode {}

/// `SetPhone`: the body of the add call. `Debug` masks the number. Fields it does not know
/// are ignored, as ZITADEL's gateway does (a client of a newer revision keeps working); they
/// never reach the command, which is built from the known fields only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = v3alphaSetPhone)]
pub struct SetPhone {
    /// The phone number, 1..=20 characters, in international form.
    #[serde(default)]
    #[schema(example = "+41791234567")]
    pub number: String,
    /// Send the code by SMS (the default when no option is set).
    #[serde(default, alias = "send_code")]
    pub send_code: Option<SendPhoneVerificationCode>,
    /// Return the code in the response instead of sending it.
    #[serde(default, alias = "return_code")]
    pub return_code: Option<ReturnPhoneVerificationCode>,
    /// Mark the phone as verified; must be `true` when set.
    #[serde(default, alias = "is_verified")]
    pub is_verified: Option<bool>,
}

/// `AddOTPSMSAuthenticatorResponse`. `Debug` hides the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v3alphaAddOTPSMSAuthenticatorResponse)]
pub struct AddResponseJson {
    /// Details of the new registration.
    pub details: DetailsJson,
    /// The registration id, for verify and remove.
    pub otp_sms_id: String,
    /// The code, present only with `returnCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
}

/// `VerifyOTPSMSRegistrationResponse` and `RemoveOTPSMSAuthenticatorResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = v3alphaVerifyOTPSMSRegistrationResponse)]
pub struct DetailsResponseJson {
    /// Details of the registration after the call.
    pub details: DetailsJson,
}

/// The verify body in the `{"code": "…"}` form (the contract's form is the bare JSON string).
/// No `Debug`: it would show the code.
/// `RemoveOTPSMSAuthenticatorResponse`: the details of the removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = v3alphaRemoveOTPSMSAuthenticatorResponse)]
pub struct RemoveResponseJson {
    /// When and by whom the registration was removed.
    pub details: DetailsJson,
}

#[derive(Clone, Deserialize)]
pub(crate) struct CodeObject {
    pub code: String,
}

impl fmt::Debug for SetPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPhone")
            .field("number", &otp_sms_core::mask_number(&self.number))
            .field("send_code", &self.send_code)
            .field("return_code", &self.return_code)
            .field("is_verified", &self.is_verified)
            .finish()
    }
}

/// How `Debug` shows a code that may be present.
fn hidden(code: &Option<String>) -> Option<&'static str> {
    code.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for AddResponseJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddResponseJson")
            .field("details", &self.details)
            .field("otp_sms_id", &self.otp_sms_id)
            .field("verification_code", &hidden(&self.verification_code))
            .finish()
    }
}

/// `google.rpc.Status`, as protojson writes it: an empty `message` or `details` is omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = rpcStatus)]
pub struct StatusJson {
    /// The google.rpc code.
    pub code: i32,
    /// What went wrong, for a developer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Typed details: `zitadel.v1.ErrorDetail` (the error's stable id) first, then
    /// `google.rpc.BadRequest` or `google.rpc.RetryInfo` where they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
}

/// The body of the resend extension: how the new code reaches the user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = v1ResendOTPSMSCodeRequest)]
pub struct ResendCode {
    /// Send the code by SMS (the default).
    #[serde(default, alias = "send_code")]
    pub send_code: Option<SendPhoneVerificationCode>,
    /// Return the code in the response.
    #[serde(default, alias = "return_code")]
    pub return_code: Option<ReturnPhoneVerificationCode>,
}

/// The answer of the resend extension. `Debug` hides the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v1ResendOTPSMSCodeResponse)]
pub struct ResendResponseJson {
    /// Details of the registration.
    pub details: DetailsJson,
    /// The new code, present only with `returnCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
}

impl fmt::Debug for ResendResponseJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResendResponseJson")
            .field("details", &self.details)
            .field("verification_code", &hidden(&self.verification_code))
            .finish()
    }
}

/// `RequestChallenges.OTPSMS` of ZITADEL's session API: how the sign-in code travels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = v1RequestChallengesOTPSMS)]
pub struct OtpSmsChallengeJson {
    /// Return the code in the response instead of sending it (needs `user.write`).
    #[serde(default, alias = "return_code")]
    pub return_code: bool,
}

/// The body of a sign-in challenge: which registration (default: the user's most recently
/// verified one), the host's binding, and the session API's `otpSms` options.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = v1RequestOTPSMSChallengeRequest)]
pub struct ChallengeBody {
    /// The registration to send to; absent: the user's most recently verified one.
    #[serde(default, alias = "otp_sms_id")]
    pub otp_sms_id: Option<String>,
    /// The host's session or transaction id (1..=200 characters): only a check under it can
    /// complete the challenge.
    #[serde(default)]
    #[schema(example = "session-7f3a")]
    pub binding: String,
    /// How the code travels (absent: sent by SMS).
    #[serde(default, alias = "otp_sms")]
    pub otp_sms: Option<OtpSmsChallengeJson>,
}

/// `Challenges` of ZITADEL's session API: the code, when it was asked for.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v1OTPSMSChallenges)]
pub struct ChallengesJson {
    /// The code, present only with `returnCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp_sms: Option<String>,
}

/// The answer of a sign-in challenge. `Debug` hides the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v1RequestOTPSMSChallengeResponse)]
pub struct ChallengeResponseJson {
    /// Details of the registration the code went to.
    pub details: DetailsJson,
    /// The registration the code went to.
    pub otp_sms_id: String,
    /// The code, when asked for.
    pub challenges: ChallengesJson,
}

/// `CheckOTP` of ZITADEL's session API: the code the user typed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = v1CheckOTP)]
pub struct CheckOtpJson {
    /// The code (1..=200 characters).
    #[serde(default)]
    #[schema(example = "12345678")]
    pub code: String,
}

/// The body of a sign-in check: the binding the challenge was issued under, the code, and
/// which registration (absent: the one that issued the latest challenge under the binding).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = v1CheckOTPSMSChallengeRequest)]
pub struct CheckBody {
    /// The registration the challenge was issued for; absent: found by the binding.
    #[serde(default, alias = "otp_sms_id")]
    pub otp_sms_id: Option<String>,
    /// The binding the challenge was issued under.
    #[serde(default)]
    #[schema(example = "session-7f3a")]
    pub binding: String,
    /// The code.
    #[serde(default, alias = "otp_sms")]
    pub otp_sms: CheckOtpJson,
}

/// The answer of a successful sign-in check: the factor's registration, and in
/// `details.changed` when the success was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v1CheckOTPSMSChallengeResponse)]
pub struct CheckResponseJson {
    /// Details of the registration that proved the factor.
    pub details: DetailsJson,
    /// The registration whose code was checked.
    pub otp_sms_id: String,
}

impl fmt::Debug for ChallengesJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengesJson")
            .field("otp_sms", &hidden(&self.otp_sms))
            .finish()
    }
}

impl fmt::Debug for ChallengeResponseJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeResponseJson")
            .field("details", &self.details)
            .field("otp_sms_id", &self.otp_sms_id)
            .field("challenges", &self.challenges)
            .finish()
    }
}

impl fmt::Debug for ChallengeBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeBody")
            .field("otp_sms_id", &self.otp_sms_id)
            .field("binding", &"<redacted>")
            .field("otp_sms", &self.otp_sms)
            .finish()
    }
}

impl fmt::Debug for CheckBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckBody")
            .field("otp_sms_id", &self.otp_sms_id)
            .field("binding", &"<redacted>")
            .field("code", &"<redacted>")
            .finish()
    }
}

/// One registration in a user's list: upstream's `OTPSMS` (`otpSmsId`, `phone`, `isVerified`)
/// with the times. `Debug` masks the number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v1OTPSMS)]
pub struct OtpSmsJson {
    /// The registration.
    pub otp_sms_id: String,
    /// The number in E.164, masked (`+41*******67`) for a caller without `user.write`.
    pub phone: String,
    /// Whether the phone was verified.
    pub is_verified: bool,
    /// When it was added.
    pub created: String,
    /// When it was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    /// When a sign-in with it last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sign_in: Option<String>,
}

/// The user's live registrations, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = v1ListOTPSMSAuthenticatorsResponse)]
pub struct ListResponseJson {
    /// The registrations.
    pub otp_sms: Vec<OtpSmsJson>,
}

impl From<otp_sms_core::PhoneSummary> for OtpSmsJson {
    fn from(p: otp_sms_core::PhoneSummary) -> Self {
        Self {
            otp_sms_id: p.id.to_string(),
            phone: p.phone,
            is_verified: p.is_verified,
            created: timestamp(p.created),
            verified_at: p.verified_at.map(timestamp),
            last_sign_in: p.last_sign_in.map(timestamp),
        }
    }
}

impl fmt::Debug for OtpSmsJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtpSmsJson")
            .field("otp_sms_id", &self.otp_sms_id)
            .field("phone", &otp_sms_core::mask_number(&self.phone))
            .field("is_verified", &self.is_verified)
            .field("created", &self.created)
            .field("verified_at", &self.verified_at)
            .field("last_sign_in", &self.last_sign_in)
            .finish()
    }
}
