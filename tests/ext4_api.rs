//! The library API (format and populate as separate steps, partitions at an offset, failure
//! states) and the CLI's inputs (stdin, zstd, labels, sparse and >4 GiB files).

mod ext4_common;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use ext4_common::*;
use hup::ext4::{MkfsOptions, format, mkfs_from_tar, populate};

const MIB: u64 = 1 << 20;

/// A tar built with the tar crate: PAX xattrs and nanosecond mtimes, long names and link
/// names, numeric owners.
fn pax_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str,
                   kind: tar::EntryType,
                   data: &[u8],
                   link: Option<&str>,
                   pax: &[(&str, &[u8])]| {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o640
        });
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        if let Some(l) = link {
            b.append_link(&mut h, path, l).unwrap();
        } else {
            b.append_data(&mut h, path, data).unwrap();
        }
    };
    let long_dir = format!("{}/{}", "d".repeat(150), "e".repeat(150));
    add("etc/", tar::EntryType::Directory, b"", None, &[]);
    add(
        "etc/ping",
        tar::EntryType::Regular,
        b"ping binary",
        None,
        &[
            (
                "SCHILY.xattr.security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ("mtime", b"1700000000.123456789"),
        ],
    );
    add(
        &format!("{long_dir}/file"),
        tar::EntryType::Regular,
        b"deep and long\n",
        None,
        &[],
    );
    add(
        "etc/longlink",
        tar::EntryType::Symlink,
        b"",
        Some(&format!("/{long_dir}/file")),
        &[],
    );
    add("etc/hard", tar::EntryType::Link, b"", Some("etc/ping"), &[]);
    b.into_inner().unwrap()
}

fn stat(img: &Path, path: &str) -> String {
    String::from_utf8_lossy(
        &run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat \"{path}\""))
            .arg(img))
        .stdout,
    )
    .into_owned()
}

/// Copies `len` bytes at `offset` of `disk` into a file of its own, for e2fsprogs.
fn extract(disk: &Path, offset: u64, len: u64, to: &Path) {
    let f = fs::File::open(disk).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    fs::write(to, buf).unwrap();
}

fn magic(disk: &Path, offset: u64) -> [u8; 2] {
    let mut m = [0u8; 2];
    fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut m, offset + 1080)
        .unwrap();
    m
}

#[test]
fn format_then_populate_a_partition_at_an_offset() {
    let tmp = tmpdir();
    let disk = tmp.path().join("disk.img");
    fs::write(&disk, vec![0xAAu8; (100 * MIB) as usize]).unwrap();
    let opts = MkfsOptions {
        label: Some("hup-root-b".into()),
        uuid: Some(hup::ext4::parse_uuid("0c2d4e6f-1111-2222-3333-444455556666").unwrap()),
        inodes: Some(5000),
    };
    format(&disk, MIB, 64 * MIB, &opts).unwrap();
    let part = tmp.path().join("part.img");
    extract(&disk, MIB, 64 * MIB, &part);
    assert_fsck_clean(&part);
    let header =
        String::from_utf8_lossy(&run(Command::new("dumpe2fs").arg("-h").arg(&part)).stdout)
            .into_owned();
    assert!(
        header.contains("Filesystem volume name:   hup-root-b"),
        "{header}"
    );
    assert!(
        header.contains("0c2d4e6f-1111-2222-3333-444455556666"),
        "{header}"
    );
    assert!(
        header.contains("Inode count:              5008"),
        "{header}"
    );

    let stats = populate(&disk, MIB, 64 * MIB, Cursor::new(pax_tar())).unwrap();
    assert_eq!(
        (stats.files, stats.symlinks, stats.hardlinks, stats.xattrs),
        (2, 1, 1, 1)
    );
    let all = fs::read(&disk).unwrap();
    assert!(
        all[..MIB as usize].iter().all(|&b| b == 0xAA),
        "bytes before the partition changed"
    );
    assert!(
        all[(65 * MIB) as usize..].iter().all(|&b| b == 0xAA),
        "bytes after the partition changed"
    );
    extract(&disk, MIB, 64 * MIB, &part);
    assert_fsck_clean(&part);

    let ping = stat(&part, "/etc/ping");
    assert!(ping.contains("User:  1234   Group:  5678"), "{ping}");
    assert!(ping.contains("Links: 2"), "{ping}");
    assert!(ping.contains("security.capability (20)"), "{ping}");
    // 123456789 ns << 2 = 0x1d6f3454
    assert!(ping.contains(" mtime: 0x6553f100:1d6f3454"), "{ping}");
    let long = format!("/{}/{}/file", "d".repeat(150), "e".repeat(150));
    let cat = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {long}"))
        .arg(&part));
    assert_eq!(cat.stdout, b"deep and long\n");
    let link = run(Command::new("debugfs")
        .arg("-R")
        .arg("dump /etc/longlink /dev/stdout")
        .arg(&part));
    assert_eq!(String::from_utf8_lossy(&link.stdout), long);

    // a second populate is refused: the filesystem is not fresh any more
    let err = populate(&disk, MIB, 64 * MIB, Cursor::new(pax_tar())).unwrap_err();
    assert!(
        format!("{err:#}").contains("not freshly formatted"),
        "{err:#}"
    );
}

