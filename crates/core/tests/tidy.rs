//! The core's module graph has no cycle (as rust-analyzer keeps its own house with "tidy"
//! tests): each file's `crate::` paths are read as imports of the file that defines them, and a
//! cycle among the files fails this test with its files named. A module's own `mod`
//! declarations and `super::` paths are structure, not imports, and are not counted.

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

/// The import graph of the core's files: file → the files it takes names from.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let mut edges = BTreeSet::new();
        for path in crate_paths(&text) {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(target) = file_of(&src, &segments) {
                if target != file {
                    edges.insert(target);
                }
            }
        }
        graph.insert(file, edges);
    }
    graph
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

/// The detector itself: a planted back-import is a cycle, and what the reader reads is what
/// the code names.
#[test]
fn a_planted_back_import_is_found() {
    let mut graph = graph();
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

    let read = crate_paths(
        "use crate::a::B;\nuse crate::{c::D, e::{F, G}};\n// crate::comment::X\nfn f() { crate::h::i(); }\n#[cfg(test)]\nuse crate::tests_only::X;\n",
    );
    let heads: Vec<&str> = read.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(heads, ["a", "c", "e", "h"]);
}
