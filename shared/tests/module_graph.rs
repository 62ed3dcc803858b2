//! The modules of helix-core import each other without cycles (docs/decisions.md, "A module graph
//! without cycles"). The graph is read from the source: every `crate::a::…` path (in `use` trees,
//! `crate::{a, b::c}` groups and inline paths) in `src/a.rs` or `src/a/**.rs` is an edge from the
//! top-level module `a` to the top-level module it names. `domain`, `adapters` and `http` count as one
//! module each; `lib.rs` (the crate root) is left out. A new cycle fails with the cycle spelled out.
//!
//! Beside it, a guard on size: no source file of the repository reaches a thousand lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Source without comments, string and char literals (their text is no import).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // A raw string r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a piece of code names through `crate::`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `helix_crate::`
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::{c, d}, self}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        item_start = false;
                        found.insert(ident_at(&group[i..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(after);
            if !name.is_empty() {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `pub use m::Item` in lib.rs: `crate::Item` is an import of `m`.
fn root_reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = code_only(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut owners = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
        let (module, items) = line.split_once("::").unwrap();
        for item in items.trim_end_matches(';').trim_matches(|c| c == '{' || c == '}').split(',') {
            owners.insert(ident_at(item.trim()).to_owned(), module.to_owned());
        }
    }
    owners
}

/// Module → the modules it imports, for the crate rooted at `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let owners = root_reexports(src);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let targets = graph.entry(module.clone()).or_default();
        for target in crate_references(&code) {
            let target = owners.get(&target).cloned().unwrap_or(target);
            assert!(
                target.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}: crate::{target} is neither a module nor a root re-export",
                rel.display()
            );
            if target != module && target != "self" {
                targets.insert(target);
            }
        }
    }
    graph
}

/// A cycle of the graph, if it has one (depth-first search, the cycle from the back edge).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(next, graph, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_modules_of_helix_core_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(graph.len() > 10 && graph["governance"].contains("domain"), "the graph was not read: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph.iter().map(|(m, t)| format!("  {m} -> {t:?}")).collect();
        panic!(
            "helix-core's modules import each other in a circle: {}\n(give what both sides need its own module \
             lower down; docs/decisions.md)\nthe graph:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

#[test]
fn the_reader_sees_grouped_inline_and_nested_crate_paths() {
    let code = code_only(
        "use crate::{App, auth::Principal, blobs::{self, Caller}};\n// crate::commented\n\
         let s = \"crate::in_a_string\"; let c = '\"'; let x = crate::keys::verification_keys(app);\n\
         /* crate::block */ use crate::domain::Digest;",
    );
    let found: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(found, ["App", "auth", "blobs", "domain", "keys"]);
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    g.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}

/// Every `*.rs` under `dir`, recursively, leaving out build output (`target/` folders).
fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// No source file of the repository's crates grows past one concern: code (`src/` of shared/, cli/,
/// functions/) stays under 750 lines, tests under a thousand. A file that grows that long is split by
/// concern (as `adapters/dynamo/`, `governance/` and `cli/src/transfer/` are), before it becomes the
/// one file everybody edits.
#[test]
fn no_source_file_outgrows_its_line_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in ["shared", "cli", "functions", "tests"] {
        rust_sources(&root.join(dir), &mut files);
    }
    let seen = |rel: &str| files.iter().any(|f| f.strip_prefix(root).is_ok_and(|p| p == Path::new(rel)));
    assert!(
        seen("shared/src/lib.rs") && seen("cli/tests/cli.rs") && seen("shared/tests/module_graph.rs"),
        "the source files were not found under {}",
        root.display()
    );
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            let rel = f.strip_prefix(root).unwrap();
            let code = !rel.starts_with("tests") && rel.components().any(|c| c.as_os_str() == "src");
            let limit = if code { 750 } else { 1000 };
            (lines >= limit).then(|| format!("  {} ({lines} lines, limit {limit})", rel.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "source files over their limit (split them by concern):\n{}", long.join("\n"));
}
