//! disk: a damaged GPT copy is survived and repaired; a write cut short by power loss leaves
//! the old or the new table, never none.

use std::path::Path;

use crate::support::disk::*;
use hup::disk::Disk;

const ARRAY: u64 = 128 * 128;

fn attrs_of(img: &Path) -> (u64, u64) {
    let d = Disk::open_read_only(img).unwrap();
    (
        d.partition("hup-root-a").unwrap().attrs,
        d.partition("hup-root-b").unwrap().attrs,
    )
}

/// Damage one region, check the other copy is used, repair, check with sgdisk.
fn damage_and_repair(ss: u64, offset: u64, len: usize, primary_damaged: bool) {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), ss);
    let mut d = Disk::open(&img).unwrap();
    d.set_attributes(&[("hup-root-a", 0x0102 << 48), ("hup-root-b", 0x0031 << 48)])
        .unwrap();
    let before = d.partitions();
    drop(d);
    let offset = if offset == u64::MAX {
        96 * MIB - ss
    } else {
        offset
    };
    let offset = if offset == u64::MAX - 1 {
        96 * MIB - ss - ARRAY
    } else {
        offset
    };
    scribble(&img, offset, len);

    let (view, guard) = sgdisk_view(&img, ss);
    let out = run("sgdisk", &["-v", view.to_str().unwrap()]).1;
    assert!(
        out.contains("corrupt GPT") || out.contains("CRC"),
        "sgdisk sees the damage:\n{out}"
    );
    drop(guard);

    let mut d = Disk::open(&img).unwrap();
    let h = d.health();
    assert_eq!(h.primary_ok, !primary_damaged, "{h:?}");
    assert_eq!(h.backup_ok, primary_damaged, "{h:?}");
    assert_eq!(d.partitions(), before, "the intact copy is used");
    assert!(d.repair().unwrap(), "repair writes");
    assert!(d.health().is_clean());
    assert!(!d.repair().unwrap(), "nothing left to repair");
    assert_eq!(d.partitions(), before);
    let (view, _guard) = sgdisk_view(&img, ss);
    assert_sgdisk_clean(&view);
    assert_eq!(attrs_of(&img), (0x0102 << 48, 0x0031 << 48));
}

#[test]
fn primary_header_damaged_512() {
    damage_and_repair(512, 512, 92, true);
}

#[test]
fn primary_header_damaged_4096() {
    damage_and_repair(4096, 4096, 92, true);
}

#[test]
fn primary_entries_damaged_512() {
    // The header is intact but the entry array's CRC no longer matches.
    damage_and_repair(512, 1024 + 130, 40, true);
}

#[test]
fn primary_entries_damaged_4096() {
    damage_and_repair(4096, 8192 + 130, 40, true);
}

#[test]
fn backup_header_damaged_512() {
    damage_and_repair(512, u64::MAX, 92, false);
}

#[test]
fn backup_entries_damaged_4096() {
    damage_and_repair(4096, u64::MAX - 1, 200, false);
}

#[test]
fn both_copies_damaged_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), 512);
    scribble(&img, 512, 92);
    scribble(&img, 96 * MIB - 512, 92);
    let err = Disk::open(&img).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no valid GPT") && msg.contains("primary") && msg.contains("backup"),
        "{msg}"
    );
}

/// The write order is backup array, backup header, primary array, primary header. Build the
/// disk as it would be after a power cut following each step and check that a whole table,
/// old or new, is read, and that repair makes both copies agree.
fn power_cut(ss: u64) {
    let dir = tempfile::tempdir().unwrap();
    let old = hup_image(dir.path(), ss);
    let new = dir.path().join("new.img");
    std::fs::copy(&old, &new).unwrap();
    let new_attrs = (0x0102u64 << 48, 0x0032u64 << 48);
    Disk::open(&new)
        .unwrap()
        .set_attributes(&[("hup-root-a", new_attrs.0), ("hup-root-b", new_attrs.1)])
        .unwrap();
    let size = 96 * MIB;
    let steps: [(u64, usize); 4] = [
        (size - ss - ARRAY, ARRAY as usize), // backup entry array
        (size - ss, ss as usize),            // backup header
        (2 * ss, ARRAY as usize),            // primary entry array
        (ss, ss as usize),                   // primary header
    ];
    for done in 0..=4 {
        for torn in [false, true] {
            if torn && done == 4 {
                continue;
            }
            let img = dir.path().join(format!("cut-{done}-{torn}.img"));
            std::fs::copy(&old, &img).unwrap();
            for (off, len) in &steps[..done] {
                copy_range(&new, &img, *off, *len);
            }
            if torn {
                // The next write was cut halfway (sector granularity).
                let (off, len) = steps[done];
                copy_range(&new, &img, off, (len / 2).max(ss as usize / 2));
            }
            let expect_new = done >= 3 || (done == 2 && torn);
            let mut d = Disk::open(&img)
                .unwrap_or_else(|e| panic!("after step {done} (torn {torn}): {e:#}"));
            let got = (
                d.partition("hup-root-a").unwrap().attrs,
                d.partition("hup-root-b").unwrap().attrs,
            );
            let want = if expect_new { new_attrs } else { (0, 0) };
            assert_eq!(
                got,
                want,
                "after step {done} (torn {torn}): {:?}",
                d.health()
            );
            d.repair().unwrap();
            assert!(d.health().is_clean());
            assert_eq!(attrs_of(&img), want);
            let (view, _guard) = sgdisk_view(&img, ss);
            assert_sgdisk_clean(&view);
        }
    }
}

#[test]
fn power_cut_during_table_write_512() {
    power_cut(512);
}

#[test]
fn power_cut_during_table_write_4096() {
    power_cut(4096);
}
