//! A host that embeds otp-sms: a small identity server of its own (users, admins, session
//! cookies, its own 404 and its own OpenAPI document) that mounts the library's HTTP API under
//! `/otp`, hands its session's user over to it as the caller, keeps the events in a store of its
//! own (a wrapper that counts appends, over the memory store or PostgreSQL) and reads them into a
//! projection of its own (each user's phones). `docs/embedding.md` walks through it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use otp_sms_core::message::MessageTemplates;
use otp_sms_core::{
    async_trait, Append, AppendOutcome, Caller, CodeKey, CodeKeyRing, CommandService, Event,
    EventPayload, EventStore, InstanceId, KeyId, OrganizationId, OutboxMessage, OutboxStats,
    PrincipalId, Recorded, SmsSender, StoreError, StreamId, UserId, Uuid, USER_WRITE,
};
use otp_sms_directory::StaticDirectory;
use otp_sms_providers::print::PrintSender;
use otp_sms_providers::twilio::{TwilioFrom, TwilioOptions, TwilioSender};
use serde_json::json;

/// Where the library is mounted.
pub const PREFIX: &str = "/otp";

/// The host's own users, sessions and admins (a real host has a database of them). The
/// library sees them through a [`StaticDirectory`] built from them: users of one organization,
/// and `user.write` for the admins. A host with a database implements the three ports over it
/// instead (`docs/embedding.md`).
#[derive(Debug)]
pub struct Directory {
    /// Session cookie value → user id.
    sessions: HashMap<String, String>,
    /// The same users, and the admins' grant, as the library's ports.
    people: Arc<StaticDirectory>,
}

impl Directory {
    /// The demo directory: sessions `alice-session`, `bob-session` and `root-session` (an
    /// admin), all users of one organization.
    pub fn demo() -> Self {
        let sessions: HashMap<String, String> = [
            ("alice-session", "alice"),
            ("bob-session", "bob"),
            ("root-session", "root"),
        ]
        .into_iter()
        .map(|(s, u)| (s.to_owned(), u.to_owned()))
        .collect();
        let admins = HashSet::from(["root"]);
        let instance = InstanceId::single_tenant();
        let people = sessions.values().fold(StaticDirectory::new(), |d, user| {
            let id: UserId = user.parse().expect("a valid user id");
            let d = d.with_user(instance.clone(), id, organization());
            if admins.contains(user.as_str()) {
                let principal: PrincipalId = user.parse().expect("a valid principal");
                d.with_grant(instance.clone(), principal, organization(), USER_WRITE)
            } else {
                d
            }
        });
        Self {
            sessions,
            people: Arc::new(people),
        }
    }

    /// The user a session cookie belongs to.
    pub fn session_user(&self, session: &str) -> Option<&str> {
        self.sessions.get(session).map(String::as_str)
    }

    /// The users and the admins' grant as the library's user directory, authorizer and
    /// authenticator (it holds no bearer token: the session middleware hands callers over).
    pub fn people(&self) -> Arc<StaticDirectory> {
        Arc::clone(&self.people)
    }
}

/// The host's one organization (a single-tenant host: every caller is in
/// `InstanceId::single_tenant()`).
fn organization() -> OrganizationId {
    "acme".parse().expect("a valid organization id")
}

/// The host's session middleware: a known `session` cookie puts its user in the request's
/// extensions, as the library's [`Caller`] and as the host's own user.
async fn sessions(
    State(directory): State<Arc<Directory>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("session="))
        .find_map(|s| directory.session_user(s))
        .map(str::to_owned);
    if let Some(user) = user {
        if let Ok(principal) = user.parse::<PrincipalId>() {
            req.extensions_mut()
                .insert(Caller::single_tenant(principal));
            req.extensions_mut().insert(SessionUser(user));
        }
    }
    next.run(req).await
}

/// The host's own idea of who is signed in.
#[derive(Debug, Clone)]
pub struct SessionUser(pub String);

/// The host's own event store: any store, with the appends it committed counted (a host would
/// export this as a metric).
pub struct CountingStore<S> {
    inner: S,
    appends: AtomicU64,
}

impl<S> CountingStore<S> {
    /// `inner`, counted.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            appends: AtomicU64::new(0),
        }
    }

    /// The store it wraps.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Appends committed so far.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<E: EventPayload, S: EventStore<E>> EventStore<E> for CountingStore<S> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<E>, StoreError> {
        self.inner.read_stream(stream).await
    }
    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let outcome = self.inner.append(append).await?;
        self.appends.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<E>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        self.inner.fetch_outbox(limit, lease).await
    }
    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_outbox(id).await
    }
    async fn retry_outbox(&self, id: Uuid, after: Duration) -> Result<bool, StoreError> {
        self.inner.retry_outbox(id, after).await
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }
}

/// One phone in the host's projection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PhoneEntry {
    /// The number, in E.164.
    pub number: String,
    /// Whether it is a usable second factor.
    pub verified: bool,
}

/// The host's projection: each user's phones by registration id, read from the event feed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PhoneBook {
    /// The feed position read up to.
    pub position: u64,
    /// User → registration → phone.
    pub users: BTreeMap<String, BTreeMap<String, PhoneEntry>>,
    /// Registration → user, to place events that do not name the user.
    owners: HashMap<String, String>,
}

