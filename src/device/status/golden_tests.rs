//! Golden tests of `hup status`: fixed reports, rendered as text and as JSON, compared with
//! the files committed in `golden/`. Together the reports cover every section of the text
//! form and its `warning:` and `error:` lines. After an intended change of the text form,
//! run the tests with `HUP_BLESS_GOLDEN=1` to rewrite the files, and review the diff.

use std::path::Path;

use super::*;
use crate::model::agent::{ActionPhase, ActionResult};
use crate::model::journal::Step;
use crate::model::slot::{Slot, SlotStatus};
use crate::model::state::{LayoutPhase, Outcome};

fn slot(slot: Slot, booted: bool, version: Option<&str>, health: Option<SlotStatus>) -> SlotReport {
    SlotReport {
        slot,
        booted,
        version: version.map(str::to_string),
        installed_at: version.map(|_| 1_795_781_871),
        health,
        tries_left: health.map(|_| 0),
        next_boot: false,
    }
}

fn boot_slot(slot: Slot, status: SlotStatus) -> BootSlotReport {
    BootSlotReport {
        slot,
        status,
        priority: None,
        tries_left: None,
        tries_done: None,
        successful: status == SlotStatus::Good,
        refunds_left: None,
        entry: None,
        entry_version: None,
        ok: None,
    }
}

fn empty() -> Status {
    Status {
        status_version: STATUS_VERSION,
        compatible: None,
        data_dir: None,
        booted: None,
        other: None,
        slots: vec![
            slot(Slot::A, false, None, None),
            slot(Slot::B, false, None, None),
        ],
        staged: None,
        applying: None,
        last_result: None,
        layout_migration: None,
        boot: None,
        partition_table: None,
        agent: None,
        errors: vec![],
    }
}

/// A device running 1.0.0 from slot a, 2.0.0 staged, the last update committed; gpt.
fn device() -> Status {
    let mut a = slot(Slot::A, true, Some("1.0.0"), Some(SlotStatus::Good));
    a.next_boot = true;
    let b = slot(Slot::B, false, None, Some(SlotStatus::Bad));
    let mut ba = boot_slot(Slot::A, SlotStatus::Good);
    ba.priority = Some(2);
    ba.tries_left = Some(0);
    ba.refunds_left = Some(0);
    let mut bb = boot_slot(Slot::B, SlotStatus::Bad);
    bb.priority = Some(0);
    bb.tries_left = Some(0);
    bb.refunds_left = Some(0);
    Status {
        compatible: Some("qemu-x86_64".into()),
        data_dir: Some("/mnt/data/hup".into()),
        booted: Some(a.clone()),
        other: Some(b.clone()),
        slots: vec![a, b],
        staged: Some(StagedReport {
            version: "2.0.0".into(),
            size: 25_172_480,
            sha256: "559a82e7c7593e302e9a93ed8d229e092ed2bdec526db0cd2e1b511f9b39aa72".into(),
            staged_at: 1_795_781_875,
            path: "/mnt/data/hup/staged/bundle.hup".into(),
        }),
        last_result: Some(LastResultReport {
            outcome: Outcome::Committed,
            version: "2.0.0".into(),
            slot: Slot::B,
            reason: None,
            log: Some("/mnt/data/hup/log/apply-1795783100.log".into()),
            at: 1_795_783_202,
        }),
        boot: Some(BootReport {
            backend: "gpt".into(),
            next: Some(Slot::A),
            order: None,
            slots: vec![ba, bb],
        }),
        partition_table: Some(PartitionTableReport {
            disk: "/dev/vda".into(),
            primary_ok: true,
            backup_ok: true,
            in_sync: true,
            problems: vec![],
        }),
        agent: Some(AgentReport {
            server: "https://fleet.example.com".into(),
            controller_id: "hup-3f2a9c1d5e7b8a60".into(),
            last_poll_at: Some(1_795_781_900),
            last_error: None,
            action: Some(AgentActionReport {
                id: "7".into(),
                version: Some("2.0.0".into()),
                state: ActionPhase::Staged,
                result: None,
                reported: false,
                started_at: 1_795_781_872,
            }),
        }),
        ..empty()
    }
}

