//! Runs a target over files: the seeds and regressions in the ordinary test suite, and any
//! file a developer names to a target's binary built without cargo-fuzz
//! (`cargo run -p otp-sms-fuzz --bin phone -- crash-…`).

use std::path::{Path, PathBuf};

use crate::Target;

/// The folder of the fuzz crate (`fuzz/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `target` under `fuzz/seeds` and `fuzz/regressions`, sorted.
pub fn committed_inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root().join(folder).join(target)) else {
            continue;
        };
        files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    files.retain(|path| path.is_file());
    files.sort();
    files
}

/// Runs `target` on each file (or each file of each folder) named, saying which one runs.
pub fn run_files(target: Target, paths: &[PathBuf]) {
    for path in paths {
        if path.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            inner.sort();
            run_files(target, &inner);
        } else {
            run_file(target, path);
        }
    }
}

fn run_file(target: Target, path: &Path) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!("running {}", path.display());
    target(&data);
}

/// The `main` of a target's binary built without cargo-fuzz: runs it over the files named
/// on the command line, or over its committed seeds and regressions.
pub fn main(name: &str) {
    let target = crate::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no target {name}"));
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let paths = if args.is_empty() {
        committed_inputs(name)
    } else {
        args
    };
    run_files(target, &paths);
    eprintln!("{name}: {} inputs ran", paths.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target passes on its seeds and on every crash it found (a crash becomes a file
    /// under `fuzz/regressions/<target>/` when it is fixed).
    #[test]
    fn every_target_passes_on_its_seeds_and_regressions() {
        for (name, target) in crate::TARGETS {
            let inputs = committed_inputs(name);
            assert!(
                !inputs.is_empty(),
                "{name} has no seeds in fuzz/seeds/{name}"
            );
            run_files(*target, &inputs);
        }
    }

    /// A binary for every target, and a target for every binary.
    #[test]
    fn every_target_has_its_binary() {
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        for (name, _) in crate::TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "no [[bin]] {name} in fuzz/Cargo.toml"
            );
            assert!(root().join(format!("fuzz_targets/{name}.rs")).is_file());
        }
        let bins = manifest.matches("[[bin]]").count();
        assert_eq!(bins, crate::TARGETS.len(), "a binary without a target");
    }
}
