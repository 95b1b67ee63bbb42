//! Hostile rootfs archives: bounded work and strict refusals (sparse sizes, NUL in names,
//! device numbers, xattrs, times). Payloads bounded by the signed manifest and the backup
//! restore are in `payload_bounds.rs`.
//!
//! Commands run under `timeout`: a hang (what these inputs caused before) becomes a failed
//! assertion on the refusal instead of a stuck test run.

use std::io::Read;
use std::path::Path;

use crate::support::bundle::BundleBuilder;
use crate::support::ext4::{assert_fsck_clean, debugfs};
use crate::support::hostile_tar::*;
use crate::support::image::{World, with_ext4};
use crate::support::{make_rootfs, p, sh};
use hup::data::fingerprint::{Fingerprint, SparseHasher};
use tar::EntryType;

// ---- point 3: sparse members with a huge apparent size ----

#[test]
fn huge_sparse_sizes_are_refused_before_anything_is_read() {
    let d = Dir::new();
    let base = ustar("etc/hostname", EntryType::Regular, b"dev\n", None);
    // PAX 1.0, 2^60 bytes and an empty map: beyond ext4's 16 TiB file size limit.
    let err = mkfs_refused(
        &d,
        &archive(&[base.clone(), sparse10("huge", 1 << 60, &[])]),
        "file size 1152921504606846976 is beyond ext4's limit of 17592186044415 bytes",
    );
    assert!(err.contains("\"huge\""), "{err}");
    // Exactly 16 TiB is one byte too many for e2fsck.
    mkfs_refused(
        &d,
        &archive(&[sparse10("edge", 1 << 44, &[(0, b"x")])]),
        "beyond ext4's limit",
    );
    // 1 TiB fits ext4 but not a 32 MiB filesystem.
    mkfs_refused(
        &d,
        &archive(&[
            base.clone(),
            sparse10("big", 1 << 40, &[(1 << 30, b"data")]),
        ]),
        "file size 1099511627776 is larger than the whole filesystem (33554432 bytes)",
    );
    // Old GNU sparse ('S'): the tar crate fills the holes itself; refused on the size too.
    mkfs_refused(
        &d,
        &archive(&[base.clone(), gnu_sparse("old", 1 << 60)]),
        "beyond ext4's limit",
    );
    mkfs_refused(
        &d,
        &archive(&[base.clone(), gnu_sparse("old", 1 << 40)]),
        "larger than the whole filesystem",
    );
    // A sparse file that fits is written, and e2fsck agrees.
    let img = mkfs_ok(
        &d,
        &archive(&[base, sparse10("fits", 24 << 20, &[(8 << 20, b"middle")])]),
    );
    let out = debugfs(&img, &["stat /fits".to_string()]);
    let stat = out[0].1.join("\n");
    assert!(stat.contains("Size: 25165824"), "{stat}");
}

fn fingerprint_of(d: &Dir, tar: &[u8]) -> Fingerprint {
    let t = d.file("fp.tar", tar);
    let out = d.path.join("fp.json");
    succeeded(&["fingerprint", "create", "--tar", p(&t), "-o", p(&out)]);
    Fingerprint::load(&out).unwrap()
}

/// The digest of content made of `regions` in zeros up to `size`, computed independently of
/// the tar reader.
fn sparse_digest(size: u64, regions: &[(u64, &[u8])]) -> String {
    let mut h = SparseHasher::new();
    let mut pos = 0;
    for (off, data) in regions {
        h.zeros(off - pos);
        h.data(data);
        pos = off + data.len() as u64;
    }
    h.zeros(size - pos);
    h.finish().1
}

