//! A client generated from the served OpenAPI document by openapi-generator (its Python
//! client, a widely used generator and a language this machine runs) drives the contract's
//! flow against the real server binary: add with the code returned, a wrong code, the right
//! code, the right code again, remove, verify after the remove, each answered with the
//! contract's status (issue 30). The flow is `tests/openapi/flow.py`.

use otp_sms_tests::python::{openapi_dir, run, venv};
use otp_sms_tests::server::memory_server;

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_generated_from_the_document_runs_the_flow() {
    let bin = venv();
    let server = memory_server(BIN);
    let document = reqwest::get(server.url("/openapi.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let work =
        std::env::temp_dir().join(format!("otp-sms-openapi-client-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&work).unwrap();
    let file = work.join("openapi.json");
    std::fs::write(&file, document).unwrap();
    let client = work.join("client");
    // The generator validates the document first and refuses an invalid one.
    run(
        &bin.join("openapi-generator-cli"),
        &[
            "generate",
            "--generator-name",
            "python",
            "--input-spec",
            &file.to_string_lossy(),
            "--output",
            &client.to_string_lossy(),
            "--package-name",
            "otp_sms_client",
        ],
    );
    let flow = openapi_dir().join("flow.py");
    let said = run(
        &bin.join("python"),
        &[
            &flow.to_string_lossy(),
            &client.to_string_lossy(),
            server.url("").trim_end_matches('/'),
            "token-admin",
        ],
    );
    let _ = std::fs::remove_dir_all(&work);
    let calls: Vec<&str> = said.lines().collect();
    assert_eq!(
        calls,
        [
            "add 200",
            "wrong_code 400",
            "right_code 200",
            "again 400",
            "remove 200",
            "verify_after_remove 404",
        ]
    );
}
