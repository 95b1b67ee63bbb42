//! boot: the gpt backend on disk images, checked with sgdisk.

use std::path::Path;

use crate::support::disk::*;
use hup::boot::BootBackend;
use hup::boot::gpt::{GptBackend, SlotAttrs};
use hup::disk::{Disk, DiskError};
use hup::model::slot::{Slot, SlotStatus};

/// A hup image whose slot A is good (as `hup provision` leaves it).
fn provisioned(dir: &Path, ss: u64) -> (std::path::PathBuf, GptBackend) {
    let img = hup_image(dir, ss);
    let b = GptBackend::new(&img);
    b.mark_good(Slot::A).unwrap();
    (img, b)
}

fn tries(b: &GptBackend, s: Slot) -> u8 {
    b.attrs().unwrap()[s as usize].tries
}

#[test]
fn attribute_bits_as_sgdisk_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (img, b) = provisioned(dir.path(), 512);
    // Entry 2 is hup-root-a, 3 is hup-root-b.
    assert_eq!(sgdisk_attrs(&img, 2), "0102000000000000");
    assert_eq!(sgdisk_attrs(&img, 3), "0000000000000000");
    b.set_try_next(Slot::B, 3).unwrap();
    assert_eq!(
        sgdisk_attrs(&img, 3),
        "0632000000000000",
        "prio 2, tries 3, refunds 3"
    );
    assert_eq!(
        sgdisk_attrs(&img, 2),
        "0101000000000000",
        "prio 1, successful"
    );
    assert_sgdisk_clean(&img);
    // Bits hup does not own survive.
    let mut d = Disk::open(&img).unwrap();
    let a = d.partition("hup-root-a").unwrap().attrs;
    d.set_attributes(&[("hup-root-a", a | 1 | (1 << 60))])
        .unwrap();
    b.mark_good(Slot::B).unwrap();
    let a = Disk::open(&img)
        .unwrap()
        .partition("hup-root-a")
        .unwrap()
        .attrs;
    assert_eq!(a & (1 | (1 << 60)), 1 | (1 << 60));
}

fn countdown(ss: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (img, b) = provisioned(dir.path(), ss);
    b.set_try_next(Slot::B, 3).unwrap();
    assert_eq!(b.active().unwrap(), Slot::B);
    assert_eq!(b.active().unwrap(), Slot::B);
    assert_eq!(tries(&b, Slot::B), 3, "active() uses no try");
    for left in [2, 1, 0] {
        let c = b.choose().unwrap();
        assert_eq!(
            (c.slot, c.trial, c.tries_left, c.rescue),
            (Slot::B, true, left, false)
        );
        assert_eq!(c.fallback, Some(Slot::A));
        assert_eq!(c.candidates(), [Slot::B, Slot::A]);
        assert_eq!(tries(&b, Slot::B), left);
    }
    // Tries used up: the good slot boots, again and again, without counting.
    for _ in 0..2 {
        let c = b.choose().unwrap();
        assert_eq!((c.slot, c.trial, c.fallback), (Slot::A, false, None));
    }
    let st = b.state().unwrap();
    assert_eq!(st.next, Some(Slot::A));
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Bad);
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Good);
    let (view, _g) = sgdisk_view(&img, ss);
    assert_sgdisk_clean(&view);
}

#[test]
fn tries_count_down_then_fall_back_512() {
    countdown(512);
}

#[test]
fn tries_count_down_then_fall_back_4096() {
    countdown(4096);
}

#[test]
fn mark_good_stops_the_countdown() {
    let dir = tempfile::tempdir().unwrap();
    let (_img, b) = provisioned(dir.path(), 512);
    b.set_try_next(Slot::B, 3).unwrap();
    assert_eq!(b.choose().unwrap().tries_left, 2);
    b.mark_good(Slot::B).unwrap();
    for _ in 0..5 {
        let c = b.choose().unwrap();
        assert_eq!(
            (c.slot, c.trial, c.fallback),
            (Slot::B, false, Some(Slot::A))
        );
    }
    let st = b.state().unwrap();
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Good);
    assert_eq!(st.slot(Slot::B).priority, Some(2));
    assert_eq!(
        st.slot(Slot::A).status,
        SlotStatus::Good,
        "A stays as fallback"
    );
    assert_eq!(st.slot(Slot::A).priority, Some(1));
    // The other direction: B good, A tried and committed.
    b.set_try_next(Slot::A, 2).unwrap();
    let c = b.choose().unwrap();
    assert_eq!((c.slot, c.trial, c.tries_left), (Slot::A, true, 1));
    b.mark_good(Slot::A).unwrap();
    assert_eq!(b.choose().unwrap().slot, Slot::A);
}

