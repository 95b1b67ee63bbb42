//! `hup status --json` against the JSON Schema in docs/status.md: real outputs (fresh
//! device, everything set, host use with errors) and the documented example must validate,
//! and every field the command prints must be documented in the schema.

use crate::support::device::*;
use crate::support::runner::*;
use hup::fsutil::DataDir;
use hup::model::state::State;
use serde_json::Value;

/// The ```json block after the "### JSON Schema" heading of docs/status.md, and the one
/// after "### Example".
fn doc_blocks() -> (Value, Value) {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status.md")).unwrap();
    let block = |heading: &str| -> Value {
        let after = &doc[doc.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
        let start = after.find("```json\n").unwrap() + 8;
        let end = start + after[start..].find("\n```").unwrap();
        serde_json::from_str(&after[start..end]).unwrap_or_else(|e| panic!("{heading}: {e}"))
    };
    (block("### JSON Schema"), block("### Example"))
}

/// A small validator for the keywords the schema uses. Objects are strict: a property the
/// schema does not list is an error (an undocumented field).
fn validate(root: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let s = schema.as_object().unwrap();
    if let Some(r) = s.get("$ref") {
        let name = r.as_str().unwrap().strip_prefix("#/$defs/").unwrap();
        return validate(root, &root["$defs"][name], v, at, errs);
    }
    if let Some(any) = s.get("anyOf") {
        let ok = any.as_array().unwrap().iter().any(|alt| {
            let mut e = Vec::new();
            validate(root, alt, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(format!("{at}: matches no alternative: {v}"));
        }
        return;
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errs.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = s.get("enum")
        && !e.as_array().unwrap().contains(v)
    {
        errs.push(format!("{at}: {v} not in {e}"));
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => panic!("bad type"),
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&actual) {
            errs.push(format!("{at}: {actual} is not {types:?}"));
            return;
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum"), v.as_i64())
        && n < min.as_i64().unwrap()
    {
        errs.push(format!("{at}: {n} below {min}"));
    }
    if let (Some(p), Some(text)) = (s.get("pattern"), v.as_str()) {
        // The only pattern used: ^[0-9a-f]{N}$.
        let p = p.as_str().unwrap();
        let n: usize = p
            .strip_prefix("^[0-9a-f]{")
            .and_then(|r| r.strip_suffix("}$"))
            .expect("unsupported pattern")
            .parse()
            .unwrap();
        if text.len() != n
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            errs.push(format!("{at}: {text:?} does not match {p}"));
        }
    }
    if let Value::Array(items) = v {
        for (k, lim) in [("minItems", 0), ("maxItems", 1)] {
            if let Some(n) = s.get(k).and_then(Value::as_u64) {
                let bad = if lim == 0 {
                    (items.len() as u64) < n
                } else {
                    (items.len() as u64) > n
                };
                if bad {
                    errs.push(format!("{at}: {} items violates {k} {n}", items.len()));
                }
            }
        }
        if let Some(item) = s.get("items") {
            for (i, x) in items.iter().enumerate() {
                validate(root, item, x, &format!("{at}[{i}]"), errs);
            }
        }
    }
    if let Value::Object(map) = v {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !map.contains_key(req.as_str().unwrap()) {
                errs.push(format!("{at}: missing required {req}"));
            }
        }
        for (k, x) in map {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(root, ps, x, &format!("{at}.{k}"), errs),
                None => errs.push(format!("{at}.{k}: not in the schema (undocumented field)")),
            }
        }
    }
}

fn assert_valid(schema: &Value, v: &Value) {
    let mut errs = Vec::new();
    validate(schema, schema, v, "$", &mut errs);
    assert!(errs.is_empty(), "{errs:#?}\nin {v:#}");
}

#[test]
fn documented_example_and_schema_agree() {
    let (schema, example) = doc_blocks();
    assert_valid(&schema, &example);
    // The validator does catch mistakes.
    let mut bad = example.clone();
    bad["other"]["health"] = "fine".into();
    bad["surprise"] = 1.into();
    let mut errs = Vec::new();
    validate(&schema, &schema, &bad, "$", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
}

#[test]
fn real_outputs_validate() {
    let (schema, _) = doc_blocks();
    let dev = Device::new();
    // Fresh device.
    let fresh = dev.status_json();
    assert_valid(&schema, &fresh);
    assert_eq!(fresh["partition_table"]["primary_ok"], true);
    assert_eq!(fresh["partition_table"]["in_sync"], true);
    assert_eq!(fresh["partition_table"]["problems"], serde_json::json!([]));

    // Everything set: staged bundle, an interrupted apply, a last result with reason and log.
    let v2 = dev.bundle(&BundleSpec::default());
    ok(&dev.stage(p(&dev.file("v2.hup", &v2)), &[]));
    let d = DataDir::new(&dev.data);
    let mut st: Value = serde_json::from_slice(&std::fs::read(d.state_path()).unwrap()).unwrap();
    st["journal"] = serde_json::json!({
        "bundle_sha256": sha256_hex(&v2), "version": "2.0.0", "target": "b",
        "completed": ["preflight", "mark-target-bad"], "running": "format",
        "log": "log/apply-2.log", "started_at": 1_700_000_200
    });
    st["last_result"] = serde_json::json!({
        "outcome": "failed", "version": "1.5.0", "slot": "b", "reason": "no space on hup-root-b",
        "log": "log/apply-1.log", "at": 1_700_000_100
    });
    st["layout_migration"] = serde_json::json!({
        "layout_version": 2, "bundle_version": "1.5.0", "phase": "completed",
        "started_at": 1_700_000_050, "completed_at": 1_700_000_060, "normalized": true,
        "backup_bytes": 10_485_760, "tar_bytes": 18_874_368, "entries": 21,
        "timings_ms": [["normalize", 1500], ["backup", 2450], ["table", 360], ["restore", 830]]
    });
    d.save_state(&State::from_json(st.to_string().as_bytes()).unwrap())
        .unwrap();
    let full = dev.status_json();
    assert_valid(&schema, &full);
    assert_eq!(full["layout_migration"]["phases"][1]["phase"], "backup");
    assert_eq!(full["layout_migration"]["phases"][1]["ms"], 2450);
    assert_eq!(full["layout_migration"]["normalized"], true);
    assert_eq!(full["applying"]["running"], "format");
    assert_eq!(full["last_result"]["outcome"], "failed");
    assert_eq!(
        full["last_result"]["log"],
        p(&dev.data.join("log/apply-1.log"))
    );

    // Host use with an unreadable disk: nulls and an error.
    let o = Hup::new()
        .args([
            "status",
            "--json",
            "--disk",
            "/nonexistent.img",
            "--data-dir",
            p(&dev.data),
        ])
        .env_remove("HUP_BOOTED_SLOT")
        .run();
    let host: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_valid(&schema, &host);
    assert_eq!(host["boot"], Value::Null);
    assert_eq!(host["booted"], Value::Null);
    assert_eq!(host["staged"]["version"], "2.0.0");
    assert_eq!(host["partition_table"], Value::Null);

    // A damaged backup GPT: still read (the primary is whole), and warned about.
    let copy = dev.dir.join("damaged.img");
    std::fs::copy(&dev.disk, &copy).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    let len = f.metadata().unwrap().len();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 512], len - 512).unwrap();
    let o = Hup::new()
        .args(["status", "--json", "--disk", p(&copy)])
        .env_remove("HUP_BOOTED_SLOT")
        .run();
    let damaged: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_valid(&schema, &damaged);
    let t = &damaged["partition_table"];
    assert_eq!(
        (&t["primary_ok"], &t["backup_ok"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    assert!(
        t["problems"][0]
            .as_str()
            .unwrap()
            .contains("backup GPT is damaged"),
        "{t}"
    );
    assert_eq!(damaged["boot"]["backend"], "gpt");
}

#[test]
fn golden_outputs_validate() {
    let (schema, _) = doc_blocks();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/device/status/golden");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_valid(&schema, &v);
            n += 1;
        }
    }
    assert!(n >= 5, "{n} golden JSON files");
}
