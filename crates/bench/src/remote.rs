//! Driving a running server over the wire: C clients, each with a connection of its own
//! (HTTP/1.1 keep-alive for `http`, `grpc-web` and `baseline`; HTTP/2 for `grpc`), add N
//! registrations with `return_code` through a token with `user.write`, then verify each once
//! with the right code; with `sign_in`, then challenge each (code returned, a binding per
//! registration) and check it (HTTP, gRPC, gRPC-web). `baseline` drives the bare axum handler
//! of [`crate::baseline`] the same way, one request per "verify".

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use otp_sms_grpc::proto::otpsms::v1::{
    otpsms_sign_in_client::OtpsmsSignInClient, request_challenges, CheckOtp,
    CheckOtpsmsChallengeRequest, RequestOtpsmsChallengeRequest, RequestOtpsmsChallengeResponse,
};
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    set_phone, zitadel_users_client::ZitadelUsersClient, AddOtpsmsAuthenticatorRequest,
    AddOtpsmsAuthenticatorResponse, ReturnPhoneVerificationCode, SetPhone,
    VerifyOtpsmsRegistrationRequest,
};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

/// How the clients talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The JSON API over HTTP/1.1.
    Http,
    /// gRPC over HTTP/2 (cleartext).
    Grpc,
    /// gRPC-web (binary) over HTTP/1.1.
    GrpcWeb,
    /// The bare axum handler of `--serve-baseline`, over HTTP/1.1.
    Baseline,
    /// The bare tonic handler of `--serve-baseline`, over HTTP/2 (gRPC's own ceiling).
    GrpcBaseline,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Baseline => "baseline",
            Protocol::GrpcBaseline => "grpc-baseline",
        }
    }

    /// A bare handler's ceiling: one request per "verify", nothing added first.
    fn is_baseline(self) -> bool {
        matches!(self, Protocol::Baseline | Protocol::GrpcBaseline)
    }
}

/// One run against a server.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `http://HOST:PORT`.
    pub server: String,
    /// The protocol.
    pub protocol: Protocol,
    /// A token with `user.write` in the user's organization.
    pub token: String,
    /// The user whose registrations are added.
    pub user: String,
    /// Registrations (requests, for the baseline).
    pub registrations: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// What to print as `store` (the benchmark cannot see the server's store).
    pub store: String,
    /// After the verifies, challenge each registration for sign-in and check it.
    pub sign_in: bool,
}

const SERVICE: &str = "/zitadel.resources.user.v3alpha.ZITADELUsers";
const SIGN_IN_SERVICE: &str = "/otpsms.v1.OTPSMSSignIn";

/// The baseline's request: 20 bytes of JSON.
pub const BASELINE_BODY: &str = r#"{"code": "12345678"}"#;

/// A client with one connection.
enum Client {
    Http(reqwest::Client),
    Grpc(Box<GrpcClients>),
}

/// The gRPC services' clients on one connection.
struct GrpcClients {
    users: ZitadelUsersClient<Channel>,
    sign_in: OtpsmsSignInClient<Channel>,
}

fn http1_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

/// Reads an HTTP answer whole (so the connection is reused) and checks its status.
async fn succeeded(res: reqwest::Result<reqwest::Response>, what: &str) -> Result<(), String> {
    let res = res.map_err(|e| e.to_string())?;
    let status = res.status();
    let _ = res.bytes().await;
    status
        .is_success()
        .then_some(())
        .ok_or_else(|| format!("{what} answered {status}"))
}

/// A Swiss mobile number per registration.
fn number(i: usize) -> String {
    format!("+4179{:07}", i % 10_000_000)
}

