//! Writes the committed seed corpus, `fuzz/seeds/<target>/`: a few well-formed inputs per
//! target, from which the fuzzer mutates. Run it again when a call, a route or a format
//! changes: `cargo run -p otp-sms-fuzz --example write_seeds`.

use std::path::Path;

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::json;

const ALICE: &str = "authorization: Bearer alice-token";
const ADMIN: &str = "authorization: Bearer admin-token";

fn main() {
    let seeds = otp_sms_fuzz::replay::root().join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    json_api(&seeds.join("json_api"));
    rpc(&seeds);
    reports(&seeds.join("reports"));
    text_seeds(&seeds);
    println!("seeds written to {}", seeds.display());
}

fn write(folder: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(folder).expect("the seed folder");
    std::fs::write(folder.join(name), bytes).expect("a seed file");
}

/// A request's text: the request line, header lines, a blank line, the body.
fn request(line: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{line}\n");
    for header in headers {
        text.push_str(header);
        text.push('\n');
    }
    text.push('\n');
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn json_api(folder: &Path) {
    let users = "/resources/v3alpha/users";
    let json = "content-type: application/json";
    let calls: &[(&str, String, &[&str], serde_json::Value)] = &[
        (
            "add_return",
            format!("POST {users}/alice/otp_sms"),
            &[ALICE, json, "idempotency-key: k1"],
            json!({"number": "+41791234569", "returnCode": {}}),
        ),
        (
            "add_send",
            format!("POST {users}/admin/otp_sms?instance.id=inst-1"),
            &[ADMIN, json, "x-forwarded-for: 203.0.113.7"],
            json!({"number": "+41 79 123 45 70", "sendCode": {}}),
        ),
        (
            "verify",
            format!("POST {users}/alice/otp_sms/reg-3/_verify"),
            &[ALICE, json],
            json!({"code": "246810"}),
        ),
        (
            "verify_wrong",
            format!("POST {users}/alice/otp_sms/reg-3/_verify"),
            &[ALICE, json],
            json!({"code": "12345678"}),
        ),
        (
            "resend",
            format!("POST {users}/alice/otp_sms/reg-3/_resend_code?organization.id=org-1"),
            &[ALICE, json],
            json!({"returnCode": {}}),
        ),
        (
            "remove",
            format!("DELETE {users}/admin/otp_sms/reg-2"),
            &[ADMIN],
            json!(null),
        ),
        (
            "unlock",
            format!("POST {users}/alice/otp_sms/_unlock?instance.domain=localhost"),
            &[ADMIN, json],
            json!({}),
        ),
        (
            "challenge",
            format!("POST {users}/alice/otp_sms/_challenge"),
            &[ALICE, json, "forwarded: for=198.51.100.2"],
            json!({"otpSmsId": "reg-1", "binding": "session-1", "challenges": {"otpSms": {"returnCode": true}}}),
        ),
        (
            "check",
            format!("POST {users}/alice/otp_sms/_check"),
            &[ALICE, json],
            json!({"binding": "session-1", "otpSms": {"code": "246810"}}),
        ),
        (
            "list",
            format!("GET {users}/alice/otp_sms"),
            &[ADMIN],
            json!(null),
        ),
    ];
    for (name, line, headers, body) in calls {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).unwrap()
        };
        write(folder, name, request(line, headers, &body));
    }
}

