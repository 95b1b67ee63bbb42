//! Layout migration on disk images (root: loop mounts): a v1 image (root slots of 256 MiB,
//! data on the rest) to layout v2 (slots of 384 MiB, data moved), from slot a, from slot b,
//! and resumed after a stop at each phase.

use std::path::Path;

use crate::support::image::World;
use crate::support::layout::*;
use crate::support::{p, sh};
use hup::boot;
use hup::disk::Disk;
use hup::layout::{self, Phase, Resumed};
use hup::model::config::{BootBackendKind, Labels};
use hup::model::slot::{Slot, SlotStatus};

/// A v1 image of 1200 MiB with a filled data partition and version 2.0.0 staged.
fn v1_image(w: &World, name: &str) -> std::path::PathBuf {
    let img = provision(w, name, "1200M", "256M");
    let m = Mount::new(&img, "hup-data", false);
    fill(m.path(), 8 << 20);
    stage(m.path(), &w.bundle("2.0.0"));
    drop(m);
    img
}

fn gpt(img: &Path) -> Box<dyn boot::BootBackend> {
    boot::open(BootBackendKind::Gpt, img, &Labels::default())
}

#[test]
fn v1_to_v2_from_slot_a_keeps_every_file() {
    let w = World::new();
    let img = v1_image(&w, "v1.img");
    let t = target(384);
    let b = before(&img, "hup-root-a");
    let bundle_sha = {
        let m = Mount::new(&img, "hup-data", true);
        crate::support::image::file_sha(&m.path().join("hup/staged/bundle.hup"))
    };

    let plan = plan(&img, &t, Slot::A);
    println!("{plan}");
    assert_eq!(plan.normalize, None);
    assert_eq!((plan.region.start, plan.region.len), (321 * MIB, 256 * MIB));
    assert!(
        plan.to_string().contains("backup region: 321 MiB..577 MiB"),
        "{plan}"
    );
    {
        let m = Mount::new(&img, "hup-data", true);
        let est = layout::estimate(m.path(), 0).unwrap();
        assert!(
            est.needed < plan.region.len && est.scan.entries > 300,
            "{est:?}"
        );
    }

    let mut rec = backup(&img, &plan);
    assert_eq!(rec.phase, Phase::BackedUp);
    assert!(
        rec.data.len > 8 << 20,
        "random data does not compress: {}",
        rec.data.len
    );
    assert_eq!(
        rec.bundle_file.as_ref().unwrap().path,
        "hup/staged/bundle.hup"
    );
    // Until the table is written, nothing but the old spare slot changed.
    assert_eq!(data_listing(&img), b.listing);
    let mut disk = Disk::open(&img).unwrap();
    // Attributes changed after the plan (here the read-only flag of slot a) are kept.
    let a_attrs = disk.partition("hup-root-a").unwrap().attrs | 1 << 60;
    disk.set_attributes(&[("hup-root-a", a_attrs)]).unwrap();
    layout::write_table(&mut disk, &mut rec).unwrap();
    assert_eq!(disk.partition("hup-root-a").unwrap().attrs, a_attrs);
    assert_eq!(rec.phase, Phase::TableWritten);
    let stats = layout::restore(&mut disk, &mut rec).unwrap().unwrap();
    assert_eq!(rec.phase, Phase::Restored);
    assert!(
        stats.hardlinks >= 2 && stats.devices == 2 && stats.fifos == 1,
        "{stats}"
    );
    drop(disk);

    check_after(&img, &b, &t);
    let m = Mount::new(&img, "hup-data", true);
    assert_eq!(
        crate::support::image::file_sha(&m.path().join("hup/staged/bundle.hup")),
        bundle_sha
    );
    drop(m);
    // The boot state carried over: slot a still boots; the new spare is not bootable.
    let st = gpt(&img).state().unwrap();
    assert_eq!(gpt(&img).active().unwrap(), Slot::A);
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Good);
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Bad);

    // Done: the header is found until finish() clears it.
    let disk = Disk::open(&img).unwrap();
    let found = layout::resume_phase(&disk, &Labels::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.phase),
        (rec.id.as_str(), Phase::Restored)
    );
    layout::finish(&disk, &rec).unwrap();
    assert_eq!(
        layout::resume_phase(&disk, &Labels::default()).unwrap(),
        None
    );
    // Planning again: the disk has the layout.
    assert!(
        layout::plan(&disk, &t, &Labels::default(), Slot::A)
            .unwrap()
            .is_none()
    );
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Part of the data backup written, no header yet.
    MidBackup,
    AfterBackup,
    /// The table written, the phase not yet recorded.
    TableNoPhase,
    AfterTable,
    /// Formatted, restore not started.
    AfterFormat,
    /// Restore interrupted in the middle (invalid superblock, as populate leaves it).
    MidRestore,
    AfterRestore,
}