fn grpc_web_frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// The message of a gRPC-web answer, after checking its status (in the headers of a
/// trailers-only answer, else in the trailer frame).
fn grpc_web_message(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(status) = headers.get("grpc-status") {
        if status != "0" {
            return Err(format!("grpc-status {status:?}"));
        }
    }
    let mut rest = body;
    let mut message = None;
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let data = rest.get(5..5 + len).ok_or("a truncated gRPC-web frame")?;
        if flag & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(data);
            if !trailers.contains("grpc-status:0") {
                return Err(format!("trailers: {trailers}"));
            }
        } else {
            message = Some(data.to_vec());
        }
        rest = &rest[5 + len..];
    }
    message.ok_or_else(|| "no message in the gRPC-web answer".into())
}

impl Remote {
    async fn client(&self) -> Result<Client, String> {
        Ok(match self.protocol {
            Protocol::Grpc | Protocol::GrpcBaseline => {
                let channel = Endpoint::from_shared(self.server.clone())
                    .map_err(|e| e.to_string())?
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", self.server))?;
                Client::Grpc(Box::new(GrpcClients {
                    users: ZitadelUsersClient::new(channel.clone()),
                    sign_in: OtpsmsSignInClient::new(channel),
                }))
            }
            _ => Client::Http(http1_client()?),
        })
    }

    fn add_request(&self, i: usize) -> AddOtpsmsAuthenticatorRequest {
        AddOtpsmsAuthenticatorRequest {
            id: self.user.clone(),
            phone: Some(SetPhone {
                number: number(i),
                verification: Some(set_phone::Verification::ReturnCode(
                    ReturnPhoneVerificationCode {},
                )),
            }),
            ..Default::default()
        }
    }

