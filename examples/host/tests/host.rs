//! The host as its users see it: its own pages, 404 and document, the library under `/otp`
//! behind the host's sessions, on the memory store and on PostgreSQL.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use common::call;
use otp_sms_core::{Event, EventStore};
use otp_sms_example_host::{app, service, CountingStore, Directory};
use serde_json::json;

fn on(store: Arc<dyn EventStore<Event>>) -> Router {
    let directory = Arc::new(Directory::demo());
    app(service(store.clone(), directory.clone()), store, directory)
}

fn on_memory() -> Router {
    on(Arc::new(CountingStore::new(
        otp_sms_memory::MemoryStore::new(),
    )))
}

const ALICE: &str = "/otp/resources/v3alpha/users/alice/otp_sms";

/// Alice, signed in by cookie (no bearer token anywhere), under the library's rules: she may
/// not vouch for her own number; the host's admin adds it with the code in the response; she
/// verifies it; the host's projection shows it; bob may not remove it, nor may anyone not
/// signed in (UNAUTHENTICATED, in the library's error format).
async fn add_and_verify(app: &Router) {
    // Alice may not skip possession.
    let (status, body) = call(
        app,
        "POST",
        ALICE,
        Some("alice-session"),
        Some(json!({"number": "+41791234567", "isVerified": true})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Root (an admin of the host) may ask for the code in the response.
    let (status, added) = call(
        app,
        "POST",
        ALICE,
        Some("root-session"),
        Some(json!({"number": "+41791234567", "returnCode": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let id = added["otpSmsId"].as_str().unwrap();
    let code = added["verificationCode"].as_str().unwrap();
    // Alice verifies it with her session.
    let (status, body) = call(
        app,
        "POST",
        &format!("{ALICE}/{id}/_verify"),
        Some("alice-session"),
        Some(json!(code)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The host's own projection shows it.
    let (status, mine) = call(app, "GET", "/me/phones", Some("alice-session"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        mine,
        json!({"phones": [{"number": "+41791234567", "verified": true}]})
    );
    // Bob may not touch alice's phones, and nobody signed in is UNAUTHENTICATED.
    let (status, _) = call(
        app,
        "DELETE",
        &format!("{ALICE}/{id}"),
        Some("bob-session"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(app, "DELETE", &format!("{ALICE}/{id}"), None, None).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::UNAUTHORIZED, Some(16))
    );
}

#[tokio::test]
async fn the_library_works_under_the_prefix_with_the_hosts_sessions() {
    add_and_verify(&on_memory()).await;
}

#[tokio::test]
async fn on_postgres_too() {
    let pg = otp_sms_postgres::testing::fresh_store::<Event>().await;
    let schema = pg.schema().to_owned();
    let store: Arc<dyn EventStore<Event>> = Arc::new(CountingStore::new(pg));
    add_and_verify(&on(store)).await;
    otp_sms_postgres::testing::drop_schema(&schema).await;
}

#[tokio::test]
async fn the_hosts_404_and_pages_stay_the_hosts() {
    let app = on_memory();
    let (status, body) = call(&app, "GET", "/no/such/page", None, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "no such page"}))
    );
    // Under the prefix too: a path the library does not serve is the host's 404.
    let (status, body) = call(&app, "GET", "/otp/nothing/here", None, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "no such page"}))
    );
    let (status, _) = call(&app, "GET", "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_hosts_document_lists_the_library_under_its_prefix() {
    let (status, doc) = call(&on_memory(), "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["title"], "Acme identity");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(paths.contains(&&"/me/phones".to_owned()));
    assert!(
        paths.contains(&&"/otp/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify".to_owned())
    );
    let library: Vec<_> = paths.iter().filter(|p| p.starts_with("/otp/")).collect();
    assert_eq!(library.len(), otp_sms_http::openapi().paths.paths.len());
    assert!(
        paths
            .iter()
            .all(|p| *p == "/me/phones" || p.starts_with("/otp/")),
        "{paths:?}"
    );
}