/// Runs the migration until `stop`, drops everything, then resumes from the disk alone.
fn stop_and_resume(base: &Path, dir: &Path, stop: Stop) {
    let img = dir.join(format!("{stop:?}.img"));
    sh(&format!("cp --sparse=always {} {}", p(base), p(&img)));
    let t = target(384);
    let b = before(&img, "hup-root-a");
    let plan = plan(&img, &t, Slot::A);
    let labels = Labels::default();

    let header = plan.region.start..plan.region.start + 32 * 1024;
    if let Stop::MidBackup = stop {
        // A first backup completes; a second one is cut after it cleared the header and
        // wrote part of its payload.
        backup(&img, &plan);
        write_bytes(&img, header.start, &vec![0; 32 * 1024]);
        write_bytes(&img, header.end, &vec![0x5a; 3 << 20]);
    } else {
        let mut rec = backup(&img, &plan);
        let mut disk = Disk::open(&img).unwrap();
        match stop {
            Stop::AfterBackup => {}
            Stop::TableNoPhase => {
                // The table is written, then the power goes before the phase is recorded:
                // the header is still the one of the backup.
                let saved = read_bytes(&img, header.clone());
                layout::write_table(&mut disk, &mut rec).unwrap();
                write_bytes(&img, header.start, &saved);
            }
            _ => {
                layout::write_table(&mut disk, &mut rec).unwrap();
                let data = disk.partition("hup-data").unwrap();
                match stop {
                    Stop::AfterFormat => hup::ext4::format(
                        &hup::ext4::Dest::partition(&disk, "hup-data").unwrap(),
                        &hup::ext4::MkfsOptions::default(),
                    )
                    .unwrap(),
                    // What an interrupted populate leaves: no primary superblock.
                    Stop::MidRestore => write_bytes(&img, data.start + 1024, &[0; 1024]),
                    Stop::AfterRestore => {
                        layout::restore(&mut disk, &mut rec).unwrap();
                    }
                    _ => {}
                }
            }
        }
    }

    let mut disk = Disk::open(&img).unwrap();
    match layout::resume(&mut disk, &labels).unwrap() {
        Resumed::StartOver(rec) => {
            assert!(matches!(stop, Stop::AfterBackup), "{stop:?}");
            assert_eq!(rec.phase, Phase::BackedUp);
            // The initramfs drops an unused backup (apply::layout::resume_at_boot).
            layout::discard(&disk, &rec).unwrap();
            assert_eq!(layout::resume_phase(&disk, &labels).unwrap(), None);
            start_over(&img, &plan, &b.listing);
        }
        Resumed::Nothing => {
            assert!(
                matches!(stop, Stop::MidBackup),
                "{stop:?}: no migration found"
            );
            start_over(&img, &plan, &b.listing);
        }
        Resumed::Restored(rec) => {
            assert!(
                !matches!(stop, Stop::AfterBackup | Stop::MidBackup),
                "{stop:?}"
            );
            assert_eq!(rec.phase, Phase::Restored);
            // Past the point of no return a header is resumed, never discarded.
            let err = layout::discard(&disk, &rec).unwrap_err();
            assert!(format!("{err:#}").contains("must be resumed"), "{err:#}");
        }
    }
    check_after(&img, &b, &t);
    std::fs::remove_file(&img).unwrap();
}

/// Before the point of no return the old data partition is intact: the caller starts the
/// migration over (plan, backup, table, restore).
fn start_over(img: &Path, plan: &layout::Plan, listing: &str) {
    assert_eq!(data_listing(img), listing, "the old data changed");
    migrate(img, plan);
}

fn read_bytes(img: &Path, r: std::ops::Range<u64>) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; (r.end - r.start) as usize];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut buf, r.start)
        .unwrap();
    buf
}

fn write_bytes(img: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, at).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn resume_after_a_stop_at_each_phase() {
    let w = World::new();
    let base = v1_image(&w, "base.img");
    for stop in [
        Stop::MidBackup,
        Stop::AfterBackup,
        Stop::TableNoPhase,
        Stop::AfterTable,
        Stop::AfterFormat,
        Stop::MidRestore,
        Stop::AfterRestore,
    ] {
        stop_and_resume(&base, &w.dir, stop);
    }
}

#[test]
fn a_torn_header_copy_is_survived() {
    let w = World::new();
    let img = v1_image(&w, "torn.img");
    let t = target(384);
    let b = before(&img, "hup-root-a");
    let plan = plan(&img, &t, Slot::A);
    let mut rec = backup(&img, &plan);
    let mut disk = Disk::open(&img).unwrap();
    layout::write_table(&mut disk, &mut rec).unwrap();
    // Power cut while copy 0 was rewritten: its sha256 fails, copy 1 holds the phase.
    write_bytes(&img, plan.region.start + 100, b"garbage");
    let found = layout::resume_phase(&disk, &Labels::default())
        .unwrap()
        .unwrap();
    assert_eq!(found.phase, Phase::TableWritten);
    assert!(matches!(
        layout::resume(&mut disk, &Labels::default()).unwrap(),
        Resumed::Restored(_)
    ));
    check_after(&img, &b, &t);
}