#[test]
fn sparse_fingerprints_cost_the_data_not_the_holes() {
    let d = Dir::new();
    // 8 TiB apparent: hashing the holes as zeros would take hours.
    let regions: [(u64, &[u8]); 2] = [(4096, b"head"), (4 << 40, b"far away")];
    let tar = archive(&[sparse10("big.img", 8 << 40, &regions)]);
    let fp = fingerprint_of(&d, &tar);
    let e = fp.get("big.img").unwrap();
    assert_eq!(e.size, Some(8 << 40));
    assert_eq!(e.sha256, None);
    assert_eq!(
        e.sparse_sha256.as_deref(),
        Some(sparse_digest(8 << 40, &regions).as_str())
    );
    let json = std::fs::read_to_string(d.path.join("fp.json")).unwrap();
    assert!(json.starts_with("{\"format\":2,"), "{json}");

    // Old GNU sparse ('S'), whose holes the tar reader would fill with zeros itself: the
    // same digest, in bounded time.
    let data = [0x5au8; 512];
    let old = fingerprint_of(&d, &archive(&[gnu_sparse("old.img", 8 << 40)]));
    let o = old.get("old.img").unwrap();
    assert_eq!(o.size, Some(8 << 40));
    assert_eq!(
        o.sparse_sha256.as_deref(),
        Some(sparse_digest(8 << 40, &[(0, &data)]).as_str())
    );

    // Beyond ext4's limit: refused by the fingerprint (and so by `hup pack`).
    let t = d.file("huge.tar", &archive(&[sparse10("huge", 1 << 60, &[])]));
    let out = d.path.join("huge.json");
    refused(
        &["fingerprint", "create", "--tar", p(&t), "-o", p(&out)],
        "beyond ext4's limit",
    );
    assert!(!out.exists());

    // `hup pack` of the 8 TiB one finishes and records the sparse digest.
    let w = World::new();
    let big = d.file("big.tar", &tar);
    let bundle = d.path.join("big.hup");
    BundleBuilder::new(&big, "1.0", &w.key)
        .level(1)
        .command(&bundle)
        .watchdog(120)
        .ok();
    let recorded = Fingerprint::from_json(&bundle_member(&bundle, "fingerprint.json")).unwrap();
    assert_eq!(recorded.get("big.img"), Some(e));
    let o = BundleBuilder::new(&t, "1.0", &w.key)
        .command(&d.path.join("huge.hup"))
        .watchdog(120)
        .run();
    assert!(!o.status.success() && o.status.code() != Some(124));
    assert!(String::from_utf8_lossy(&o.stderr).contains("beyond ext4's limit"));
    assert!(!d.path.join("huge.hup").exists());
}

fn bundle_member(bundle: &Path, name: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("{name} not in {}", bundle.display());
}

/// A sparse file written by `hup apply` reads back (on the mounted slot, where the holes
/// are ext4's) with the digest recorded from the archive: `hup fingerprint check` of the
/// running system finds nothing.
#[test]
fn a_sparse_file_written_by_apply_matches_its_record_on_the_mounted_slot() {
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", "gpt", &[]);
    let root = w.dir.join("rootfs-sparse");
    make_rootfs(&root, "2.0.0");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(root.join("sparse.img")).unwrap();
        f.set_len(40 << 20).unwrap();
        f.write_all_at(b"in the middle", (20 << 20) + 5).unwrap();
        f.write_all_at(&[7u8; 9000], 30 << 20).unwrap();
    }
    let tar = w.dir.join("rootfs.tar");
    sh(&format!(
        "tar --sparse --format=posix --numeric-owner -C {} -cf {} .",
        p(&root),
        p(&tar)
    ));
    assert!(
        std::fs::metadata(&tar).unwrap().len() < 10 << 20,
        "tar stored the holes"
    );
    let bundle = w.dir.join("sparse.hup");
    BundleBuilder::new(&tar, "2.0.0", &w.key)
        .level(1)
        .command(&bundle)
        .watchdog(120)
        .ok();
    succeeded(&[
        "apply",
        "--disk",
        p(&img),
        "--bundle",
        p(&bundle),
        "--key",
        p(&w.pubkey),
    ]);
    with_ext4(&img, "hup-root-b", |mnt| {
        let record = Fingerprint::load(&mnt.join("etc/hup/fingerprint.json")).unwrap();
        let e = record.get("sparse.img").unwrap();
        assert_eq!(e.size, Some(40 << 20));
        assert!(e.sparse_sha256.is_some() && e.sha256.is_none(), "{e:?}");
        let out = succeeded(&["fingerprint", "check", "--root", p(mnt)]);
        assert!(out.contains("identical to"), "{out}");
    });
}

// ---- point 4: NUL in names ----

#[test]
fn names_with_nul_are_refused_by_mkfs_fingerprint_and_pack() {
    let d = Dir::new();
    let base = ustar("etc/hostname", EntryType::Regular, b"dev\n", None);
    let mut nul_name = pax(&[("path", b"etc/pass\0wd")]);
    nul_name.extend(ustar(
        "placeholder",
        EntryType::Regular,
        b"root:x:0:0\n",
        None,
    ));
    let tar = archive(&[base.clone(), nul_name]);
    mkfs_refused(&d, &tar, "the name contains a NUL byte; refused");

    let mut nul_link = pax(&[("linkpath", b"/bin/s\0h")]);
    nul_link.extend(ustar("bin/sh-link", EntryType::Symlink, b"", Some("x")));
    mkfs_refused(
        &d,
        &archive(&[base.clone(), nul_link]),
        "the link target contains a NUL byte; refused",
    );

    // The same refusal before anything is built: fingerprint and pack.
    let t = d.file("nul.tar", &tar);
    refused(
        &[
            "fingerprint",
            "create",
            "--tar",
            p(&t),
            "-o",
            p(&d.path.join("x.json")),
        ],
        "the name contains a NUL byte",
    );
    let w = World::new();
    let out = d.path.join("nul.hup");
    let err = BundleBuilder::new(&t, "1.0", &w.key)
        .command(&out)
        .watchdog(120)
        .err_line();
    assert!(err.contains("the name contains a NUL byte"), "{err:?}");
    assert!(!out.exists());
}

