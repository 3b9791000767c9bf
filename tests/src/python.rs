//! The Python environment of the OpenAPI client test: `tests/openapi/.venv`, made with the
//! machine's Python 3 and the pinned packages of `tests/openapi/requirements.txt` (the
//! generator openapi-generator, which runs on Java, and what the client it generates imports).
//! Without Python, Java or PyPI a test that needs it fails with [`PYTHON_FIX`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// What to do when Python, Java or PyPI is missing.
pub const PYTHON_FIX: &str = "The OpenAPI client test needs Python 3.9 or later with venv and \
    pip (Debian: apt-get install python3-venv), Java 11 or later on PATH (Debian: apt-get \
    install default-jre-headless) and PyPI for the packages of tests/openapi/requirements.txt.";

/// `tests/openapi`.
pub fn openapi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi")
}

/// Runs `program args`, failing the test with [`PYTHON_FIX`] if it cannot run or fails; its
/// standard output.
pub fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(openapi_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}.\n{PYTHON_FIX}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}\n{}\n{PYTHON_FIX}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The environment's `bin` directory, made and filled unless it already holds what the
/// requirements pin (a copy of them is kept in the environment).
pub fn venv() -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = openapi_dir();
    let venv = dir.join(".venv");
    let bin = venv.join("bin");
    let wanted = std::fs::read_to_string(dir.join("requirements.txt")).expect("the requirements");
    let stamp = venv.join("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(
            Path::new("python3"),
            &["-m", "venv", &venv.to_string_lossy()],
        );
        run(
            &bin.join("pip"),
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ],
        );
        std::fs::write(&stamp, &wanted).expect("the environment's stamp");
    }
    run(Path::new("java"), &["-version"]);
    bin
}