#[test]
fn running_from_slot_b_normalizes_first() {
    let w = World::new();
    let img = provision(&w, "b.img", "1200M", "256M");
    crate::support::hup_ok(&[
        "apply",
        "--disk",
        p(&img),
        "--bundle",
        p(&w.bundle("2.0.0")),
        "--key",
        p(&w.pubkey),
    ]);
    gpt(&img).mark_good(Slot::B).unwrap();
    assert_eq!(gpt(&img).active().unwrap(), Slot::B);
    let m = Mount::new(&img, "hup-data", false);
    fill(m.path(), 1 << 20);
    stage(m.path(), &w.bundle("3.0.0"));
    drop(m);
    let t = target(384);
    let b = before(&img, "hup-root-b");

    let plan_b = plan(&img, &t, Slot::B);
    let n = plan_b.normalize.clone().expect("a normalization copy");
    assert_eq!((n.from, n.to, n.len), (Slot::B, Slot::A, 256 * MIB));
    assert!(
        plan_b.to_string().contains("first: copy slot b"),
        "{plan_b}"
    );
    // Nothing else runs before the copy.
    let disk = Disk::open(&img).unwrap();
    let err = layout::backup(&disk, &plan_b, Path::new("/nonexistent"), None).unwrap_err();
    assert!(err.to_string().contains("normalize"), "{err:#}");

    // The caller: give slot a up, copy, boot slot a.
    gpt(&img).mark_bad(Slot::A).unwrap();
    assert!(layout::normalize(&disk, &plan_b).unwrap());
    assert!(
        layout::normalize(&disk, &plan_b).unwrap(),
        "running it again copies again"
    );
    let a = disk.partition("hup-root-a").unwrap();
    assert_eq!(
        crate::support::image::range_sha(&img, (a.start, 256 * MIB)),
        b.slot.2
    );
    gpt(&img).mark_good(Slot::A).unwrap();
    assert_eq!(gpt(&img).active().unwrap(), Slot::A);
    drop(disk);

    let plan_a = plan(&img, &t, Slot::A);
    assert_eq!(plan_a.normalize, None);
    assert_eq!(plan_a.region, plan_b.region);
    migrate(&img, &plan_a);
    // Slot a now holds what slot b held, and that never changes again.
    let kept = Before {
        slot: (a.start, 256 * MIB, b.slot.2.clone()),
        listing: b.listing.clone(),
        fs_uuid: b.fs_uuid.clone(),
    };
    check_after(&img, &kept, &t);
    assert_eq!(gpt(&img).active().unwrap(), Slot::A);
}

#[test]
fn v1_to_v2_on_4k_sectors() {
    let w = World::new();
    let img = provision_with(&w, "4k.img", "640M", "64M", "4096");
    let m = Mount::new(&img, "hup-data", false);
    fill(m.path(), 1 << 20);
    stage(m.path(), &w.bundle("2.0.0"));
    drop(m);
    let t = target(96);
    let b = before(&img, "hup-root-a");
    let plan = plan(&img, &t, Slot::A);
    assert_eq!(plan.sector_size, 4096);
    let rec = migrate(&img, &plan);
    assert_eq!(rec.sector_size, 4096);
    check_after(&img, &b, &t);
}

#[test]
fn on_a_block_device_a_mounted_partition_stops_the_table_write() {
    let w = World::new();
    let img = provision(&w, "blk.img", "640M", "64M");
    let m = Mount::new(&img, "hup-data", false);
    fill(m.path(), 1 << 20);
    stage(m.path(), &w.bundle("2.0.0"));
    drop(m);
    let t = target(96);
    let b = before(&img, "hup-root-a");
    let dev = sh(&format!("losetup -f --show {}", p(&img)))
        .trim()
        .to_string();
    let result = std::panic::catch_unwind(|| {
        let mut disk = Disk::open(&dev).unwrap();
        assert!(disk.is_block_device());
        let plan = layout::plan(&disk, &t, &Labels::default(), Slot::A)
            .unwrap()
            .unwrap();
        // The data partition is read through the disk (a loop device over the loop device).
        let m = Mount::new(Path::new(&dev), "hup-data", true);
        let bundle = m.path().join("hup/staged/bundle.hup");
        let mut rec = layout::backup(&disk, &plan, m.path(), Some(&bundle)).unwrap();
        drop(m);
        // Something holds the disk exclusively, as a mounted partition does.
        let held = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(&dev)
                .unwrap()
        };
        let err = layout::write_table(&mut disk, &mut rec).unwrap_err();
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
        assert_eq!(rec.phase, Phase::BackedUp);
        assert!(
            layout::plan(&disk, &t, &Labels::default(), Slot::A)
                .unwrap()
                .is_some()
        );
        drop(held);
        layout::write_table(&mut disk, &mut rec).unwrap();
        layout::restore(&mut disk, &mut rec).unwrap().unwrap();
    });
    sh(&format!("losetup -d {dev}"));
    result.unwrap();
    check_after(&img, &b, &t);
}
