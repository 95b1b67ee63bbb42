//! Hostile and broken archives: each one fails with a clear error naming the member, and the
//! image is left without a valid superblock (even if it held a valid filesystem before).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::ext4::*;
use tar::EntryType;

/// A raw tar member: header fields written directly, so that names the tar crate's builder
/// refuses (absolute, `..`) can be produced.
fn member(name: &[u8], kind: EntryType, data: &[u8], link: Option<&[u8]>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            g.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    member(name.as_bytes(), EntryType::Regular, data, None)
}

fn archive(members: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = members.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8 | 1
        })
        .collect()
}

struct Case {
    dir: tempfile::TempDir,
    img: PathBuf,
}

impl Case {
    /// An image that already holds a valid filesystem (so we see it being invalidated).
    fn new() -> Case {
        let dir = tmpdir();
        let img = dir.path().join("disk.img");
        let good = dir.path().join("good.tar");
        std::fs::write(&good, archive(&[file("etc/hostname", b"ok\n")])).unwrap();
        let out = mkfs(&good, "32M", &img, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_fsck_clean(&img);
        Case { dir, img }
    }

    fn tar(&self, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("evil.tar");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Runs hup mkfs on `bytes`; asserts failure with `expect` in the message and an image
    /// that nothing accepts as a filesystem.
    fn refused(&self, bytes: &[u8], size: &str, extra: &[&str], expect: &[&str]) {
        let out = mkfs(&self.tar(bytes), size, &self.img, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "accepted; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1));
        for e in expect {
            assert!(err.contains(e), "error does not mention {e:?}: {err}");
        }
        assert_eq!(err.lines().count(), 1, "expected a one-line error: {err}");
        assert_invalid(&self.img);
    }
}

fn assert_invalid(img: &Path) {
    let bytes = std::fs::read(img).unwrap();
    assert_eq!(
        &bytes[1080..1082],
        &[0, 0],
        "superblock magic still present"
    );
    assert_ne!(fsck_status(img), 0, "e2fsck accepts the image");
    let blkid = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .unwrap();
    assert!(!blkid.status.success(), "dumpe2fs reads the image");
}

#[test]
fn dotdot_is_refused() {
    Case::new().refused(
        &archive(&[file("../x", b"escape")]),
        "32M",
        &[],
        &["\"../x\"", "\"..\""],
    );
    Case::new().refused(
        &archive(&[file("usr/../../x", b"escape")]),
        "32M",
        &[],
        &["usr/../../x"],
    );
}

#[test]
fn absolute_paths_stay_inside() {
    let c = Case::new();
    let t = c.tar(&archive(&[file(
        "/etc/passwd",
        b"root:x:0:0::/root:/bin/sh\n",
    )]));
    let out = mkfs(&t, "32M", &c.img, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fsck_clean(&c.img);
    let cat = run(Command::new("debugfs")
        .arg("-R")
        .arg("cat /etc/passwd")
        .arg(&c.img));
    assert_eq!(cat.stdout, b"root:x:0:0::/root:/bin/sh\n");
}

#[test]
fn paths_never_go_through_symlinks() {
    let link = member(b"evil", EntryType::Symlink, b"", Some(b"/"));
    Case::new().refused(
        &archive(&[link.clone(), file("evil/etc/passwd", b"pwned")]),
        "32M",
        &[],
        &["evil/etc/passwd", "\"evil\" is a symlink"],
    );
    let dir_link = member(b"lib", EntryType::Symlink, b"", Some(b"usr/lib"));
    Case::new().refused(
        &archive(&[
            member(b"usr/lib/", EntryType::Directory, b"", None),
            dir_link,
            file("lib/x.so", b"x"),
        ]),
        "32M",
        &[],
        &["lib/x.so", "symlink"],
    );
}

#[test]
fn hard_links_must_point_to_earlier_members() {
    Case::new().refused(
        &archive(&[member(b"h", EntryType::Link, b"", Some(b"../outside"))]),
        "32M",
        &[],
        &["\"h\"", "\"..\""],
    );
    Case::new().refused(
        &archive(&[member(
            b"shadow",
            EntryType::Link,
            b"",
            Some(b"/etc/shadow"),
        )]),
        "32M",
        &[],
        &["\"shadow\"", "\"/etc/shadow\" is not an earlier member"],
    );
    Case::new().refused(
        &archive(&[
            member(b"early", EntryType::Link, b"", Some(b"late")),
            file("late", b"data"),
        ]),
        "32M",
        &[],
        &["\"early\"", "not an earlier member"],
    );
    Case::new().refused(
        &archive(&[
            member(b"d/", EntryType::Directory, b"", None),
            member(b"d2", EntryType::Link, b"", Some(b"d")),
        ]),
        "32M",
        &[],
        &["hard link to directory"],
    );
}

#[test]
fn truncated_member_is_an_error() {
    let mut full = file("usr/lib/libbig.so", &noise(1 << 20));
    full.truncate(512 + 1000); // header says 1 MiB, the stream has 1000 bytes
    Case::new().refused(&full, "32M", &[], &["usr/lib/libbig.so", "tar stream ends"]);
}

#[test]
fn full_filesystem_names_the_file() {
    Case::new().refused(
        &archive(&[
            file("small", b"fits"),
            // each fits the filesystem, not both (a file larger than the filesystem is
            // refused before its data is read)
            file("var/first.bin", &noise(8 << 20)),
            file("var/big.bin", &noise(8 << 20)),
        ]),
        "16M",
        &[],
        &["var/big.bin", "filesystem is full"],
    );
    let many: Vec<Vec<u8>> = (0..10).map(|i| file(&format!("f{i}"), b"x")).collect();
    Case::new().refused(
        &archive(&many),
        "32M",
        &["--inodes", "16"],
        &["\"f5\"", "no free inode"],
    );
}

#[test]
fn other_member_types_are_refused() {
    Case::new().refused(
        &archive(&[member(b"label", EntryType::new(b'V'), b"", None)]),
        "32M",
        &[],
        &["\"label\"", "cannot be stored"],
    );
    Case::new().refused(
        &archive(&[file("a", b"1"), file("a", b"2")]),
        "32M",
        &[],
        &["\"a\"", "duplicate"],
    );
    Case::new().refused(
        b"this is not a tar archive at all, just some text....",
        "32M",
        &[],
        &["tar"],
    );
}