/// One example message per method, in proto JSON.
fn examples() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    let users = otp_sms_grpc::SERVICE_NAME;
    let ext = otp_sms_grpc::EXTENSIONS_SERVICE_NAME;
    let sign_in = otp_sms_grpc::SIGN_IN_SERVICE_NAME;
    vec![
        (
            users,
            "AddOTPSMSAuthenticator",
            json!({"id": "alice", "phone": {"number": "+41791234571", "returnCode": {}}}),
        ),
        (
            users,
            "VerifyOTPSMSRegistration",
            json!({"id": "alice", "otpSmsId": "reg-3", "code": "246810"}),
        ),
        (
            users,
            "RemoveOTPSMSAuthenticator",
            json!({"id": "admin", "otpSmsId": "reg-2", "instance": {"id": "inst-1"}}),
        ),
        (ext, "UnlockOTPSMSVerification", json!({"id": "alice"})),
        (
            ext,
            "ListOTPSMSAuthenticators",
            json!({"id": "alice", "organization": {"orgId": "org-1"}}),
        ),
        (
            sign_in,
            "RequestOTPSMSChallenge",
            json!({"id": "alice", "otpSmsId": "reg-1", "binding": "b-1", "otpSms": {"returnCode": true}}),
        ),
        (
            sign_in,
            "CheckOTPSMSChallenge",
            json!({"id": "alice", "binding": "b-1", "otpSms": {"code": "246810"}}),
        ),
    ]
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

fn rpc(seeds: &Path) {
    let pool = DescriptorPool::decode(otp_sms_grpc::FILE_DESCRIPTOR_SET).unwrap();
    for (service, method, example) in examples() {
        let input = pool
            .get_service_by_name(service)
            .unwrap()
            .methods()
            .find(|m| m.name() == method)
            .unwrap()
            .input();
        let message = DynamicMessage::deserialize(input, example.clone())
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let binary = prost::Message::encode_to_vec(&message);
        let json = serde_json::to_vec(&example).unwrap();
        let path = format!("/{service}/{method}");
        let connect = seeds.join("connect");
        write(
            &connect,
            &format!("{method}.json"),
            request(
                &format!("POST {path}"),
                &[
                    ALICE,
                    "content-type: application/json",
                    "connect-protocol-version: 1",
                ],
                &json,
            ),
        );
        write(
            &connect,
            &format!("{method}.proto"),
            request(
                &format!("POST {path}"),
                &[
                    ADMIN,
                    "content-type: application/proto",
                    "connect-timeout-ms: 5000",
                ],
                &binary,
            ),
        );
        write(
            &connect,
            &format!("{method}.gzip"),
            request(
                &format!("POST {path}"),
                &[
                    ALICE,
                    "content-type: application/json",
                    "content-encoding: gzip",
                ],
                &json,
            ),
        );
        write(
            &seeds.join("grpc"),
            method,
            request(
                &format!("POST {path} HTTP/2"),
                &[ALICE, "content-type: application/grpc", "grpc-timeout: 5S"],
                &frame(&binary),
            ),
        );
        write(
            &seeds.join("grpc_web"),
            method,
            request(
                &format!("POST {path}"),
                &[
                    ADMIN,
                    "content-type: application/grpc-web+proto",
                    "x-grpc-web: 1",
                ],
                &frame(&binary),
            ),
        );
        write(
            &seeds.join("grpc_web"),
            &format!("{method}.text"),
            request(
                &format!("POST {path}"),
                &[
                    ALICE,
                    "content-type: application/grpc-web-text",
                    "accept: application/grpc-web-text",
                ],
                &frame(&binary),
            ),
        );
    }
}

fn reports(folder: &Path) {
    let form = "content-type: application/x-www-form-urlencoded";
    write(
        folder,
        "twilio_delivered",
        request(
            "POST /sms/status/twilio?instance=inst-1&otp_sms_id=reg-2&n=1&iat=now",
            &[form, "x-fuzz-sign: twilio"],
            b"MessageStatus=delivered&MessageSid=SM1",
        ),
    );
    write(
        folder,
        "twilio_failed_unsigned",
        request(
            "POST /sms/status/twilio?instance=inst-1&otp_sms_id=reg-2&n=1",
            &[form],
            b"MessageStatus=undelivered&ErrorCode=30003",
        ),
    );
    let client_ref = otp_sms_providers::vonage::client_ref("inst-1", "reg-2", 1);
    let params = serde_urlencoded::to_string([
        ("status", "delivered"),
        ("err-code", "0"),
        ("api-key", "abcd1234"),
        ("timestamp", "now"),
        ("client-ref", client_ref.as_str()),
        ("msisdn", "41791234568"),
    ])
    .unwrap();
    write(
        folder,
        "vonage_get",
        request(
            &format!("GET /sms/status/vonage/inst-1/reg-2/1?{params}"),
            &["x-fuzz-sign: vonage"],
            b"",
        ),
    );
    write(
        folder,
        "vonage_post",
        request(
            "POST /sms/status/vonage/inst-1/reg-2/1",
            &[form, "x-fuzz-sign: vonage"],
            params.as_bytes(),
        ),
    );
}

