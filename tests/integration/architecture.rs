//! The import rules of docs/architecture.md, checked on the source itself.
//!
//! Every `crate::`, `super::`, `self::` and child-module path in `src/` (test code left out) is
//! resolved to the file that defines the module it names. From those edges the test checks:
//! - no two files import each other, directly or through a loop;
//! - top-level modules only import modules of a lower layer, or of their own layer without a loop;
//! - `model` imports nothing else of the crate; `data` imports neither `bundle` nor `ext4`;
//!   `apply` does not import `stage`.
//!
//! `cargo test --test integration architecture:: -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layers, highest first: a module may import only modules of a lower layer, or of its own
/// layer when that does not close a loop.
const LAYERS: &[&[&str]] = &[
    &["cli", "init"],
    &["agent", "stage", "apply", "device", "initramfs"],
    &["layout", "data", "bundle", "boot", "migrate"],
    &["archive", "disk", "ext4"],
    &[
        "model",
        "sys",
        "size",
        "error",
        "failpoint",
        "logging",
        "fsutil",
    ],
];

type Module = Vec<String>;

struct Source {
    module: Module,
    text: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` -> [a, b]; `src/a/mod.rs` -> [a]; `src/lib.rs` -> [].
fn module_of(path: &Path) -> Module {
    let rel = path.strip_prefix(src_dir()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Files holding only tests (`#[path]` test files) are not part of the import graph.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    collect(&src_dir(), &mut files);
    files
        .into_iter()
        .filter(|p| !is_test_file(p))
        .filter(|p| !module_of(p).is_empty())
        .map(|p| Source {
            module: module_of(&p),
            text: strip_tests(&strip_comments_and_strings(
                &fs::read_to_string(&p).unwrap(),
            )),
        })
        .collect()
}