#[test]
fn last_try_boots_and_can_still_be_marked_good() {
    let dir = tempfile::tempdir().unwrap();
    let (_img, b) = provisioned(dir.path(), 512);
    b.set_try_next(Slot::B, 1).unwrap();
    let c = b.choose().unwrap();
    assert_eq!((c.slot, c.tries_left), (Slot::B, 0));
    // The OS of that last boot marks itself good: it stays.
    b.mark_good(Slot::B).unwrap();
    assert_eq!(b.choose().unwrap().slot, Slot::B);
}

#[test]
fn mark_bad_and_set_try_next() {
    let dir = tempfile::tempdir().unwrap();
    let (_img, b) = provisioned(dir.path(), 512);
    b.set_try_next(Slot::B, 3).unwrap();
    b.mark_bad(Slot::B).unwrap();
    assert_eq!(b.attrs().unwrap()[1], SlotAttrs::default());
    let c = b.choose().unwrap();
    assert_eq!((c.slot, c.trial, c.fallback), (Slot::A, false, None));
    assert_eq!(b.state().unwrap().slot(Slot::B).status, SlotStatus::Bad);

    assert!(b.set_try_next(Slot::B, 0).is_err());
    assert!(b.set_try_next(Slot::B, 16).is_err());
    b.set_try_next(Slot::B, 15).unwrap();
    assert_eq!(tries(&b, Slot::B), 15);
    // mark_good of the running slot cancels a pending trial of the other.
    b.mark_good(Slot::A).unwrap();
    let st = b.state().unwrap();
    assert_eq!(st.slot(Slot::B).tries_left, Some(0));
    assert_eq!(b.choose().unwrap().slot, Slot::A);

    // Nothing bootable: a best guess (the higher priority: B's cancelled trial beats A
    // marked bad), flagged, and no try is counted.
    b.mark_bad(Slot::A).unwrap();
    let c = b.choose().unwrap();
    assert!(c.rescue);
    assert_eq!((c.slot, c.trial, c.fallback), (Slot::B, false, None));
}

#[test]
fn clean_shutdown_refunds_a_try_within_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (_img, b) = provisioned(dir.path(), 512);
    assert!(
        !b.refund_try(Slot::A).unwrap(),
        "a good slot has nothing to refund"
    );
    b.set_try_next(Slot::B, 2).unwrap();
    let mut boots = 0;
    loop {
        let c = b.choose().unwrap();
        if c.slot == Slot::A {
            break;
        }
        boots += 1;
        assert!(boots < 20, "the trial must end");
        // Every boot of B ends in a clean reboot.
        b.refund_try(Slot::B).unwrap();
    }
    // 2 tries + 3 refunds.
    assert_eq!(boots, 5);
    assert_eq!(b.state().unwrap().slot(Slot::B).refunds_left, Some(0));
    assert!(!b.refund_try(Slot::B).unwrap());
}

#[test]
fn damaged_primary_is_repaired_by_choose() {
    for ss in [512, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let (img, b) = provisioned(dir.path(), ss);
        b.set_try_next(Slot::B, 3).unwrap();
        scribble(&img, ss, 92); // primary header
        assert!(!Disk::open(&img).unwrap().health().primary_ok);
        // The backup copy carries the same bits.
        assert_eq!(b.active().unwrap(), Slot::B);
        let c = b.choose().unwrap();
        assert!(c.repaired);
        assert_eq!((c.slot, c.tries_left), (Slot::B, 2));
        assert!(Disk::open(&img).unwrap().health().is_clean());
        let (view, _g) = sgdisk_view(&img, ss);
        assert_sgdisk_clean(&view);
        assert!(!b.choose().unwrap().repaired);
    }
}

#[test]
fn refuses_root_labels_in_the_same_range() {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), 512);
    let labels = hup::model::config::Labels {
        root_b: "hup-root-a".into(),
        ..Default::default()
    };
    let b = GptBackend::with_labels(&img, labels);
    let err = b.set_try_next(Slot::B, 3).unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(DiskError::SameRange { .. })),
        "{err:#}"
    );
    assert!(b.choose().is_err());
}

#[test]
fn state_serializes_for_status_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_img, b) = provisioned(dir.path(), 512);
    b.set_try_next(Slot::B, 3).unwrap();
    let json = serde_json::to_value(b.state().unwrap()).unwrap();
    assert_eq!(json["backend"], "gpt");
    assert_eq!(json["next"], "b");
    assert_eq!(json["slots"][1]["slot"], "b");
    assert_eq!(json["slots"][1]["status"], "trying");
    assert_eq!(json["slots"][1]["tries_left"], 3);
    assert_eq!(json["slots"][0]["successful"], true);
}