fn text_seeds(seeds: &Path) {
    for (name, number) in [
        ("mobile", "+41791234567"),
        ("formatted", "+41 (79) 123-45-67"),
        ("us", "+1 650 253 0000"),
        ("premium", "+19005550123"),
        ("italy", "+390236618300"),
        ("prefix", "+4407911123456"),
        ("tel", "tel:+41-79-123-45-67"),
        ("letters", "+1 800 FLOWERS"),
        ("nongeo", "+80012345678"),
        ("bad", "0791234567"),
    ] {
        write(&seeds.join("phone"), name, number);
    }
    write(
        &seeds.join("headers"),
        "all",
        "Bearer alice-token\n10.1.2.3\n203.0.113.9, 10.0.0.5\n\nk-1",
    );
    write(&seeds.join("headers"), "forwarded", "bearer  t \n::1\n\nfor=\"[2001:db8::1]:443\";proto=https, for=10.0.0.1\n\"quoted \\\" key\"");
    write(
        &seeds.join("headers"),
        "two_keys",
        "Basic abc\n192.0.2.1\nx\nfor=unknown\na\nb",
    );
    // The fixture's own history, as the stores keep it: one row per event.
    let rows = otp_sms_fuzz::fixture::with_new_fixture(|fixture| {
        otp_sms_fuzz::fixture::runtime().block_on(async {
            use otp_sms_core::{EventPayload, EventStore};
            let events = fixture.store.read_all(0, usize::MAX).await.unwrap();
            events
                .iter()
                .map(|e| {
                    let json = e.event.to_json().unwrap();
                    format!("{} {} {json}\n", e.event.event_type(), e.event.revision())
                })
                .collect::<String>()
        })
    });
    write(&seeds.join("stored_events"), "fixture", rows);
    // Every type the stores may read, so that the fuzzer starts from each decoder.
    let every_type: String = otp_sms_core::Event::TYPES
        .iter()
        .map(|t| format!("{t} 1 {{}}\n"))
        .collect();
    write(&seeds.join("stored_events"), "every_type", every_type);
    let long = format!(
        "{}\n{}{{code}}[]€\n\n\nexample.com\n\n\n123456\n1",
        "a".repeat(40),
        "b".repeat(140)
    );
    let texts = [
        ("outbox", "not_a_delivery", r#"{"instance":"inst-1","user":"alice","number":1}"#),
        ("outbox", "empty", "{}"),
        ("sms_text", "webotp", "Acme\nIhr {app}-Code: {code}\\nGültig {minutes} Min.\nde\nAnmeldung: {code}\nid.acme.example\nFA+9qCX9VSu\nde-CH\n12345678\n5"),
        ("sms_text", "ucs2", "Ακμή\nΚωδικός {code} 😀\nel\n\n\n\nel\nA1B2C3\n10"),
        ("sms_text", "long", &long),
        ("config", "bad_type", "[server]\nmax_body_bytes = \"many\"\n"),
        ("config", "unknown_key", "[abuse]\nwhatever = 1\n"),
    ];
    for (target, name, text) in texts {
        write(&seeds.join(target), name, text);
    }
    let dev =
        std::fs::read_to_string(otp_sms_fuzz::replay::root().join("../crates/server/dev.toml"))
            .unwrap();
    write(&seeds.join("config"), "dev", dev);
}
