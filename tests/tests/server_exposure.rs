//! End-to-end: what the server shows of itself and of its secrets, and what development mode
//! refuses. The real binary, on loopback.

use std::time::Duration;

use otp_sms_server::config::Config;
use otp_sms_server::Args;
use otp_sms_tests::net::WebhookReceiver;
use otp_sms_tests::server::{config, webhook_sms, Options, Server, TEST_KEYS};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    otp_sms_tests::server::run_to_exit(BIN, args, env)
}

#[test]
fn development_mode_refuses_every_production_setting() {
    let config = std::env::temp_dir().join(format!("otp-sms-dev-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&config, config_text()).unwrap();
    let config = config.to_str().unwrap().to_owned();
    for (args, env, named) in [
        (vec!["--dev", "--listen", "0.0.0.0:0"], vec![], "loopback"),
        (vec!["--dev", "--listen", "[::]:0"], vec![], "loopback"),
        (
            vec![
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                "postgres://u:p@db/x",
            ],
            vec![],
            "--database-url",
        ),
        (
            vec!["--dev", "--listen", "127.0.0.1:0", "--config", &config],
            vec![],
            "--config",
        ),
        // A stray OTP_SMS_DEV beside a production configuration.
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--config",
                &config,
                "--keys",
                TEST_KEYS,
            ],
            vec![("OTP_SMS_DEV", "true")],
            "OTP_SMS_DEV",
        ),
    ] {
        let (ok, stderr) = run_binary(&args, &env);
        assert!(!ok, "{args:?} must not start");
        assert!(
            stderr.contains("--dev") && stderr.contains(named),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("u:p@"),
            "no password in the message: {stderr}"
        );
    }
    let _ = std::fs::remove_file(&config);
}

fn config_text() -> String {
    config("")
}