// ---- point 8: what ext4 cannot store as the archive says ----

#[test]
fn device_numbers_beyond_ext4s_encoding_are_refused() {
    let d = Dir::new();
    mkfs_refused(
        &d,
        &archive(&[device("dev/big", EntryType::Char, 4096, 0)]),
        "device number 4096:0 does not fit ext4's encoding (major at most 4095, minor at most 1048575); refused",
    );
    mkfs_refused(
        &d,
        &archive(&[device("dev/big", EntryType::Block, 8, 1 << 20)]),
        "device number 8:1048576 does not fit ext4's encoding",
    );
    // The largest numbers are stored exactly.
    let img = mkfs_ok(
        &d,
        &archive(&[device("dev/max", EntryType::Char, 4095, (1 << 20) - 1)]),
    );
    let out = debugfs(&img, &["stat /dev/max".to_string()]);
    let stat = out[0].1.join("\n");
    assert!(
        stat.contains("Device major/minor number: 4095:1048575"),
        "{stat}"
    );
}

#[test]
fn xattrs_ext4_cannot_store_are_refused() {
    let d = Dir::new();
    let with = |key: &str| {
        let mut m = pax(&[(key, b"v")]);
        m.extend(ustar("etc/f", EntryType::Regular, b"data", None));
        archive(&[m])
    };
    mkfs_refused(
        &d,
        &with("SCHILY.xattr.foo.bar"),
        "xattr name \"foo.bar\" is not in a namespace ext4 stores",
    );
    mkfs_refused(
        &d,
        &with("SCHILY.xattr.user."),
        "xattr name \"user.\" is empty after its namespace; refused",
    );
    mkfs_refused(
        &d,
        &with("SCHILY.xattr."),
        "an xattr with an empty name; refused",
    );
    mkfs_refused(
        &d,
        &with("SCHILY.xattr.system.data"),
        "xattr \"system.data\" is ext4's inline data, not an attribute; refused",
    );
    // The namespaces ext4 stores are written.
    let mut ok = pax(&[
        ("SCHILY.xattr.user.a", b"1"),
        ("SCHILY.xattr.trusted.b", b"2"),
        ("SCHILY.xattr.security.c", b"3"),
    ]);
    ok.extend(ustar("etc/f", EntryType::Regular, b"data", None));
    let img = mkfs_ok(&d, &archive(&[ok]));
    let out = debugfs(&img, &["ea_list /etc/f".to_string()]);
    let list = out[0].1.join("\n");
    for x in ["user.a", "trusted.b", "security.c"] {
        assert!(list.contains(x), "{list}");
    }
}

/// Times ext4 cannot hold are clamped to its range (as the kernel does), with a warning:
/// not refused, since a data partition's backup may hold such times (docs/ext4.md).
#[test]
fn times_outside_ext4s_range_are_clamped_and_logged() {
    let d = Dir::new();
    let mut far = pax(&[("mtime", b"99999999999.5"), ("atime", b"-2147483649.5")]);
    far.extend(ustar("etc/far", EntryType::Regular, b"data", None));
    let mut edge = pax(&[("mtime", b"10737418239"), ("atime", b"-2147483648")]);
    edge.extend(ustar("etc/edge", EntryType::Regular, b"data", None));
    let t = d.file("in.tar", &archive(&[far, edge]));
    let img = d.path.join("times.img");
    let o = bounded(&["mkfs", "--from", p(&t), "--size", "32M", p(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "\"etc/far\": mtime 99999999999 is outside ext4's time range \
             (1901-12-13..2310-04-04); stored as 10737418239"
        ),
        "{err}"
    );
    assert!(
        err.contains("\"etc/far\": atime -2147483650 is outside ext4's time range"),
        "{err}"
    );
    assert!(
        !err.contains("etc/edge"),
        "the range's ends are stored as they are: {err}"
    );
    assert_fsck_clean(&img);
    // Both files read back with the same (end of range) times.
    let times = |path: &str| {
        let out = debugfs(&img, &[format!("stat {path}")]);
        out[0]
            .1
            .iter()
            .filter(|l| l.contains("time: 0x") && (l.contains("mtime") || l.contains("atime")))
            .map(|l| l.split("--").nth(1).unwrap_or("").trim().to_string())
            .collect::<Vec<_>>()
    };
    let far = times("/etc/far");
    assert_eq!(far, times("/etc/edge"));
    assert!(far.iter().any(|t| t.ends_with("2310")), "{far:?}");
    assert!(far.iter().any(|t| t.ends_with("1901")), "{far:?}");
}
