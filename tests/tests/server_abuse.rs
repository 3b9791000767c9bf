//! Abuse resistance end to end, against the real server binary on PostgreSQL: the possession
//! matrix over HTTP and gRPC, refusals with their codes and RetryInfo, and 1,000-add pumping
//! runs whose SMS are counted by a webhook receiver and whose writes are counted in the
//! database. Addresses vary through `X-Forwarded-For` from the trusted loopback proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    set_phone, zitadel_users_client::ZitadelUsersClient, AddOtpsmsAuthenticatorRequest,
    ReturnPhoneVerificationCode, SendPhoneVerificationCode, SetPhone,
};
use otp_sms_tests::net::WebhookReceiver;
use otp_sms_tests::pg;
use otp_sms_tests::server::{webhook_sms, Options, Server, TEST_KEYS};
use serde_json::Value;
use tonic::{Code, Request};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

/// Users `u0` … `u{users-1}` of `org`, each with the token `token-u{i}`; `root` holds user.write;
/// the loopback proxy is trusted; SMS go to `webhook`.
fn config(users: usize, webhook: &str) -> String {
    let mut c = String::from(
        "[[instances]]\nid = \"i\"\n\n[[organizations]]\ninstance = \"i\"\nid = \"org\"\n\n\
         [[users]]\ninstance = \"i\"\nid = \"root\"\norganization = \"org\"\n\n\
         [[tokens]]\ntoken = \"token-root\"\ninstance = \"i\"\nuser = \"root\"\npermissions = [\"user.write\"]\n\n",
    );
    for i in 0..users {
        c.push_str(&format!(
            "[[users]]\ninstance = \"i\"\nid = \"u{i}\"\norganization = \"org\"\n\n\
             [[tokens]]\ntoken = \"token-u{i}\"\ninstance = \"i\"\nuser = \"u{i}\"\n\n"
        ));
    }
    c.push_str(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n\n{}\n\
         [notifier]\ninterval_ms = 20\nlease_secs = 5\nbatch = 200\n",
        webhook_sms(webhook, "timeout_ms = 2000\nretries = 0")
    ));
    c
}

struct Setup {
    server: Server,
    schema: String,
    webhook: WebhookReceiver,
}

async fn start(users: usize) -> Setup {
    start_with(users, |config| config).await
}

/// A server whose configuration `edit` changes first.
async fn start_with(users: usize, edit: impl FnOnce(String) -> String) -> Setup {
    let webhook = WebhookReceiver::start().await;
    let schema = pg::schema_name();
    let server = Server::start(
        BIN,
        &Options {
            config: edit(config(users, &webhook.url)),
            keys: Some(TEST_KEYS.into()),
            database: Some((pg::database_url().to_owned(), schema.clone())),
            ..Options::default()
        },
    );
    Setup {
        server,
        schema,
        webhook,
    }
}