#[test]
fn keys_on_the_command_line_are_warned_about_and_never_echoed() {
    let mut s = Server::start(
        BIN,
        &Options {
            config: config(""),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    assert!(s.terminate(Duration::from_secs(10)).is_some());
    let output = s.output();
    assert!(output.contains("process list"), "{output}");
    assert!(!output.contains(&TEST_KEYS[3..]), "{output}");
    // A malformed key line names the key's id, never its material.
    let material = "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e";
    let (ok, stderr) = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--dev",
            "--keys",
            &format!("k9:{material}"),
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("k9") && !stderr.contains(material),
        "{stderr}"
    );
}

#[test]
fn debug_of_arguments_and_configuration_shows_no_secret() {
    let args = <Args as clap::Parser>::parse_from([
        "otp-sms-server",
        "--database-url",
        "postgres://app:db-pa55word@db.internal:5432/otp?sslmode=require&password=other-pa55",
        "--keys",
        TEST_KEYS,
    ]);
    let text = config(&webhook_sms(
        "https://gw:gw-pa55@sms.example.com/send?api_key=query-k3y",
        "",
    ))
    .replace("allow_http = true\n", "")
    .replace(
        "[abuse]\n",
        "[abuse]\ntest_numbers = [{ number = \"+41791234567\", code = \"24682468\" }]\n",
    );
    let config = Config::from_toml(&text).unwrap();
    let directory = config.directory().unwrap();
    let shown = format!("{args:?}\n{config:?}\n{directory:?}");
    for secret in [
        "db-pa55word",
        "other-pa55",
        &TEST_KEYS[3..],
        "token-alice",
        "token-admin",
        "gw-pa55",
        "query-k3y",
        otp_sms_tests::net::WEBHOOK_SECRET,
        "24682468",
        "+41791234567",
    ] {
        assert!(!shown.contains(secret), "`{secret}` shows in:\n{shown}");
    }
    // What an operator needs to tell configurations apart still shows.
    for visible in ["db.internal", "sms.example.com", "inst-1", "user.write"] {
        assert!(shown.contains(visible), "`{visible}` is missing:\n{shown}");
    }
}

/// Every SMS the webhook sender posts is signed; a receiver that checks the signature takes
/// it, and one that holds another secret refuses it (401), which the notifier records as a
/// failed delivery rather than retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_calls_are_signed_for_the_configured_secret() {
    let receiver = WebhookReceiver::start().await;
    let right = Server::start(
        BIN,
        &Options {
            config: config(&format!(
                "{}[notifier]\ninterval_ms = 20\n",
                webhook_sms(&receiver.url, "retries = 0")
            )),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    let wrong = Server::start(
        BIN,
        &Options {
            config: config(&format!(
                "{}[notifier]\ninterval_ms = 20\nmax_attempts = 1\n",
                webhook_sms(&receiver.url, "retries = 0").replace(
                    otp_sms_tests::net::WEBHOOK_SECRET,
                    "whsec_b3RoZXItc2VjcmV0LW9mLWFub3RoZXItc2VuZGVyIQ=="
                )
            )),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    let client = reqwest::Client::new();
    for server in [&right, &wrong] {
        let res = client
            .post(server.url("/resources/v3alpha/users/alice/otp_sms"))
            .bearer_auth("token-admin")
            .json(&serde_json::json!({"number": "+41791234567", "sendCode": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (receiver.received().is_empty() || receiver.unsigned() == 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = receiver.received();
    assert_eq!(received.len(), 1, "only the right secret's SMS is taken");
    assert_eq!(received[0]["phone"], "+41791234567");
    assert!(
        receiver.unsigned() >= 1,
        "the wrong secret's SMS was refused"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}

/// A file holding a secret that other users may read is refused at start, as ssh refuses such
/// a key: the message names the file and the fix. Both kinds: the code keys (`--key-file`) and
/// a provider's secret (`auth_token_file`); the harness's own secret files (0600) are read, as
/// every provider test shows.
#[test]
fn secret_files_open_to_other_users_are_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let open_to_all = |text: &str| {
        let path =
            std::env::temp_dir().join(format!("otp-sms-open-secret-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    };
    let config_path =
        std::env::temp_dir().join(format!("otp-sms-open-config-{}.toml", uuid::Uuid::now_v7()));

    let keys = open_to_all(&TEST_KEYS.replacen(':', " ", 1));
    std::fs::write(&config_path, config("")).unwrap();
    let (ok, stderr) = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config_path.to_str().unwrap(),
            "--key-file",
            keys.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok, "started with a key file open to all: {stderr}");
    assert!(
        stderr.contains(keys.to_str().unwrap()) && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains(&TEST_KEYS[3..]), "{stderr}");

    let token = open_to_all("twilio-auth-token");
    std::fs::write(
        &config_path,
        config(&format!(
            "[sms]\nsender = \"twilio\"\n\n[sms.twilio]\naccount_sid = \"AC00000000000000000000000000000000\"\n\
             auth_token_file = \"{}\"\nfrom = \"+15005550006\"\n",
            token.display()
        )),
    )
    .unwrap();
    let (ok, stderr) = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config_path.to_str().unwrap(),
            "--keys",
            TEST_KEYS,
        ],
        &[],
    );
    assert!(!ok, "started with a provider secret open to all: {stderr}");
    assert!(
        stderr.contains(token.to_str().unwrap()) && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains("twilio-auth-token"), "{stderr}");
    for path in [keys, token, config_path] {
        let _ = std::fs::remove_file(path);
    }
}

/// `--help` shows no value taken from the environment: a database URL there carries its
/// password.
#[test]
fn help_shows_no_environment_value() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .env("OTP_SMS_DATABASE_URL", "postgres://app:help-pa55@db/otp")
        .env("OTP_SMS_KEYS", TEST_KEYS)
        .env("OTP_SMS_LISTEN", "127.0.0.9:1234")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("OTP_SMS_DATABASE_URL"), "{help}");
    for value in ["help-pa55", &TEST_KEYS[3..], "127.0.0.9:1234"] {
        assert!(!help.contains(value), "`{value}` shows in --help:\n{help}");
    }
}
