//! Unit tests of `hup status` gathering and rendering.

use super::*;
use crate::device::Booted;
use crate::fsutil::DataDir;
use crate::model::slot::Slot;
use crate::model::state::{LastResult, Outcome, Staged, State};

#[test]
fn dates() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
}

#[test]
fn from_state_without_disk() {
    let t = tempfile::tempdir().unwrap();
    let d = DataDir::new(t.path().join("hup"));
    d.create().unwrap();
    let mut s = State::new(Slot::A, "1.0.0", 1_700_000_000);
    s.staged = Some(Staged {
        file: "bundle.hup".into(),
        sha256: "ab".repeat(32),
        size: 2048,
        version: "2.0.0".into(),
        staged_at: 1_700_000_100,
    });
    s.last_result = Some(LastResult {
        outcome: Outcome::RolledBack,
        version: "1.5".into(),
        slot: Slot::B,
        reason: Some("never marked good".into()),
        log: Some("log/apply-1.log".into()),
        at: 1_700_000_000,
    });
    s.journal = Some(
        serde_json::from_value(serde_json::json!({
            "bundle_sha256": "ab", "version": "2.0.0", "target": "b",
            "completed": ["preflight"], "running": "format",
            "log": "log/apply-2.log", "started_at": 5
        }))
        .unwrap(),
    );
    s.layout_migration = Some(crate::model::state::LayoutMigration {
        layout_version: 2,
        bundle_version: "1.5".into(),
        phase: crate::model::state::LayoutPhase::Completed,
        started_at: 1_700_000_000,
        completed_at: Some(1_700_000_010),
        normalized: false,
        backup_bytes: 10 << 20,
        tar_bytes: 18 << 20,
        entries: 21,
        timings_ms: vec![("backup".into(), 2450), ("table".into(), 360)],
    });
    d.save_state(&s).unwrap();
    let st = gather(Inputs {
        data: Some(d.clone()),
        booted: Some(Booted {
            slot: Slot::A,
            source: "test".into(),
        }),
        ..Inputs::default()
    });
    assert_eq!(
        st.booted.as_ref().unwrap().version.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(st.other.as_ref().unwrap().slot, Slot::B);
    assert_eq!(
        st.staged.as_ref().unwrap().path,
        d.root.join("staged/bundle.hup").display().to_string()
    );
    let lr = st.last_result.as_ref().unwrap();
    assert_eq!(
        lr.log.as_deref(),
        Some(d.root.join("log/apply-1.log").to_str().unwrap())
    );
    assert_eq!(
        st.applying.as_ref().unwrap().running,
        Some(crate::model::journal::Step::Format)
    );
    assert!(st.boot.is_none() && st.errors.is_empty());
    let text = text(&st);
    assert!(
        text.contains("booted:      slot a, version 1.0.0"),
        "{text}"
    );
    assert!(text.contains("rolled-back: 1.5 on slot b"), "{text}");
    assert!(text.contains("interrupted in format"), "{text}");
    assert!(
        text.contains("layout:      migration to layout 2 for 1.5: completed")
            && text.contains("backup 10.0 MiB (21 entries); backup 2.45 s, table 0.36 s"),
        "{text}"
    );
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["last_result"]["outcome"], "rolled-back");
    assert_eq!(json["booted"]["slot"], "a");
    let back: Status = serde_json::from_value(json).unwrap();
    assert_eq!(back, st);
}

#[test]
fn unreadable_pieces_become_errors() {
    let st = gather(Inputs {
        disk: Some("/nonexistent/disk.img".into()),
        ..Inputs::default()
    });
    assert!(st.boot.is_none());
    assert_eq!(st.errors.len(), 1);
    assert!(
        st.errors[0].contains("/nonexistent/disk.img"),
        "{:?}",
        st.errors
    );
    assert!(st.booted.is_none() && st.slots.len() == 2);
}
