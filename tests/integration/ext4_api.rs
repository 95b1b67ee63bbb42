//! The library API: format and populate as separate steps, partitions at an offset, failure
//! states. The CLI's inputs are in tests/ext4_inputs.rs.

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::support::ext4::*;
#[cfg(feature = "failpoints")]
use crate::support::runner::Hup;
use crate::support::tars::pax_tar;
use hup::disk::Disk;
use hup::ext4::{Dest, MkfsOptions, format, mkfs_from_tar, populate};

const MIB: u64 = 1 << 20;

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
    // A GPT with one partition at 1 MiB: the ext4 writer takes its range from the disk.
    let sg = run(Command::new("sgdisk")
        .args(["-n", "1:2048:+64M", "-c", "1:part"])
        .arg(&disk));
    assert!(sg.status.success(), "{sg:?}");
    let outside = |img: &Path| {
        let all = fs::read(img).unwrap();
        let mut v = all[..MIB as usize].to_vec();
        v.extend_from_slice(&all[(65 * MIB) as usize..]);
        v
    };
    let before = outside(&disk);
    let d = Disk::open(&disk).unwrap();
    let dest = Dest::partition(&d, "part").unwrap();
    assert_eq!((dest.offset(), dest.size()), (MIB, 64 * MIB));
    let opts = MkfsOptions {
        label: Some("hup-root-b".into()),
        uuid: Some(hup::ext4::parse_uuid("0c2d4e6f-1111-2222-3333-444455556666").unwrap()),
        inodes: Some(5000),
    };
    format(&dest, &opts).unwrap();
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

    let stats = populate(&dest, Cursor::new(pax_tar())).unwrap();
    assert_eq!(
        (stats.files, stats.symlinks, stats.hardlinks, stats.xattrs),
        (2, 1, 1, 1)
    );
    assert!(
        outside(&disk) == before,
        "bytes before or after the partition changed"
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
    let err = populate(&dest, Cursor::new(pax_tar())).unwrap_err();
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
    let dest = Dest::image(&img, size).unwrap();
    let tar = big_tar();
    let half = tar.len() / 2;
    let cant_open = |img: &Path| {
        assert_eq!(magic(img, 0), [0, 0]);
        // 8: no superblock at all, backups included
        assert_eq!(fsck_status(img), 8);
    };
    // one pass
    let err = mkfs_from_tar(
        &dest,
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
    format(&dest, &MkfsOptions::default()).unwrap();
    assert_eq!(magic(&img, 0), [0x53, 0xEF]);
    let err = populate(
        &dest,
        Failing {
            inner: Cursor::new(tar.clone()),
            left: half,
        },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("connection reset"), "{err:#}");
    cant_open(&img);
    // and the same data, complete, works, backups included
    format(&dest, &MkfsOptions::default()).unwrap();
    let stats = populate(&dest, Cursor::new(tar)).unwrap();
    assert_eq!(stats.files, 20);
    assert_eq!(stats.bytes, 20 * 200_000);
    assert_fsck_clean(&img);
    let backup = run(Command::new("dumpe2fs")
        .args(["-h", "-o", "superblock=32768", "-o", "blocksize=4096"])
        .arg(&img));
    assert!(String::from_utf8_lossy(&backup.stdout).contains("Inode count:"));
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
    let out = Hup::new()
        .env("HUP_FAILPOINT", "populate-middle")
        .args(["mkfs", "--from"])
        .arg(&tar)
        .args(["--size", "32M"])
        .arg(&img)
        .run();
    assert_eq!(out.status.code(), Some(99));
    assert_eq!(magic(&img, 0), [0, 0]);
    assert_ne!(fsck_status(&img), 0);
}
