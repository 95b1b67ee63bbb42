//! Planner tests on tables in memory (the disk tests are in tests/integration/layout_*.rs).

use super::*;
use crate::disk::{TYPE_ESP, TYPE_LINUX_FS, TYPE_LINUX_ROOT_X86_64};
use crate::model::layout::PartitionSpec;

const SIZE: u64 = 1200 * MIB;
const GOOD_A: u64 = 0x0102_0000_0000_0000;
const GOOD_B: u64 = 0x0101_0000_0000_0000;

fn part(n: u32, label: &str, start_mib: u64, len_mib: u64, ty: &str) -> Part {
    Part {
        label: label.into(),
        number: n,
        start: start_mib * MIB,
        len: len_mib * MIB,
        guid: format!("00000000-0000-0000-0000-00000000000{n}"),
        type_guid: ty.into(),
        attrs: match label {
            "hup-root-a" => GOOD_A,
            "hup-root-b" => GOOD_B,
            _ => 0,
        },
    }
}

/// What `hup provision --size 1200M --slot-size 256M` makes.
fn v1() -> Vec<Part> {
    vec![
        part(1, "hup-boot", 1, 64, TYPE_ESP),
        part(2, "hup-root-a", 65, 256, TYPE_LINUX_ROOT_X86_64),
        part(3, "hup-root-b", 321, 256, TYPE_LINUX_ROOT_X86_64),
        part(4, "hup-data", 577, 622, TYPE_LINUX_FS),
    ]
}

fn spec(label: &str, mib: Option<u64>, ty: &str) -> PartitionSpec {
    PartitionSpec {
        label: label.into(),
        size: mib.map(|m| m * MIB),
        type_guid: ty.into(),
    }
}

fn layout(boot: u64, slot: u64, data: Option<u64>) -> TargetLayout {
    TargetLayout {
        version: 2,
        partitions: vec![
            spec("hup-boot", Some(boot), TYPE_ESP),
            spec("hup-root-a", Some(slot), TYPE_LINUX_ROOT_X86_64),
            spec("hup-root-b", Some(slot), TYPE_LINUX_ROOT_X86_64),
            spec("hup-data", data, TYPE_LINUX_FS),
        ],
    }
}

fn run(current: &[Part], target: &TargetLayout, active: Slot) -> Result<Option<Plan>, PlanError> {
    plan_parts(
        "disk.img",
        SIZE,
        512,
        current,
        target,
        &Labels::default(),
        active,
    )
}

fn err(current: &[Part], target: &TargetLayout, active: Slot) -> PlanError {
    run(current, target, active).unwrap_err()
}

#[test]
fn v1_to_v2_from_slot_a() {
    let p = run(&v1(), &layout(64, 384, None), Slot::A)
        .unwrap()
        .unwrap();
    assert_eq!(p.keeper, Slot::A);
    assert_eq!(p.normalize, None);
    assert_eq!(p.keeper_content, 256 * MIB);
    let t: Vec<(u64, u64)> = p
        .table
        .iter()
        .map(|p| (p.start / MIB, p.len / MIB))
        .collect();
    assert_eq!(t, [(1, 64), (65, 384), (449, 384), (833, 366)]);
    assert_eq!(
        p.region,
        Region {
            start: 321 * MIB,
            len: 256 * MIB
        }
    );
    // GUIDs and the active slot's boot state carry over; the spare is never booted as is.
    assert_eq!(p.table[1].guid, v1()[1].guid);
    assert_eq!(p.table[1].attrs, GOOD_A);
    assert_eq!(p.table[2].attrs, 0);
    assert!(
        p.data_room > 250 * MIB && p.data_room < 366 * MIB,
        "{}",
        p.data_room
    );
    let text = p.to_string();
    for needle in [
        "layout version 2",
        "hup-root-a",
        "keeps its start",
        "backup region: 321 MiB..577 MiB (256 MiB)",
    ] {
        assert!(text.contains(needle), "{text}");
    }
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["region"]["len"], 256 * MIB);
}

#[test]
fn from_slot_b_copies_it_to_a_first() {
    let p = run(&v1(), &layout(64, 384, None), Slot::B)
        .unwrap()
        .unwrap();
    let n = p.normalize.clone().unwrap();
    assert_eq!((n.from, n.to, n.len), (Slot::B, Slot::A, 256 * MIB));
    assert_eq!((n.src_start, n.dst_start), (321 * MIB, 65 * MIB));
    assert_eq!(p.region.start, 321 * MIB);
    assert!(p.to_string().contains("first: copy slot b"), "{p}");

    let mut big_b = v1();
    big_b[2].len = 300 * MIB;
    big_b[3].start = 621 * MIB;
    big_b[3].len = 578 * MIB;
    assert!(matches!(
        err(&big_b, &layout(64, 384, None), Slot::B),
        PlanError::NormalizeTooBig {
            from: Slot::B,
            to: Slot::A,
            ..
        }
    ));
}

