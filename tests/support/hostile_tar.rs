//! Builders and runners for the hostile-archive tests (`tar_hardening`, `payload_bounds`):
//! hand-made tar members (PAX records, sparse maps, devices) and hup under a watchdog.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

use tar::{EntryType, Header};

use crate::support::ext4::{assert_fsck_clean, fsck_status};
use crate::support::p;
use crate::support::runner::Hup;

/// Runs hup under a watchdog (a hang shows as exit status 124).
pub fn bounded(args: &[&str]) -> Output {
    Hup::with(args).watchdog(120).run()
}

/// Asserts a clean refusal: failure (not the watchdog), one line, mentioning `expect`.
pub fn refused(args: &[&str], expect: &str) -> String {
    let o = bounded(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_ne!(o.status.code(), Some(124), "hup {args:?} did not finish");
    assert!(!o.status.success(), "hup {args:?} accepted the input");
    assert_eq!(err.lines().count(), 1, "expected a one-line error: {err}");
    assert!(
        err.contains(expect),
        "hup {args:?}: {err:?} lacks {expect:?}"
    );
    err
}

pub fn succeeded(args: &[&str]) -> String {
    let o = bounded(args);
    assert!(
        o.status.success(),
        "hup {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn pad(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// A PAX extended header ('x') holding `records` (values may hold any byte).
pub fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut n = body + 1;
        while n.to_string().len() + body != n {
            n = n.to_string().len() + body;
        }
        data.extend_from_slice(format!("{n} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = Header::new_ustar();
    h.set_path("PaxHeader").unwrap();
    h.set_entry_type(EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend(pad(data));
    out
}

/// A ustar member.
pub fn ustar(name: &str, kind: EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut h = Header::new_ustar();
    h.set_path(name).unwrap();
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
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend(pad(data.to_vec()));
    out
}

/// A device node member.
pub fn device(name: &str, kind: EntryType, major: u32, minor: u32) -> Vec<u8> {
    let mut h = Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A GNU PAX sparse 1.0 member (what `tar --sparse --format=posix` writes): apparent size
/// `realsize`, data `regions` at their offsets.
pub fn sparse10(name: &str, realsize: u64, regions: &[(u64, &[u8])]) -> Vec<u8> {
    let mut map = format!("{}\n", regions.len());
    for (off, d) in regions {
        map.push_str(&format!("{off}\n{}\n", d.len()));
    }
    let mut data = pad(map.into_bytes());
    for (_, d) in regions {
        data.extend_from_slice(d);
    }
    let size = realsize.to_string();
    let mut out = pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", name.as_bytes()),
        ("GNU.sparse.realsize", size.as_bytes()),
    ]);
    out.extend(ustar(
        &format!("GNUSparseFile.0/{name}"),
        EntryType::Regular,
        &data,
        None,
    ));
    out
}

/// An old GNU sparse member ('S'): 512 bytes of data at 0, then a hole up to `realsize`.
pub fn gnu_sparse(name: &str, realsize: u64) -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    {
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(realsize);
        g.sparse[0].set_offset(0);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(realsize);
        g.sparse[1].set_length(0);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0x5a; 512]);
    out
}

pub fn archive(members: &[Vec<u8>]) -> Vec<u8> {
    let mut out = members.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

pub struct Dir {
    _t: tempfile::TempDir,
    pub path: PathBuf,
}

impl Dir {
    pub fn new() -> Dir {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().to_path_buf();
        Dir { _t: t, path }
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let f = self.path.join(name);
        std::fs::write(&f, bytes).unwrap();
        f
    }
}

/// `hup mkfs` of `tar` into a 32 MiB image: refused with `expect`, leaving no filesystem.
pub fn mkfs_refused(d: &Dir, tar: &[u8], expect: &str) -> String {
    let t = d.file("in.tar", tar);
    let img = d.path.join("refused.img");
    let err = refused(&["mkfs", "--from", p(&t), "--size", "32M", p(&img)], expect);
    assert_ne!(fsck_status(&img), 0, "a refused mkfs left a filesystem");
    err
}

pub fn mkfs_ok(d: &Dir, tar: &[u8]) -> PathBuf {
    let t = d.file("in.tar", tar);
    let img = d.path.join("ok.img");
    succeeded(&["mkfs", "--from", p(&t), "--size", "32M", p(&img)]);
    assert_fsck_clean(&img);
    img
}
