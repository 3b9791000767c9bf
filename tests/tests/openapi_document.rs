//! The OpenAPI document as a contract a tool can trust: valid OpenAPI 3.1 by validators made
//! for it, its schema facts the server's own bounds and patterns, its links naming parameters
//! that exist, and, as a property, a request built only from what the document declares valid
//! never refused with a 400 the document does not allow for (issue 30).
//!
//! The property's requests are generated from the document itself: each operation's path,
//! query and header parameters and its JSON body from their schemas (types, `required`,
//! `minLength`/`maxLength`, `pattern`, `enum`, `oneOf`, and fields that exclude each other),
//! the query parameters of `x-mutually-exclusive-parameters` one of a group at most, mixed with
//! the fixture's real users, registrations and test code so that calls reach their checks.
//! A 400 is allowed for only as the operation's 400 answer says (`REFUSALS_BEYOND_THE_SCHEMA`):
//! FAILED_PRECONDITION where the state may refuse, INVALID_ARGUMENT for the fields it names,
//! and then for what they mean, not for their shape.

use std::collections::BTreeMap;

use otp_sms_fuzz::answer::send;
use otp_sms_fuzz::fixture::{with_new_fixture, TEST_CODE};
use otp_sms_fuzz::request::{escape, RequestText};
use otp_sms_http::{EXCLUSIVE_PARAMETERS, REFUSALS_BEYOND_THE_SCHEMA};
use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{json, Map, Value};

fn document() -> Value {
    serde_json::to_value(otp_sms_http::openapi()).unwrap()
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let said = otp_sms_tests::web::validate_openapi(&document()).expect("a valid document");
    assert!(said.contains("3.1"), "{said}");
}

/// What the server checks, the document states, from the same constants.
#[test]
fn the_document_states_the_servers_bounds_and_choices() {
    let doc = document();
    assert_eq!(doc["info"]["title"], "User Service");
    assert_eq!(doc["info"]["version"], "3.0-alpha");
    let phone = &doc["components"]["schemas"]["v3alphaSetPhone"];
    assert_eq!(phone["required"], json!(["number"]));
    assert_eq!(
        phone["properties"]["number"]["maxLength"],
        otp_sms_core::MAX_PHONE_CHARS
    );
    assert_eq!(
        phone["properties"]["isVerified"]["enum"],
        json!([true, null])
    );
    assert_eq!(
        phone["not"]["anyOf"].as_array().map(Vec::len),
        Some(3),
        "sendCode, returnCode and isVerified exclude each other: {phone}"
    );
    let resend = &doc["components"]["schemas"]["v1ResendOTPSMSCodeRequest"];
    assert_eq!(
        resend["not"],
        json!({"anyOf": [{"required": ["sendCode", "returnCode"]}]})
    );
    let check = &doc["components"]["schemas"]["v1CheckOTP"];
    assert_eq!(
        check["properties"]["code"]["maxLength"],
        otp_sms_core::MAX_CODE_CHARS
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(
                operation["tags"].as_array().is_some_and(|t| t.len() == 1),
                "{id}"
            );
            assert!(
                operation["responses"]["400"].is_object(),
                "{id}: no 400 answer"
            );
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let schema = &parameter["schema"];
                assert!(schema["maxLength"].is_u64(), "{method} {path}: {parameter}");
                assert!(
                    schema["pattern"].is_string(),
                    "{method} {path}: {parameter}"
                );
            }
        }
    }
}

/// A link names only parameters its target operation defines, in its target's location.
#[test]
fn links_name_parameters_that_exist() {
    let doc = document();
    let mut operations = BTreeMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            operations.insert(
                operation["operationId"].as_str().unwrap().to_owned(),
                operation,
            );
        }
    }
    let mut links = 0;
    for operation in operations.values() {
        for response in operation["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|l| l.1)
            {
                let target = operations[link["operationId"].as_str().unwrap()];
                for name in link["parameters"].as_object().unwrap().keys() {
                    let (place, name) = name.split_once('.').unwrap();
                    let defined = target["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["in"] == place && p["name"] == name);
                    assert!(defined, "{link} names {place}.{name}");
                }
                links += 1;
            }
        }
    }
    assert!(links >= 3, "{links} links");
}

