//! `otp-sms-bench`: adds N registrations through the public command service (delivery: return
//! the code, or send it with `--add-delivery send`), then verifies each once with the right
//! code from C concurrent tasks, through the same service a host uses, with every send budget
//! evaluated (`--budgets on`, the default, as the server runs) or none (`--budgets off`), and
//! prints one JSON line on stdout:
//!
//! ```text
//! {"system":"otp-sms","store":"memory","registrations":N,"concurrency":C,
//!  "add_per_sec":..,"verify_per_sec":..,"verify_p50_us":..,"verify_p99_us":..}
//! ```
//!
//! With `--sign-in`, each verified registration is then challenged (the code returned) and the
//! challenge checked, from C tasks each, and the line gains `"challenge_per_sec"`,
//! `"check_per_sec"`, `"check_p50_us"` and `"check_p99_us"`.
//!
//! Progress goes to stderr. With PostgreSQL it works in a fresh schema and drops it at the end.
//!
//! Against a running server (`--server URL --protocol http|grpc|grpc-web|baseline --token TOKEN
//! --user USER`), the same flow goes over the wire from C clients and the line gains
//! `"target"` and `"protocol"`; `--serve-baseline --listen ADDR` serves the bare axum handler
//! that `--protocol baseline` drives; `--print-server-config` prints the configuration the
//! server under test runs with. See the benchmark's README.

mod baseline;
mod remote;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::{Parser, ValueEnum};
use otp_sms_core::{
    AbusePolicy, AddRequest, Append, BudgetStore, Caller, ChallengeRequest, CheckRequest, CodeKey,
    CodeKeyRing, CommandService, Event, EventStore, ExpectedVersion, InstanceId, KeyId, Limit,
    NewEvent, OrganizationId, PhoneVerification, PortError, PrincipalId, TakeOutcome, TakeRequest,
    UserId, VerifyRequest,
};
use otp_sms_directory::StaticDirectory;
use otp_sms_memory::MemoryStore;
use otp_sms_postgres::PgStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Memory,
    Postgres,
    /// A fresh SQLite file in the system's temporary directory (removed after the run).
    Sqlite,
}

