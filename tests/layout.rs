//! The layout stays readable: no import cycle between the modules of a
//! crate, no source file over 700 lines, and each stage (a top-level
//! module of a crate's `src/`) imports only the stages the README's
//! "Layout" table says it may. The table is the one source: change it
//! with the code.
//!
//! Run alone with `cargo test -p driftwatch-e2e --test layout`; a failure
//! names the cycle or the import and the file it is in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A module of a crate: its path from the crate root (`["window",
/// "evaluate"]`; the root is empty) and the file that holds it.
#[derive(Debug, Clone)]
struct Module {
    path: Vec<String>,
    file: PathBuf,
}

/// Every module file under `src/` but the binaries' (`main.rs`, `bin/`),
/// which nothing imports.
fn modules(src: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") || p.ends_with("main.rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let mut path: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            out.push(Module { path, file: p });
        }
    }
    out
}

/// The source without comments and without the unit tests at the end
/// (`#[cfg(test)] mod ...`), whose imports are not the module's.
fn code(file: &Path) -> String {
    strip(&std::fs::read_to_string(file).expect("read module"))
}

fn strip(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") {
                ""
            } else {
                match l.find(" //") {
                    Some(at) if !l[..at].contains('"') => &l[..at],
                    _ => l,
                }
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` as the paths it names.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The crate-relative paths a module's code names: `use` trees and
/// inline `crate::`, `super::` and `self::` paths.
fn named_paths(code: &str) -> Vec<String> {
    let uses = regex::Regex::new(r"(?s)\buse\s+((?:crate|super|self)\b[^;]*);").expect("regex");
    let inline =
        regex::Regex::new(r"\b(?:crate|super|self)(?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+")
            .expect("regex");
    let mut out = Vec::new();
    let alias = regex::Regex::new(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*").expect("regex");
    for c in uses.captures_iter(code) {
        out.extend(expand(&alias.replace_all(&c[1], "")));
    }
    let without_uses = uses.replace_all(code, "");
    out.extend(
        inline
            .find_iter(&without_uses)
            .map(|m| m.as_str().to_string()),
    );
    out
}

/// A named path resolved to the deepest known module it reaches.
fn resolve(from: &Module, named: &str, known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segments = named.split("::").map(str::trim).filter(|s| !s.is_empty());
    let mut at: Vec<String> = match segments.next()? {
        "crate" => Vec::new(),
        "self" => from.path.clone(),
        "super" => {
            let mut p = from.path.clone();
            p.pop();
            p
        }
        _ => return None,
    };
    // `super` in `a/b.rs` (module `a::b`) is `a`; in `a/mod.rs` (module
    // `a`) it is the root.
    let mut best = known.contains(&at).then(|| at.clone());
    for s in segments {
        match s {
            "super" => {
                at.pop();
                continue;
            }
            "self" | "*" => continue,
            _ => {}
        }
        at.push(s.to_string());
        if known.contains(&at) {
            best = Some(at.clone());
        }
    }
    best
}

fn is_ancestor(a: &[String], b: &[String]) -> bool {
    a.len() < b.len() && b.starts_with(a)
}

struct Graph {
    modules: Vec<Module>,
    /// Module → the modules it imports, with the file that imports.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in &modules {
        let set = edges.entry(m.path.clone()).or_default();
        for named in named_paths(&code(&m.file)) {
            if let Some(to) = resolve(m, &named, &known) {
                if to != m.path {
                    set.insert(to);
                }
            }
        }
    }
    Graph { modules, edges }
}

/// A cycle among `nodes` following `next`, if there is one.
fn find_cycle<N: Ord + Clone>(nodes: &[N], next: &dyn Fn(&N) -> Vec<N>) -> Option<Vec<N>> {
    // 0: unseen, 1: on the path, 2: done.
    let mut mark: BTreeMap<N, u8> = BTreeMap::new();
    fn visit<N: Ord + Clone>(
        n: &N,
        next: &dyn Fn(&N) -> Vec<N>,
        mark: &mut BTreeMap<N, u8>,
        path: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match mark.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|x| x == n).unwrap_or(0);
                let mut cycle = path[at..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            _ => {}
        }
        mark.insert(n.clone(), 1);
        path.push(n.clone());
        for m in next(n) {
            if let Some(c) = visit(&m, next, mark, path) {
                return Some(c);
            }
        }
        path.pop();
        mark.insert(n.clone(), 2);
        None
    }
    nodes
        .iter()
        .find_map(|n| visit(n, next, &mut mark, &mut Vec::new()))
}

fn name(path: &[String]) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path.join("::")
    }
}

/// The README's Layout table: for each stage folder (`collector/src/window/`
/// or a file `collector/src/config.rs`), the stages it may import.
fn allowed(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let prefix = format!("`{krate}/src/");
    let mut out = BTreeMap::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with(&prefix) {
            continue;
        }
        let stage = cells[1]
            .trim_matches('`')
            .trim_start_matches(&prefix[1..])
            .trim_end_matches('/')
            .trim_end_matches(".rs")
            .to_string();
        let may: BTreeSet<String> = cells[3]
            .split(',')
            .map(|s| {
                s.trim()
                    .trim_matches('`')
                    .trim_end_matches('/')
                    .trim_end_matches(".rs")
            })
            .filter(|s| !s.is_empty() && *s != "nothing")
            .map(String::from)
            .collect();
        out.insert(stage, may);
    }
    out
}