#[test]
fn already_there_and_4k_sectors() {
    assert_eq!(run(&v1(), &layout(64, 256, None), Slot::A), Ok(None));
    let p = plan_parts(
        "d",
        SIZE,
        4096,
        &v1(),
        &layout(64, 384, None),
        &Labels::default(),
        Slot::A,
    )
    .unwrap()
    .unwrap();
    assert_eq!(p.table[3].start, 833 * MIB);
    assert_eq!(p.table[3].end(), 1199 * MIB);
}

#[test]
fn refusals_name_the_reason() {
    let e = err(&v1(), &layout(64, 4096, None), Slot::A);
    assert!(
        matches!(e, PlanError::DiskTooSmall { ref label, .. } if label == "hup-root-a"),
        "{e}"
    );
    assert!(e.to_string().contains("too small"), "{e}");

    let e = err(&v1(), &layout(128, 384, None), Slot::A);
    assert!(matches!(e, PlanError::BootMoves { .. }), "{e}");

    // Slot a shrinks below its content.
    let e = err(&v1(), &layout(64, 128, None), Slot::A);
    assert!(matches!(e, PlanError::SlotShrinks { .. }), "{e}");

    // The new data partition takes the place of the spare slot: nowhere to keep the backup.
    let mut t = layout(64, 256, None);
    t.partitions.swap(2, 3);
    t.partitions[2].size = Some(256 * MIB);
    t.partitions[3].size = None;
    let e = err(&v1(), &t, Slot::A);
    assert!(matches!(e, PlanError::BackupOverwritten { .. }), "{e}");
    assert!(e.to_string().contains("backup would be overwritten"), "{e}");

    // A new partition before the slots moves both.
    let mut t = layout(64, 384, None);
    t.partitions
        .insert(1, spec("hup-state", Some(32), TYPE_LINUX_FS));
    let e = err(&v1(), &t, Slot::A);
    assert!(matches!(e, PlanError::ActiveSlotMoves { .. }), "{e}");
    assert!(e.to_string().contains("active slot would move"), "{e}");

    let mut extra = v1();
    extra.push(part(5, "old-conf", 1199, 1, TYPE_LINUX_FS));
    extra[3].len = 621 * MIB;
    let e = err(&extra, &layout(64, 384, None), Slot::A);
    assert!(
        matches!(e, PlanError::DropsPartition { ref label } if label == "old-conf"),
        "{e}"
    );

    let mut t = layout(64, 384, None);
    t.partitions.pop();
    let e = err(&v1(), &t, Slot::A);
    assert!(
        matches!(
            e,
            PlanError::Missing {
                place: "target layout",
                ..
            }
        ),
        "{e}"
    );
    let e = err(&v1()[..3], &layout(64, 384, None), Slot::A);
    assert!(matches!(e, PlanError::Missing { place: "disk", .. }), "{e}");

    let e = err(&v1(), &layout(64, 384, Some(8)), Slot::A);
    assert!(matches!(e, PlanError::Invalid(_)), "{e}");
}

#[test]
fn new_partitions_and_slot_b_keeping_its_start() {
    let mut t = layout(64, 384, None);
    t.partitions
        .insert(3, spec("hup-state", Some(32), TYPE_LINUX_FS));
    let p = run(&v1(), &t, Slot::A).unwrap().unwrap();
    assert_eq!(p.table[3].start, 833 * MIB);
    assert!(p.to_string().contains("(new)"), "{p}");

    // Slot b keeps its start, slot a moves behind it: a runs, so it is copied to b first;
    // the backup goes into a's old place (the new partition there stays empty meanwhile).
    let t = TargetLayout {
        version: 3,
        partitions: vec![
            spec("hup-boot", Some(64), TYPE_ESP),
            spec("hup-state", Some(256), TYPE_LINUX_FS),
            spec("hup-root-b", Some(256), TYPE_LINUX_ROOT_X86_64),
            spec("hup-root-a", Some(256), TYPE_LINUX_ROOT_X86_64),
            spec("hup-data", None, TYPE_LINUX_FS),
        ],
    };
    let p = run(&v1(), &t, Slot::A).unwrap().unwrap();
    assert_eq!(p.keeper, Slot::B);
    let n = p.normalize.unwrap();
    assert_eq!(
        (n.from_label.as_str(), n.to_label.as_str()),
        ("hup-root-a", "hup-root-b")
    );
    assert_eq!(
        p.region,
        Region {
            start: 65 * MIB,
            len: 256 * MIB
        }
    );

    // A bigger partition in front moves slot b too.
    let mut t = t;
    t.partitions[1].size = Some(300 * MIB);
    t.partitions[2].size = Some(300 * MIB);
    let e = err(&v1(), &t, Slot::A);
    assert!(matches!(e, PlanError::ActiveSlotMoves { .. }), "{e}");
}