/// The verify path, end to end, on one store in process, or over the wire against a server.
#[derive(Debug, Parser)]
#[command(name = "otp-sms-bench")]
struct Args {
    /// Which event store, in process. With `--server`, only a label for the output.
    #[arg(long, value_enum)]
    store: Option<StoreKind>,
    /// Drive a running server at this URL (`http://HOST:PORT`) instead of a service in process.
    #[arg(long)]
    server: Option<String>,
    /// With `--server`: the protocol.
    #[arg(long, value_enum, default_value = "http")]
    protocol: remote::Protocol,
    /// With `--server`: a token with `user.write` in the user's organization.
    #[arg(long, default_value = "bench-token")]
    token: String,
    /// With `--server`: the user the registrations are added to.
    #[arg(long, default_value = "bench-user")]
    user: String,
    /// With `--server`: instead of the flow, hold this many idle keep-alive connections and
    /// report the server's resident memory (needs `--server-pid`).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// The server's process id, for `--idle-connections`.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Serve the bare axum baseline handler on `--listen` until stopped.
    #[arg(long)]
    serve_baseline: bool,
    /// Where `--serve-baseline` listens.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Print the server configuration the server under test runs with, and exit.
    #[arg(long)]
    print_server_config: bool,
    /// Registrations to add and then verify.
    #[arg(long, default_value_t = 10_000)]
    registrations: usize,
    /// Concurrent tasks (clients, with `--server`).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// PostgreSQL database to create the benchmark's schema in.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Events of other registrations to fill the store with first.
    #[arg(long, default_value_t = 0)]
    preload_events: usize,
    /// Streams whose history the service keeps (`CommandService::with_stream_cache`); by
    /// default what the server uses: 65,536 with PostgreSQL, none with the in-memory store.
    #[arg(long)]
    stream_cache: Option<usize>,
    /// Send budgets: `on` evaluates every scope (limits set so that none binds in the run),
    /// `off` admits everything without keeping any state.
    #[arg(long, value_enum, default_value = "on")]
    budgets: Switch,
    /// How adds deliver their code: `return` (in the response) or `send` (through the outbox;
    /// only codes to send take send budgets).
    #[arg(long, value_enum, default_value = "return")]
    add_delivery: AddDelivery,
    /// SQLite: what a commit waits for (`full`: the disk, as the server runs; `normal`: the
    /// operating system).
    #[arg(long, value_enum, default_value = "full")]
    sqlite_durability: SqliteDurability,
    /// After the verifies, challenge each registration for sign-in (the code returned) and
    /// check it, timing both phases (in process, or over the wire with `--server`).
    #[arg(long)]
    sign_in: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SqliteDurability {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AddDelivery {
    Return,
    Send,
}

/// Budgets off: admits every take and keeps nothing (the benchmark's own; the library offers
/// no way to switch its defences off).
struct NoBudgets;

#[async_trait]
impl BudgetStore for NoBudgets {
    async fn take(&self, _: &TakeRequest) -> Result<TakeOutcome, PortError> {
        Ok(TakeOutcome::Taken)
    }
    async fn release(&self, _: &str, _: &str) -> Result<bool, PortError> {
        Ok(true)
    }
    async fn members(&self, _: &str) -> Result<Vec<otp_sms_core::Member>, PortError> {
        Ok(Vec::new())
    }
    async fn clear(&self, _: &str) -> Result<u64, PortError> {
        Ok(0)
    }
}

/// The abuse policy of the run: the defaults, with users asking for their own code allowed
/// (the benchmark's users act for themselves), and with budgets on, every scope configured,
/// the instance's and the region's large enough for the whole run.
fn policy(n: usize, budgets: Switch) -> AbusePolicy {
    let mut policy = match budgets {
        Switch::On => AbusePolicy::default(),
        Switch::Off => AbusePolicy::unlimited(),
    };
    policy.allow_self_return_code = true;
    if budgets == Switch::On {
        let run = u32::try_from(n + 1).unwrap_or(u32::MAX);
        policy.instance = vec![Limit::new(run, Duration::from_secs(3600))];
        policy.region = vec![Limit::new(run, Duration::from_secs(3600))];
    }
    policy
}

/// The allocator a host would likely pick (see `Cargo.toml`); the library itself leaves the
/// choice to its host.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Which allocator this build uses, for the progress output.
const ALLOCATOR_NAME: &str = if cfg!(all(feature = "jemalloc", not(target_env = "msvc"))) {
    "jemalloc"
} else {
    "system"
};

const INSTANCE: &str = "bench";
const ORG: &str = "bench-org";

fn user_name(i: usize) -> String {
    format!("user-{i:08}")
}

/// What the host knows per request before it calls the service: the authenticated caller
/// and the path's user id (prepared up front so the benchmark measures the service, not
/// string formatting).
struct Request {
    caller: Caller,
    user_id: String,
    phone: String,
    /// The host's session id a sign-in binds its challenge to (`--sign-in`).
    binding: String,
}

fn requests(n: usize) -> Vec<Request> {
    // Each request owns its ids, as a host that decodes them per request does; sharing one
    // `Arc` among all requests would measure reference-count contention between cores.
    (0..n)
        .map(|i| Request {
            // A different client address per request, as many users' devices would be.
            caller: Caller::new(
                InstanceId::parse("instance", INSTANCE).expect("valid"),
                PrincipalId::parse("principal", user_name(i)).expect("valid"),
            )
            .with_address(Some(std::net::IpAddr::from(
                (0x0a00_0000u32 + i as u32).to_be_bytes(),
            ))),
            user_id: user_name(i),
            // A different Swiss mobile number per registration, spread over 10,000 ranges
            // (ten per range at 100,000 registrations), as real users' numbers are.
            phone: format!("+4179{:04}{:03}", i % 10_000, (i / 10_000) % 1000),
            binding: format!("session-{i}"),
        })
        .collect()
}

/// Fills a PostgreSQL schema with `count` events of other registrations (added, code added,
/// verified, with real payloads) in bulk statements: going through `append` would take
/// minutes and measures nothing this flag is for.
async fn preload_postgres(
    pool: &sqlx::PgPool,
    schema: &str,
    keys: &CodeKeyRing,
    count: usize,
) -> Result<(), String> {
    use otp_sms_core::EventPayload;
    let sample = MemoryStore::<Event>::new();
    preload(&sample, keys, 3).await?;
    let events = sample.read_all(0, 3).await.map_err(|e| e.to_string())?;
    let types: Vec<String> = events
        .iter()
        .map(|e| e.event.event_type().to_owned())
        .collect();
    let payloads: Vec<String> = events
        .iter()
        .map(|e| e.event.to_json().map(|v| v.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let chunk = 100_000usize;
    let mut start = 0usize;
    while start < count {
        let end = (start + chunk).min(count);
        sqlx::query(&format!(
            "INSERT INTO \"{schema}\".events (instance_id, aggregate_type, aggregate_id, sequence, \
             event_type, revision, payload, creator, owner) \
             SELECT $1, 'user.otp_sms', 'preload-' || (g / 3), (g % 3) + 1, ($2::text[])[(g % 3) + 1], \
                    1, (($3::text[])[(g % 3) + 1])::jsonb, 'preload', $4 \
               FROM generate_series($5::bigint, $6::bigint) AS g"
        ))
        .bind(INSTANCE)
        .bind(&types)
        .bind(&payloads)
        .bind(ORG)
        .bind(start as i64)
        .bind(end as i64 - 1)
        .execute(pool)
        .await
        .map_err(|e| format!("preload: {e}"))?;
        start = end;
        eprintln!("preloaded {start} events");
    }
    sqlx::query(&format!("ANALYZE \"{schema}\".events"))
        .execute(pool)
        .await
        .map_err(|e| format!("analyze: {e}"))?;
    Ok(())
}

/// Fills the store with `count` events of other registrations: added, code added, verified.
async fn preload(
    store: &dyn EventStore<Event>,
    keys: &CodeKeyRing,
    count: usize,
) -> Result<(), String> {
    let instance = InstanceId::parse("instance", INSTANCE).expect("valid");
    let org = OrganizationId::parse("org", ORG).expect("valid");
    let now = chrono::Utc::now();
    let mut written = 0;
    let mut i = 0usize;
    while written < count {
        let registration =
            otp_sms_core::RegistrationId::parse("id", format!("preload-{i}")).expect("valid");
        let user = UserId::parse("id", format!("preload-user-{i}")).expect("valid");
        let code = otp_sms_core::VerificationCode::from_input("12345678").expect("valid");
        let events = [
            Event::Added(otp_sms_core::Added {
                user: user.clone(),
                organization: org.clone(),
                phone: otp_sms_core::Phone::parse("+41791234567").expect("valid"),
            }),
            Event::CodeAdded(otp_sms_core::CodeAdded {
                number: 1,
                hash: keys.hash(
                    otp_sms_core::CodeBinding {
                        registration: &registration,
                        number: 1,
                    },
                    &code,
                ),
                issued_at: now,
                expires_at: now + chrono::Duration::minutes(5),
                delivery: otp_sms_core::Delivery::Return,
            }),
            Event::Verified(otp_sms_core::Verified { code: Some(1) }),
        ];
        let take = (count - written).min(events.len());
        store
            .append(Append::new(
                CommandService::stream_id(&instance, &registration),
                ExpectedVersion::NoStream,
                events[..take]
                    .iter()
                    .map(|event| NewEvent {
                        event: event.clone(),
                        creator: PrincipalId::parse("p", user.as_str()).expect("valid"),
                        owner: org.clone(),
                    })
                    .collect(),
            ))
            .await
            .map_err(|e| e.to_string())?;
        written += take;
        i += 1;
        if i % 50_000 == 0 {
            eprintln!("preloaded {written} events");
        }
    }
    Ok(())
}

/// The `p`th percentile of sorted nanoseconds, in microseconds.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Runs `op(state, i)` for every `i` in `0..n` from `concurrency` tasks, each on its own
/// contiguous share of the indices; returns the wall time and every call's latency in
/// nanoseconds. The state is `'static` (the benchmark leaks it), so the harness adds no shared
/// counter or reference count for the cores to contend for.
async fn run_concurrently<S, F, Fut>(
    n: usize,
    concurrency: usize,
    state: &'static S,
    op: F,
) -> (Duration, Vec<u64>)
where
    S: Send + Sync + 'static,
    F: Fn(&'static S, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|k| {
            let op = op.clone();
            let (from, to) = (k * n / concurrency, (k + 1) * n / concurrency);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(to - from);
                for i in from..to {
                    let t = Instant::now();
                    op(state, i).await;
                    latencies.push(t.elapsed().as_nanos() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("benchmark task"));
    }
    (start.elapsed(), all)
}

/// What every benchmark task shares.
struct Shared {
    service: CommandService,
    requests: Vec<Request>,
    added: Vec<std::sync::OnceLock<(String, String)>>,
    /// The sign-in code of each registration's challenge.
    challenged: Vec<std::sync::OnceLock<String>>,
}

/// The configuration the server under test runs with: one instance, organization and user, a
/// token with `user.write`, and budgets sized for load (a user may hold any number of
/// registrations; the codes of `return_code` take no send budget).
const SERVER_CONFIG: &str = r#"# otp-sms-bench --print-server-config: the server under test.
[[instances]]
id = "bench"

[[organizations]]
instance = "bench"
id = "bench-org"

[[users]]
instance = "bench"
id = "bench-user"
organization = "bench-org"

[[users]]
instance = "bench"
id = "bench-admin"
organization = "bench-org"

[[tokens]]
token = "bench-token"
instance = "bench"
user = "bench-admin"
permissions = ["user.write"]

[abuse]
max_registrations_per_user = 4000000000
# One user holds every registration: its sign-in challenges must not bind.
sign_in = [{ max = 4000000000, window_secs = 600 }]

[server]
max_connections = 15000
# Every client of the benchmark is one host and one token.
max_connections_per_address = 15000
max_in_flight = 4096
max_in_flight_per_caller = 4096
metrics_listen = "api"
# The HTTP/1 header timer is also the idle keep-alive timeout: long enough to hold 10,000
# idle connections while the memory is read.
header_read_timeout_ms = 60000
"#;

async fn run(args: Args) -> Result<serde_json::Value, String> {
    if let Some(server) = &args.server {
        if let Some(count) = args.idle_connections {
            let pid = args
                .server_pid
                .ok_or("--idle-connections needs --server-pid")?;
            return remote::idle_connections(server, count, pid).await;
        }
        return remote::Remote {
            server: server.trim_end_matches('/').to_owned(),
            protocol: args.protocol,
            token: args.token.clone(),
            user: args.user.clone(),
            registrations: args.registrations,
            concurrency: args.concurrency,
            store: match args.store {
                Some(StoreKind::Memory) => "memory",
                Some(StoreKind::Postgres) => "postgres",
                Some(StoreKind::Sqlite) => "sqlite",
                None => "unknown",
            }
            .to_owned(),
            sign_in: args.sign_in,
        }
        .run()
        .await;
    }
    bench(args).await
}

async fn bench(args: Args) -> Result<serde_json::Value, String> {
    let store_kind = args
        .store
        .ok_or("--store memory|postgres|sqlite (in process) or --server URL")?;
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("bench"), &[0x42; 32]));
    let mut pg_schema: Option<(sqlx::PgPool, String)> = None;
    let mut sqlite_dir: Option<std::path::PathBuf> = None;
    let mut budgets: Arc<dyn BudgetStore> = Arc::new(otp_sms_core::MemoryBudgets::new());
    let store: Arc<dyn EventStore<Event>> = match store_kind {
        StoreKind::Memory => Arc::new(MemoryStore::<Event>::new()),
        StoreKind::Postgres => {
            let url = args
                .database_url
                .clone()
                .ok_or("--database-url (or DATABASE_URL) is required with --store postgres")?;
            let pool = otp_sms_postgres::pool_options()
                .max_connections(args.concurrency.max(2) as u32 + 4)
                .connect(&url)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            let schema = format!("otp_sms_bench_{}", uuid::Uuid::now_v7().simple());
            let store = PgStore::<Event>::new(pool.clone(), &schema).map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            // Budgets shared through the database, as the server keeps them.
            let pg_budgets = otp_sms_postgres::PgBudgets::new(pool.clone(), &schema)
                .map_err(|e| e.to_string())?;
            pg_budgets.migrate().await.map_err(|e| e.to_string())?;
            budgets = Arc::new(pg_budgets);
            pg_schema = Some((pool, schema));
            Arc::new(store)
        }
        StoreKind::Sqlite => {
            let dir = std::env::temp_dir().join(format!("otp-sms-bench-{}", uuid::Uuid::now_v7()));
            let durability = match args.sqlite_durability {
                SqliteDurability::Full => otp_sms_sqlite::Durability::Full,
                SqliteDurability::Normal => otp_sms_sqlite::Durability::Normal,
            };
            let database = otp_sms_sqlite::Database::open(
                otp_sms_sqlite::SqliteOptions::new(dir.join("bench.db"))
                    .with_durability(durability),
            )
            .await
            .map_err(|e| e.to_string())?;
            sqlite_dir = Some(dir);
            // Budgets in the same file, as the server keeps them.
            budgets = Arc::new(otp_sms_sqlite::SqliteBudgets::new(database.clone()));
            Arc::new(otp_sms_sqlite::SqliteStore::<Event>::new(database))
        }
    };
    if let (Some((pool, schema)), true) = (&pg_schema, args.preload_events > 0) {
        eprintln!("preloading {} events", args.preload_events);
        preload_postgres(pool, schema, &keys, args.preload_events).await?;
    }
    if args.budgets == Switch::Off {
        budgets = Arc::new(NoBudgets);
    }
    let result = measure(&args, store, budgets, keys).await;
    if let Some(dir) = sqlite_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if let Some((pool, schema)) = pg_schema {
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&pool)
            .await
            .map_err(|e| format!("drop schema {schema}: {e}"))?;
        pool.close().await;
    }
    result
}

async fn measure(
    args: &Args,
    store: Arc<dyn EventStore<Event>>,
    budgets: Arc<dyn BudgetStore>,
    keys: CodeKeyRing,
) -> Result<serde_json::Value, String> {
    let n = args.registrations;
    let c = args.concurrency.max(1);
    if args.preload_events > 0 && args.store == Some(StoreKind::Memory) {
        eprintln!("preloading {} events", args.preload_events);
        preload(store.as_ref(), &keys, args.preload_events).await?;
    }
    // The host's users: one per registration, in one organization, in the library's
    // static directory (no grants: every caller acts for themselves). One organization value
    // per user, as rows loaded from the host's storage would be: a single shared value would
    // have both cores bump one reference count on every call, which 5cf74c8's benchmark (the
    // reference of issue 26) did not measure either.
    let instance = InstanceId::parse("instance", INSTANCE).expect("valid");
    let users = Arc::new((0..n).fold(StaticDirectory::new(), |d, i| {
        d.with_user(
            instance.clone(),
            UserId::parse("id", user_name(i)).expect("benchmark user ids are valid"),
            OrganizationId::parse("org", ORG).expect("valid"),
        )
    }));
    // Leaked: it lives until the process exits, and tasks borrow it without reference counts.
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        service: CommandService::new(store, users.clone(), users, keys)
            .with_stream_cache(args.stream_cache.unwrap_or(match args.store {
                // What the server uses with a database.
                Some(StoreKind::Postgres | StoreKind::Sqlite) => {
                    otp_sms_core::StreamCache::DEFAULT_CAPACITY
                }
                _ => 0,
            }))
            .with_budget_store(budgets)
            .with_abuse_policy(policy(n, args.budgets))
            .map_err(|e| e.to_string())?,
        requests: requests(n),
        added: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
        challenged: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
    }));

    // As a host does at start-up (the server does): a process's first add would otherwise
    // load the numbering-plan metadata inside the timed phase.
    otp_sms_core::Phone::load_metadata();
    eprintln!("adding {n} registrations from {c} tasks ({ALLOCATOR_NAME} allocator)");
    let verification = match args.add_delivery {
        AddDelivery::Return => PhoneVerification::ReturnCode,
        AddDelivery::Send => PhoneVerification::SendCode,
    };
    let (add_time, _) = run_concurrently(n, c, shared, move |s, i| async move {
        let r = &s.requests[i];
        let response = s
            .service
            .add(
                &r.caller,
                AddRequest {
                    user_id: r.user_id.clone(),
                    organization: None,
                    phone: r.phone.clone(),
                    verification,
                },
            )
            .await
            .expect("add");
        // A code sent by SMS is not in the response: such a run measures adds only.
        if let Some(code) = response.verification_code {
            let _ = s.added[i].set((
                response.registration_id.to_string(),
                code.expose().to_owned(),
            ));
        }
    })
    .await;
    let budgets = match args.budgets {
        Switch::On => "on",
        Switch::Off => "off",
    };
    let add_delivery = match args.add_delivery {
        AddDelivery::Return => "return",
        AddDelivery::Send => "send",
    };
    let mut line = serde_json::json!({
        "system": "otp-sms",
        "store": match args.store {
            Some(StoreKind::Postgres) => "postgres",
            Some(StoreKind::Sqlite) => "sqlite",
            _ => "memory",
        },
        "registrations": n,
        "concurrency": c,
        "budgets": budgets,
        "add_delivery": add_delivery,
        "add_per_sec": (n as f64 / add_time.as_secs_f64()).round(),
    });
    if args.add_delivery == AddDelivery::Send {
        return Ok(line);
    }

    eprintln!("verifying {n} registrations from {c} tasks");
    let (verify_time, mut latencies) = run_concurrently(n, c, shared, |s, i| async move {
        let r = &s.requests[i];
        let (registration, code) = s.added[i].get().expect("added").clone();
        s.service
            .verify(
                &r.caller,
                VerifyRequest {
                    user_id: r.user_id.clone(),
                    organization: None,
                    registration_id: registration,
                    code,
                },
            )
            .await
            .expect("verify");
    })
    .await;
    latencies.sort_unstable();
    if let Some(fields) = line.as_object_mut() {
        fields.insert(
            "verify_per_sec".into(),
            (n as f64 / verify_time.as_secs_f64()).round().into(),
        );
        fields.insert("verify_p50_us".into(), percentile(&latencies, 50.0).into());
        fields.insert("verify_p99_us".into(), percentile(&latencies, 99.0).into());
    }
    if args.sign_in {
        sign_in(shared, n, c, &mut line).await;
    }
    Ok(line)
}

