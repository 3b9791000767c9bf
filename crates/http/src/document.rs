//! The OpenAPI document's facts that the handlers' annotations cannot state, written from the
//! same constants and patterns as the checks they describe (`otp_sms_core`'s bounds and
//! patterns), so that the document and the server cannot drift: the bounds and patterns of
//! every id, code, number and key; the proto oneofs as properties that exclude each other; the
//! query parameters that exclude each other; links from an add to the calls on its
//! registration; and the title, version, license and tags that reflection serves
//! (docs/api.md, "The OpenAPI document").

use otp_sms_core::{
    IDEMPOTENCY_KEY_PATTERN, ID_PATTERN, MAX_CODE_CHARS, MAX_IDEMPOTENCY_KEY_CHARS, MAX_ID_CHARS,
    MAX_PHONE_CHARS,
};
use serde_json::json;
use utoipa::openapi::info::LicenseBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{Components, OpenApi, RefOr};

/// The extension on an operation that lists its query parameters that exclude each other: a
/// request with two of one group is refused (400), as ZITADEL's gateway refuses a second
/// field of one oneof. OpenAPI 3.1 has no keyword for it.
pub const EXCLUSIVE_PARAMETERS: &str = "x-mutually-exclusive-parameters";

/// The query parameters that exclude each other, by group.
const EXCLUSIVE_GROUPS: [[&str; 2]; 2] = [
    ["instance.id", "instance.domain"],
    ["organization.orgId", "organization.orgDomain"],
];

/// Per operation, the 400s a request valid by the document may still get, because no schema
/// can say them: the fields refused for what they mean (a number the numbering plan does not
/// have, a code that is not the one sent), and whether the registration's state may refuse the
/// call (FAILED_PRECONDITION). Every other 400 is one the document's schemas rule out.
pub const REFUSALS_BEYOND_THE_SCHEMA: [(&str, &[&str], bool); 8] = [
    (
        "ZITADELUsers_AddOTPSMSAuthenticator",
        &["phone.number"],
        true,
    ),
    ("ZITADELUsers_VerifyOTPSMSRegistration", &["code"], true),
    ("ZITADELUsers_RemoveOTPSMSAuthenticator", &[], true),
    ("OTPSMSExtensions_ResendOTPSMSCode", &[], true),
    ("OTPSMSExtensions_UnlockOTPSMSVerification", &[], true),
    ("OTPSMSExtensions_ListOTPSMSAuthenticators", &[], false),
    ("OTPSMSSignIn_RequestOTPSMSChallenge", &[], true),
    ("OTPSMSSignIn_CheckOTPSMSChallenge", &["code"], true),
];

/// The services whose calls the document lists, as reflection names them (each operation's
/// id starts with its service's short name, as protoc-gen-openapiv2 writes it).
const TAGS: [(&str, &str); 3] = [
    (
        "ZITADELUsers",
        "zitadel.resources.user.v3alpha.ZITADELUsers: the contract's OTP SMS calls.",
    ),
    (
        "OTPSMSExtensions",
        "otpsms.v1.OTPSMSExtensions: this server's resend, unlock and list.",
    ),
    (
        "OTPSMSSignIn",
        "otpsms.v1.OTPSMSSignIn: sign-in with a registered phone (challenge, then check).",
    ),
];

/// Writes the facts into `document`.
pub(crate) fn state_facts(document: &mut OpenApi) {
    document.info.license = Some(
        LicenseBuilder::new()
            .name("Apache 2.0")
            .identifier(Some("Apache-2.0"))
            .build(),
    );
    document.tags = Some(
        TAGS.iter()
            .map(|(name, about)| {
                TagBuilder::new()
                    .name(*name)
                    .description(Some(*about))
                    .build()
            })
            .collect(),
    );
    for item in document.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
            operation_facts(operation);
        }
    }
    if let Some(components) = document.components.as_mut() {
        schema_facts(components);
    }
}

fn operation_facts(operation: &mut Operation) {
    let id = operation.operation_id.clone().unwrap_or_default();
    if let Some((service, _)) = id.split_once('_') {
        operation.tags = Some(vec![service.to_owned()]);
    }
    for parameter in operation.parameters.iter_mut().flatten() {
        let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else {
            continue;
        };
        match parameter.parameter_in {
            ParameterIn::Header => {
                schema.min_length = Some(1);
                schema.max_length = Some(MAX_IDEMPOTENCY_KEY_CHARS);
                schema.pattern = Some(IDEMPOTENCY_KEY_PATTERN.into());
            }
            _ => {
                schema.min_length = Some(1);
                schema.max_length = Some(MAX_ID_CHARS);
                schema.pattern = Some(ID_PATTERN.into());
            }
        }
        if let Some(other) = EXCLUSIVE_GROUPS.iter().find_map(|group| {
            let at = group.iter().position(|name| *name == parameter.name)?;
            Some(group[1 - at])
        }) {
            let said = parameter.description.get_or_insert_with(String::new);
            said.push_str(&format!(
                " Not with `{other}`: a request with both is refused (400), as ZITADEL's gateway refuses a second field of one oneof."
            ));
        }
    }
    let groups = json!(EXCLUSIVE_GROUPS);
    operation
        .extensions
        .get_or_insert_with(Default::default)
        .insert(EXCLUSIVE_PARAMETERS.into(), groups);
    bad_request(operation, &id);
    // The verify body: the code as a JSON string.
    if id == "ZITADELUsers_VerifyOTPSMSRegistration" {
        let body = operation.request_body.as_mut().and_then(|b| {
            b.content
                .values_mut()
                .next()
                .and_then(|c| c.schema.as_mut())
        });
        if let Some(RefOr::T(Schema::Object(code))) = body {
            code.min_length = Some(1);
            code.max_length = Some(MAX_CODE_CHARS);
        }
    }
    // An add's answer names the registration the other calls take.
    if id == "ZITADELUsers_AddOTPSMSAuthenticator" {
        if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
            for (name, target) in [
                ("verify", "ZITADELUsers_VerifyOTPSMSRegistration"),
                ("remove", "ZITADELUsers_RemoveOTPSMSAuthenticator"),
                ("resendCode", "OTPSMSExtensions_ResendOTPSMSCode"),
            ] {
                let mut link = LinkBuilder::new()
                    .parameter("path.id", "$request.path.id")
                    .parameter("path.otpSmsId", "$response.body#/otpSmsId")
                    .description("The registration the add created.")
                    .build();
                // utoipa 5 writes `operation_id` in snake case; the specification's field
                // is `operationId`.
                link.extensions
                    .get_or_insert_with(Default::default)
                    .insert("operationId".into(), json!(target));
                ok.links.insert(name.into(), RefOr::T(link));
            }
        }
    }
}

