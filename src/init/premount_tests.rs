use std::time::Duration;

use super::*;
use crate::model::journal::Journal;
use crate::model::state::{LastResult, Staged};

fn staged(version: &str, sha: &str) -> Staged {
    Staged {
        file: format!("{version}.hup"),
        sha256: sha.into(),
        size: 10,
        version: version.into(),
        staged_at: 1,
    }
}

fn applied(slot: Slot) -> LastResult {
    LastResult {
        outcome: Outcome::Applied,
        version: "2.0".into(),
        slot,
        reason: None,
        log: None,
        at: 2,
    }
}

#[test]
fn nothing_pending_on_a_plain_state_or_without_one() {
    assert!(pending_work(None, false, None).is_empty());
    assert!(pending_work(None, false, Some(Slot::B)).is_empty());
    let s = State::new(Slot::A, "1.0", 5);
    assert!(pending_work(Some(&s), false, Some(Slot::A)).is_empty());
    assert!(pending_work(Some(&s), false, None).is_empty());
    // A committed or failed update is history, not work.
    let mut s = State::new(Slot::A, "1.0", 5);
    for outcome in [Outcome::Committed, Outcome::Failed, Outcome::RolledBack] {
        s.last_result = Some(LastResult {
            outcome,
            ..applied(Slot::B)
        });
        assert!(pending_work(Some(&s), false, Some(Slot::A)).is_empty());
    }
}

#[test]
fn a_staged_bundle_is_pending_and_a_journal_of_it_is_a_resume() {
    let mut s = State::new(Slot::A, "1.0", 5);
    s.staged = Some(staged("2.0", "aa"));
    assert_eq!(
        pending_work(Some(&s), false, Some(Slot::A)),
        [Reason::Staged {
            version: "2.0".into(),
            resume: false
        }]
    );
    s.journal = Some(Journal::new("aa", Slot::B, 3));
    assert_eq!(
        pending_work(Some(&s), false, Some(Slot::A)),
        [Reason::Staged {
            version: "2.0".into(),
            resume: true
        }]
    );
    // A journal of another bundle restarts: the staged one is new work.
    s.journal = Some(Journal::new("bb", Slot::B, 3));
    assert_eq!(
        pending_work(Some(&s), false, Some(Slot::A)),
        [Reason::Staged {
            version: "2.0".into(),
            resume: false
        }]
    );
}

#[test]
fn a_journal_without_its_bundle_and_a_layout_header_are_pending() {
    let mut s = State::new(Slot::A, "1.0", 5);
    let mut j = Journal::new("aa", Slot::B, 3);
    j.version = "2.0".into();
    s.journal = Some(j);
    assert_eq!(
        pending_work(Some(&s), false, None),
        [Reason::StaleJournal {
            version: "2.0".into()
        }]
    );
    // The data partition may be new and empty while a migration is resumed.
    assert_eq!(pending_work(None, true, None), [Reason::Layout]);
    assert_eq!(
        pending_work(Some(&s), true, None)[0],
        Reason::Layout,
        "the layout comes first, as in /init"
    );
}

#[test]
fn an_applied_update_is_a_possible_rollback_only_when_the_other_slot_boots() {
    let mut s = State::new(Slot::A, "1.0", 5);
    s.last_result = Some(applied(Slot::B));
    // The update's own first boot: nothing to do.
    assert!(pending_work(Some(&s), false, Some(Slot::B)).is_empty());
    // The slot is unknown: nothing can be told, nothing is written.
    assert!(pending_work(Some(&s), false, None).is_empty());
    assert_eq!(
        pending_work(Some(&s), false, Some(Slot::A)),
        [Reason::Rollback {
            applied_to: Slot::B,
            booted: Slot::A
        }]
    );
}

#[test]
fn reasons_read_as_sentences() {
    let r = Reason::Staged {
        version: "2.0".into(),
        resume: true,
    };
    assert_eq!(r.to_string(), "the apply of 2.0 was interrupted");
    let r = Reason::Rollback {
        applied_to: Slot::B,
        booted: Slot::A,
    };
    assert!(r.to_string().contains("slot b"), "{r}");
}

#[test]
fn the_booted_slot_comes_from_hup_slot_or_the_root_partlabel() {
    let labels = Labels::default();
    let slot_of = |text: &str| booted_slot(text, &cmdline::parse(text), &labels);
    assert_eq!(
        slot_of("root=PARTLABEL=hup-root-a hup.slot=b ro quiet"),
        Some(Slot::B)
    );
    assert_eq!(slot_of("root=PARTLABEL=hup-root-b ro quiet"), Some(Slot::B));
    assert_eq!(
        slot_of("root=PARTLABEL=hup-root-a root=PARTLABEL=hup-root-b"),
        Some(Slot::B),
        "the last root= counts, as for the initramfs"
    );
    assert_eq!(slot_of("root=/dev/vda2 ro"), None);
    assert_eq!(slot_of("root=PARTLABEL=other ro"), None);
}

/// A fake initramfs: /proc/cmdline, system.json and a /sys/class/block with `parts`.
fn fake(cmdline: &str, parts: &[(&str, &str)]) -> (tempfile::TempDir, Paths) {
    let t = tempfile::tempdir().unwrap();
    let cmd = t.path().join("cmdline");
    std::fs::write(&cmd, cmdline).unwrap();
    let config = t.path().join("system.json");
    std::fs::write(
        &config,
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/initramfs/system.json"
        )),
    )
    .unwrap();
    let sys = t.path().join("sys");
    let dev = t.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::create_dir_all(&sys).unwrap();
    for (i, (name, label)) in parts.iter().enumerate() {
        // /sys/class/block/vda2 -> ../../devices/.../vda/vda2, as the kernel links them.
        let real = t.path().join("devices/vda").join(name);
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, sys.join(name)).unwrap();
        std::fs::write(
            real.join("uevent"),
            format!(
                "MAJOR=254\nMINOR={n}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={label}\n",
                n = i + 1
            ),
        )
        .unwrap();
        std::fs::write(dev.join(name), "").unwrap();
    }
    let paths = Paths {
        config,
        cmdline: cmd,
        sys_block: sys,
        dev,
    };
    (t, paths)
}

#[test]
fn missing_partitions_end_the_run_with_an_error_naming_them() {
    let (_t, paths) = fake(
        "root=PARTLABEL=hup-root-a hup.rootwait=0",
        &[("vda2", "hup-root-a")],
    );
    let start = std::time::Instant::now();
    let err = format!("{:#}", run(&paths).unwrap_err());
    assert!(err.contains("hup-root-b, hup-data"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_missing_configuration_is_an_error_before_any_device_is_touched() {
    let (_t, mut paths) = fake("hup.rootwait=0", &[]);
    paths.config = paths.config.with_file_name("absent.json");
    let err = format!("{:#}", run(&paths).unwrap_err());
    assert!(err.contains("absent.json"), "{err}");
}

#[test]
fn a_disk_without_a_partition_table_ends_the_run_before_any_mount() {
    // The labels are there, but their disk holds no GPT: the read-only probe of the disk
    // stops the run before the data partition is mounted.
    let (_t, paths) = fake(
        "hup.rootwait=0",
        &[
            ("vda2", "hup-root-a"),
            ("vda3", "hup-root-b"),
            ("vda4", "hup-data"),
        ],
    );
    std::fs::write(paths.dev.join("vda"), vec![0u8; 1 << 20]).unwrap();
    let err = format!("{:#}", run(&paths).unwrap_err());
    assert!(
        err.contains(&format!("{}", paths.dev.join("vda").display())),
        "{err}"
    );
    assert!(err.contains("GPT"), "{err}");
}