/// An operation of the document, ready to generate requests for.
#[derive(Debug, Clone)]
struct Operation {
    id: String,
    method: String,
    path: String,
    parameters: Vec<Value>,
    body: Option<Value>,
    exclusive: Vec<Vec<String>>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push(Operation {
                id: op["operationId"].as_str().unwrap().to_owned(),
                method: method.to_uppercase(),
                path: path.clone(),
                parameters: op["parameters"].as_array().cloned().unwrap_or_default(),
                body: op["requestBody"]["content"]["application/json"]
                    .get("schema")
                    .cloned(),
                exclusive: serde_json::from_value(op[EXCLUSIVE_PARAMETERS].clone())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// Values a field of this name takes in the fixture, so that calls reach their checks.
fn meaningful(name: &str) -> Vec<&'static str> {
    match name {
        "id" => vec!["alice", "admin"],
        "otpSmsId" => vec!["reg-1", "reg-2", "reg-3"],
        "number" => vec!["+41790000009", "+41 79 123 45 70", "+19005550123", "+4179"],
        "code" => vec![TEST_CODE, "123456"],
        "binding" => vec!["session-1", "b-2"],
        "instance.id" => vec!["inst-1"],
        "organization.orgId" => vec!["org-1"],
        _ => vec![],
    }
}

/// A string by the schema's bounds and pattern (the patterns the document uses; another one
/// fails the test, so that a new pattern gets a generator).
fn string(schema: &Value, name: &str) -> BoxedStrategy<String> {
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().unwrap_or(40).min(40) as usize;
    let class = match schema["pattern"].as_str() {
        None => "(?s:.)".to_owned(),
        Some(p) if p == otp_sms_core::ID_PATTERN => "[^\\x00-\\x1F\\x7F-\\x9F]".to_owned(),
        Some(p) if p == otp_sms_core::IDEMPOTENCY_KEY_PATTERN => {
            let key = format!("[!#-~][!-~]{{{},{}}}", min.max(1) - 1, max.max(1) - 1);
            return proptest::string::string_regex(&key).unwrap().boxed();
        }
        Some(other) => panic!("no generator for the pattern {other:?} of {name}"),
    };
    let random = proptest::string::string_regex(&format!("{class}{{{min},{max}}}"))
        .unwrap()
        .boxed();
    let fits = |s: &&str| {
        (min..=schema["maxLength"].as_u64().unwrap_or(u64::MAX) as usize)
            .contains(&s.chars().count())
    };
    let known: Vec<String> = meaningful(name)
        .into_iter()
        .filter(fits)
        .map(str::to_owned)
        .collect();
    if known.is_empty() {
        random
    } else {
        prop_oneof![3 => proptest::sample::select(known), 1 => random].boxed()
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(
            doc,
            &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        ),
        None => schema,
    }
}

/// A JSON value valid by `schema`.
fn value(doc: &Value, schema: &Value, name: &str) -> BoxedStrategy<Value> {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let each: Vec<_> = alternatives.iter().map(|a| value(doc, a, name)).collect();
        return Union::new(each).boxed();
    }
    if let Some(values) = schema["enum"].as_array() {
        return proptest::sample::select(values.clone()).boxed();
    }
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => vec!["object".into()],
    };
    let each: Vec<BoxedStrategy<Value>> = types
        .iter()
        .map(|t| match t.as_str() {
            "null" => Just(Value::Null).boxed(),
            "boolean" => any::<bool>().prop_map(Value::from).boxed(),
            "string" => string(schema, name).prop_map(Value::from).boxed(),
            "object" => object(doc, schema),
            other => panic!("no generator for type {other} of {name}"),
        })
        .collect();
    Union::new(each).boxed()
}

/// An object: every required property, each other one or not, none of the combinations the
/// schema's `not: {anyOf: [{required: …}]}` rules out.
fn object(doc: &Value, schema: &Value) -> BoxedStrategy<Value> {
    let required: Vec<String> =
        serde_json::from_value(schema["required"].clone()).unwrap_or_default();
    let excluded: Vec<Vec<String>> = schema["not"]["anyOf"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| serde_json::from_value(r["required"].clone()).unwrap())
        .collect();
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, field)| {
            let name = name.clone();
            let present = value(doc, field, &name).prop_map({
                let name = name.clone();
                move |v| Some((name.clone(), v))
            });
            if required.contains(&name) {
                present.boxed()
            } else {
                prop_oneof![Just(None), present].boxed()
            }
        })
        .collect();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect::<Map<_, _>>()))
        .prop_filter("fields that exclude each other", move |object| {
            !excluded
                .iter()
                .any(|group| group.iter().all(|f| object.get(f).is_some()))
        })
        .boxed()
}