/// An apply interrupted in `format` after a layout migration, slot b on trial; systemd-boot.
fn applying() -> Status {
    let a = slot(Slot::A, true, Some("1.5"), Some(SlotStatus::Good));
    let mut b = slot(Slot::B, false, Some("2.0.0"), Some(SlotStatus::Trying));
    b.tries_left = Some(2);
    b.next_boot = true;
    let mut ba = boot_slot(Slot::A, SlotStatus::Good);
    ba.entry = Some("hup-a.conf".into());
    ba.entry_version = Some(3);
    let mut bb = boot_slot(Slot::B, SlotStatus::Trying);
    bb.tries_left = Some(2);
    bb.tries_done = Some(1);
    bb.refunds_left = Some(3);
    bb.entry = Some("hup-b+2-1.conf".into());
    bb.entry_version = Some(4);
    Status {
        compatible: Some("qemu-x86_64".into()),
        data_dir: Some("/mnt/data/hup".into()),
        booted: Some(a.clone()),
        other: Some(b.clone()),
        slots: vec![a, b],
        applying: Some(ApplyingReport {
            version: "2.0.0".into(),
            target: Slot::B,
            completed: vec![Step::Preflight, Step::MarkTargetBad],
            running: Some(Step::Format),
            log: "/mnt/data/hup/log/apply-2.log".into(),
            started_at: 1_700_000_020,
        }),
        last_result: Some(LastResultReport {
            outcome: Outcome::RolledBack,
            version: "1.9".into(),
            slot: Slot::B,
            reason: Some("slot b never marked itself good; slot a booted instead".into()),
            log: None,
            at: 1_700_000_000,
        }),
        layout_migration: Some(LayoutMigrationReport {
            layout_version: 2,
            version: "2.0.0".into(),
            phase: LayoutPhase::Completed,
            started_at: 1_700_000_000,
            completed_at: Some(1_700_000_010),
            normalized: true,
            backup_bytes: 10 << 20,
            entries: 21,
            phases: vec![
                PhaseTime {
                    phase: "normalize".into(),
                    ms: 1200,
                },
                PhaseTime {
                    phase: "backup".into(),
                    ms: 2450,
                },
                PhaseTime {
                    phase: "table".into(),
                    ms: 360,
                },
            ],
        }),
        boot: Some(BootReport {
            backend: "systemd-boot".into(),
            next: Some(Slot::B),
            order: None,
            slots: vec![ba, bb],
        }),
        ..empty()
    }
}

/// A disk image on a host: no booted slot, nothing recorded, a damaged partition table, an
/// apply that had not done anything yet, a migration that started and has no timings.
fn image() -> Status {
    let mut a = slot(Slot::A, false, Some("1.0.0"), None);
    a.installed_at = None;
    Status {
        slots: vec![a, slot(Slot::B, false, None, Some(SlotStatus::Missing))],
        applying: Some(ApplyingReport {
            version: "2.0.0".into(),
            target: Slot::A,
            completed: vec![],
            running: None,
            log: "log/apply-3.log".into(),
            started_at: 0,
        }),
        layout_migration: Some(LayoutMigrationReport {
            layout_version: 3,
            version: "2.0.0".into(),
            phase: LayoutPhase::Started,
            started_at: 951_782_400,
            completed_at: None,
            normalized: false,
            backup_bytes: 0,
            entries: 0,
            phases: vec![],
        }),
        boot: Some(BootReport {
            backend: "gpt".into(),
            next: None,
            order: None,
            slots: vec![
                boot_slot(Slot::A, SlotStatus::Bad),
                boot_slot(Slot::B, SlotStatus::Missing),
            ],
        }),
        partition_table: Some(PartitionTableReport {
            disk: "disk.img".into(),
            primary_ok: false,
            backup_ok: true,
            in_sync: false,
            problems: vec![
                "primary GPT header: CRC mismatch".into(),
                "the two copies differ".into(),
            ],
        }),
        errors: vec![
            "reading disk.img.data/state.json: permission denied".into(),
            "boot backend gpt: no partition labelled hup-root-b".into(),
        ],
        agent: Some(AgentReport {
            server: "http://10.0.2.2:8000".into(),
            controller_id: "qemu-1".into(),
            last_poll_at: None,
            last_error: Some("http://10.0.2.2:8000/DEFAULT/controller/v1/qemu-1: the server did not answer within 30.0 s".into()),
            action: Some(AgentActionReport {
                id: "3".into(),
                version: Some("3.0.0".into()),
                state: ActionPhase::Closed,
                result: Some(ActionResult::Failure),
                reported: false,
                started_at: 1_795_781_800,
            }),
        }),
        ..empty()
    }
}

