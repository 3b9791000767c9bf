//! A PostgreSQL database for tests: `otp_sms_postgres::testing` (one fresh schema per test,
//! dropped afterwards), and URL helpers for the proxy tests.

pub use otp_sms_postgres::testing::*;

/// `url` with its host and port replaced (for routing a server through a proxy).
pub fn with_host_port(url: &str, host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!(
        "{scheme}://{}{host_port}{path}",
        userinfo.unwrap_or_default()
    )
}

/// The `host:port` of `url` (default port 5432).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL with a scheme").1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split('?').next().unwrap_or(host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// The event types and payloads a server recorded in `schema`, in order.
pub async fn events_in(schema: &str) -> Vec<(String, serde_json::Value)> {
    let pool = pool().await;
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT event_type, payload FROM \"{schema}\".events ORDER BY position"
    ))
    .fetch_all(&pool)
    .await
    .expect("read events");
    pool.close().await;
    rows
}

/// Waits (at most 10 s) until `schema` holds `n` events of `event_type`.
pub async fn wait_for_events(schema: &str, event_type: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = events_in(schema)
            .await
            .iter()
            .filter(|(t, _)| t == event_type)
            .count();
        if seen >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{seen} of {n} `{event_type}` events after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
