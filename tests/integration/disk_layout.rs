//! disk: creating the hup layout, finding partitions by label, block devices, PartIo.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::support::disk::*;
use hup::disk::{self, Disk, DiskError, DiskOptions};
use hup::model::layout::PartitionSpec;

fn check_layout(ss: u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), ss);
    let d = Disk::open(&img).unwrap();
    assert_eq!(d.sector_size(), ss, "sector size detected from the image");
    assert!(!d.is_block_device());
    assert_eq!(d.size(), 96 * MIB);
    assert!(d.health().is_clean());

    let parts = d.partitions();
    let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["hup-boot", "hup-root-a", "hup-root-b", "hup-data"]);
    for p in &parts {
        assert_eq!(p.start % MIB, 0, "{} aligned", p.label);
        assert_eq!(p.len % MIB, 0, "{} whole MiB", p.label);
    }
    assert_eq!(parts[0].start, MIB);
    assert_eq!(parts[0].len, 40 * MIB);
    assert_eq!(parts[1].len, 16 * MIB);
    assert_eq!(parts[2].start, parts[1].end());
    assert_eq!(parts[0].type_guid, disk::TYPE_ESP);
    assert_eq!(parts[1].type_guid, disk::TYPE_LINUX_ROOT_X86_64);
    assert_eq!(parts[3].type_guid, disk::TYPE_LINUX_FS);
    // The last partition takes the rest, up to the last whole MiB before the backup GPT.
    assert!(parts[3].end() > 94 * MIB && parts[3].end() <= 95 * MIB);
    assert_ne!(parts[1].guid, parts[2].guid);

    // The real tool agrees.
    let (view, _guard) = sgdisk_view(&img, ss);
    assert_sgdisk_clean(&view);
    let printed = sgdisk_print(&view);
    let ss_line = printed
        .lines()
        .find(|l| l.starts_with("Sector size (logical"))
        .unwrap();
    assert!(ss_line.contains(&format!(" {ss}")), "{ss_line}");
    for (p, code) in parts.iter().zip(["EF00", "8304", "8304", "8300"]) {
        let line = printed
            .lines()
            .find(|l| l.trim_end().ends_with(&p.label))
            .unwrap_or_else(|| panic!("{} not in:\n{printed}", p.label));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[0], p.number.to_string(), "{line}");
        assert_eq!(cols[1].parse::<u64>().unwrap() * ss, p.start, "{line}");
        assert_eq!(
            (cols[2].parse::<u64>().unwrap() + 1) * ss,
            p.end(),
            "{line}"
        );
        assert!(cols.contains(&code), "type code {code}: {line}");
    }
}

#[test]
fn hup_layout_512() {
    check_layout(512);
}

#[test]
fn hup_layout_4096() {
    check_layout(4096);
}

#[test]
fn block_device_uses_ioctls() {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), 4096);
    let lo = Loop::attach(&img, 4096);
    let d = Disk::open(&lo.dev).unwrap();
    assert!(d.is_block_device());
    assert_eq!(d.sector_size(), 4096, "BLKSSZGET");
    assert_eq!(d.size(), 96 * MIB, "BLKGETSIZE64");
    let from_file = Disk::open(&img).unwrap();
    assert_eq!(d.partitions(), from_file.partitions());
    // Write a partition through the device, read it back through the image file.
    let mut io = d.open_partition("hup-root-b").unwrap();
    io.write_all(b"through the loop device").unwrap();
    io.sync().unwrap();
    d.sync().unwrap();
    let p = from_file.partition("hup-root-b").unwrap();
    let mut buf = [0u8; 23];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut buf, p.start)
        .unwrap();
    assert_eq!(&buf, b"through the loop device");
    // A 512-byte reading of a 4096-byte disk finds no table.
    let wrong = DiskOptions {
        sector_size: Some(512),
        read_only: true,
    };
    assert!(Disk::open_with(&img, wrong).is_err());
}

#[test]
fn found_by_label_not_number() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("foreign.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    // Written by sgdisk, in an order where numbers and labels do not match hup's.
    let s = img.to_str().unwrap();
    ok("sgdisk", &["-n", "3:2048:+8M", "-c", "3:hup-root-b", s]);
    ok("sgdisk", &["-n", "1:0:+8M", "-c", "1:hup-data", s]);
    ok(
        "sgdisk",
        &["-n", "2:0:+8M", "-c", "2:hup-root-a", "-t", "2:8304", s],
    );
    let d = Disk::open(&img).unwrap();
    let b = d.partition("hup-root-b").unwrap();
    assert_eq!((b.number, b.start, b.len), (3, MIB, 8 * MIB));
    let a = d.partition("hup-root-a").unwrap();
    assert_eq!(a.number, 2);
    assert_eq!(a.type_guid, disk::TYPE_LINUX_ROOT_X86_64);
    let (active, target) = d.distinct_partitions("hup-root-a", "hup-root-b").unwrap();
    assert_eq!((active.number, target.number), (2, 3));

    let err = d.partition("hup-boot").unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(DiskError::NotFound { .. })),
        "{err:#}"
    );
    assert!(err.to_string().contains("hup-boot"));

    ok("sgdisk", &["-n", "4:0:+4M", "-c", "4:hup-root-a", s]);
    let d = Disk::open(&img).unwrap();
    let err = d.partition("hup-root-a").unwrap_err();
    assert!(
        matches!(
            err.downcast_ref(),
            Some(DiskError::Ambiguous { count: 2, .. })
        ),
        "{err:#}"
    );
}