/// A reader that fails after `left` bytes, like a broken download.
struct Failing {
    inner: Cursor<Vec<u8>>,
    left: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("connection reset"));
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

fn big_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20 {
        let data: Vec<u8> = (0..200_000u32)
            .map(|x| (x.wrapping_mul(i + 7) >> 3) as u8)
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("lib/file{i}"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn an_interrupted_stream_leaves_no_valid_filesystem() {
    let tmp = tmpdir();
    let img = tmp.path().join("img");
    let size = 256 * MIB; // several groups: backup superblocks exist
    fs::File::create(&img).unwrap().set_len(size).unwrap();
    let tar = big_tar();
    let half = tar.len() / 2;
    let cant_open = |img: &Path| {
        assert_eq!(magic(img, 0), [0, 0]);
        // 8: no superblock at all, backups included
        assert_eq!(fsck_status(img), 8);
    };
    // one pass
    let err = mkfs_from_tar(
        &img,
        0,
        size,
        &MkfsOptions::default(),
        Failing {
            inner: Cursor::new(tar.clone()),
            left: half,
        },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("connection reset"), "{err:#}");
    cant_open(&img);
    // two steps: the formatted filesystem is invalidated while populating
    format(&img, 0, size, &MkfsOptions::default()).unwrap();
    assert_eq!(magic(&img, 0), [0x53, 0xEF]);
    let err = populate(
        &img,
        0,
        size,
        Failing {
            inner: Cursor::new(tar.clone()),
            left: half,
        },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("connection reset"), "{err:#}");
    cant_open(&img);
    // and the same data, complete, works, backups included
    format(&img, 0, size, &MkfsOptions::default()).unwrap();
    let stats = populate(&img, 0, size, Cursor::new(tar)).unwrap();
    assert_eq!(stats.files, 20);
    assert_eq!(stats.bytes, 20 * 200_000);
    assert_fsck_clean(&img);
    let backup = run(Command::new("dumpe2fs")
        .args(["-h", "-o", "superblock=32768", "-o", "blocksize=4096"])
        .arg(&img));
    assert!(String::from_utf8_lossy(&backup.stdout).contains("Inode count:"));
}

#[test]
fn cli_reads_zstd_from_stdin_and_sets_label_and_uuid() {
    let tmp = tmpdir();
    let img = tmp.path().join("img");
    let zst = zstd::encode_all(&pax_tar()[..], 3).unwrap();
    let mut child = hup()
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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&zst).unwrap();
    let out = child.wait_with_output().unwrap();
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
    let img = tmp.path().join("img");
    let out = mkfs(&tar, "64M", &img, &[]);
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
    let out = mkfs(&gnu, "32M", &img, &[]);
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
        &img_file(&img, 32 * MIB),
        0,
        32 * MIB,
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

/// With `--features failpoints`: HUP_FAILPOINT=populate-middle stops the process with 99 and
/// the image is not a valid filesystem.
#[cfg(feature = "failpoints")]
#[test]
fn failpoint_populate_middle() {
    let tmp = tmpdir();
    let tar = tmp.path().join("t.tar");
    fs::write(&tar, big_tar()).unwrap();
    let img = tmp.path().join("img");
    let out = hup()
        .env("HUP_FAILPOINT", "populate-middle")
        .args(["mkfs", "--from"])
        .arg(&tar)
        .args(["--size", "32M"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(99));
    assert_eq!(magic(&img, 0), [0, 0]);
    assert_ne!(fsck_status(&img), 0);
}