impl Setup {
    async fn add(
        &self,
        client: &reqwest::Client,
        user: &str,
        token: &str,
        number: &str,
        verification: &str,
        forwarded_for: Option<&str>,
    ) -> (u16, Value) {
        let mut req = client
            .post(
                self.server
                    .url(&format!("/resources/v3alpha/users/{user}/otp_sms")),
            )
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"number": "{number}", {verification}}}"#));
        if let Some(address) = forwarded_for {
            req = req.header("x-forwarded-for", address);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let retry_after = res.headers().get("retry-after").cloned();
        let body: Value = res.json().await.expect("json");
        if status == 429 {
            assert!(retry_after.is_some(), "429 without Retry-After: {body}");
        }
        (status, body)
    }

    /// Runs `n` adds, 8 at a time; `each(i)` gives user, number and forwarded address.
    /// Returns how many were accepted.
    async fn pump(
        self: &Arc<Self>,
        n: usize,
        each: impl Fn(usize) -> (String, String, String) + Send + Sync + 'static,
    ) -> usize {
        let each = Arc::new(each);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (setup, each, next) = (Arc::clone(self), Arc::clone(&each), Arc::clone(&next));
            workers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut accepted = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        return accepted;
                    }
                    let (user, number, address) = each(i);
                    let (status, body) = setup
                        .add(
                            &client,
                            &user,
                            &format!("token-{user}"),
                            &number,
                            r#""sendCode": {}"#,
                            Some(&address),
                        )
                        .await;
                    match status {
                        200 => accepted += 1,
                        429 => assert_eq!(body["code"], 8, "{body}"),
                        _ => panic!("add {i}: {status} {body}"),
                    }
                }
            }));
        }
        let mut accepted = 0;
        for w in workers {
            accepted += w.await.expect("worker");
        }
        accepted
    }

    /// Waits until the webhook has received `expected` SMS and nothing more arrives.
    async fn sms_settle(&self, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.webhook.received().len() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Anything beyond would arrive within a few notifier passes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.webhook.received().len()
    }

    /// (added registrations, refusal records, other events) in the database.
    async fn written(&self) -> (i64, i64, i64) {
        let pool = pg::pool().await;
        let count = |t: &str| {
            format!(
                "SELECT count(*) FROM \"{}\".events WHERE event_type {t}",
                self.schema
            )
        };
        let added: i64 = sqlx::query_scalar(&count("= 'user.otp_sms.added'"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let refused: i64 = sqlx::query_scalar(&count("= 'user.otp_sms.send.refused'"))
            .fetch_one(&pool)
            .await
            .unwrap();
        let others: i64 = sqlx::query_scalar(&count(
            "NOT IN ('user.otp_sms.added', 'user.otp_sms.send.refused', 'user.otp_sms.code.added', 'user.otp_sms.code.sent')",
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        (added, refused, others)
    }

    async fn finish(self) {
        drop(self.server);
        pg::drop_schema(&self.schema).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn possession_matrix_over_http() {
    let s = start(1).await;
    let c = reqwest::Client::new();
    let send = r#""sendCode": {}"#;
    let ret = r#""returnCode": {}"#;
    let vouch = r#""isVerified": true"#;
    let number = "+41791234567";
    // (caller token, option, HTTP status, google.rpc code)
    for (token, option, http, code) in [
        ("token-u0", send, 200, 0),
        ("token-u0", ret, 403, 7),
        ("token-u0", vouch, 403, 7),
        ("token-root", ret, 200, 0),
        ("token-root", vouch, 200, 0),
    ] {
        let (status, body) = s.add(&c, "u0", token, number, option, None).await;
        assert_eq!(status, http, "{token} {option}: {body}");
        if code != 0 {
            assert_eq!(body["code"], code, "{body}");
        }
        if option == ret && status == 200 {
            assert!(body["verificationCode"].is_string(), "{body}");
        }
    }
    // A premium-rate number: INVALID_ARGUMENT naming the type, and only its audit record.
    let (status, body) = s
        .add(&c, "u0", "token-root", "+19005550123", vouch, None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 3);
    assert!(
        body["message"].as_str().unwrap().contains("premium-rate"),
        "{body}"
    );
    let (added, refused, _) = s.written().await;
    assert_eq!((added, refused), (3, 1));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn possession_matrix_and_retry_info_over_grpc() {
    // One number's budget shared by all users, 5 per 10 minutes, so that a few users bind it.
    let s = start_with(6, |config| {
        format!("{config}\n[abuse]\ndestination_number = [{{ max = 5, window_secs = 600 }}]\n")
    })
    .await;
    let mut c = ZitadelUsersClient::connect(s.server.base_url.clone())
        .await
        .expect("connect");
    let request = |user: &str, token: &str, number: &str, v: set_phone::Verification| {
        let mut r = Request::new(AddOtpsmsAuthenticatorRequest {
            id: user.into(),
            phone: Some(SetPhone {
                number: number.into(),
                verification: Some(v),
            }),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    let send = || set_phone::Verification::SendCode(SendPhoneVerificationCode {});
    let ret = || set_phone::Verification::ReturnCode(ReturnPhoneVerificationCode {});
    let vouch = || set_phone::Verification::IsVerified(true);
    let n = "+41791234567";
    c.add_otpsms_authenticator(request("u0", "token-u0", n, send()))
        .await
        .expect("self send_code");
    for v in [ret(), vouch()] {
        let err = c
            .add_otpsms_authenticator(request("u0", "token-u0", n, v))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let added = c
        .add_otpsms_authenticator(request("u0", "token-root", n, ret()))
        .await
        .expect("user.write return_code");
    assert!(added.into_inner().verification_code.is_some());
    c.add_otpsms_authenticator(request("u0", "token-root", n, vouch()))
        .await
        .expect("user.write is_verified");
    // Four more users send to the same number: the fifth code; the sixth is refused with
    // RetryInfo in the status details.
    for i in 1..5 {
        c.add_otpsms_authenticator(request(&format!("u{i}"), &format!("token-u{i}"), n, send()))
            .await
            .expect("within the number budget");
    }
    let err = c
        .add_otpsms_authenticator(request("u5", "token-u5", n, send()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("destination number"),
        "{}",
        err.message()
    );
    let retry = tonic_types::StatusExt::get_details_retry_info(&err)
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(600),
        "{retry:?}"
    );
    s.finish().await;
}

/// 1,000 adds by one user to one number: the user's budgets (registration cap, codes) bound
/// the SMS; the 990-odd refusals write only audit records, one per refusing scope and
/// 10-minute window (before, one each: the log grew with every refused call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_adds_from_one_self_token_send_at_most_the_user_budget() {
    let s = Arc::new(start(1).await);
    let accepted = s
        .pump(1000, |i| {
            (
                "u0".into(),
                "+41791234567".into(),
                format!("198.51.100.{}", i % 250),
            )
        })
        .await;
    let sms = s.sms_settle(accepted).await;
    assert!(sms <= 10, "{sms} SMS for one user (budget 10 per day)");
    assert_eq!(sms, accepted);
    let (added, refused, others) = s.written().await;
    assert_eq!(added as usize, accepted);
    // One scope refuses them all here; a run that straddles a window's edge records twice.
    assert!(
        (1..=2).contains(&refused),
        "{refused} refusal records for {} refusals",
        1000 - accepted
    );
    assert_eq!(others, 0);
    Arc::into_inner(s).expect("done").finish().await;
}

/// 1,000 adds to one number from 1,000 users at 1,000 addresses: the number's global budget
/// (20 an hour, over each user's own 5 per 10 minutes) binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_adds_to_one_number_send_at_most_the_number_budget() {
    let s = Arc::new(start(1000).await);
    let accepted = s
        .pump(1000, |i| {
            (
                format!("u{i}"),
                "+41791234567".into(),
                format!("2001:db8:{i:x}::1"),
            )
        })
        .await;
    let sms = s.sms_settle(accepted).await;
    assert_eq!(
        sms, 20,
        "the destination number's global budget is 20 an hour"
    );
    assert_eq!(accepted, 20);
    // Each of the 980 refused users is recorded once.
    let (added, refused, others) = s.written().await;
    assert_eq!((added, refused, others), (20, 980, 0));
    Arc::into_inner(s).expect("done").finish().await;
}

/// 1,000 adds to 1,000 sequential numbers of one range, from 1,000 users at 1,000 addresses
/// (no other budget binds): the range's budget binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sequential_numbers_send_at_most_the_range_budget() {
    let s = Arc::new(start(1000).await);
    let accepted = s
        .pump(1000, |i| {
            (
                format!("u{i}"),
                format!("+41791234{i:03}"),
                format!("203.0.{}.{}", i / 250, i % 250),
            )
        })
        .await;
    let sms = s.sms_settle(accepted).await;
    assert_eq!(sms, 20, "the range's budget is 20 per hour");
    assert_eq!(accepted, 20);
    let (added, refused, others) = s.written().await;
    assert_eq!((added, refused, others), (20, 980, 0));
    Arc::into_inner(s).expect("done").finish().await;
}

/// Without a trusted proxy, a forwarded address is ignored: every add counts against the
/// connection's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let s = start_with(12, |config| {
        config.replace(
            "trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]",
            "trusted_proxies = []",
        )
    })
    .await;
    let c = reqwest::Client::new();
    for i in 0..10 {
        let (status, body) = s
            .add(
                &c,
                &format!("u{i}"),
                &format!("token-u{i}"),
                &format!("+417912{i:02}001"),
                r#""sendCode": {}"#,
                Some(&format!("198.51.100.{i}")),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = s
        .add(
            &c,
            "u10",
            "token-u10",
            "+41791250001",
            r#""sendCode": {}"#,
            Some("198.51.100.77"),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("client address"),
        "{body}"
    );
    assert_eq!(
        body["details"][1]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    s.finish().await;
}

/// The failure cap over HTTP: wrong codes in a row lock verification (FAILED_PRECONDITION,
/// HTTP 400) until a holder of user.write calls the unlock extension; the user cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unlock_extension_over_http() {
    let s = start_with(1, |config| {
        config.replace(
            "[server]",
            "[abuse]\nmax_consecutive_failures = 3\n\n[server]",
        )
    })
    .await;
    let c = reqwest::Client::new();
    let (status, body) = s
        .add(
            &c,
            "u0",
            "token-root",
            "+41791234567",
            r#""returnCode": {}"#,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["otpSmsId"].as_str().unwrap().to_owned();
    let code = body["verificationCode"].as_str().unwrap().to_owned();
    let verify = |code: String| {
        let (c, url) = (
            c.clone(),
            s.server
                .url(&format!("/resources/v3alpha/users/u0/otp_sms/{id}/_verify")),
        );
        async move {
            let res = c
                .post(url)
                .bearer_auth("token-u0")
                .header("content-type", "application/json")
                .body(format!("\"{code}\""))
                .send()
                .await
                .expect("verify");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.expect("json"))
        }
    };
    let wrong = otp_sms_testkit::scenario::wrong_code(&code);
    for _ in 0..3 {
        assert_eq!(verify(wrong.clone()).await.0, 400);
    }
    let (status, body) = verify(code.clone()).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(9)), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("locked"),
        "{body}"
    );
    let unlock = |token: &'static str| {
        let (c, url) = (
            c.clone(),
            s.server.url("/resources/v3alpha/users/u0/otp_sms/_unlock"),
        );
        async move {
            let res = c.post(url).bearer_auth(token).send().await.expect("unlock");
            res.status().as_u16()
        }
    };
    assert_eq!(unlock("token-u0").await, 403);
    assert_eq!(unlock("token-root").await, 200);
    let (status, body) = verify(code).await;
    assert_eq!(status, 200, "{body}");
    s.finish().await;
}

/// The unlock extension over gRPC (`otpsms.v1.OTPSMSExtensions`), on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unlock_extension_over_grpc() {
    use otp_sms_grpc::proto::otpsms::v1::{
        otpsms_extensions_client::OtpsmsExtensionsClient, UnlockOtpsmsVerificationRequest,
    };
    use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::VerifyOtpsmsRegistrationRequest;
    let s = start_with(1, |config| {
        config.replace(
            "[server]",
            "[abuse]\nmax_consecutive_failures = 2\n\n[server]",
        )
    })
    .await;
    let authed = |token: &str| format!("Bearer {token}").parse().unwrap();
    let mut users = ZitadelUsersClient::connect(s.server.base_url.clone())
        .await
        .expect("connect");
    let mut ext = OtpsmsExtensionsClient::connect(s.server.base_url.clone())
        .await
        .expect("connect");
    let mut add = Request::new(otp_sms_tests::grpc::add_returning_code(
        "u0",
        "+41791234567",
    ));
    add.metadata_mut()
        .insert("authorization", authed("token-root"));
    let added = users
        .add_otpsms_authenticator(add)
        .await
        .expect("add")
        .into_inner();
    let code = added.verification_code.unwrap();
    let verify = |code: &str| {
        let mut r = Request::new(VerifyOtpsmsRegistrationRequest {
            id: "u0".into(),
            otp_sms_id: added.otp_sms_id.clone(),
            code: code.into(),
            ..Default::default()
        });
        r.metadata_mut().insert("authorization", authed("token-u0"));
        r
    };
    let wrong = otp_sms_testkit::scenario::wrong_code(&code);
    for _ in 0..2 {
        let err = users
            .verify_otpsms_registration(verify(&wrong))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let err = users
        .verify_otpsms_registration(verify(&code))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let unlock = |token: &str| {
        let mut r = Request::new(UnlockOtpsmsVerificationRequest {
            id: "u0".into(),
            ..Default::default()
        });
        r.metadata_mut().insert("authorization", authed(token));
        r
    };
    let err = ext
        .unlock_otpsms_verification(unlock("token-u0"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    ext.unlock_otpsms_verification(unlock("token-root"))
        .await
        .expect("unlock");
    users
        .verify_otpsms_registration(verify(&code))
        .await
        .expect("verified once unlocked");
    s.finish().await;
}

/// With `[abuse.range_collapse]`, a range that received codes nobody verified takes the tighter
/// limits once the codes have outlived their lifetime (2 s here) and the server's conversion
/// signal has caught up (a few seconds), well before the range's own budget of 20 per hour
/// runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_whose_conversion_collapsed_is_held_to_the_tighter_limits() {
    let s = Arc::new(
        start_with(30, |config| {
            format!(
                "{config}\n[policy]\ncode_lifetime_secs = 2\n\n[abuse.range_collapse]\nmin_sent = 10\nbelow_percent = 20\nlimits = [{{ max = 3, window_secs = 3600 }}]\n"
            )
        })
        .await,
    );
    // Ten codes to one range, none verified: the pumping signature.
    let accepted = s
        .pump(10, |i| {
            (
                format!("u{i}"),
                format!("+41791234{i:03}"),
                format!("203.0.0.{i}"),
            )
        })
        .await;
    assert_eq!(accepted, 10, "within the range's own 20 per hour");
    assert_eq!(s.sms_settle(10).await, 10);
    // The signal catches up every few seconds; until then the range's own budget applies.
    let client = reqwest::Client::new();
    let mut more = 0;
    loop {
        let user = format!("u{}", 10 + more);
        let (status, body) = s
            .add(
                &client,
                &user,
                &format!("token-{user}"),
                &format!("+41791234{:03}", 100 + more),
                r#""sendCode": {}"#,
                Some(&format!("203.0.1.{more}")),
            )
            .await;
        if status == 429 {
            assert!(
                body["message"].as_str().unwrap().contains("number range"),
                "{body}"
            );
            break;
        }
        assert_eq!(status, 200, "{body}");
        more += 1;
        assert!(
            10 + more < 20,
            "the range's own budget would refuse next; the collapse never bound"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Another range keeps its own budget.
    let (status, body) = s
        .add(
            &client,
            "u29",
            "token-u29",
            "+41791235000",
            r#""sendCode": {}"#,
            Some("203.0.2.1"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    Arc::into_inner(s).expect("done").finish().await;
}
