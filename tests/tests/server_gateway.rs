//! ZITADEL's gateway behaviour to the letter, one test per row of the comparison in
//! `docs/api.md` ("Upstream parity"), against the real server binary.

use otp_sms_grpc::proto::zitadel::object::v3alpha::{Instance, Organization};
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    zitadel_users_client::ZitadelUsersClient, VerifyOtpsmsRegistrationRequest,
};
use otp_sms_grpc::proto::zitadel::v1::ErrorDetail;
use otp_sms_tests::server::Server;
use prost::Message;
use serde_json::{json, Value};
use tonic::{Code, Request};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");
const ADD: &str = "/resources/v3alpha/users/alice/otp_sms";

fn server() -> Server {
    otp_sms_tests::server::memory_server(BIN)
}

async fn post(s: &Server, path: &str, content_type: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(s.url(path))
        .bearer_auth("token-alice")
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Row 1: unknown JSON fields are discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_1_unknown_json_fields_are_discarded() {
    let s = server();
    let body = json!({"number": "+41791234567", "returnCode": {}, "addedInARevisionToCome": true});
    let (status, added) = post(&s, ADD, Some("application/json"), &body.to_string()).await;
    assert_eq!(status, 200, "{added}");
    let id = added["otpSmsId"].as_str().unwrap();
    let code = added["verificationCode"].as_str().unwrap();
    let verify = json!({"code": code, "unknown": [1, 2]});
    let (status, body) = post(
        &s,
        &format!("{ADD}/{id}/_verify"),
        Some("application/json"),
        &verify.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Row 2: any or no Content-Type is read as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_2_any_or_no_content_type_is_json() {
    let s = server();
    let body = r#"{"number": "+41791234567", "returnCode": {}}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("*/*"),
        Some("application/octet-stream"),
    ] {
        let (status, added) = post(&s, ADD, content_type, body).await;
        assert_eq!(status, 200, "{content_type:?}: {added}");
        assert!(added["otpSmsId"].is_string());
    }
}

/// Row 3: a known path with the wrong method is HTTP 405 with code 12 UNIMPLEMENTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_3_a_wrong_method_is_405_unimplemented() {
    let s = server();
    for (method, path) in [
        (reqwest::Method::PUT, ADD.to_owned()),
        (reqwest::Method::GET, format!("{ADD}/some-id/_verify")),
        (reqwest::Method::PATCH, format!("{ADD}/some-id")),
    ] {
        let response = reqwest::Client::new()
            .request(method.clone(), s.url(&path))
            .bearer_auth("token-alice")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"code": 12, "message": "Method Not Allowed"}));
    }
    // An unknown path stays NOT_FOUND.
    let response = reqwest::Client::new()
        .get(s.url("/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

/// Row 4: errors carry `zitadel.v1.ErrorDetail {id, message}` in their details, on HTTP and on
/// gRPC; an empty `message` or `details` is omitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_4_errors_carry_zitadels_error_detail() {
    let s = server();
    // HTTP: a registration that does not exist.
    let (status, body) = post(&s, &format!("{ADD}/nothing/_verify"), None, r#""12345678""#).await;
    assert_eq!(status, 404);
    assert_eq!(
        body["details"],
        json!([{
            "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
            "id": "OTPSMS-REGISTRATION_NOT_FOUND",
            "message": body["message"],
        }])
    );
    // gRPC: the same, in grpc-status-details-bin.
    let mut client = ZitadelUsersClient::connect(s.base_url.clone())
        .await
        .unwrap();
    let mut request = Request::new(VerifyOtpsmsRegistrationRequest {
        id: "alice".into(),
        otp_sms_id: "nothing".into(),
        code: "12345678".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    let status = client
        .verify_otpsms_registration(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let details = tonic_types::pb::Status::decode(status.details()).expect("google.rpc.Status");
    let detail = &details.details[0];
    assert_eq!(
        detail.type_url,
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
    let detail = ErrorDetail::decode(detail.value.as_slice()).unwrap();
    assert_eq!(detail.id, "OTPSMS-REGISTRATION_NOT_FOUND");
    assert_eq!(detail.message, status.message());
}

/// Row 5: an empty `instance {}` or `organization {}` is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_5_an_empty_instance_or_organization_is_invalid() {
    let s = server();
    let mut client = ZitadelUsersClient::connect(s.base_url.clone())
        .await
        .unwrap();
    let verify = |instance, organization| {
        let mut request = Request::new(VerifyOtpsmsRegistrationRequest {
            instance,
            organization,
            id: "alice".into(),
            otp_sms_id: "nothing".into(),
            code: "12345678".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer token-alice".parse().unwrap());
        request
    };
    let empty_instance = client
        .verify_otpsms_registration(verify(Some(Instance { property: None }), None))
        .await
        .unwrap_err();
    assert_eq!(
        empty_instance.code(),
        Code::InvalidArgument,
        "{empty_instance:?}"
    );
    let empty_organization = client
        .verify_otpsms_registration(verify(None, Some(Organization { property: None })))
        .await
        .unwrap_err();
    assert_eq!(
        empty_organization.code(),
        Code::InvalidArgument,
        "{empty_organization:?}"
    );
    // Absent, they are simply not checked: the registration is then what is missing.
    let absent = client
        .verify_otpsms_registration(verify(None, None))
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);
    // The Connect protocol says the same in JSON.
    let response = reqwest::Client::new()
        .post(s.url("/zitadel.resources.user.v3alpha.ZITADELUsers/VerifyOTPSMSRegistration"))
        .bearer_auth("token-alice")
        .header("content-type", "application/json")
        .body(r#"{"instance": {}, "id": "alice", "otpSmsId": "x", "code": "1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument");
}

/// Row 7: the OpenAPI document is valid OpenAPI 3, and its paths, parameters and operation ids
/// are what protoc-gen-openapiv2's conventions give for these methods, derived here from the
/// compiled definitions: operation `<Service>_<Method>`, path parameters and flattened query
/// parameters by their JSON names, the body field left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_7_the_openapi_document_follows_protoc_gen_openapiv2() {
    let s = server();
    let doc: Value = reqwest::get(s.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    otp_sms_tests::web::validate_openapi(&doc).expect("a valid OpenAPI document");

    let pool = prost_reflect::DescriptorPool::decode(otp_sms_grpc::FILE_DESCRIPTOR_SET).unwrap();
    let service = pool
        .get_service_by_name("zitadel.resources.user.v3alpha.ZITADELUsers")
        .unwrap();
    // Upstream's google.api.http rules for the three methods: verb, template, body field.
    let rules = [
        (
            "AddOTPSMSAuthenticator",
            "post",
            "/resources/v3alpha/users/{id}/otp_sms",
            Some("phone"),
        ),
        (
            "VerifyOTPSMSRegistration",
            "post",
            "/resources/v3alpha/users/{id}/otp_sms/{otp_sms_id}/_verify",
            Some("code"),
        ),
        (
            "RemoveOTPSMSAuthenticator",
            "delete",
            "/resources/v3alpha/users/{id}/otp_sms/{otp_sms_id}",
            None,
        ),
    ];
    for (method_name, verb, template, body) in rules {
        let method = service.methods().find(|m| m.name() == method_name).unwrap();
        let input = method.input();
        let json_name = |field: &str| {
            input
                .get_field_by_name(field)
                .unwrap()
                .json_name()
                .to_owned()
        };
        // Path parameters by their JSON names.
        let mut path = template.to_owned();
        let mut in_path = Vec::new();
        for field in ["id", "otp_sms_id"] {
            if path.contains(&format!("{{{field}}}")) {
                path = path.replace(
                    &format!("{{{field}}}"),
                    &format!("{{{}}}", json_name(field)),
                );
                in_path.push(field.to_owned());
            }
        }
        let operation = &doc["paths"][&path][verb];
        assert!(operation.is_object(), "{verb} {path} missing");
        assert_eq!(
            operation["operationId"],
            json!(format!("ZITADELUsers_{method_name}"))
        );
        // Responses as the generator writes them from the definitions' options: the
        // operation's own 200, and the document's shared 403 and 404.
        let described = |options: prost_reflect::DynamicMessage, name: &str, status: &str| {
            let option = pool.get_extension_by_name(name).unwrap();
            let value = options.get_extension(&option).into_owned();
            let responses = value
                .as_message()
                .unwrap()
                .get_field_by_name("responses")
                .unwrap();
            let response = responses
                .as_map()
                .unwrap()
                .get(&prost_reflect::MapKey::String(status.into()))
                .unwrap()
                .as_message()
                .unwrap()
                .get_field_by_name("description")
                .unwrap();
            response.as_str().unwrap().to_owned()
        };
        let options = "grpc.gateway.protoc_gen_openapiv2.options";
        assert_eq!(
            operation["responses"]["200"]["description"],
            json!(described(
                method.options(),
                &format!("{options}.openapiv2_operation"),
                "200"
            ))
        );
        for status in ["403", "404"] {
            assert_eq!(
                operation["responses"][status]["description"],
                json!(described(
                    service.parent_file().options(),
                    &format!("{options}.openapiv2_swagger"),
                    status
                )),
                "{method_name} {status}"
            );
        }
        // Every other field but the body's is a query parameter, messages flattened.
        let mut expected: Vec<(String, &str)> =
            in_path.iter().map(|f| (json_name(f), "path")).collect();
        for field in input.fields() {
            if in_path.contains(&field.name().to_owned()) || Some(field.name()) == body {
                continue;
            }
            match field.kind() {
                prost_reflect::Kind::Message(message) => {
                    for sub in message.fields() {
                        expected.push((
                            format!("{}.{}", field.json_name(), sub.json_name()),
                            "query",
                        ));
                    }
                }
                _ => expected.push((field.json_name().to_owned(), "query")),
            }
        }
        let mut actual: Vec<(String, &str)> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            // Idempotency-Key is this project's header, beyond the definitions.
            .filter(|p| p["in"] != "header")
            .map(|p| {
                let place = if p["in"] == "path" { "path" } else { "query" };
                (p["name"].as_str().unwrap().to_owned(), place)
            })
            .collect();
        expected.sort();
        actual.sort();
        assert_eq!(actual, expected, "{method_name}");
        // The body, where there is one, is documented; a DELETE has none.
        assert_eq!(
            operation["requestBody"].is_object(),
            body.is_some(),
            "{method_name}"
        );
    }
    // Schemas are named after the proto messages, as protoc-gen-openapiv2 names them.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "rpcStatus",
        "v3alphaDetails",
        "v3alphaOwner",
        "v3alphaSetPhone",
        "v3alphaAddOTPSMSAuthenticatorResponse",
        "v3alphaVerifyOTPSMSRegistrationResponse",
        "v3alphaRemoveOTPSMSAuthenticatorResponse",
    ] {
        assert!(schemas.contains_key(name), "{name} in {:?}", schemas.keys());
    }
}

/// Row 6: the definitions the server's reflection serves carry upstream's annotations:
/// `optional` instance and organization, the phone in `communication.proto`, the
/// `google.api.http` rule of each method, `validate.rules` bounds with `google.api.field_behavior`
/// REQUIRED on the fields, and a required oneof in `Instance` and `Organization`, as
/// `grpcurl describe` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_6_reflection_serves_upstreams_files_and_annotations() {
    use prost_reflect::{DescriptorPool, Value as Field};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let s = server();
    let channel = tonic::transport::Channel::from_shared(s.base_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // As grpcurl does: the file that holds the service, then each import by name.
    let mut reflection = ServerReflectionClient::new(channel);
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    // The files as served: prost's types would drop the options' extensions.
    let mut raw: Vec<Vec<u8>> = Vec::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(
        "zitadel.resources.user.v3alpha.ZITADELUsers".into(),
    )];
    while let Some(message_request) = wanted.pop() {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message_request),
        };
        let answer = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(MessageResponse::FileDescriptorResponse(found)) = answer.message_response else {
            panic!("{answer:?}")
        };
        for bytes in &found.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            if files.iter().any(|f| f.name == file.name) {
                continue;
            }
            for dependency in &file.dependency {
                let known = files.iter().any(|f| f.name() == dependency.as_str());
                // The well-known types every client has built in.
                if !known && !dependency.starts_with("google/protobuf/") {
                    wanted.push(MessageRequest::FileByFilename(dependency.clone()));
                }
            }
            files.push(file);
            raw.push(bytes.clone());
        }
    }
    let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
    for file in [
        "zitadel/resources/user/v3alpha/user_service.proto",
        "zitadel/resources/user/v3alpha/communication.proto",
        "google/api/annotations.proto",
        "google/api/field_behavior.proto",
        "validate/validate.proto",
        "protoc-gen-openapiv2/options/annotations.proto",
        "protoc-gen-openapiv2/options/openapiv2.proto",
    ] {
        assert!(names.contains(&file), "{file} not in {names:?}");
    }
    // A FileDescriptorSet of the served bytes (field 1, repeated), dependencies first.
    let mut set = Vec::new();
    for bytes in raw.iter().rev() {
        prost::encoding::bytes::encode(1, bytes, &mut set);
    }
    let mut pool = DescriptorPool::global();
    pool.decode_file_descriptor_set(set.as_slice()).unwrap();
    let http = pool.get_extension_by_name("google.api.http").unwrap();
    let rules = pool.get_extension_by_name("validate.rules").unwrap();
    let behavior = pool
        .get_extension_by_name("google.api.field_behavior")
        .unwrap();
    let required_oneof = pool.get_extension_by_name("validate.required").unwrap();
    let openapi_operation = pool
        .get_extension_by_name("grpc.gateway.protoc_gen_openapiv2.options.openapiv2_operation")
        .unwrap();
    let openapi_field = pool
        .get_extension_by_name("grpc.gateway.protoc_gen_openapiv2.options.openapiv2_field")
        .unwrap();
    let openapi_document = pool
        .get_extension_by_name("grpc.gateway.protoc_gen_openapiv2.options.openapiv2_swagger")
        .unwrap();
    let service = pool
        .get_service_by_name("zitadel.resources.user.v3alpha.ZITADELUsers")
        .unwrap();

    // protoc-gen-openapiv2's options: the document's title and shared 403/404 answers, each
    // operation's 200 description, and each field's bounds and example.
    let document = service
        .parent_file()
        .options()
        .get_extension(&openapi_document)
        .into_owned();
    let document = document.as_message().unwrap();
    let info = document.get_field_by_name("info").unwrap();
    assert_eq!(
        info.as_message()
            .unwrap()
            .get_field_by_name("title")
            .unwrap()
            .as_str(),
        Some("User Service")
    );
    let shared = document.get_field_by_name("responses").unwrap();
    let shared = shared.as_map().unwrap();
    for status in ["403", "404"] {
        assert!(
            shared.contains_key(&prost_reflect::MapKey::String(status.into())),
            "{status}"
        );
    }
    for (method, said) in [
        (
            "AddOTPSMSAuthenticator",
            "OTP SMS authenticator successfully added",
        ),
        (
            "VerifyOTPSMSRegistration",
            "OTP SMS authenticator successfully verified",
        ),
        (
            "RemoveOTPSMSAuthenticator",
            "OTP SMS authenticator successfully removed",
        ),
    ] {
        let method = service.methods().find(|m| m.name() == method).unwrap();
        let operation = method
            .options()
            .get_extension(&openapi_operation)
            .into_owned();
        let responses = operation
            .as_message()
            .unwrap()
            .get_field_by_name("responses")
            .unwrap();
        let ok = responses
            .as_map()
            .unwrap()
            .get(&prost_reflect::MapKey::String("200".into()))
            .unwrap()
            .as_message()
            .unwrap()
            .get_field_by_name("description")
            .unwrap();
        assert_eq!(ok.as_str(), Some(said));
    }

    let verify = service
        .methods()
        .find(|m| m.name() == "VerifyOTPSMSRegistration")
        .unwrap();
    let rule = verify.options().get_extension(&http).into_owned();
    let rule = rule.as_message().unwrap();
    assert_eq!(
        rule.get_field_by_name("post").unwrap().as_str(),
        Some("/resources/v3alpha/users/{id}/otp_sms/{otp_sms_id}/_verify")
    );
    assert_eq!(
        rule.get_field_by_name("body").unwrap().as_str(),
        Some("code")
    );
    let remove = service
        .methods()
        .find(|m| m.name() == "RemoveOTPSMSAuthenticator")
        .unwrap();
    let rule = remove.options().get_extension(&http).into_owned();
    assert_eq!(
        rule.as_message()
            .unwrap()
            .get_field_by_name("delete")
            .unwrap()
            .as_str(),
        Some("/resources/v3alpha/users/{id}/otp_sms/{otp_sms_id}")
    );

    // The code: 1..200 characters, REQUIRED.
    let input = verify.input();
    let code = input.get_field_by_name("code").unwrap();
    let code_rules = code.options().get_extension(&rules).into_owned();
    let string_rules = code_rules
        .as_message()
        .unwrap()
        .get_field_by_name("string")
        .unwrap();
    let string_rules = string_rules.as_message().unwrap();
    assert_eq!(
        string_rules.get_field_by_name("min_len").unwrap().as_u64(),
        Some(1)
    );
    assert_eq!(
        string_rules.get_field_by_name("max_len").unwrap().as_u64(),
        Some(200)
    );
    let schema = code.options().get_extension(&openapi_field).into_owned();
    let schema = schema.as_message().unwrap();
    assert_eq!(
        schema.get_field_by_name("max_length").unwrap().as_u64(),
        Some(200)
    );
    assert_eq!(
        schema.get_field_by_name("example").unwrap().as_str(),
        Some("\"SKJd342k\"")
    );
    let behaviors = code.options().get_extension(&behavior).into_owned();
    assert_eq!(
        behaviors.as_list().unwrap(),
        &[Field::EnumNumber(2)],
        "REQUIRED"
    );
    // Instance and organization are optional; their oneof is required when they are set.
    for field in ["instance", "organization"] {
        let field = input.get_field_by_name(field).unwrap();
        assert!(
            field.supports_presence() && field.containing_oneof().is_some(),
            "{field:?}"
        );
        let message = field.kind();
        let message = message.as_message().unwrap();
        let oneof = message.oneofs().find(|o| o.name() == "property").unwrap();
        assert_eq!(
            oneof.options().get_extension(&required_oneof).as_bool(),
            Some(true)
        );
    }
    // The phone's number: 1..20 characters, in communication.proto.
    let set_phone = pool
        .get_message_by_name("zitadel.resources.user.v3alpha.SetPhone")
        .unwrap();
    assert_eq!(
        set_phone.parent_file().name(),
        "zitadel/resources/user/v3alpha/communication.proto"
    );
    let number_rules = set_phone
        .get_field_by_name("number")
        .unwrap()
        .options()
        .get_extension(&rules)
        .into_owned();
    let number_rules = number_rules
        .as_message()
        .unwrap()
        .get_field_by_name("string")
        .unwrap();
    assert_eq!(
        number_rules
            .as_message()
            .unwrap()
            .get_field_by_name("max_len")
            .unwrap()
            .as_u64(),
        Some(20)
    );
}
