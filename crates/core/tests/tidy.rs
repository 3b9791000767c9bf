//! The core's house rules, kept by "tidy" tests as rust-analyzer keeps its own: each file's
//! `crate::` paths are read as imports of the file that defines what they name, and
//!
//! - every file sits in one layer, leaves → domain → ports → service ([`LAYERS`]), and imports
//!   only from its own layer or those below: a file that imports one above it fails the test,
//!   both named;
//! - no files import each other in a cycle, within a layer too.
//!
//! A module's own `mod` declarations and `super::` paths are structure, not imports, and are
//! not counted; `lib.rs` (the public face, re-exporting everything) is above every layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file that defines the module at `segments` (longest prefix that is a file).
fn file_of(src: &Path, segments: &[&str]) -> Option<PathBuf> {
    for len in (1..=segments.len()).rev() {
        let base = segments[..len]
            .iter()
            .fold(src.to_path_buf(), |p, s| p.join(s));
        for candidate in [base.with_extension("rs"), base.join("mod.rs")] {
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The module paths a text takes from `crate::`: `crate::a::b::X` gives `[a, b, X]`, and a
/// group `crate::{a::X, b::{Y, Z}}` gives `[a, X]` and `[b]`. Comment lines are skipped, and so
/// is everything from a line `#[cfg(test)]` on (the tests at the end of a file).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at].chars().next_back().is_some_and(ident);
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth one, each a path whose leading segments name modules.
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ if depth == 1 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let segments: Vec<String> = item
                    .split("::")
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty() && s.chars().all(ident))
                    .collect();
                if !segments.is_empty() {
                    paths.push(segments);
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(ident(c) || c == ':'))
                .unwrap_or(rest.len());
            let segments: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if !segments.is_empty() {
                paths.push(segments);
            }
        }
    }
    paths
}

/// The names each file defines (`struct`, `enum`, `trait`, `fn`, `const`, `static`, `type`,
/// at any visibility, outside its tests): name → the files defining it.
fn definitions(files: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<PathBuf>> {
    let mut defined: BTreeMap<String, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, text) in files {
        for line in text.lines().take_while(|l| l.trim() != "#[cfg(test)]") {
            let words: Vec<&str> = line
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            let keyword = words.iter().position(|w| {
                matches!(
                    *w,
                    "struct" | "enum" | "trait" | "fn" | "const" | "static" | "type"
                )
            });
            let leading = line.trim_start();
            // Public items anywhere, private ones only at the file's top level (an indented
            // `type Error = …;` is an impl's associated type, not a definition of `Error`).
            let is_item = leading.starts_with("pub")
                || [
                    "struct ",
                    "enum ",
                    "trait ",
                    "fn ",
                    "const ",
                    "static ",
                    "type ",
                    "async fn ",
                ]
                .iter()
                .any(|k| line.starts_with(k));
            if let (true, Some(k)) = (is_item, keyword) {
                if let Some(name) = words.get(k + 1) {
                    defined
                        .entry((*name).to_owned())
                        .or_default()
                        .insert(file.clone());
                }
            }
        }
    }
    defined
}

/// The file a path names: the one file that defines its last name, when exactly one does
/// (so `crate::abuse::Scope`, re-exported by `abuse/mod.rs`, is the file of `enum Scope`);
/// else the module file its segments reach.
fn target_of(
    src: &Path,
    segments: &[&str],
    defined: &BTreeMap<String, BTreeSet<PathBuf>>,
) -> Option<PathBuf> {
    let last = segments.last()?;
    match defined.get(*last) {
        Some(files) if files.len() == 1 => files.iter().next().cloned(),
        _ => file_of(src, segments),
    }
}

/// The import graph of the core's files: file → the files it takes names from.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a source file");
            (p, text)
        })
        .collect();
    let defined = definitions(&files);
    let mut graph = BTreeMap::new();
    for (file, text) in &files {
        let mut edges = BTreeSet::new();
        for path in crate_paths(text) {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(target) = target_of(&src, &segments, &defined) {
                if &target != file {
                    edges.insert(target);
                }
            }
        }
        graph.insert(file.clone(), edges);
    }
    graph
}

/// The layers, lowest first, and the files in each (a folder: every file in it). A file of a
/// layer may import from its own layer and those below, never from one above.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves: values that know nothing of registrations, and the error type",
        &[
            "error.rs",
            "scope.rs",
            "ids.rs",
            "message.rs",
            "phone.rs",
            "phone/",
            "code.rs",
            "keys.rs",
            "payload.rs",
            "binding.rs",
        ],
    ),
    (
        "domain: the events, the aggregate, the rules, and what errors say",
        &[
            "status.rs",
            "event.rs",
            "aggregate/",
            "api.rs",
            "abuse/policy.rs",
            "abuse/plan.rs",
            "idempotency_key.rs",
        ],
    ),
    (
        "ports: what a host plugs in, its in-process defaults, and what observes the service",
        &[
            "store.rs",
            "ports.rs",
            "caller.rs",
            "authentication.rs",
            "abuse/mod.rs",
            "abuse/budget.rs",
            "abuse/memory.rs",
            "idempotency/mod.rs",
            "idempotency/memory.rs",
            "stream_cache.rs",
            "checkpoint.rs",
            "subscription.rs",
            "phones.rs",
            "conversion.rs",
            "metrics.rs",
        ],
    ),
    (
        "service: the command service, its loop and the notifier",
        &["service/", "notifier.rs"],
    ),
];

