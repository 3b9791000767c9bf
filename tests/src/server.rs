//! Starts the real server binary on a free port and talks to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A test key ring: `KEY_ID:HEX64`.
pub const TEST_KEYS: &str = "k1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The configuration most tests use: instance `inst-1` (domain `inst-1.test`); organizations
/// `org-1` (domain `org-1.test`) and `org-2`; users `alice` and `admin` of org-1, `stranger`
/// of org-2; tokens `token-alice`, `token-admin` (user.write in org-1), `token-stranger`.
/// `extra` is appended (e.g. `[sms]`, `[policy]`).
pub fn config(extra: &str) -> String {
    format!(
        r#"
[[instances]]
id = "inst-1"
domains = ["inst-1.test"]

[[organizations]]
instance = "inst-1"
id = "org-1"
domain = "org-1.test"

[[organizations]]
instance = "inst-1"
id = "org-2"

[[users]]
instance = "inst-1"
id = "alice"
organization = "org-1"

[[users]]
instance = "inst-1"
id = "admin"
organization = "org-1"

[[users]]
instance = "inst-1"
id = "stranger"
organization = "org-2"

[[tokens]]
token = "token-alice"
instance = "inst-1"
user = "alice"

[[tokens]]
token = "token-admin"
instance = "inst-1"
user = "admin"
permissions = ["user.write"]

[[tokens]]
token = "token-stranger"
instance = "inst-1"
user = "stranger"

# The wire tests let alice see her own code (an instance setting, off by default); the
# possession matrix runs on an instance without it.
[[instances]]
id = "inst-strict"
abuse = {{ allow_self_return_code = false }}

[[organizations]]
instance = "inst-strict"
id = "org-s"

[[users]]
instance = "inst-strict"
id = "carol"
organization = "org-s"

[[users]]
instance = "inst-strict"
id = "root"
organization = "org-s"

[[tokens]]
token = "token-carol"
instance = "inst-strict"
user = "carol"

[[tokens]]
token = "token-root"
instance = "inst-strict"
user = "root"
permissions = ["user.write"]

[abuse]
allow_self_return_code = true

{extra}
"#
    )
}

/// A user `hans` of `org-1` in `inst-1` who prefers `de-CH`, with the token `token-hans`: lines
/// to add to a server's configuration, for the SMS text's language.
pub const HANS: &str = r#"
[[users]]
instance = "inst-1"
id = "hans"
organization = "org-1"
language = "de-CH"

[[tokens]]
token = "token-hans"
instance = "inst-1"
user = "hans"
"#;

/// The `[sms]` table of a server that posts to the test webhook `url` (plain http on loopback,
/// signed with [`crate::net::WEBHOOK_SECRET`]), with `extra` lines of the same table.
pub fn webhook_sms(url: &str, extra: &str) -> String {
    format!(
        "[sms]\nsender = \"webhook\"\nwebhook_url = \"{url}\"\nwebhook_secret = \"{}\"\nallow_http = true\n{extra}\n",
        crate::net::WEBHOOK_SECRET
    )
}

