//! The framework's own ceiling: a bare axum handler that parses a 20-byte JSON body and answers
//! 150 bytes of JSON, served by `axum::serve` (HTTP/1.1 and HTTP/2), with nothing else: no
//! authentication, no store, no middleware.

use axum::routing::post;
use axum::Json;

/// The baseline's answer: 150 bytes, shaped like the API's details.
pub const ANSWER: &str = r#"{"details":{"id":"01939a4e-7f5c-7b3d-9c1a-2f6e8d4b5a69","changed":"2026-11-30T12:00:00.000Z","owner":{"type":"OWNER_TYPE_ORG","id":"bench-org-0000"}}}"#;

async fn baseline(Json(body): Json<serde_json::Value>) -> impl axum::response::IntoResponse {
    // The body is read as the API reads its own: parsed, and one field looked at.
    let ok = body.get("code").and_then(|c| c.as_str()).is_some();
    (
        if ok {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::BAD_REQUEST
        },
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        ANSWER,
    )
}

/// Serves `POST /baseline` on `listen` until the process ends.
pub async fn serve(listen: std::net::SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("baseline listening on http://{local}");
    let app = axum::Router::new().route("/baseline", post(baseline));
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_answer_is_150_bytes_and_the_request_20() {
        assert_eq!(super::ANSWER.len(), 150);
        assert_eq!(crate::remote::BASELINE_BODY.len(), 20);
    }
}
