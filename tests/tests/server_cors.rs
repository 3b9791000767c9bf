//! CORS against the real server binary, as a browser exercises it: the preflight (`OPTIONS`
//! with `Access-Control-Request-Method`) on the gRPC-web/Connect and the REST paths, and the
//! headers on the call itself, for a configured origin, an origin not configured, a server with
//! none, and development mode's loopback pages.

use otp_sms_tests::server::{config, Options, Server, TEST_KEYS};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");
const CONSOLE: &str = "https://console.example.com";
const CONNECT_PATH: &str = "/zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator";
const REST_PATH: &str = "/resources/v3alpha/users/alice/otp_sms";

fn server(extra: &str, dev: bool) -> Server {
    Server::start(
        BIN,
        &Options {
            config: config(extra),
            keys: (!dev).then(|| TEST_KEYS.into()),
            dev,
            ..Options::default()
        },
    )
}

/// A browser's preflight for a POST with the headers gRPC-web and Connect clients send.
async fn preflight(s: &Server, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, s.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent,connect-protocol-version,connect-timeout-ms,idempotency-key",
        )
        .send()
        .await
        .expect("the preflight")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_origin_passes_the_preflight_and_reads_the_status_headers() {
    let s = server(
        &format!("[server]\ncors_allowed_origins = [\"{CONSOLE}\"]\n"),
        false,
    );
    for path in [CONNECT_PATH, REST_PATH] {
        let response = preflight(&s, path, CONSOLE).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            Some(CONSOLE)
        );
        let methods = header(&response, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("post") && methods.contains("delete"),
            "{methods}"
        );
        let allowed = header(&response, "access-control-allow-headers").unwrap();
        for needed in otp_sms_server::cors::ALLOWED_HEADERS {
            assert!(allowed.contains(needed), "{needed} not in {allowed}");
        }
        assert_eq!(
            header(&response, "access-control-max-age").as_deref(),
            Some("7200")
        );
    }
    // The call itself: the page may read gRPC's status headers.
    let response = reqwest::Client::new()
        .post(s.url(CONNECT_PATH))
        .header("origin", CONSOLE)
        .header("content-type", "application/json")
        .header("authorization", "Bearer token-alice")
        .body(r#"{"id":"alice","phone":{"number":"+41791234567","returnCode":{}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some(CONSOLE)
    );
    let exposed = header(&response, "access-control-expose-headers").unwrap();
    for name in otp_sms_server::cors::EXPOSED_HEADERS {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    // An origin not configured gets no CORS header: the browser refuses the call.
    let response = preflight(&s, CONNECT_PATH, "https://evil.example").await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = reqwest::Client::new()
        .post(s.url(REST_PATH))
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .header("authorization", "Bearer token-alice")
        .body(r#"{"number":"+41791234568","returnCode":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

/// ZITADEL's browser clients send `grpc-timeout`, `x-zitadel-orgid` and `x-requested-with`,
/// which upstream's CORS interceptor allows: a preflight asking for them passes here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headers_zitadel_browser_clients_send_pass_the_preflight() {
    let s = server(
        &format!("[server]\ncors_allowed_origins = [\"{CONSOLE}\"]\n"),
        false,
    );
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, s.url(CONNECT_PATH))
        .header("origin", CONSOLE)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,grpc-timeout,x-grpc-web,x-zitadel-orgid,x-requested-with",
        )
        .send()
        .await
        .expect("the preflight");
    assert!(response.status().is_success(), "{}", response.status());
    let allowed = header(&response, "access-control-allow-headers").unwrap();
    for needed in ["grpc-timeout", "x-zitadel-orgid", "x-requested-with"] {
        assert!(allowed.contains(needed), "{needed} not in {allowed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_origin_is_allowed_by_default() {
    let s = server("", false);
    let response = preflight(&s, CONNECT_PATH, CONSOLE).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&response, "access-control-allow-methods"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_allows_loopback_pages() {
    let s = server("", true);
    let response = preflight(&s, CONNECT_PATH, "http://localhost:5173").await;
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );
    let response = preflight(&s, CONNECT_PATH, "https://evil.example").await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}

#[test]
fn a_wildcard_or_a_path_is_refused_at_start_up() {
    for origin in ["*", "https://console.example.com/app"] {
        let output = otp_sms_tests::server::refused_at_start(
            BIN,
            &format!("[server]\ncors_allowed_origins = [\"{origin}\"]\n"),
        );
        assert!(output.contains("cors_allowed_origins"), "{output}");
    }
}
