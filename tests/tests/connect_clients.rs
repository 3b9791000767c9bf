//! Independent Connect clients against the real server binary: the stack of ZITADEL's own
//! TypeScript client (`@connectrpc/connect` with message and service types generated from the
//! server's `.proto` files by `protoc-gen-es`), in Node and in headless Chromium on another
//! origin, so that CORS is the browser's own. `tests/web` holds the clients; this test
//! installs their packages (`npm ci`), generates the types and bundles them with esbuild.
//!
//! Needs Node.js with npm and Chromium; without them the tests fail with the fix (`bash
//! .ci/run` installs Chromium).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::routing::{get, post};
use otp_sms_tests::server::{config, Options, Server, TEST_KEYS};
use otp_sms_tests::web::{self, run, NODE_FIX};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

/// What every flow must answer: add, wrong code, right code, again, remove, verify.
const FLOW: [&str; 6] = [
    "OK",
    "InvalidArgument",
    "OK",
    "FailedPrecondition",
    "OK",
    "NotFound",
];

/// The bundled clients: `node.mjs` and `page.js`, built once per test process.
fn bundles() -> &'static Path {
    static BUNDLES: OnceLock<PathBuf> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    BUNDLES.get_or_init(|| {
        web::install();
        run("npm", &["run", "--silent", "generate"], NODE_FIX);
        let out = std::env::temp_dir().join(format!("otp-sms-web-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&out).unwrap();
        let esbuild = |entry: &str, extra: &[&str], outfile: &Path| {
            let outfile = format!("--outfile={}", outfile.display());
            let mut args = vec![
                "esbuild",
                entry,
                "--bundle",
                "--format=esm",
                outfile.as_str(),
            ];
            args.extend_from_slice(extra);
            run("npx", &args, NODE_FIX);
        };
        esbuild("node.ts", &["--platform=node"], &out.join("node.mjs"));
        esbuild("page.ts", &[], &out.join("page.js"));
        out
    })
}

fn assert_flow(results: &Value, transport: &str) {
    assert_eq!(results[transport], json!(FLOW), "{transport}: {results}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_runs_the_flow_in_json_in_binary_and_over_grpc_web() {
    let bundles = bundles();
    let s = otp_sms_tests::server::memory_server(BIN);
    let node = bundles.join("node.mjs");
    let stdout = run(
        "node",
        &[node.to_str().unwrap(), &s.base_url, "token-alice"],
        NODE_FIX,
    );
    let results: Value = serde_json::from_str(stdout.trim()).expect("the client prints JSON");
    for transport in ["connect-json", "connect-binary", "grpc-web"] {
        assert_flow(&results, transport);
    }
}

/// A browser binary on PATH, or the fix.
fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name.to_owned();
        }
    }
    panic!(
        "the browser test needs Chromium on PATH (Debian: apt-get install chromium; `bash \
         .ci/run` installs it)"
    );
}

/// The page's own origin: serves the page and takes its result.
async fn page_server(page_js: PathBuf) -> (u16, mpsc::Receiver<Value>) {
    let (results, received) = mpsc::channel::<Value>(4);
    let html = "<!doctype html><meta charset=utf-8><title>otp-sms</title>\
                <script type=module src=/page.js></script>";
    let app = axum::Router::new()
        .route("/", get(move || async move { axum::response::Html(html) }))
        .route(
            "/page.js",
            get(move || {
                let page_js = page_js.clone();
                async move {
                    (
                        [("content-type", "text/javascript")],
                        std::fs::read(page_js).expect("the bundled page"),
                    )
                }
            }),
        )
        .route(
            "/result",
            post(move |body: String| {
                let results = results.clone();
                async move {
                    let _ = results
                        .send(serde_json::from_str(&body).unwrap_or(json!(body)))
                        .await;
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

/// Opens `url` in headless Chromium and waits for the page's result.
async fn browse(browser: &str, url: &str, results: &mut mpsc::Receiver<Value>) -> Value {
    let profile = std::env::temp_dir().join(format!("otp-sms-chromium-{}", uuid::Uuid::now_v7()));
    let mut child = tokio::process::Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start Chromium");
    let result = tokio::time::timeout(Duration::from_secs(90), results.recv()).await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    result
        .expect("the page reported within 90 s")
        .expect("a result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_another_origin_runs_the_flow_and_a_page_not_allowed_is_refused() {
    let browser = chromium();
    let bundles = bundles();
    let (port, mut results) = page_server(bundles.join("page.js")).await;
    // The server allows the page's origin by address (127.0.0.1), not by name (localhost).
    let page_origin = format!("http://127.0.0.1:{port}");
    let s = Server::start(
        BIN,
        &Options {
            config: config(&format!(
                "[server]\ncors_allowed_origins = [\"{page_origin}\"]\n"
            )),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    let query = format!("?server={}&token=token-alice", s.base_url);

    let allowed = browse(&browser, &format!("{page_origin}/{query}"), &mut results).await;
    assert_eq!(allowed["origin"], json!(page_origin), "{allowed}");
    assert_flow(&allowed, "connect");
    assert_flow(&allowed, "grpc-web");

    // The same page from an origin the server does not list: the browser refuses the calls.
    let refused = browse(
        &browser,
        &format!("http://localhost:{port}/{query}"),
        &mut results,
    )
    .await;
    for transport in ["connect", "grpc-web"] {
        let outcome = refused[transport].as_str().unwrap_or_default();
        assert!(outcome.starts_with("failed"), "{transport}: {refused}");
    }
}
