//! The JavaScript side of the end-to-end tests (`tests/web`): Connect clients of ZITADEL's
//! TypeScript stack and an OpenAPI validator, installed with `npm ci` from the committed lock
//! file. Without Node.js and npm a test that needs them fails with [`NODE_FIX`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// `tests/web`: the clients' sources, packages and lock file.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Runs `program args` in `tests/web`, failing the test with `fix` if it cannot run or fails.
pub fn run(program: &str, args: &[&str], fix: &str) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(web_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}.\n{fix}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}\n{fix}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What to do when Node.js, npm or the registry is missing.
pub const NODE_FIX: &str = "These tests need Node.js 18 or later with npm on PATH (Debian: \
    apt-get install nodejs npm) and the npm registry for `npm ci` in tests/web.";

/// Whether `tests/web/node_modules` holds what `package-lock.json` pins (npm records the
/// installed tree in `node_modules/.package-lock.json`): `npm ci` then need not reinstall.
fn installed() -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(web_dir().join("node_modules/.package-lock.json")),
        modified(web_dir().join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed >= locked,
        _ => false,
    }
}

/// Installs `tests/web`'s packages unless they are installed already (once per process; npm's
/// own lock guards against other processes).
pub fn install() {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if !installed() {
        run("npm", &["ci", "--no-audit", "--no-fund"], NODE_FIX);
    }
}

/// Validates an OpenAPI document against the specification of its version
/// (@seriousme/openapi-schema-validator, then swagger-parser, which also resolves every
/// reference): what the validators print (`valid OpenAPI 3.1`) or their errors.
pub fn validate_openapi(document: &serde_json::Value) -> Result<String, String> {
    install();
    let file = std::env::temp_dir().join(format!("otp-sms-openapi-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&file, document.to_string()).map_err(|e| e.to_string())?;
    let output = Command::new("node")
        .arg("validate-openapi.mjs")
        .arg(&file)
        .current_dir(web_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run node: {e}.\n{NODE_FIX}"));
    let _ = std::fs::remove_file(&file);
    let output = output?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
