//! docs/bad-inputs.md stays in step with the tests: every test it names exists.
//!
//! Names are `file::function` (an integration test in `tests/integration/file.rs`), `src/path.rs::...::function`
//! (a unit test in that file), or `::function` (the same file as the name before it in the row).

use std::path::Path;

/// The test names in backticks on one table row, each resolved to (file, function).
fn names_in_row(row: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut file: Option<String> = None;
    for (i, span) in row.split('`').enumerate() {
        // Odd pieces are inside backticks.
        if i % 2 == 0 || !span.contains("::") || span.contains(' ') {
            continue;
        }
        let (path, func) = span.rsplit_once("::").unwrap();
        if !func
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            // A constant or a type (`failpoint::EXIT`), not a test.
            continue;
        }
        let f = if path.is_empty() {
            match &file {
                Some(f) => f.clone(),
                None => panic!("{span:?} has no file before it on the row: {row}"),
            }
        } else if let Some(src) = path.split("::").next().filter(|p| p.ends_with(".rs")) {
            src.to_string()
        } else if path
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            format!("tests/integration/{path}.rs")
        } else {
            // Message fragments such as `x::y` in prose are not test names.
            continue;
        };
        file = Some(f.clone());
        out.push((f, func.to_string()));
    }
    out
}

#[test]
fn every_test_named_in_the_bad_input_table_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/bad-inputs.md")).unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    for row in doc.lines().filter(|l| l.starts_with('|')) {
        for (file, func) in names_in_row(row) {
            let text = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
            if !text.contains(&format!("fn {func}(")) {
                missing.push(format!("{file}::{func}"));
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "named in docs/bad-inputs.md but not found: {missing:#?}"
    );
    // The table names well over a hundred tests; a parser that finds none proves nothing.
    assert!(
        checked > 100,
        "only {checked} test names found in docs/bad-inputs.md"
    );
}

#[test]
fn row_names_resolve_to_files() {
    let row =
        "| x | `a::b`, `m::CONST` | `apply::one`, `::two`, `src/disk/table.rs::tests::three` |";
    let own = |f: &str, n: &str| (f.to_string(), n.to_string());
    assert_eq!(
        names_in_row(row),
        [
            own("tests/integration/a.rs", "b"),
            own("tests/integration/apply.rs", "one"),
            own("tests/integration/apply.rs", "two"),
            own("src/disk/table.rs", "three"),
        ]
    );
}