impl PhoneBook {
    /// Reads the feed from where it stopped to its end.
    pub async fn catch_up(&mut self, store: &dyn EventStore<Event>) -> Result<(), StoreError> {
        loop {
            let page = store.read_all(self.position, 500).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            self.position = last.position;
            for recorded in &page {
                self.apply(&recorded.stream.aggregate_id, &recorded.event);
            }
        }
    }

    fn apply(&mut self, registration: &str, event: &Event) {
        match event {
            Event::Added(added) => {
                let user = added.user.to_string();
                self.owners.insert(registration.to_owned(), user.clone());
                self.users.entry(user).or_default().insert(
                    registration.to_owned(),
                    PhoneEntry {
                        number: added.phone.as_e164().to_owned(),
                        verified: false,
                    },
                );
            }
            Event::Verified(_) => {
                if let Some(entry) = self.entry(registration) {
                    entry.verified = true;
                }
            }
            Event::Removed(_) => {
                if let Some(user) = self.owners.remove(registration) {
                    if let Some(phones) = self.users.get_mut(&user) {
                        phones.remove(registration);
                    }
                }
            }
            // Codes, checks, refusals and locks do not change the phone book.
            _ => {}
        }
    }

    fn entry(&mut self, registration: &str) -> Option<&mut PhoneEntry> {
        let user = self.owners.get(registration)?;
        self.users.get_mut(user)?.get_mut(registration)
    }
}

/// The SMS text the host's users receive.
pub fn templates() -> Arc<MessageTemplates> {
    Arc::new(MessageTemplates::new("Acme"))
}

/// Where the host's codes go: through Twilio when `twilio` is given (the account, its auth
/// token, the sending number and, for a stand-in, the API's address), else printed. Both come
/// from `otp-sms-providers`: the host needs no server crate to send.
pub fn sender(twilio: Option<TwilioSettings>) -> Result<Arc<dyn SmsSender>, String> {
    let templates = templates();
    Ok(match twilio {
        None => Arc::new(PrintSender::new(templates)),
        Some(t) => {
            let mut options = TwilioOptions::new(
                t.account_sid,
                t.auth_token,
                TwilioFrom::Number(t.from),
                templates,
            );
            if let Some(base_url) = t.base_url {
                options = options.with_base_url(base_url);
            }
            Arc::new(TwilioSender::new(options)?)
        }
    })
}

/// The host's Twilio account, as its operator configures it.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// `AC…`.
    pub account_sid: String,
    /// The account's auth token.
    pub auth_token: String,
    /// The sending number.
    pub from: String,
    /// The API's address when not Twilio's own (a stand-in in tests).
    pub base_url: Option<String>,
}

impl TwilioSettings {
    /// `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN` and `TWILIO_FROM` (and `TWILIO_BASE_URL`, if
    /// set), when the first is set.
    pub fn from_env() -> Result<Option<Self>, String> {
        let Ok(account_sid) = std::env::var("TWILIO_ACCOUNT_SID") else {
            return Ok(None);
        };
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        Ok(Some(Self {
            account_sid,
            auth_token: var("TWILIO_AUTH_TOKEN")?,
            from: var("TWILIO_FROM")?,
            base_url: std::env::var("TWILIO_BASE_URL").ok(),
        }))
    }
}

/// What the host's own handlers share.
#[derive(Clone)]
struct Host {
    store: Arc<dyn EventStore<Event>>,
    phone_book: Arc<tokio::sync::Mutex<PhoneBook>>,
}

/// The command service on `store`, with the host's directory as users, permissions and tokens.
pub fn service(store: Arc<dyn EventStore<Event>>, directory: Arc<Directory>) -> CommandService {
    // A real host loads its code key from its secret store.
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("host-1"), &[0x42; 32]));
    let people = directory.people();
    CommandService::new(store, people.clone(), people, keys)
}

/// The host's application: its own routes, 404 and OpenAPI document, the library under
/// [`PREFIX`], and the session middleware in front of all of it.
pub fn app(
    service: CommandService,
    store: Arc<dyn EventStore<Event>>,
    directory: Arc<Directory>,
) -> Router {
    let host = Host {
        store,
        phone_book: Default::default(),
    };
    // The host's document with the library's paths, as nested, merged in.
    let mut document = serde_json::to_value(otp_sms_http::openapi_nested(PREFIX))
        .expect("the library's document serialises");
    document["info"] = json!({"title": "Acme identity", "version": "1"});
    document["paths"]["/me/phones"] = json!({"get": {"operationId": "MyPhones", "responses": {"200": {"description": "The signed-in user's phones"}}}});
    Router::new()
        .route("/", get(|| async { "Acme identity" }))
        .route("/me/phones", get(my_phones))
        .route(
            "/openapi.json",
            get(move || async move { Json(document.clone()) }),
        )
        .with_state(host)
        .nest(PREFIX, otp_sms_http::router(service, directory.people()))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such page"})),
            )
        })
        .layer(middleware::from_fn_with_state(directory, sessions))
}

/// The signed-in user's phones, from the projection.
async fn my_phones(State(host): State<Host>, user: Option<Extension<SessionUser>>) -> Response {
    let Some(Extension(SessionUser(user))) = user else {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "sign in"}))).into_response();
    };
    let mut book = host.phone_book.lock().await;
    if let Err(e) = book.catch_up(host.store.as_ref()).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        )
            .into_response();
    }
    let phones: Vec<PhoneEntry> = book
        .users
        .get(&user)
        .map(|p| p.values().cloned().collect())
        .unwrap_or_default();
    Json(json!({ "phones": phones })).into_response()
}