/// Challenges every verified registration under a binding of its own (the code returned, as
/// a host that delivers it itself asks), then checks each challenge with its code, naming the
/// registration as the challenge's answer did.
async fn sign_in(shared: &'static Shared, n: usize, c: usize, line: &mut serde_json::Value) {
    eprintln!("challenging {n} registrations from {c} tasks");
    let (challenge_time, _) = run_concurrently(n, c, shared, |s, i| async move {
        let r = &s.requests[i];
        let (registration, _) = s.added[i].get().expect("added");
        let challenged = s
            .service
            .challenge(
                &r.caller,
                ChallengeRequest::new(r.user_id.clone(), r.binding.clone())
                    .for_registration(registration.clone())
                    .returning_code(),
            )
            .await
            .expect("challenge");
        let code = challenged.code.expect("returned").expose().to_owned();
        let _ = s.challenged[i].set(code);
    })
    .await;
    eprintln!("checking {n} challenges from {c} tasks");
    let (check_time, mut latencies) = run_concurrently(n, c, shared, |s, i| async move {
        let r = &s.requests[i];
        let (registration, _) = s.added[i].get().expect("added");
        let code = s.challenged[i].get().expect("challenged").clone();
        s.service
            .check(
                &r.caller,
                CheckRequest::new(r.user_id.clone(), r.binding.clone(), code)
                    .for_registration(registration.clone()),
            )
            .await
            .expect("check");
    })
    .await;
    latencies.sort_unstable();
    if let Some(fields) = line.as_object_mut() {
        let rate = |t: Duration| (n as f64 / t.as_secs_f64()).round();
        fields.insert("challenge_per_sec".into(), rate(challenge_time).into());
        fields.insert("check_per_sec".into(), rate(check_time).into());
        fields.insert("check_p50_us".into(), percentile(&latencies, 50.0).into());
        fields.insert("check_p99_us".into(), percentile(&latencies, 99.0).into());
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_server_config {
        print!("{SERVER_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otp-sms-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.serve_baseline {
        return match runtime.block_on(baseline::serve(args.listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otp-sms-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otp-sms-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