    fn authed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = format!("Bearer {}", self.token).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Adds registration `i`; its id and code.
    async fn add(&self, client: &mut Client, i: usize) -> Result<(String, String), String> {
        match (self.protocol, client) {
            (Protocol::Http, Client::Http(http)) => {
                let res = self
                    .post(
                        http,
                        "",
                        &serde_json::json!({"number": number(i), "returnCode": {}}),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status();
                let body: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
                match (body["otpSmsId"].as_str(), body["verificationCode"].as_str()) {
                    (Some(id), Some(code)) if status.is_success() => {
                        Ok((id.to_owned(), code.to_owned()))
                    }
                    _ => Err(format!("add answered {status}: {body}")),
                }
            }
            (Protocol::Grpc, Client::Grpc(grpc)) => {
                let added = grpc
                    .users
                    .add_otpsms_authenticator(self.authed(self.add_request(i)))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                Ok((
                    added.otp_sms_id,
                    added.verification_code.unwrap_or_default(),
                ))
            }
            (Protocol::GrpcWeb, Client::Http(http)) => {
                let answer = self
                    .grpc_web(http, "AddOTPSMSAuthenticator", &self.add_request(i))
                    .await?;
                let added = AddOtpsmsAuthenticatorResponse::decode(answer.as_slice())
                    .map_err(|e| e.to_string())?;
                Ok((
                    added.otp_sms_id,
                    added.verification_code.unwrap_or_default(),
                ))
            }
            _ => Err("no add for this protocol".into()),
        }
    }

    /// Verifies a registration with its code (the baseline: one request).
    async fn verify(&self, client: &mut Client, id: &str, code: &str) -> Result<(), String> {
        let request = || VerifyOtpsmsRegistrationRequest {
            id: self.user.clone(),
            otp_sms_id: id.to_owned(),
            code: code.to_owned(),
            ..Default::default()
        };
        match (self.protocol, client) {
            (Protocol::Http, Client::Http(http)) => {
                let res = self.post(http, &format!("/{id}/_verify"), &code).await;
                succeeded(res, "verify").await
            }
            (Protocol::Grpc | Protocol::GrpcBaseline, Client::Grpc(grpc)) => grpc
                .users
                .verify_otpsms_registration(self.authed(request()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (Protocol::GrpcWeb, Client::Http(http)) => self
                .grpc_web(http, "VerifyOTPSMSRegistration", &request())
                .await
                .map(|_| ()),
            (Protocol::Baseline, Client::Http(http)) => {
                let res = http
                    .post(format!("{}/baseline", self.server))
                    .header("content-type", "application/json")
                    .body(BASELINE_BODY)
                    .send()
                    .await;
                succeeded(res, "baseline").await
            }
            _ => Err("mismatched client".into()),
        }
    }

    /// Challenges registration `id` for sign-in under `binding`; the returned code.
    async fn challenge(
        &self,
        client: &mut Client,
        id: &str,
        binding: &str,
    ) -> Result<String, String> {
        let request = || RequestOtpsmsChallengeRequest {
            id: self.user.clone(),
            otp_sms_id: Some(id.to_owned()),
            binding: binding.to_owned(),
            otp_sms: Some(request_challenges::Otpsms { return_code: true }),
            ..Default::default()
        };
        let challenged = match (self.protocol, client) {
            (Protocol::Http, Client::Http(http)) => {
                let res = self
                    .post(
                        http,
                        "/_challenge",
                        &serde_json::json!({
                            "otpSmsId": id, "binding": binding, "otpSms": {"returnCode": true}
                        }),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status();
                let body: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
                return match body["challenges"]["otpSms"].as_str() {
                    Some(code) if status.is_success() => Ok(code.to_owned()),
                    _ => Err(format!("challenge answered {status}: {body}")),
                };
            }
            (Protocol::Grpc, Client::Grpc(grpc)) => grpc
                .sign_in
                .request_otpsms_challenge(self.authed(request()))
                .await
                .map_err(|e| e.to_string())?
                .into_inner(),
            (Protocol::GrpcWeb, Client::Http(http)) => {
                let answer = self
                    .grpc_web_call(http, SIGN_IN_SERVICE, "RequestOTPSMSChallenge", &request())
                    .await?;
                RequestOtpsmsChallengeResponse::decode(answer.as_slice())
                    .map_err(|e| e.to_string())?
            }
            _ => return Err("no sign-in for this protocol".into()),
        };
        challenged
            .challenges
            .and_then(|c| c.otp_sms)
            .ok_or_else(|| "the challenge returned no code".into())
    }

    /// Checks the challenge of registration `id` under `binding` with its code.
    async fn check(
        &self,
        client: &mut Client,
        id: &str,
        binding: &str,
        code: &str,
    ) -> Result<(), String> {
        let request = || CheckOtpsmsChallengeRequest {
            id: self.user.clone(),
            otp_sms_id: Some(id.to_owned()),
            binding: binding.to_owned(),
            otp_sms: Some(CheckOtp {
                code: code.to_owned(),
            }),
            ..Default::default()
        };
        match (self.protocol, client) {
            (Protocol::Http, Client::Http(http)) => {
                let res = self
                    .post(
                        http,
                        "/_check",
                        &serde_json::json!({
                            "otpSmsId": id, "binding": binding, "otpSms": {"code": code}
                        }),
                    )
                    .await;
                succeeded(res, "check").await
            }
            (Protocol::Grpc, Client::Grpc(grpc)) => grpc
                .sign_in
                .check_otpsms_challenge(self.authed(request()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (Protocol::GrpcWeb, Client::Http(http)) => self
                .grpc_web_call(http, SIGN_IN_SERVICE, "CheckOTPSMSChallenge", &request())
                .await
                .map(|_| ()),
            _ => Err("no sign-in for this protocol".into()),
        }
    }

    /// POSTs `body` as JSON to the user's `otp_sms{path}`, with the token.
    async fn post(
        &self,
        http: &reqwest::Client,
        path: &str,
        body: &impl serde::Serialize,
    ) -> reqwest::Result<reqwest::Response> {
        http.post(format!(
            "{}/resources/v3alpha/users/{}/otp_sms{path}",
            self.server, self.user
        ))
        .bearer_auth(&self.token)
        .json(body)
        .send()
        .await
    }

    /// A gRPC-web call of the users service's `method`; the answer's message.
    async fn grpc_web(
        &self,
        http: &reqwest::Client,
        method: &str,
        message: &impl Message,
    ) -> Result<Vec<u8>, String> {
        self.grpc_web_call(http, SERVICE, method, message).await
    }

    /// A gRPC-web call of `service`'s `method`; the answer's message.
    async fn grpc_web_call(
        &self,
        http: &reqwest::Client,
        service: &str,
        method: &str,
        message: &impl Message,
    ) -> Result<Vec<u8>, String> {
        let res = http
            .post(format!("{}{service}/{method}", self.server))
            .bearer_auth(&self.token)
            .header("content-type", "application/grpc-web+proto")
            .body(grpc_web_frame(message))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let headers = res.headers().clone();
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        grpc_web_message(&headers, &body)
    }

    /// Adds, then verifies; the JSON line.
    pub async fn run(self) -> Result<serde_json::Value, String> {
        let n = self.registrations;
        let c = self.concurrency.max(1);
        let this = Arc::new(self);
        let mut clients = Vec::with_capacity(c);
        for _ in 0..c {
            clients.push(this.client().await?);
        }
        let share = move |k: usize| (k * n / c, (k + 1) * n / c);
        let shares: Vec<(Client, (usize, usize))> = clients
            .into_iter()
            .enumerate()
            .map(|(k, client)| (client, share(k)))
            .collect();
        let mut add_per_sec = serde_json::Value::Null;
        let work: Vec<(Client, Vec<(String, String)>)> = if this.protocol.is_baseline() {
            let request = (String::from("bench-registration"), String::from("12345678"));
            shares
                .into_iter()
                .map(|(client, (from, to))| (client, vec![request.clone(); to - from]))
                .collect()
        } else {
            eprintln!(
                "adding {n} registrations from {c} clients over {}",
                this.protocol.name()
            );
            let started = Instant::now();
            let added = per_client(&this, shares, |this, (mut client, (from, to))| async move {
                let mut added = Vec::with_capacity(to - from);
                for i in from..to {
                    added.push(this.add(&mut client, i).await?);
                }
                Ok((client, added))
            })
            .await?;
            add_per_sec = (n as f64 / started.elapsed().as_secs_f64()).round().into();
            added
        };
        eprintln!(
            "verifying {n} from {c} clients over {}",
            this.protocol.name()
        );
        let started = Instant::now();
        let verified = per_client(&this, work, |this, (mut client, added)| async move {
            let mut latencies = Vec::with_capacity(added.len());
            for (id, code) in &added {
                let t = Instant::now();
                this.verify(&mut client, id, code).await?;
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            Ok(((client, added), latencies))
        })
        .await?;
        let took = started.elapsed();
        let (verified, latencies) = merged(verified);
        let target = if this.protocol.is_baseline() {
            "baseline"
        } else {
            "server"
        };
        let sign_in = if this.sign_in && !this.protocol.is_baseline() {
            Some(this.sign_in(verified).await?)
        } else {
            None
        };
        let mut line = serde_json::json!({
            "system": "otp-sms",
            "target": target,
            "protocol": this.protocol.name(),
            "store": this.store,
            "registrations": n,
            "concurrency": c,
            "add_per_sec": add_per_sec,
            "verify_per_sec": (n as f64 / took.as_secs_f64()).round(),
            "verify_p50_us": crate::percentile(&latencies, 50.0),
            "verify_p99_us": crate::percentile(&latencies, 99.0),
        });
        if let (Some(fields), Some(serde_json::Value::Object(more))) =
            (line.as_object_mut(), sign_in)
        {
            fields.extend(more);
        }
        Ok(line)
    }

    /// Challenges every verified registration under a binding of its own (code returned),
    /// then checks each with its code, naming the registration as the challenge's answer did;
    /// the rates of both phases and the checks' latencies.
    async fn sign_in(
        self: &Arc<Self>,
        verified: Vec<(Client, Vec<(String, String)>)>,
    ) -> Result<serde_json::Value, String> {
        let n = self.registrations;
        let c = verified.len();
        eprintln!(
            "challenging {n} from {c} clients over {}",
            self.protocol.name()
        );
        let started = Instant::now();
        let work = per_client(self, verified, |this, (mut client, added)| async move {
            let mut challenged = Vec::with_capacity(added.len());
            for (id, _) in added {
                let binding = format!("session-{id}");
                let code = this.challenge(&mut client, &id, &binding).await?;
                challenged.push((id, binding, code));
            }
            Ok((client, challenged))
        })
        .await?;
        let challenge_took = started.elapsed();
        eprintln!(
            "checking {n} from {c} clients over {}",
            self.protocol.name()
        );
        let started = Instant::now();
        let checked = per_client(self, work, |this, (mut client, challenged)| async move {
            let mut latencies = Vec::with_capacity(challenged.len());
            for (id, binding, code) in &challenged {
                let t = Instant::now();
                this.check(&mut client, id, binding, code).await?;
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            Ok(((), latencies))
        })
        .await?;
        let check_took = started.elapsed();
        let (_, latencies) = merged(checked);
        let rate = |t: Duration| (n as f64 / t.as_secs_f64()).round();
        Ok(serde_json::json!({
            "challenge_per_sec": rate(challenge_took),
            "check_per_sec": rate(check_took),
            "check_p50_us": crate::percentile(&latencies, 50.0),
            "check_p99_us": crate::percentile(&latencies, 99.0),
        }))
    }
}

/// Runs `step` on each client's part of `work` at once, a task each; what each returned, in
/// client order (the first error, if any).
async fn per_client<W, R, F, Fut>(
    this: &Arc<Remote>,
    work: Vec<W>,
    step: F,
) -> Result<Vec<R>, String>
where
    W: Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<Remote>, W) -> Fut,
    Fut: std::future::Future<Output = Result<R, String>> + Send + 'static,
{
    let tasks: Vec<_> = work
        .into_iter()
        .map(|w| tokio::spawn(step(Arc::clone(this), w)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Each client's result and latencies: the results, and every latency sorted.
fn merged<T>(parts: Vec<(T, Vec<u64>)>) -> (Vec<T>, Vec<u64>) {
    let mut latencies = Vec::new();
    let results = parts
        .into_iter()
        .map(|(result, took)| {
            latencies.extend(took);
            result
        })
        .collect();
    latencies.sort_unstable();
    (results, latencies)
}

/// The resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read the status of process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for process {pid}"))
}

/// Opens `count` keep-alive connections to `server` (`http://HOST:PORT`), each after one
/// answered `GET /healthz`, and reports the server process's resident memory before and with
/// them open.
pub async fn idle_connections(
    server: &str,
    count: usize,
    pid: u32,
) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server
        .strip_prefix("http://")
        .ok_or("--server must be http://HOST:PORT")?
        .trim_end_matches('/')
        .to_owned();
    let before = rss_kib(pid)?;
    let mut open = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(500) {
        let batch = (chunk * 500..((chunk + 1) * 500).min(count)).map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr)
                    .await
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n")
                    .await
                    .map_err(|e| e.to_string())?;
                let mut answer = Vec::new();
                let mut buf = [0u8; 1024];
                while !answer.ends_with(b"}") {
                    let read = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                    if read == 0 {
                        return Err("closed before answering".to_owned());
                    }
                    answer.extend_from_slice(&buf[..read]);
                }
                Ok::<_, String>(stream)
            })
        });
        let batch: Vec<_> = batch.collect();
        for task in batch {
            open.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    // Let the server settle (buffers freed after the answers) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = rss_kib(pid)?;
    let held = open.len();
    drop(open);
    Ok(serde_json::json!({
        "system": "otp-sms",
        "target": "server",
        "idle_connections": held,
        "server_rss_kib_before": before,
        "server_rss_kib_with_idle": with,
        "bytes_per_idle_connection": ((with.saturating_sub(before)) * 1024) / held.max(1) as u64,
    }))
}