#[test]
fn fit_checks() {
    let p = run(&v1(), &layout(64, 384, None), Slot::A)
        .unwrap()
        .unwrap();
    let scan = |tar: u64, fs: u64, entries: u64| Scan {
        entries,
        file_bytes: fs,
        tar_bytes: tar,
        fs_bytes: fs,
        skipped: 0,
    };
    let ok = Estimate::bound(scan(100 * MIB, 100 * MIB, 10), 20 * MIB);
    assert!(
        ok.needed > 120 * MIB && ok.needed < 123 * MIB,
        "{}",
        ok.needed
    );
    p.check(&ok).unwrap();
    let e = p.check(&Estimate::bound(scan(250 * MIB, 100 * MIB, 10), 20 * MIB));
    assert!(matches!(e, Err(PlanError::BackupTooBig { .. })), "{e:?}");
    p.check(&Estimate::exact(
        scan(250 * MIB, 100 * MIB, 10),
        20 * MIB,
        50 * MIB,
    ))
    .unwrap();
    let e = p.check(&Estimate::exact(
        scan(250 * MIB, 360 * MIB, 10),
        0,
        50 * MIB,
    ));
    assert!(matches!(e, Err(PlanError::DataTooBig { .. })), "{e:?}");
    let e = p.check(&Estimate::exact(
        scan(250 * MIB, 100 * MIB, 2_000_000),
        0,
        50 * MIB,
    ));
    assert!(matches!(e, Err(PlanError::TooManyFiles { .. })), "{e:?}");
}

/// Sizes too large to add up are refused as too large for the disk, not wrapped around (a
/// release build has no overflow checks) and not a panic.
#[test]
fn huge_sizes_are_refused_without_overflow() {
    for huge in [u64::MAX, u64::MAX - MIB, 1 << 63, u64::MAX - 3 * MIB + 1] {
        let mut target = layout(64, 256, None);
        target.partitions[2].size = Some(huge);
        let err = run(&v1(), &target, Slot::A).unwrap_err();
        assert!(
            matches!(&err, PlanError::DiskTooSmall { label, .. } if label == "hup-root-b"),
            "{huge}: {err}"
        );
        assert!(err.to_string().contains("too small"), "{err}");
    }
}

/// The refusals users read (`hup stage`, preflight, the initramfs) keep their text: sizes in
/// MiB, without a decimal when whole.
#[test]
fn refusals_keep_their_text() {
    let cases = [
        (
            PlanError::DiskTooSmall {
                label: "hup-data".into(),
                end: 1300 * MIB,
                size: 1200 * MIB + MIB / 2,
            },
            "the disk (1200.5 MiB) is too small for the target layout: partition \"hup-data\" \
             would end at 1300 MiB",
        ),
        (
            PlanError::NormalizeTooBig {
                from: Slot::B,
                to: Slot::A,
                len: 300 * MIB,
                room: 256 * MIB,
            },
            "slot b (300 MiB) does not fit into slot a (256 MiB), where it has to move to keep \
             its start",
        ),
        (
            PlanError::SlotShrinks {
                label: "hup-root-a".into(),
                content: 3 << 30,
                after: 2 << 30,
            },
            "partition \"hup-root-a\" would shrink to 2048 MiB, below the 3072 MiB of the active \
             system it holds",
        ),
        (
            PlanError::BackupTooBig {
                needed: 36 * MIB + MIB / 10,
                capacity: 32 * MIB,
            },
            "the backup needs 36.1 MiB but the backup region holds 32 MiB: nothing was changed",
        ),
        (
            PlanError::DataTooBig {
                label: "hup-data".into(),
                needed: 40 * MIB,
                room: 33 * MIB + 1,
            },
            "the data takes 40 MiB but the new data partition \"hup-data\" holds about 33.0 MiB",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
    let e = err(&v1(), &layout(64, 128, None), Slot::A);
    assert_eq!(
        e.to_string(),
        "partition \"hup-root-a\" would shrink to 128 MiB, below the 256 MiB of the active \
         system it holds"
    );
}
