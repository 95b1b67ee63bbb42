//! The CLI's inputs (stdin, zstd, labels, sparse and >4 GiB files), archive shapes seen in
//! the wild, and the on-disk structures large inputs need (htrees, extent trees).

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::support::ext4::*;
use crate::support::runner::Hup;
use crate::support::tars::pax_tar;
use hup::ext4::{Dest, MkfsOptions, mkfs_from_tar};

const MIB: u64 = 1 << 20;

#[test]
fn cli_reads_zstd_from_stdin_and_sets_label_and_uuid() {
    let tmp = tmpdir();
    let img = tmp.path().join("img");
    let zst = zstd::encode_all(&pax_tar()[..], 3).unwrap();
    let out = Hup::new()
        .args([
            "mkfs",
            "--from",
            "-",
            "--size",
            "40M",
            "--label",
            "rootfs",
            "--uuid",
            "12345678-9abc-def0-1234-56789abcdef0",
        ])
        .arg(&img)
        .stdin(zst)
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("2 files (") && said.contains(" s"), "{said}");
    assert_eq!(fs::metadata(&img).unwrap().len(), 40 * MIB);
    assert_fsck_clean(&img);
    let header = String::from_utf8_lossy(&run(Command::new("dumpe2fs").arg("-h").arg(&img)).stdout)
        .into_owned();
    assert!(
        header.contains("Filesystem volume name:   rootfs"),
        "{header}"
    );
    assert!(
        header.contains("Filesystem UUID:          12345678-9abc-def0-1234-56789abcdef0"),
        "{header}"
    );
    // same features as mke2fs -t ext4 of the same size
    let reference = tmp.path().join("ref");
    fs::File::create(&reference)
        .unwrap()
        .set_len(40 * MIB)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096"])
        .arg(&reference));
    let theirs =
        String::from_utf8_lossy(&run(Command::new("dumpe2fs").arg("-h").arg(&reference)).stdout)
            .into_owned();
    let pick = |h: &str, key: &str| {
        h.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    for key in [
        "Filesystem features:",
        "Inode count:",
        "Block count:",
        "Reserved block count:",
        "Inode size:",
        "Journal size:",
        "Flex block group size:",
        "Default mount options:",
        "Filesystem flags:",
        "Default directory hash:",
    ] {
        assert_eq!(pick(&header, key), pick(&theirs, key), "{key}");
    }
}

/// A GNU tar --sparse archive (PAX format 1.0, as GNU tar writes with --xattrs) of a 5 GiB
/// file with three data regions, one beyond 4 GiB.
#[test]
fn sparse_file_over_4_gib() {
    let tmp = tmpdir();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("big");
    let f = fs::File::create(&big).unwrap();
    f.set_len(5 << 30).unwrap();
    let regions: [(u64, &[u8]); 3] = [
        (0, b"head"),
        (4608 * MIB + 10, b"beyond 4 GiB"),
        ((5 << 30) - 3, b"end"),
    ];
    for (off, data) in regions {
        f.write_all_at(data, off).unwrap();
    }
    drop(f);
    let tar = tmp.path().join("sparse.tar");
    run(Command::new("tar")
        .args(["--format=posix", "--sparse", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("big"));
    assert!(
        fs::metadata(&tar).unwrap().len() < MIB,
        "GNU tar did not write a sparse member"
    );
    // a file is never larger than its filesystem (docs/ext4.md): 6 GiB, sparse on disk
    let img = tmp.path().join("img");
    let out = mkfs(&tar, "6G", &img, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fsck_clean(&img);
    let s = stat(&img, "/big");
    assert!(s.contains("Size: 5368709120"), "{s}");
    assert!(
        s.contains("Blockcount: 24"),
        "three data blocks expected: {s}"
    );
    let image = fs::File::open(&img).unwrap();
    for (off, data) in regions {
        let lblk = off / 4096;
        let out = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("bmap /big {lblk}"))
            .arg(&img));
        let pblk: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let mut buf = vec![0u8; data.len()];
        image
            .read_exact_at(&mut buf, pblk * 4096 + off % 4096)
            .unwrap();
        assert_eq!(buf, data, "data at {off}");
    }

    // the old GNU sparse headers ('S', GNU tar's default format) work too
    let small = src.join("small");
    let f = fs::File::create(&small).unwrap();
    f.set_len(64 * MIB).unwrap();
    f.write_all_at(b"middle", 32 * MIB).unwrap();
    drop(f);
    let gnu = tmp.path().join("gnu.tar");
    run(Command::new("tar")
        .args(["--format=gnu", "--sparse", "-cf"])
        .arg(&gnu)
        .arg("-C")
        .arg(&src)
        .arg("small"));
    let out = mkfs(&gnu, "96M", &img, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fsck_clean(&img);
    let s = stat(&img, "/small");
    assert!(
        s.contains("Size: 67108864") && s.contains("Blockcount: 8"),
        "{s}"
    );
}

/// Archive shapes seen in the wild: a root member with metadata, a global PAX header, an
/// old-style directory (regular member with a trailing slash), missing parents, a directory
/// listed twice, hard links to a symlink and to a device.
#[test]
fn archive_shapes() {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, uid: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_650_000_000);
        h
    };
    let mut g = header(tar::EntryType::XGlobalHeader, 0o644, 0);
    let global = b"30 comment=made by some tool\n";
    g.set_size(global.len() as u64);
    b.append_data(&mut g, "pax_global_header", &global[..])
        .unwrap();
    b.append_pax_extensions([("SCHILY.xattr.user.root", &b"yes"[..])])
        .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o750, 7),
        "./",
        &[][..],
    )
    .unwrap();
    let mut old = header(tar::EntryType::Regular, 0o711, 0);
    old.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"olddir/");
    old.set_cksum();
    b.append(&old, &[][..]).unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0),
        "missing/parents/file",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o700, 9),
        "missing/parents",
        &[][..],
    )
    .unwrap();
    let mut dev = header(tar::EntryType::Char, 0o600, 0);
    dev.set_device_major(4).unwrap();
    dev.set_device_minor(64).unwrap();
    b.append_data(&mut dev, "dev/ttyS0", &[][..]).unwrap();
    b.append_link(
        &mut header(tar::EntryType::Symlink, 0o777, 0),
        "sl",
        "dev/ttyS0",
    )
    .unwrap();
    b.append_link(&mut header(tar::EntryType::Link, 0o777, 0), "sl2", "sl")
        .unwrap();
    b.append_link(
        &mut header(tar::EntryType::Link, 0o777, 0),
        "tty",
        "dev/ttyS0",
    )
    .unwrap();
    let tmp = tmpdir();
    let img = tmp.path().join("img");
    let stats = mkfs_from_tar(
        &Dest::image(&img_file(&img, 32 * MIB), 32 * MIB).unwrap(),
        &MkfsOptions::default(),
        Cursor::new(b.into_inner().unwrap()),
    )
    .unwrap();
    assert_eq!(
        (
            stats.dirs,
            stats.files,
            stats.hardlinks,
            stats.devices,
            stats.xattrs
        ),
        (4, 1, 2, 1, 1)
    );
    assert_fsck_clean(&img);
    let nodes = readback(&img);
    let root = &nodes["/"];
    assert_eq!((root.mode, root.uid), (0o40750, 7));
    assert_eq!(root.xattrs, vec!["user.root (3) = \"yes\"".to_string()]);
    assert_eq!(nodes["/olddir"].mode, 0o40711);
    assert_eq!(
        (nodes["/missing"].mode, nodes["/missing"].uid),
        (0o40755, 0)
    );
    assert_eq!(
        (
            nodes["/missing/parents"].mode,
            nodes["/missing/parents"].uid
        ),
        (0o40700, 9)
    );
    assert_eq!(
        (nodes["/sl2"].links, nodes["/sl2"].first_path.as_str()),
        (2, "/sl")
    );
    assert_eq!(
        (nodes["/tty"].links, nodes["/tty"].first_path.as_str()),
        (2, "/dev/ttyS0")
    );
    assert!(
        nodes["/tty"]
            .device
            .as_deref()
            .unwrap_or_default()
            .contains("04:40")
    );
}

