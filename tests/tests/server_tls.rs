//! End-to-end over TLS: the real server binary with a certificate made for the test, driven by
//! real TLS clients on HTTP/1.1, HTTP/2 and gRPC; the certificate reloaded on SIGHUP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    zitadel_users_client::ZitadelUsersClient, VerifyOtpsmsRegistrationRequest,
};
use otp_sms_tests::server::{config, Options, Server, TEST_KEYS};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

/// A self-signed certificate for `localhost` and 127.0.0.1: its PEM, its key's PEM and its
/// DER (to recognise it on the wire).
fn certificate() -> (String, String, Vec<u8>) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a test certificate");
    (
        made.cert.pem(),
        made.key_pair.serialize_pem(),
        made.cert.der().to_vec(),
    )
}

/// Writes a certificate's files to a fresh directory; returns (cert path, key path).
fn write(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

fn tls_server(cert: &Path, key: &Path, extra: &str) -> Server {
    Server::start(
        BIN,
        &Options {
            config: config(extra),
            keys: Some(TEST_KEYS.into()),
            tls: Some((cert.to_path_buf(), key.to_path_buf())),
            ..Options::default()
        },
    )
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("otp-sms-tls-{}", uuid::Uuid::now_v7()))
}

/// A client that trusts only `cert_pem`, on HTTP/1.1 only or with HTTP/2 by ALPN.
fn client(cert_pem: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_over_tls_and_no_plain_http_beside_them() {
    let dir = temp_dir();
    let (cert_pem, key_pem, der) = certificate();
    let (cert, key) = write(&dir, &cert_pem, &key_pem);
    let s = tls_server(&cert, &key, "");
    assert!(s.base_url.starts_with("https://"), "{}", s.base_url);

    // HTTP/1.1: a whole add and verify.
    let h1 = client(&cert_pem, true);
    let added = h1
        .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
        .bearer_auth("token-alice")
        .json(&serde_json::json!({"number": "+41791234567", "returnCode": {}}))
        .send()
        .await
        .expect("add over TLS");
    assert_eq!(added.version(), reqwest::Version::HTTP_11);
    let served = added
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec);
    assert_eq!(
        served.as_deref(),
        Some(der.as_slice()),
        "the configured certificate"
    );
    let added: serde_json::Value = added.json().await.unwrap();
    let verified = h1
        .post(s.url(&format!(
            "/resources/v3alpha/users/alice/otp_sms/{}/_verify",
            added["otpSmsId"].as_str().unwrap()
        )))
        .bearer_auth("token-alice")
        .json(&added["verificationCode"])
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);

    // HTTP/2, chosen by ALPN.
    let h2 = client(&cert_pem, false);
    let health = h2.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2);

    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(s.base_url.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // A client that trusts another certificate refuses the connection.
    let (other, _, _) = certificate();
    assert!(client(&other, true)
        .get(s.url("/healthz"))
        .send()
        .await
        .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls() {
    let dir = temp_dir();
    let (cert_pem, key_pem, _) = certificate();
    let (cert, key) = write(&dir, &cert_pem, &key_pem);
    let s = tls_server(&cert, &key, "");
    let channel = Endpoint::from_shared(s.base_url.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&cert_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS (HTTP/2 by ALPN)");
    let mut c = ZitadelUsersClient::new(channel);
    let mut add = tonic::Request::new(otp_sms_tests::grpc::add_returning_code(
        "alice",
        "+41791234567",
    ));
    add.metadata_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    let added = c
        .add_otpsms_authenticator(add)
        .await
        .expect("add")
        .into_inner();
    let mut verify = tonic::Request::new(VerifyOtpsmsRegistrationRequest {
        id: "alice".into(),
        otp_sms_id: added.otp_sms_id,
        code: added.verification_code.unwrap(),
        ..Default::default()
    });
    verify
        .metadata_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    c.verify_otpsms_registration(verify).await.expect("verify");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGHUP reads the files again: new connections get the new certificate, and a broken file
/// keeps the one in use (the server stays up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_reloaded_on_sighup_and_a_broken_one_is_not_taken() {
    let dir = temp_dir();
    let (first_pem, first_key, first_der) = certificate();
    let (second_pem, second_key, second_der) = certificate();
    let (cert, key) = write(&dir, &first_pem, &first_key);
    // A long file check, so that only the signal reloads within the test.
    let s = tls_server(&cert, &key, "[server]\ntls_check_secs = 3600\n");
    let served = |pem: String| {
        let url = s.url("/healthz");
        async move {
            let res = client(&pem, true).get(url).send().await.ok()?;
            res.extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .map(<[u8]>::to_vec)
        }
    };
    assert_eq!(served(first_pem.clone()).await, Some(first_der.clone()));

    write(&dir, &second_pem, &second_key);
    s.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut now = None;
    while tokio::time::Instant::now() < deadline {
        now = served(second_pem.clone()).await;
        if now.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        now,
        Some(second_der.clone()),
        "the new certificate after SIGHUP"
    );
    assert_eq!(served(first_pem).await, None, "the old one is gone");

    // A key that does not match the certificate: refused, the second certificate stays.
    std::fs::write(&key, &first_key).unwrap();
    s.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served(second_pem).await, Some(second_der));
    assert!(
        s.output().contains("TLS certificate not reloaded"),
        "{}",
        s.output()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_certificate_that_does_not_match_its_key_stops_the_start() {
    let dir = temp_dir();
    let (cert_pem, _, _) = certificate();
    let (_, other_key, _) = certificate();
    let (cert, key) = write(&dir, &cert_pem, &other_key);
    let config_file = dir.join("config.toml");
    std::fs::write(&config_file, config("")).unwrap();
    let (ok, stderr) = otp_sms_tests::server::run_to_exit(
        BIN,
        &[
            "--listen",
            "127.0.0.1:0",
            "--keys",
            TEST_KEYS,
            "--config",
            config_file.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("TLS") && stderr.contains("key.pem"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "no key material: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Given a 1 s header time-out, when a client completes the TLS handshake and then sends
/// nothing (or only the first byte of a request), then the server closes the connection
/// within about 1 s: the protocol detection after the handshake is under the deadline too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_after_the_handshake_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cert, key, der) = certificate();
    let dir = temp_dir();
    let (c, k) = write(&dir, &cert, &key);
    let s = tls_server(&c, &k, "[server]\nheader_read_timeout_ms = 1000\n");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let target = s.base_url.trim_start_matches("https://").to_owned();
    for first_byte in [false, true] {
        let tcp = tokio::net::TcpStream::connect(&target).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("the handshake");
        if first_byte {
            tls.write_all(b"P").await.unwrap();
        }
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
        let closed = matches!(read, Ok(Ok(0)) | Ok(Err(_)));
        assert!(
            closed,
            "still open after 5 s (first byte sent: {first_byte})"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "closed after {:?}",
            started.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