/// A device running 1.0.0 from slot a, 2.0.0 applied to slot b which is on trial with one
/// of its 3 tries used; grub.
fn grub() -> Status {
    let a = slot(Slot::A, true, Some("1.0.0"), Some(SlotStatus::Good));
    let mut b = slot(Slot::B, false, Some("2.0.0"), Some(SlotStatus::Trying));
    b.tries_left = Some(2);
    b.next_boot = true;
    let mut ba = boot_slot(Slot::A, SlotStatus::Good);
    ba.ok = Some(true);
    let mut bb = boot_slot(Slot::B, SlotStatus::Trying);
    bb.ok = Some(true);
    bb.tries_left = Some(2);
    bb.tries_done = Some(1);
    bb.refunds_left = Some(3);
    Status {
        compatible: Some("pc-x86_64".into()),
        data_dir: Some("/mnt/data/hup".into()),
        booted: Some(a.clone()),
        other: Some(b.clone()),
        slots: vec![a, b],
        last_result: Some(LastResultReport {
            outcome: Outcome::Applied,
            version: "2.0.0".into(),
            slot: Slot::B,
            reason: None,
            log: Some("/mnt/data/hup/log/apply-1795783100.log".into()),
            at: 1_795_783_202,
        }),
        boot: Some(BootReport {
            backend: "grub".into(),
            next: Some(Slot::B),
            order: Some(vec![Slot::B, Slot::A]),
            slots: vec![ba, bb],
        }),
        ..empty()
    }
}

/// The reports and the golden file stem of each.
fn cases() -> [(&'static str, Status); 5] {
    [
        ("device", device()),
        ("grub", grub()),
        ("applying", applying()),
        ("image", image()),
        ("empty", empty()),
    ]
}

fn check(file: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/device/status/golden")
        .join(file);
    if std::env::var_os("HUP_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        actual == expected,
        "{} differs; got:\n{actual}\n(HUP_BLESS_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn text_form_matches_golden_files() {
    for (name, st) in cases() {
        check(&format!("{name}.txt"), &text(&st));
    }
}

#[test]
fn json_form_matches_golden_files() {
    for (name, st) in cases() {
        let json = serde_json::to_string_pretty(&st).unwrap() + "\n";
        check(&format!("{name}.json"), &json);
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st, "{name}");
    }
}

#[test]
fn golden_reports_cover_every_section() {
    let all: String = cases().iter().map(|(_, st)| text(st)).collect();
    for head in [
        "booted:",
        "other:",
        "slot a:",
        "slot b:",
        "staged:",
        "applying:",
        "last update:",
        "layout:",
        "agent:",
        "boot:",
        "warning:",
        "error:",
    ] {
        assert!(all.lines().any(|l| l.starts_with(head)), "no {head} line");
    }
    for detail in [
        "boots next",
        "trying, 2 tries left",
        "health unknown",
        "nothing done yet",
        "interrupted in format",
        "reason: ",
        "log: ",
        "entry hup-b+2-1.conf",
        "priority 0",
        "next boot: none",
        "none recorded",
        "action 7: 2.0.0 staged",
        "(failure, not reported yet)",
        "last error: ",
    ] {
        assert!(all.contains(detail), "no {detail:?}");
    }
}