/// Runs `binary` to its end with `args`, with no `OTP_SMS_` variable of the test's own
/// environment and with `env` added; whether it succeeded, and its standard error. For
/// start-up refusals: a binary that has not exited 30 s later (it started when it should have
/// refused) is killed and counted as a failure, so no test waits for ever and no process
/// outlives it.
pub fn run_to_exit(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTP_SMS_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the server binary");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait().expect("wait for the server binary") {
            Some(status) => break Some(status),
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut text = reader.join().unwrap_or_default();
    if status.is_none() {
        text.push_str("\n(still running after 30 s: killed)");
    }
    (status.is_some_and(|s| s.success()), text)
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The configuration file's text.
    pub config: String,
    /// `--keys`.
    pub keys: Option<String>,
    /// `--database-url` and `--schema`.
    pub database: Option<(String, String)>,
    /// `--dev` (the configuration is then not passed: development mode refuses one).
    pub dev: bool,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--metrics-listen`; `None` serves `/metrics` on the API's port (`api`), as most tests
    /// read it there (the default, a fixed loopback port, would clash between test servers).
    pub metrics_listen: Option<String>,
}

/// A server on the in-memory store with [`config`] and [`TEST_KEYS`].
pub fn memory_server(binary: &str) -> Server {
    configured_server(binary, "", None)
}

/// A server with [`config`]`(extra)` and [`TEST_KEYS`]: on PostgreSQL in `schema` when given,
/// else on the in-memory store.
pub fn configured_server(binary: &str, extra: &str, schema: Option<&str>) -> Server {
    Server::start(
        binary,
        &Options {
            config: config(extra),
            keys: Some(TEST_KEYS.into()),
            database: schema
                .map(|schema| (crate::pg::database_url().to_owned(), schema.to_owned())),
            ..Options::default()
        },
    )
}

/// A file holding a secret, as an operator's secret store would place one for a
/// configuration's `*_file` key; removed on drop. Derefs to its path.
#[derive(Debug)]
pub struct SecretFile(PathBuf);

impl std::ops::Deref for SecretFile {
    type Target = std::path::Path;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A new [`SecretFile`] holding `secret`.
pub fn secret_file(secret: &str) -> SecretFile {
    let path = std::env::temp_dir().join(format!("otp-sms-secret-{}", uuid::Uuid::now_v7()));
    std::fs::write(&path, format!("{secret}\n")).expect("write the secret");
    // As an operator's secret store leaves it: readable by its owner only (the server refuses
    // a secret file open to others).
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    SecretFile(path)
}

/// A running server process; killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub base_url: String,
    output: Arc<Mutex<Vec<String>>>,
    config_path: PathBuf,
}

impl Server {
    /// Starts `binary` (pass `env!("CARGO_BIN_EXE_otp-sms-server-under-test")`) and waits
    /// until it listens.
    pub fn start(binary: &str, options: &Options) -> Self {
        let config_path =
            std::env::temp_dir().join(format!("otp-sms-test-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&config_path, &options.config).expect("write config");
        let mut cmd = Command::new(binary);
        cmd.arg("--listen").arg("127.0.0.1:0");
        // Development mode refuses a configuration file: it runs its own.
        if !options.dev {
            cmd.arg("--config").arg(&config_path);
        }
        // Nothing from the test's own environment may leak into the server's.
        for (key, _) in std::env::vars() {
            if key.starts_with("OTP_SMS_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info");
        if let Some(keys) = &options.keys {
            cmd.arg("--keys").arg(keys);
        }
        if let Some((url, schema)) = &options.database {
            cmd.arg("--database-url")
                .arg(url)
                .arg("--schema")
                .arg(schema);
        }
        if options.dev {
            cmd.arg("--dev");
        }
        cmd.arg("--metrics-listen")
            .arg(options.metrics_listen.as_deref().unwrap_or("api"));
        if let Some((cert, key)) = &options.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("stderr");
        let stdout = child.stdout.take().expect("stdout");
        for (stream, tx) in [
            (Box::new(stderr) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stdout), None),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some(at)) = (&tx, line.find("listening on http")) {
                        let addr = line[at + "listening on ".len()..].trim().to_owned();
                        let _ = tx.send(addr);
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let base_url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the server did not start:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child,
            base_url,
            output,
            config_path,
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The status of `GET /healthz` (0 when no answer came).
    pub async fn healthz(&self) -> u16 {
        reqwest::get(self.url("/healthz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Everything the server printed so far (stderr and stdout).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (a name `kill` takes: `HUP`, `TERM`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit; returns its success.
    pub fn terminate(&mut self, timeout: Duration) -> Option<bool> {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Adds a phone for `user` (with `token-{user}`) that gets its code by SMS; the add must
/// succeed.
pub async fn add_sending(s: &Server, user: &str, number: &str) {
    let response = reqwest::Client::new()
        .post(s.url(&format!("/resources/v3alpha/users/{user}/otp_sms")))
        .bearer_auth(format!("token-{user}"))
        .json(&serde_json::json!({ "number": number }))
        .send()
        .await
        .expect("the add");
    assert_eq!(response.status().as_u16(), 200, "add for {user}");
}

/// Waits until `count()` reaches `n` (15 s at most), then 1.2 s more for anything that should
/// not come (a retry of a final error, say); the count then.
pub async fn settle(count: impl Fn() -> usize, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} arrived",
            count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    count()
}

/// Starts `binary` with [`config`]`(extra)` and [`TEST_KEYS`], expecting it to refuse to start;
/// its standard error.
pub fn refused_at_start(binary: &str, extra: &str) -> String {
    let path = std::env::temp_dir().join(format!("otp-sms-refused-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, config(extra)).expect("write config");
    let path_text = path.display().to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--keys",
        TEST_KEYS,
        "--config",
        &path_text,
    ];
    let (started, output) = run_to_exit(binary, &args, &[]);
    let _ = std::fs::remove_file(&path);
    assert!(!started, "the server started with:\n{extra}\n{output}");
    output
}

/// The sum of `metric`'s samples on the server's `/metrics` whose labels include all of
/// `labels` (0 when none): a quick read of the text format for tests about one counter
/// (tests/tests/server_metrics.rs parses the whole format).
pub async fn metric(s: &Server, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(s.url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the server closes `stream` (a read ends, after any answer it sent); returns how
/// long that took, or `None` if it stayed open for `limit`.
pub async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// Configuration of an instance `inst-load` with the abuse table `abuse` (inline TOML) and
/// users `u0` … with tokens `token-u0` …
pub fn load_instance(abuse: &str, users: usize) -> String {
    let mut extra = format!(
        "[[instances]]\nid = \"inst-load\"\nabuse = {abuse}\n\
         [[organizations]]\ninstance = \"inst-load\"\nid = \"org-l\"\n"
    );
    for i in 0..users {
        extra.push_str(&format!(
            "[[users]]\ninstance = \"inst-load\"\nid = \"u{i}\"\norganization = \"org-l\"\n\
             [[tokens]]\ntoken = \"token-u{i}\"\ninstance = \"inst-load\"\nuser = \"u{i}\"\n"
        ));
    }
    extra
}

/// What `receiver` got once `n` messages arrived (within `within`) and `then` more passed for
/// any repeat: the bodies, and how many distinct message ids among them.
pub async fn handed_over(
    receiver: &crate::net::WebhookReceiver,
    n: usize,
    within: Duration,
    then: Duration,
) -> (Vec<serde_json::Value>, usize) {
    let deadline = tokio::time::Instant::now() + within;
    while receiver.received().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(then).await;
    let received = receiver.received();
    let mut ids: Vec<&str> = received
        .iter()
        .map(|r| r["messageId"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    let distinct = ids.len();
    (received, distinct)
}