/// A request to `operation` valid by the document: its text and what it is.
fn request(doc: &Value, operation: Operation) -> BoxedStrategy<(String, Vec<u8>)> {
    let parameters: Vec<BoxedStrategy<Option<(Value, String)>>> = operation
        .parameters
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_owned();
            let p2 = p.clone();
            let present = string(&p["schema"], &name).prop_map(move |v| Some((p2.clone(), v)));
            if p["required"] == true {
                present.boxed()
            } else {
                // Mostly absent: a query naming another instance or organization is a 404
                // before any check the property is about.
                prop_oneof![5 => Just(None), 1 => present].boxed()
            }
        })
        .collect();
    let body = match &operation.body {
        // A body that is a bare string is the verify call's code.
        Some(schema) => value(doc, schema, "code").prop_map(Some).boxed(),
        None => Just(None).boxed(),
    };
    let exclusive = operation.exclusive.clone();
    let token = prop_oneof![Just("alice-token"), Just("admin-token")];
    (parameters, body, token)
        .prop_filter(
            "query parameters that exclude each other",
            move |(params, ..)| {
                let named = |n: &str| params.iter().flatten().any(|(p, _)| p["name"] == n);
                !exclusive.iter().any(|group| group.iter().all(|n| named(n)))
            },
        )
        .prop_map(move |(params, body, token)| {
            let mut path = operation.path.clone();
            let mut query = Vec::new();
            let mut headers = vec![
                format!("authorization: Bearer {token}"),
                "content-type: application/json".into(),
            ];
            for (parameter, value) in params.into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                match parameter["in"].as_str().unwrap() {
                    "path" => path = path.replace(&format!("{{{name}}}"), &escape(&value)),
                    "query" => query.push(format!("{}={}", name, escape(&value))),
                    _ => headers.push(format!("{name}: {value}")),
                }
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let mut text =
                format!("{} {path}\n{}\n\n", operation.method, headers.join("\n")).into_bytes();
            if let Some(body) = body {
                text.extend_from_slice(&serde_json::to_vec(&body).unwrap());
            }
            (operation.id.clone(), text)
        })
        .boxed()
}

/// Whether a 400 is one the operation's 400 answer allows for.
fn allowed(operation: &str, status: &Value) -> Result<(), String> {
    let (_, fields, state) = REFUSALS_BEYOND_THE_SCHEMA
        .iter()
        .find(|(id, ..)| *id == operation)
        .ok_or_else(|| format!("{operation} is not in REFUSALS_BEYOND_THE_SCHEMA"))?;
    let message = status["message"].as_str().unwrap_or_default();
    match status["code"].as_i64() {
        Some(9) if *state => Ok(()),
        Some(3) => {
            let field = message
                .strip_prefix("invalid argument `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field)
                .unwrap_or_default();
            // Refused for its shape (bounds, pattern, choices): what the schemas rule out.
            let shape = [
                "must not be empty",
                "at most",
                "control character",
                "either",
                "malformed",
                "more than once",
            ];
            if fields.contains(&field) && !shape.iter().any(|s| message.contains(s)) {
                Ok(())
            } else {
                Err(format!("a 400 the document does not allow for: {status}"))
            }
        }
        _ => Err(format!("a 400 the document does not allow for: {status}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Requests the document declares valid are never refused with a 400 it does not allow
    /// for, and never answered with a server error.
    #[test]
    fn requests_the_document_allows_get_only_the_400s_it_allows_for(
        (operation, text) in {
            let doc = document();
            Union::new(operations(&doc).into_iter().map(|op| request(&doc, op)).collect::<Vec<_>>())
        }
    ) {
        let request = RequestText::parse(&text).expect("a request");
        // A fixture of its own per case, so that a failing case shrinks to itself alone.
        let answer = with_new_fixture(|fixture| send(fixture, &request));
        let what = String::from_utf8_lossy(&text).into_owned();
        prop_assert!(!answer.status.is_server_error(), "{}: {}", what, answer.status);
        if answer.status == 400 {
            let status: Value = serde_json::from_slice(&answer.body).unwrap();
            if let Err(broken) = allowed(&operation, &status) {
                return Err(TestCaseError::fail(format!("{what}\n{broken}")));
            }
        }
    }
}