/// Per schema: its required fields, each field's bounds and pattern, the values a field may
/// take, and the fields that exclude each other (a proto oneof; none set is the default).
fn schema_facts(components: &mut Components) {
    type Facts = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, usize, usize, Option<&'static str>)],
        &'static [&'static str],
    );
    let facts: [Facts; 5] = [
        (
            "v3alphaSetPhone",
            &["number"],
            &[("number", 1, MAX_PHONE_CHARS, None)],
            &["sendCode", "returnCode", "isVerified"],
        ),
        (
            "v1ResendOTPSMSCodeRequest",
            &[],
            &[],
            &["sendCode", "returnCode"],
        ),
        (
            "v1RequestOTPSMSChallengeRequest",
            &["binding"],
            &[
                ("binding", 1, MAX_ID_CHARS, Some(ID_PATTERN)),
                ("otpSmsId", 1, MAX_ID_CHARS, Some(ID_PATTERN)),
            ],
            &[],
        ),
        (
            "v1CheckOTPSMSChallengeRequest",
            &["binding", "otpSms"],
            &[
                ("binding", 1, MAX_ID_CHARS, Some(ID_PATTERN)),
                ("otpSmsId", 1, MAX_ID_CHARS, Some(ID_PATTERN)),
            ],
            &[],
        ),
        (
            "v1CheckOTP",
            &["code"],
            &[("code", 1, MAX_CODE_CHARS, None)],
            &[],
        ),
    ];
    for (name, required, bounded, exclusive) in facts {
        let Some(RefOr::T(Schema::Object(schema))) = components.schemas.get_mut(name) else {
            continue;
        };
        schema.required = required.iter().map(|r| (*r).to_owned()).collect();
        for (field, min, max, pattern) in bounded {
            if let Some(RefOr::T(Schema::Object(field))) = schema.properties.get_mut(*field) {
                field.min_length = Some(*min);
                field.max_length = Some(*max);
                field.pattern = pattern.map(str::to_owned);
            }
        }
        if name == "v3alphaSetPhone" {
            // isVerified, when set, must be true.
            if let Some(RefOr::T(Schema::Object(flag))) = schema.properties.get_mut("isVerified") {
                flag.enum_values = Some(vec![json!(true), json!(null)]);
            }
        }
        if !exclusive.is_empty() {
            let pairs: Vec<_> = exclusive
                .iter()
                .enumerate()
                .flat_map(|(i, a)| {
                    exclusive[i + 1..]
                        .iter()
                        .map(move |b| json!({"required": [a, b]}))
                })
                .collect();
            schema
                .extensions
                .get_or_insert_with(Default::default)
                .insert("not".into(), json!({ "anyOf": pairs }));
        }
    }
}

/// The operation's 400 answer, described from [`REFUSALS_BEYOND_THE_SCHEMA`].
fn bad_request(operation: &mut Operation, id: &str) {
    let Some((_, fields, state)) = REFUSALS_BEYOND_THE_SCHEMA.iter().find(|(op, ..)| *op == id)
    else {
        return;
    };
    let mut said = String::from("A request the schemas allow is refused");
    match (fields.is_empty(), state) {
        (true, false) => said.push_str(" never for its shape or content"),
        _ => {
            let mut reasons = Vec::new();
            if !fields.is_empty() {
                let named: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
                reasons.push(format!(
                    "INVALID_ARGUMENT for what {} means (a number the numbering plan does not have, a code that is not the one sent)",
                    named.join(", ")
                ));
            }
            if *state {
                reasons.push(
                    "FAILED_PRECONDITION when the registration's state forbids the call (verified, locked, expired, used)".into(),
                );
            }
            said.push_str(" only with ");
            said.push_str(&reasons.join(", or "));
        }
    }
    said.push_str(
        ". Other 400s answer requests the schemas rule out: bounds, patterns, fields that exclude each other, and the query parameters of one group of `x-mutually-exclusive-parameters`.",
    );
    // The same google.rpc.Status body as every other error answer.
    let content = match operation.responses.responses.get("default") {
        Some(RefOr::T(default)) => default.content.clone(),
        _ => Default::default(),
    };
    let mut response = utoipa::openapi::Response::new(said);
    response.content = content;
    operation
        .responses
        .responses
        .insert("400".into(), RefOr::T(response));
}
