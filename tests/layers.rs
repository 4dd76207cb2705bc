//! The floor plan of src/: the top-level modules form layers, and each
//! imports only from its own layer or below (src/lib.rs, docs/ARCHITECTURE.md).
//! The one circle allowed is transport <-> websockets (a WebSocket stream
//! wraps a plain or TLS stream, and is one).
//!
//! Reads the sources as text: every `crate::NAME` outside comments and
//! test code (files named tests.rs, `#[cfg(test)] mod tests { ... }`) is an
//! import of top-level module NAME. `cargo test --test layers -- --nocapture`
//! prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first; the same list as src/lib.rs.
const LAYERS: &[&[&str]] = &[
    &["sys", "topic", "codec", "notify"],
    &["config"],
    &["session"],
    &["auth", "tls", "outbox", "logging"],
    &["transport", "websockets", "persist"],
    &["router"],
    &["client", "bridge", "link"],
    &["listener", "tools", "fuzzing"],
];

/// The circles allowed, as sets of modules.
const ALLOWED_CIRCLES: &[&[&str]] = &[&["transport", "websockets"]];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules and their source files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(src()).expect("read src/") {
        let path = entry.expect("read src/").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name")
            .to_string();
        if path.is_dir() {
            if name == "bin" {
                continue;
            }
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            out.insert(name, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            out.insert(name, vec![path]);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read module folder") {
        let path = entry.expect("read module folder").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod tests {"))
        {
            // Skip to the brace that closes the test module.
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 && l.contains('}') {
                    break;
                }
            }
            continue;
        }
        // A trailing comment.
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names after `crate::`, including each
/// first segment of a `crate::{a, b::c}` group.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `$crate::` and the like
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        start = true;
                        continue;
                    }
                    c if c.is_whitespace() => continue,
                    _ => {}
                }
                if start && depth == 0 {
                    let name = ident(&group[j..]);
                    if !name.is_empty() {
                        out.insert(name.to_string());
                    }
                    start = false;
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

fn graph() -> Graph {
    let modules = modules();
    let mut g = Graph::new();
    for (name, files) in &modules {
        let mut deps = BTreeSet::new();
        for f in files {
            let text = fs::read_to_string(f).expect("read source");
            deps.extend(imports(&code(&text)));
        }
        deps.retain(|d| d != name && modules.contains_key(d));
        g.insert(name.clone(), deps);
    }
    g
}

fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&name))
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(g: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.g[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut c = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                c.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                s.out.push(c);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn print(g: &Graph) {
    for (i, l) in LAYERS.iter().enumerate() {
        println!("layer {i}:");
        for m in *l {
            if let Some(deps) = g.get(*m) {
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                println!("  {m} -> {}", deps.join(", "));
            }
        }
    }
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<String> = graph().into_keys().filter(|m| layer(m).is_none()).collect();
    assert!(
        missing.is_empty(),
        "modules missing from LAYERS in tests/layers.rs (and src/lib.rs): {missing:?}"
    );
}

#[test]
fn modules_import_only_from_their_layer_or_below() {
    let g = graph();
    print(&g);
    let mut upward = Vec::new();
    for (m, deps) in &g {
        let Some(lm) = layer(m) else { continue };
        for d in deps {
            if layer(d).is_some_and(|ld| ld > lm) {
                upward.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports from a higher layer: {upward:?}");
}

#[test]
fn the_import_graph_has_no_circle_but_transport_and_websockets() {
    let g = graph();
    let bad: Vec<BTreeSet<String>> = circles(&g)
        .into_iter()
        .filter(|c| {
            !ALLOWED_CIRCLES
                .iter()
                .any(|a| a.len() == c.len() && a.iter().all(|m| c.contains(*m)))
        })
        .collect();
    assert!(bad.is_empty(), "import circles: {bad:?}");
}

#[test]
fn the_reader_sees_grouped_imports_and_skips_comments_and_tests() {
    let text = "\
//! Not [`crate::router`].
use crate::{sys, topic::{self, valid}};
use crate::codec::Packet; // crate::bridge
fn f() { crate::config::load(); }
#[cfg(test)]
mod tests {
    use crate::tools;
}
";
    let found: Vec<String> = imports(&code(text)).into_iter().collect();
    assert_eq!(found, ["codec", "config", "sys", "topic"]);
}
