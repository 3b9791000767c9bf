//! Local stand-ins that speak SMS providers' documented HTTP APIs, on loopback, so that the
//! senders are tested against the request shapes, authentication and answers of the providers'
//! public API references without ever calling a provider.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Form, Json};
use base64::Engine as _;
use serde_json::json;
use tokio::task::JoinHandle;

/// Serves `app` on a free loopback port: its base URL and task.
async fn serve(app: axum::Router) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base_url, task)
}

/// An answer the Twilio stand-in gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioAnswer {
    /// `201 Created` with a queued message.
    Queued,
    /// The message is taken on arrival (and listed from then on), but `201 Created` comes only
    /// after this long: a slow API whose answer a sender may give up waiting for.
    QueuedAfter(std::time::Duration),
    /// An error status with Twilio's error code, as its API reference lists them (e.g. 400
    /// with 21211 for an invalid `To`, 429 with 20429 when throttled).
    Error(u16, u32),
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct TwilioRequest {
    /// The account in the path.
    pub account: String,
    /// The form fields.
    pub form: HashMap<String, String>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct TwilioState {
    username: String,
    secret: String,
    requests: Vec<TwilioRequest>,
    /// Answers to give, in order; then `Queued`.
    script: VecDeque<TwilioAnswer>,
    /// The messages taken (`To` and `Body`), oldest first, for the message list.
    held: Vec<(String, String)>,
    /// Look-ups of the message list.
    listed: usize,
}

impl TwilioState {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.secret))
        );
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected)
    }
}

/// Twilio Programmable Messaging's `Messages.json` on loopback: basic authentication checked
/// (401 with error 20003 otherwise), the form recorded, answers scripted.
pub struct TwilioStandIn {
    /// `http://127.0.0.1:PORT`: the sender's `base_url`.
    pub base_url: String,
    state: Arc<Mutex<TwilioState>>,
    task: JoinHandle<()>,
}

impl TwilioStandIn {
    /// Starts on a free port, accepting `username` and `secret`.
    pub async fn start(username: &str, secret: &str) -> Self {
        let state = Arc::new(Mutex::new(TwilioState {
            username: username.to_owned(),
            secret: secret.to_owned(),
            ..TwilioState::default()
        }));
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(messages).get(message_list),
            )
            .with_state(Arc::clone(&state));
        let (base_url, task) = serve(app).await;
        Self {
            base_url,
            state,
            task,
        }
    }

    /// Answers the next requests with `answers`, in order.
    pub fn script(&self, answers: &[TwilioAnswer]) {
        self.state.lock().unwrap().script = answers.iter().copied().collect();
    }

    /// The requests received, authenticated or not.
    pub fn requests(&self) -> Vec<TwilioRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many times the message list was asked for, authenticated or not.
    pub fn list_reads(&self) -> usize {
        self.state.lock().unwrap().listed
    }
}

/// `GET Messages.json?To=…&PageSize=…`: the messages taken for `To`, newest first.
async fn message_list(
    State(state): State<Arc<Mutex<TwilioState>>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let mut state = state.lock().unwrap();
    state.listed += 1;
    if !state.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
        );
    }
    let size = query
        .get("PageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    let messages: Vec<_> = state
        .held
        .iter()
        .rev()
        .filter(|(to, _)| query.get("To").map_or(true, |wanted| wanted == to))
        .take(size)
        .map(|(to, body)| json!({"to": to, "body": body, "status": "sent"}))
        .collect();
    (StatusCode::OK, Json(json!({"messages": messages})))
}

impl Drop for TwilioStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn messages(
    State(state): State<Arc<Mutex<TwilioState>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    let answer = {
        let mut state = state.lock().unwrap();
        let authorized = state.authorized(&headers);
        state.requests.push(TwilioRequest {
            account,
            form: form.clone(),
            at: Instant::now(),
        });
        if !authorized {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
            );
        }
        let answer = state.script.pop_front().unwrap_or(TwilioAnswer::Queued);
        if !matches!(answer, TwilioAnswer::Error(..)) {
            let field = |name: &str| form.get(name).cloned().unwrap_or_default();
            state.held.push((field("To"), field("Body")));
        }
        answer
    };
    match answer {
        TwilioAnswer::Queued | TwilioAnswer::QueuedAfter(_) => {
            if let TwilioAnswer::QueuedAfter(delay) = answer {
                tokio::time::sleep(delay).await;
            }
            (
                StatusCode::CREATED,
                Json(json!({"sid": "SM00000000000000000000000000000000", "status": "queued"})),
            )
        }
        TwilioAnswer::Error(status, code) => (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({
                "code": code,
                "message": format!("The 'To' number {} is not valid.", "+41 79 quoted back"),
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status,
            })),
        ),
    }
}

#[derive(Default)]
struct VonageState {
    api_key: String,
    api_secret: String,
    requests: Vec<HashMap<String, String>>,
    /// Statuses to answer, in order; then "0".
    script: VecDeque<&'static str>,
}

/// The Vonage SMS API's `/sms/json` on loopback: always HTTP 200, the outcome in each
/// message's `status` as Vonage's reference lists them (`4` for wrong credentials).
pub struct VonageStandIn {
    /// `http://127.0.0.1:PORT`: the sender's `base_url`.
    pub base_url: String,
    state: Arc<Mutex<VonageState>>,
    task: JoinHandle<()>,
}

impl VonageStandIn {
    /// Starts on a free port, accepting `api_key` and `api_secret`.
    pub async fn start(api_key: &str, api_secret: &str) -> Self {
        let state = Arc::new(Mutex::new(VonageState {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            ..VonageState::default()
        }));
        let app = axum::Router::new()
            .route("/sms/json", post(vonage_sms))
            .with_state(Arc::clone(&state));
        let (base_url, task) = serve(app).await;
        Self {
            base_url,
            state,
            task,
        }
    }

    /// Answers the next requests with these statuses, in order.
    pub fn script(&self, statuses: &[&'static str]) {
        self.state.lock().unwrap().script = statuses.iter().copied().collect();
    }

    /// The form of every request received.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for VonageStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn vonage_sms(
    State(state): State<Arc<Mutex<VonageState>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let mut state = state.lock().unwrap();
    let authorized = form.get("api_key") == Some(&state.api_key)
        && form.get("api_secret") == Some(&state.api_secret);
    let to = form.get("to").cloned().unwrap_or_default();
    state.requests.push(form);
    let status = if authorized {
        state.script.pop_front().unwrap_or("0")
    } else {
        "4"
    };
    if status == "0" {
        Json(json!({
            "message-count": "1",
            "messages": [{"to": to, "message-id": "0C000000217B7F02", "status": "0",
                          "remaining-balance": "15.5", "message-price": "0.03", "network": "22801"}],
        }))
    } else {
        Json(json!({
            "message-count": "1",
            "messages": [{"status": status, "error-text": format!("refused for {to}")}],
        }))
    }
}
