//! The JSON Schema of `hup status --json` in docs/status.md, and a small validator for the
//! keywords it uses: shared by the integration tests (tests/integration/status_schema.rs)
//! and the QEMU tests, which validate what a real OS printed.

use serde_json::Value;

/// The ```json block after the "### JSON Schema" heading of docs/status.md, and the one
/// after "### Example".
pub fn doc_blocks() -> (Value, Value) {
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
pub fn validate(root: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
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

pub fn assert_valid(schema: &Value, v: &Value) {
    let mut errs = Vec::new();
    validate(schema, schema, v, "$", &mut errs);
    assert!(errs.is_empty(), "{errs:#?}\nin {v:#}");
}