/// The layer of `file` (relative to `src/`), `None` for `lib.rs`.
fn layer_of(file: &Path) -> Option<usize> {
    let name = file.to_string_lossy().replace('\\', "/");
    LAYERS.iter().position(|(_, files)| {
        files.iter().any(|f| {
            if f.ends_with('/') {
                name.starts_with(f)
            } else {
                name == *f
            }
        })
    })
}

/// Every import that runs from a file up to a higher layer: (importer, imported).
fn imports_upward(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = |p: &Path| p.strip_prefix(&src).unwrap_or(p).to_path_buf();
    let mut found = Vec::new();
    for (file, edges) in graph {
        let Some(from) = layer_of(&rel(file)) else {
            continue;
        };
        for edge in edges {
            if let Some(to) = layer_of(&rel(edge)) {
                if to > from {
                    found.push((
                        format!("{} ({})", rel(file).display(), LAYERS[from].0),
                        format!("{} ({})", rel(edge).display(), LAYERS[to].0),
                    ));
                }
            }
        }
    }
    found
}

/// A cycle of `graph`, if it has one, as the files along it.
fn a_cycle(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        marks: &mut BTreeMap<PathBuf, Mark>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn every_file_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let unplaced: Vec<String> = graph()
        .keys()
        .map(|p| p.strip_prefix(&src).unwrap_or(p).to_path_buf())
        .filter(|p| p != Path::new("lib.rs") && layer_of(p).is_none())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        unplaced.is_empty(),
        "files of otp-sms-core without a layer (add each to LAYERS in tests/tidy.rs): {unplaced:?}"
    );
}

#[test]
fn no_file_imports_one_above_it() {
    let upward = imports_upward(&graph());
    assert!(
        upward.is_empty(),
        "imports that run up the layers of otp-sms-core (move what the lower file needs down, \
         as payload.rs holds the event payload trait below both event.rs and store.rs):\n{}",
        upward
            .iter()
            .map(|(from, to)| format!("  {from} imports {to}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_core_has_no_import_cycle() {
    let graph = graph();
    assert!(graph.len() > 20, "the core's files were found");
    if let Some(cycle) = a_cycle(&graph) {
        let names: Vec<String> = cycle
            .iter()
            .map(|p| {
                p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
        panic!(
            "an import cycle in otp-sms-core: {}\n(break it by moving what the lower file needs \
             below both, as authentication.rs sits above caller.rs and ports.rs)",
            names.join(" -> ")
        );
    }
}

/// The detectors themselves: a planted back-import is a cycle and an upward import, and what
/// the reader reads is what the code names.
#[test]
fn a_planted_back_import_is_found() {
    let mut graph = graph();
    assert!(imports_upward(&graph).is_empty());
    assert!(a_cycle(&graph).is_none());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // ports.rs takes `Caller` from caller.rs; were caller.rs to take the `Authenticator` back
    // (as it did before authentication.rs), the two would close a cycle.
    assert!(graph[&src.join("ports.rs")].contains(&src.join("caller.rs")));
    graph
        .get_mut(&src.join("caller.rs"))
        .expect("caller.rs")
        .insert(src.join("ports.rs"));
    let cycle = a_cycle(&graph).expect("the planted cycle");
    assert!(cycle.contains(&src.join("caller.rs")) && cycle.contains(&src.join("ports.rs")));

    // The aggregate (domain) taking anything from the service is an import up two layers.
    graph
        .get_mut(&src.join("aggregate/mod.rs"))
        .expect("aggregate/mod.rs")
        .insert(src.join("service/command.rs"));
    let upward = imports_upward(&graph);
    assert_eq!(upward.len(), 1, "{upward:?}");
    assert!(upward[0].0.starts_with("aggregate/mod.rs (domain"));
    assert!(upward[0].1.starts_with("service/command.rs (service"));

    // A name re-exported by a module's `mod.rs` is the file that defines it.
    let read = crate_paths("use crate::abuse::AbusePolicy;");
    let segments: Vec<&str> = read[0].iter().map(String::as_str).collect();
    let files: Vec<(PathBuf, String)> = ["abuse/policy.rs", "abuse/mod.rs"]
        .iter()
        .map(|f| (src.join(f), std::fs::read_to_string(src.join(f)).unwrap()))
        .collect();
    assert_eq!(
        target_of(&src, &segments, &definitions(&files)),
        Some(src.join("abuse/policy.rs"))
    );

    let read = crate_paths(
        "use crate::a::B;\nuse crate::{c::D, e::{F, G}};\n// crate::comment::X\nfn f() { crate::h::i(); }\n#[cfg(test)]\nuse crate::tests_only::X;\n",
    );
    let heads: Vec<&str> = read.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(heads, ["a", "c", "e", "h"]);
}
