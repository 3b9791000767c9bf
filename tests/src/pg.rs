//! A PostgreSQL database for tests: one fresh schema per test, dropped afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use otp_sms_core::EventPayload;
use otp_sms_postgres::PgStore;
use sqlx::postgres::{PgPool, PgPoolOptions};

const HOW_TO_FIX: &str = "PostgreSQL tests need a server. Fix one of:\n\
  - start PostgreSQL and set DATABASE_URL, e.g. \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test (the database must exist);\n\
  - or install the PostgreSQL server binaries (initdb and pg_ctl on PATH or in \
    /usr/lib/postgresql/*/bin) and run the tests as a non-root user, so that a throwaway \
    cluster can be started;\n\
  - or run `bash .ci/run`, which starts the local server and creates the database.";

/// The URL of the test server: `DATABASE_URL`, or a throwaway cluster. Panics with the fix when
/// neither is available.
pub fn database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ if local_server_listens() => LOCAL_URL.to_owned(),
        _ => throwaway_cluster().unwrap_or_else(|why| {
            panic!(
                "DATABASE_URL is not set, nothing listens on 127.0.0.1:5432, and no throwaway \
                 cluster could start ({why}).\n{HOW_TO_FIX}"
            )
        }),
    })
}

/// The conventional local server, tried when `DATABASE_URL` is not set.
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn local_server_listens() -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

pub(crate) fn find_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let packaged = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name));
    on_path.chain(packaged).find(|p| p.is_file())
}

pub(crate) fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts (or reuses) a cluster under the temp directory. Serialised across test processes by
/// creating a lock directory.
fn throwaway_cluster() -> Result<String, String> {
    if uid() == 0 {
        return Err("initdb refuses to run as root".into());
    }
    let initdb = find_bin("initdb").ok_or("initdb not found")?;
    let pg_ctl = find_bin("pg_ctl").ok_or("pg_ctl not found")?;
    let root = std::env::temp_dir().join(format!("otp-sms-test-pg-{}", uid()));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let lock = root.join("lock");
    let started = std::time::Instant::now();
    while std::fs::create_dir(&lock).is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("{} stayed locked; remove it", lock.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = start_cluster(&root, &initdb, &pg_ctl);
    let _ = std::fs::remove_dir(&lock);
    result
}

fn start_cluster(root: &Path, initdb: &Path, pg_ctl: &Path) -> Result<String, String> {
    let data = root.join("data");
    let port_file = root.join("port");
    let running = Command::new(pg_ctl)
        .arg("status")
        .arg("-D")
        .arg(&data)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !running {
        if !data.join("PG_VERSION").exists() {
            let out = Command::new(initdb)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
                .arg(&data)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        let port = free_port()?;
        let out = Command::new(pg_ctl)
            .arg("start")
            .arg("-w")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
                root.display()
            ))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(&port_file, port.to_string()).map_err(|e| e.to_string())?;
        eprintln!(
            "started a throwaway PostgreSQL in {} on port {port}; stop it with `pg_ctl -D {} stop`",
            data.display(),
            data.display()
        );
    }
    let port = std::fs::read_to_string(&port_file).map_err(|e| e.to_string())?;
    Ok(format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        port.trim()
    ))
}

/// A small pool to the test server, failing with the fix when it cannot connect.
pub async fn pool() -> PgPool {
    let url = database_url();
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(20))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}\n{HOW_TO_FIX}"))
}

const SCHEMA_PREFIX: &str = "otp_sms_test_";

/// A fresh schema name whose UUID v7 part records when it was made.
pub fn schema_name() -> String {
    format!("{SCHEMA_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// Drops schemas of earlier test runs that died before cleaning up (older than an hour).
async fn sweep_stale(pool: &PgPool) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, 'otp_sms_test_')",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for name in names {
        let made_ms = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|hex| hex.get(..12))
            .and_then(|ms| u64::from_str_radix(ms, 16).ok());
        if made_ms.is_some_and(|ms| ms + 3_600_000 < now_ms) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

/// A migrated store in a schema of its own.
pub async fn fresh_store<E: EventPayload>() -> PgStore<E> {
    let pool = pool().await;
    sweep_stale(&pool).await;
    let store = PgStore::new(pool, &schema_name()).expect("valid schema name");
    store.migrate().await.expect("migrations apply");
    store
}

/// Drops the store's schema and closes its pool.
pub async fn drop_store<E>(store: &PgStore<E>) {
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .expect("drop test schema");
    store.pool().close().await;
}

/// Drops a schema by name (for schemas a spawned server created).
pub async fn drop_schema(name: &str) {
    let pool = pool().await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
        .execute(&pool)
        .await
        .expect("drop schema");
    pool.close().await;
}

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