fn img_file(path: &Path, size: u64) -> std::path::PathBuf {
    fs::File::create(path).unwrap().set_len(size).unwrap();
    path.to_path_buf()
}

/// A directory that needs a two-level htree, and files whose extents need tree blocks (one
/// and two levels), all accepted by e2fsck.
#[test]
fn two_level_htree_and_deep_extent_trees() {
    let tmp = tmpdir();
    let mut b = tar::Builder::new(Vec::new());
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    // 12 000 names of 200 bytes: 19 per block, > 507 leaf blocks
    for i in 0..12_000 {
        let name = format!("wide/{i:05}{}", "n".repeat(195));
        b.append_data(&mut header(0), name, &[][..]).unwrap();
    }
    // sparse members (PAX 0.1 map in the header): every other block written
    for (name, regions) in [("ten", 10u64), ("many", 2000)] {
        let map: Vec<String> = (0..regions).map(|r| format!("{},4096", r * 8192)).collect();
        let realsize = regions * 8192;
        b.append_pax_extensions([
            ("GNU.sparse.map", map.join(",").as_bytes()),
            ("GNU.sparse.size", realsize.to_string().as_bytes()),
            ("GNU.sparse.name", name.as_bytes()),
        ])
        .unwrap();
        let data: Vec<u8> = (0..regions * 4096).map(|x| (x % 255) as u8 + 1).collect();
        b.append_data(
            &mut header(data.len() as u64),
            format!("GNUSparseFile.0/{name}"),
            &data[..],
        )
        .unwrap();
    }
    let tar = tmp.path().join("t.tar");
    fs::write(&tar, b.into_inner().unwrap()).unwrap();
    let img = tmp.path().join("img");
    let out = mkfs(&tar, "64M", &img, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fsck_clean(&img);
    let dump = run(Command::new("debugfs")
        .arg("-R")
        .arg("htree_dump /wide")
        .arg(&img));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("Indirect levels: 1"),
        "{}",
        &text[..text.len().min(2000)]
    );
    for (name, regions, depth) in [("/ten", 10, "1"), ("/many", 2000, "2")] {
        let s = stat(&img, name);
        assert!(s.contains(&format!("Size: {}", regions * 8192)), "{s}");
        let ex = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("ex {name}"))
            .arg(&img));
        let ex = String::from_utf8_lossy(&ex.stdout);
        assert!(
            ex.lines()
                .any(|l| l.trim_start().starts_with(&format!("{depth}/ {depth}"))),
            "{name}: {ex}"
        );
        let cat = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {name}"))
            .arg(&img));
        assert_eq!(cat.stdout.len() as u64, regions * 8192);
        for r in 0..regions as usize {
            let block = &cat.stdout[r * 8192..r * 8192 + 8192];
            assert!(
                block[..4096]
                    .iter()
                    .enumerate()
                    .all(|(x, &v)| v == ((r * 4096 + x) % 255) as u8 + 1)
            );
            assert!(block[4096..].iter().all(|&v| v == 0));
        }
    }
}