#[test]
fn refuses_active_and_target_in_the_same_range() {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), 512);
    let d = Disk::open(&img).unwrap();
    let err = d
        .distinct_partitions("hup-root-a", "hup-root-a")
        .unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(DiskError::SameRange { .. })),
        "{err:#}"
    );

    // A table whose hup-root-b entry points at hup-root-a's sectors (the field bug).
    let a = d.partition("hup-root-a").unwrap();
    drop(d);
    let mut g = gpt::GptConfig::new().writable(true).open(&img).unwrap();
    let mut parts = g.partitions().clone();
    let (_, b) = parts
        .iter_mut()
        .find(|(_, p)| p.name == "hup-root-b")
        .unwrap();
    b.first_lba = a.start / 512 + 8;
    b.last_lba = b.first_lba + 100;
    g.update_partitions(parts).unwrap();
    g.write().unwrap();
    // Such a table is refused as soon as it is read (docs/boot-backends.md), before any
    // caller could resolve a partition on it.
    let err = format!("{:#}", Disk::open(&img).unwrap_err());
    assert!(
        err.contains("invalid partition table")
            && err.contains("\"hup-root-a\"")
            && err.contains("overlaps entry 3 \"hup-root-b\""),
        "{err}"
    );
}

#[test]
fn part_io_stays_inside_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), 512);
    let d = Disk::open(&img).unwrap();
    let a = d.partition("hup-root-a").unwrap();
    let mut io = d.part_io(&a).unwrap();
    assert_eq!(io.len(), a.len);
    // Fill the whole partition, then one byte more fails.
    let chunk = vec![0xa5u8; MIB as usize];
    for _ in 0..(a.len / MIB) {
        io.write_all(&chunk).unwrap();
    }
    assert!(io.write_all(&[1]).is_err());
    io.seek(SeekFrom::Start(0)).unwrap();
    let mut count = 0u64;
    let mut buf = vec![0; MIB as usize];
    loop {
        let n = io.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == 0xa5));
        count += n as u64;
    }
    assert_eq!(count, a.len);
    // Neighbours untouched: the byte before and after are still zero.
    let f = std::fs::File::open(&img).unwrap();
    let mut edge = [9u8; 1];
    f.read_exact_at(&mut edge, a.start - 1).unwrap();
    assert_eq!(edge, [0]);
    f.read_exact_at(&mut edge, a.end()).unwrap();
    assert_eq!(edge, [0]);
}

#[test]
fn layout_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("small.img");
    let too_big = disk::hup_layout(40 * MIB, 64 * MIB, None);
    let err = disk::create_layout(&img, 512, 96 * MIB, &too_big).unwrap_err();
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
    let rest_first = vec![
        PartitionSpec::new("x", None, disk::TYPE_LINUX_FS),
        PartitionSpec::new("y", Some(MIB), disk::TYPE_LINUX_FS),
    ];
    assert!(disk::create_layout(&img, 512, 16 * MIB, &rest_first).is_err());
    let dup = vec![
        PartitionSpec::new("x", Some(MIB), disk::TYPE_LINUX_FS),
        PartitionSpec::new("x", Some(MIB), disk::TYPE_LINUX_FS),
    ];
    assert!(disk::create_layout(&img, 512, 16 * MIB, &dup).is_err());
    assert!(disk::create_layout(&img, 1024, 16 * MIB, &disk::hup_layout(MIB, MIB, None)).is_err());
    // A custom layout with a fixed-size last partition leaves the rest free.
    let custom = vec![
        PartitionSpec::new("one", Some(3 * MIB + 1), disk::TYPE_LINUX_FS),
        PartitionSpec::new("two", Some(MIB), disk::TYPE_LINUX_FS),
    ];
    let d = disk::create_layout(&img, 512, 16 * MIB, &custom).unwrap();
    let one = d.partition("one").unwrap();
    assert_eq!(one.len, 4 * MIB, "rounded up to whole MiB");
    assert_eq!(d.partition("two").unwrap().start, 5 * MIB);
    assert_sgdisk_clean(&img);
}