/// Blanks comments, string and char literals, so that paths inside them do not count.
fn strip_comments_and_strings(s: &str) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !ident_char(b.get(i.wrapping_sub(1)).copied())
        {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let close = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(j) => {
                    out.push_str("' '");
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Removes items marked `#[cfg(test)]` (test modules, test-only functions and imports).
fn strip_tests(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = item_end(item);
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The end of the item that starts at `s`: its `;` or its balanced `{ }` block.
fn item_end(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// Parses a path tree starting at `s` (after its first segment's `::`): returns every full path
/// it names, e.g. `a::{b, c::d}` -> [a::b, a::c::d].
fn parse_tree(s: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        skip_ws(s, i);
        if s.get(*i) == Some(&'{') {
            *i += 1;
            loop {
                skip_ws(s, i);
                if s.get(*i) == Some(&'}') {
                    *i += 1;
                    break;
                }
                parse_tree(s, i, &path, out);
                skip_ws(s, i);
                match s.get(*i) {
                    Some(',') => *i += 1,
                    Some('}') => {
                        *i += 1;
                        break;
                    }
                    _ => break,
                }
            }
            return;
        }
        let start = *i;
        while ident_char(s.get(*i).copied()) {
            *i += 1;
        }
        if start == *i {
            out.push(path);
            return;
        }
        path.push(s[start..*i].iter().collect());
        if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
            *i += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

fn skip_ws(s: &[char], i: &mut usize) {
    while s.get(*i).is_some_and(|c| c.is_whitespace()) {
        *i += 1;
    }
}

/// Every module path a source names, made absolute.
fn referenced_paths(src: &Source, children: &BTreeSet<String>) -> Vec<Module> {
    let s: Vec<char> = src.text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let after_path = i >= 2 && s[i - 1] == ':' && s[i - 2] == ':';
        let at_word = !(ident_char(i.checked_sub(1).map(|j| s[j])) || after_path);
        if !at_word || !ident_char(Some(s[i])) {
            i += 1;
            continue;
        }
        let start = i;
        while ident_char(s.get(i).copied()) {
            i += 1;
        }
        let word: String = s[start..i].iter().collect();
        if s.get(i) != Some(&':') || s.get(i + 1) != Some(&':') {
            continue;
        }
        let base: Option<Module> = match word.as_str() {
            "crate" => Some(Vec::new()),
            "self" => Some(src.module.clone()),
            "super" => {
                let mut m = src.module.clone();
                m.pop();
                // super::super::...
                let mut j = i + 2;
                loop {
                    let rest: String = s[j..s.len().min(j + 7)].iter().collect();
                    if rest == "super::" {
                        m.pop();
                        j += 7;
                    } else {
                        break;
                    }
                }
                i = j - 2;
                Some(m)
            }
            w if children.contains(w) => {
                let mut m = src.module.clone();
                m.push(w.to_string());
                Some(m)
            }
            _ => None,
        };
        if let Some(base) = base {
            i += 2;
            parse_tree(&s, &mut i, &base, &mut found);
        }
    }
    found
}

struct Graph {
    /// File-level edges, by module path of the defining file.
    files: BTreeMap<Module, BTreeSet<Module>>,
}

fn graph() -> Graph {
    let sources = sources();
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut files = BTreeMap::new();
    for src in &sources {
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == src.module.len() + 1 && m.starts_with(&src.module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let mut edges = BTreeSet::new();
        for path in referenced_paths(src, &children) {
            // The longest prefix of the path that is a module file.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(t) = target
                && t != src.module
            {
                edges.insert(t);
            }
        }
        files.insert(src.module.clone(), edges);
    }
    Graph { files }
}

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn top_edges(g: &Graph) -> BTreeMap<String, BTreeSet<String>> {
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in &g.files {
        let entry = tops.entry(from[0].clone()).or_default();
        for t in to {
            if t[0] != from[0] {
                entry.insert(t[0].clone());
            }
        }
    }
    tops
}

/// Strongly connected components with more than one member (Tarjan).
fn loops<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct St<N> {
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        on: BTreeSet<N>,
        next: usize,
        out: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(n: &N, e: &BTreeMap<N, BTreeSet<N>>, st: &mut St<N>) {
        st.index.insert(n.clone(), st.next);
        st.low.insert(n.clone(), st.next);
        st.next += 1;
        st.stack.push(n.clone());
        st.on.insert(n.clone());
        for m in e.get(n).into_iter().flatten() {
            if !st.index.contains_key(m) {
                visit(m, e, st);
                let l = st.low[m].min(st.low[n]);
                st.low.insert(n.clone(), l);
            } else if st.on.contains(m) {
                let l = st.index[m].min(st.low[n]);
                st.low.insert(n.clone(), l);
            }
        }
        if st.low[n] == st.index[n] {
            let mut comp = Vec::new();
            loop {
                let m = st.stack.pop().unwrap();
                st.on.remove(&m);
                comp.push(m.clone());
                if &m == n {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in edges.keys() {
        if !st.index.contains_key(n) {
            visit(n, edges, &mut st);
        }
    }
    st.out
}

fn show(m: &Module) -> String {
    format!("src/{}", m.join("/"))
}

#[test]
fn no_two_files_import_each_other() {
    let g = graph();
    let found: Vec<String> = loops(&g.files)
        .iter()
        .map(|c| {
            let members: BTreeSet<&Module> = c.iter().collect();
            c.iter()
                .map(|f| {
                    let inside: Vec<String> = g.files[f]
                        .iter()
                        .filter(|t| members.contains(t))
                        .map(show)
                        .collect();
                    format!("{} -> {}", show(f), inside.join(" "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import loops between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn modules_import_downwards_only() {
    let g = graph();
    let tops = top_edges(&g);
    for (from, to) in &tops {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    let mut bad = Vec::new();
    for (from, to) in &tops {
        let Some(lf) = layer(from) else {
            bad.push(format!("{from} is in no layer of docs/architecture.md"));
            continue;
        };
        for t in to {
            match layer(t) {
                Some(lt) if lt >= lf => {}
                Some(_) => bad.push(format!("{from} imports {t}, a higher layer")),
                None => bad.push(format!("{t} is in no layer of docs/architecture.md")),
            }
        }
    }
    let cycles: Vec<String> = loops(&tops).iter().map(|c| c.join(" <-> ")).collect();
    bad.extend(
        cycles
            .into_iter()
            .map(|c| format!("modules import each other: {c}")),
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_named_rules_hold() {
    let tops = top_edges(&graph());
    let imports = |m: &str| tops.get(m).cloned().unwrap_or_default();
    assert!(
        imports("model").is_empty(),
        "model imports {:?}",
        imports("model")
    );
    for banned in ["bundle", "ext4"] {
        assert!(!imports("data").contains(banned), "data imports {banned}");
    }
    assert!(!imports("apply").contains("stage"), "apply imports stage");
}

#[test]
fn the_checker_sees_paths_of_every_shape() {
    let src = Source {
        module: vec!["a".into(), "b".into()],
        text: strip_tests(&strip_comments_and_strings(
            "use crate::{x::{y, z::W}, q};\n// crate::comment::Hidden\n\
             let s = \"crate::string\"; super::super::t::f(); self::c::g(); c::h();\n\
             #[cfg(test)]\nmod tests { use crate::hidden; }\n",
        )),
    };
    let children = BTreeSet::from(["c".to_string()]);
    let got: BTreeSet<String> = referenced_paths(&src, &children)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    let want: BTreeSet<String> = ["x::y", "x::z::W", "q", "t::f", "a::b::c::g", "a::b::c::h"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}

/// Every `.rs` file under `dir`, test files included.
fn all_files(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut out);
    out
}

#[test]
fn no_file_is_over_600_lines() {
    let long: Vec<String> = ["src", "tests", "qemu-tests"]
        .iter()
        .flat_map(|d| all_files(d))
        .filter_map(|p| {
            let n = fs::read_to_string(&p).unwrap().lines().count();
            (n > 600).then(|| format!("{} has {n} lines", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_lifecycle_is_not_stringly_typed() {
    let banned = [
        // the boot backend is a BootBackendKind
        "boot_backend: String",
        // steps are model::journal::Step
        "completed: Vec<String>",
        "[&str; 8]",
        // enums print through Display, not their Debug form
        ":?}\").to_lowercase()",
    ];
    let mut found = Vec::new();
    for p in all_files("src") {
        let text = fs::read_to_string(&p).unwrap();
        for (n, line) in text.lines().enumerate() {
            for b in &banned {
                if line.contains(b) {
                    found.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                }
            }
            if line.contains("format!(\"{:?}\"") && line.contains("to_lowercase") {
                found.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