/// Everything wrong with one crate's layout.
fn problems(krate: &str) -> Vec<String> {
    let src = repo().join(krate).join("src");
    let g = graph(&src);
    let mut problems = Vec::new();
    // Files: no cycle, apart from a module and the modules inside it.
    let nodes: Vec<Vec<String>> = g.modules.iter().map(|m| m.path.clone()).collect();
    let next = |n: &Vec<String>| -> Vec<Vec<String>> {
        g.edges
            .get(n)
            .into_iter()
            .flatten()
            .filter(|m| !is_ancestor(n, m) && !is_ancestor(m, n))
            .cloned()
            .collect()
    };
    if let Some(c) = find_cycle(&nodes, &next) {
        let c: Vec<String> = c.iter().map(|p| name(p)).collect();
        problems.push(format!("{krate}: import cycle {}", c.join(" → ")));
    }
    // Stages: only what the table allows (which keeps them acyclic too).
    let table = allowed(krate);
    let stage = |p: &[String]| p.first().cloned().unwrap_or_default();
    let mut stage_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &g.modules {
        if m.path.is_empty() {
            continue;
        }
        let from = stage(&m.path);
        let Some(may) = table.get(&from) else {
            problems.push(format!(
                "{krate}: stage `{from}` ({}) is not in the README's Layout table",
                m.file.display()
            ));
            continue;
        };
        for to in g.edges.get(&m.path).into_iter().flatten() {
            let to_stage = stage(to);
            if to.is_empty() || to_stage == from {
                continue;
            }
            stage_edges
                .entry(from.clone())
                .or_default()
                .insert(to_stage.clone());
            if !may.contains(&to_stage) {
                problems.push(format!(
                    "{krate}: {} imports `{}`, but the README's Layout table does not let `{from}` import `{to_stage}`",
                    m.file.strip_prefix(repo()).unwrap_or(&m.file).display(),
                    name(to)
                ));
            }
        }
    }
    let stages: Vec<String> = table.keys().cloned().collect();
    let next =
        |s: &String| -> Vec<String> { stage_edges.get(s).into_iter().flatten().cloned().collect() };
    if let Some(c) = find_cycle(&stages, &next) {
        problems.push(format!(
            "{krate}: stages import each other: {}",
            c.join(" → ")
        ));
    }
    problems.sort();
    problems.dedup();
    problems
}

#[test]
fn no_import_cycles_and_every_stage_imports_only_what_the_readme_allows() {
    let mut all = Vec::new();
    for krate in ["collector", "agent", "protocol", "telemetry"] {
        all.extend(problems(krate));
    }
    assert!(all.is_empty(), "layout problems:\n{}", all.join("\n"));
}

/// Longest a source file under a crate's `src/` may be: past it, a
/// file holds more than one idea and should be split by them.
const MAX_SOURCE_LINES: usize = 700;

#[test]
fn no_source_file_is_longer_than_the_bound() {
    let mut long = Vec::new();
    for krate in ["collector", "agent", "protocol", "telemetry", "testkit"] {
        let mut stack = vec![repo().join(krate).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let p = entry.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let lines = std::fs::read_to_string(&p).expect("read").lines().count();
                    if lines > MAX_SOURCE_LINES {
                        long.push(format!("{} ({lines} lines)", p.display()));
                    }
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "source files over {MAX_SOURCE_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_use_trees_super_and_cycles() {
    assert_eq!(
        expand("crate::{a::{B, c::D}, e}"),
        ["crate::a::B", "crate::a::c::D", "crate::e"]
    );
    let named = named_paths(&strip(
        "use super::{x, y::Z};\nfn f() { crate::w::f(); }\n// crate::not::this\n",
    ));
    assert_eq!(named, ["super::x", "super::y::Z", "crate::w::f"]);
    let known: BTreeSet<Vec<String>> = [
        vec!["a".to_string()],
        vec!["a".into(), "b".into()],
        vec!["w".into()],
    ]
    .into_iter()
    .collect();
    let m = Module {
        path: vec!["a".into(), "b".into()],
        file: PathBuf::from("src/a/b.rs"),
    };
    assert_eq!(
        resolve(&m, "super::Thing", &known),
        Some(vec!["a".to_string()])
    );
    assert_eq!(
        resolve(&m, "crate::w::f", &known),
        Some(vec!["w".to_string()])
    );
    assert_eq!(resolve(&m, "std::io", &known), None);
    let next = |n: &u8| -> Vec<u8> {
        match n {
            1 => vec![2],
            2 => vec![3],
            3 => vec![1],
            _ => vec![],
        }
    };
    assert_eq!(find_cycle(&[1u8, 2, 3], &next), Some(vec![1, 2, 3, 1]));
    let acyclic = |n: &u8| -> Vec<u8> {
        if *n < 3 {
            vec![n + 1]
        } else {
            vec![]
        }
    };
    assert_eq!(find_cycle(&[1u8, 2, 3], &acyclic), None);
}

/// `DRIFTWATCH_LAYOUT=1 cargo test -p driftwatch-e2e --test layout -- --nocapture print`
/// prints each crate's stage graph (for writing the table).
#[test]
fn print_the_stage_graph_when_asked() {
    if std::env::var_os("DRIFTWATCH_LAYOUT").is_none() {
        return;
    }
    for krate in ["collector", "agent"] {
        let g = graph(&repo().join(krate).join("src"));
        let mut stages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &g.edges {
            let Some(f) = from.first() else { continue };
            let set = stages.entry(f.clone()).or_default();
            for t in tos.iter().filter_map(|t| t.first()).filter(|t| *t != f) {
                set.insert(t.clone());
            }
        }
        for (s, tos) in stages {
            println!(
                "{krate}/{s}: {}",
                tos.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
}
