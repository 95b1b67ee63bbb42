//! `hup status --json` against the JSON Schema in docs/status.md: real outputs (fresh
//! device, everything set, host use with errors) and the documented example must validate,
//! and every field the command prints must be documented in the schema.

use crate::support::device::*;
use crate::support::runner::*;
use crate::support::status_schema::{assert_valid, doc_blocks, validate};
use hup::fsutil::DataDir;
use hup::model::state::State;
use serde_json::Value;

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
