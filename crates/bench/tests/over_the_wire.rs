//! The benchmark's server modes, end to end on loopback: the configuration it prints starts a
//! server; each protocol's run adds and verifies every registration (a failed call fails the
//! run); the baseline is served and driven; and the idle-connection mode reads the server's
//! memory; in process, the sign-in mode runs. Small counts: this checks the harness, it measures
//! nothing.

use std::process::{Command, Stdio};
use std::time::Duration;

const BENCH: &str = env!("CARGO_BIN_EXE_otp-sms-bench");
const KEYS: &str = "k1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the benchmark with `args` (without blocking the test's runtime); its JSON line.
async fn bench(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(BENCH)
        .args(args)
        .output()
        .await
        .expect("run the benchmark");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

async fn wait_for(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(url).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_adds_and_verifies_against_a_server_run_with_the_printed_config() {
    let printed = Command::new(BENCH)
        .arg("--print-server-config")
        .output()
        .unwrap();
    let text = String::from_utf8(printed.stdout).unwrap();
    otp_sms_server::config::Config::from_toml(&text).expect("the printed configuration is valid");
    let path = std::env::temp_dir().join(format!("otp-sms-bench-{}.toml", free_port()));
    std::fs::write(&path, &text).unwrap();

    // The server, in this process, on the printed configuration.
    let port = free_port();
    let args = <otp_sms_server::Args as clap::Parser>::parse_from([
        "otp-sms-server",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
        path.to_str().unwrap(),
        "--keys",
        KEYS,
    ]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(otp_sms_server::run(args, async {
        let _ = stopped.await;
    }));
    wait_for(&format!("127.0.0.1:{port}")).await;
    let url = format!("http://127.0.0.1:{port}");
    for protocol in ["http", "grpc", "grpc-web"] {
        let line = bench(&[
            "--server",
            &url,
            "--protocol",
            protocol,
            "--token",
            "bench-token",
            "--user",
            "bench-user",
            "--registrations",
            "60",
            "--concurrency",
            "4",
        ])
        .await;
        assert_eq!(line["target"], "server", "{line}");
        assert_eq!(line["protocol"], protocol);
        assert_eq!(line["registrations"], 60);
        assert!(line["verify_per_sec"].as_f64().unwrap() > 0.0, "{line}");
        assert!(line["add_per_sec"].as_f64().unwrap() > 0.0, "{line}");
        assert!(line["verify_p99_us"].as_f64().unwrap() >= line["verify_p50_us"].as_f64().unwrap());
    }
    let pid = std::process::id().to_string();
    let idle = bench(&[
        "--server",
        &url,
        "--idle-connections",
        "50",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(idle["idle_connections"], 50, "{idle}");
    assert!(idle["server_rss_kib_with_idle"].as_u64().unwrap() > 0);
    let _ = stop.send(());
    server.await.unwrap().expect("the server stops cleanly");
    let _ = std::fs::remove_file(&path);

    // The baseline: served by the benchmark, driven the same way.
    let port = free_port();
    let mut baseline = Command::new(BENCH)
        .args(["--serve-baseline", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&format!("127.0.0.1:{port}")).await;
    let line = bench(&[
        "--server",
        &format!("http://127.0.0.1:{port}"),
        "--protocol",
        "baseline",
        "--registrations",
        "60",
        "--concurrency",
        "4",
    ])
    .await;
    let _ = baseline.kill();
    let _ = baseline.wait();
    assert_eq!(line["target"], "baseline", "{line}");
    assert!(line["verify_per_sec"].as_f64().unwrap() > 0.0);
}

/// In process, `--sign-in` challenges and checks every verified registration (a failed call
/// fails the run) and reports both phases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_mode_challenges_and_checks_every_registration_in_process() {
    let line = bench(&[
        "--store",
        "memory",
        "--registrations",
        "50",
        "--concurrency",
        "4",
        "--sign-in",
    ])
    .await;
    for field in ["challenge_per_sec", "check_per_sec", "check_p99_us"] {
        assert!(
            line[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {line}"
        );
    }
}
