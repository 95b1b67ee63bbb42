//! Hostile rootfs archives and payloads: bounded work and strict refusals (sparse sizes,
//! NUL in names, decompression beyond the signed size, device numbers, xattrs, times).
//!
//! Commands run under `timeout`: a hang (what these inputs caused before) becomes a failed
//! assertion on the refusal instead of a stuck test run.

mod common;
mod ext4_common;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::image::{COMPATIBLE, World, part, range_sha, with_ext4};
use common::{HUP, make_rootfs, p, sh};
use ext4_common::{assert_fsck_clean, debugfs, fsck_status};
use hup::data::fingerprint::{Fingerprint, SparseHasher};
use tar::{EntryType, Header};

/// Runs hup under a watchdog (a hang shows as exit status 124).
fn bounded(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(HUP)
        .args(args)
        .env_remove("HUP_LOG")
        .output()
        .expect("running hup")
}

/// Asserts a clean refusal: failure (not the watchdog), one line, mentioning `expect`.
fn refused(args: &[&str], expect: &str) -> String {
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

fn succeeded(args: &[&str]) -> String {
    let o = bounded(args);
    assert!(
        o.status.success(),
        "hup {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pad(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// A PAX extended header ('x') holding `records` (values may hold any byte).
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
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
fn ustar(name: &str, kind: EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
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
fn device(name: &str, kind: EntryType, major: u32, minor: u32) -> Vec<u8> {
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
fn sparse10(name: &str, realsize: u64, regions: &[(u64, &[u8])]) -> Vec<u8> {
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
fn gnu_sparse(name: &str, realsize: u64) -> Vec<u8> {
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

fn archive(members: &[Vec<u8>]) -> Vec<u8> {
    let mut out = members.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

struct Dir {
    _t: tempfile::TempDir,
    path: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().to_path_buf();
        Dir { _t: t, path }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let f = self.path.join(name);
        std::fs::write(&f, bytes).unwrap();
        f
    }
}

/// `hup mkfs` of `tar` into a 32 MiB image: refused with `expect`, leaving no filesystem.
fn mkfs_refused(d: &Dir, tar: &[u8], expect: &str) -> String {
    let t = d.file("in.tar", tar);
    let img = d.path.join("refused.img");
    let err = refused(&["mkfs", "--from", p(&t), "--size", "32M", p(&img)], expect);
    assert_ne!(fsck_status(&img), 0, "a refused mkfs left a filesystem");
    err
}

fn mkfs_ok(d: &Dir, tar: &[u8]) -> PathBuf {
    let t = d.file("in.tar", tar);
    let img = d.path.join("ok.img");
    succeeded(&["mkfs", "--from", p(&t), "--size", "32M", p(&img)]);
    assert_fsck_clean(&img);
    img
}

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
    succeeded(&[
        "pack",
        "--rootfs",
        p(&big),
        "--version",
        "1.0",
        "--compatible",
        COMPATIBLE,
        "--key",
        p(&w.key),
        "--level",
        "1",
        "-o",
        p(&bundle),
    ]);
    let recorded = Fingerprint::from_json(&bundle_member(&bundle, "fingerprint.json")).unwrap();
    assert_eq!(recorded.get("big.img"), Some(e));
    let o = bounded(&[
        "pack",
        "--rootfs",
        p(&t),
        "--version",
        "1.0",
        "--compatible",
        COMPATIBLE,
        "--key",
        p(&w.key),
        "-o",
        p(&d.path.join("huge.hup")),
    ]);
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
    succeeded(&[
        "pack",
        "--rootfs",
        p(&tar),
        "--version",
        "2.0.0",
        "--compatible",
        COMPATIBLE,
        "--key",
        p(&w.key),
        "--level",
        "1",
        "-o",
        p(&bundle),
    ]);
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
    refused(
        &[
            "pack",
            "--rootfs",
            p(&t),
            "--version",
            "1.0",
            "--compatible",
            COMPATIBLE,
            "--key",
            p(&w.key),
            "-o",
            p(&out),
        ],
        "the name contains a NUL byte",
    );
    assert!(!out.exists());
}

// ---- point 5: decompression bounded by the signed unpacked_size ----

/// Rewrites `bundle` into `out`: the payload of `kind` replaced by `data` (when given, with
/// its size and sha256 in the manifest) and its `unpacked_size` set to `unpacked`, the
/// manifest signed again with `key`. What a hostile signer (or a broken packer) can make.
fn resign(bundle: &Path, key: &Path, kind: &str, data: Option<Vec<u8>>, unpacked: u64, out: &Path) {
    use sha2::{Digest, Sha256};
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_str().unwrap().to_string();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        members.push((name, v));
    }
    let mut m: serde_json::Value = serde_json::from_slice(&members[0].1).unwrap();
    let mut name = String::new();
    for pl in m["payloads"].as_array_mut().unwrap() {
        if pl["kind"] == kind {
            name = pl["name"].as_str().unwrap().to_string();
            pl["unpacked_size"] = unpacked.into();
            if let Some(r) = &data {
                pl["size"] = (r.len() as u64).into();
                pl["sha256"] = hex::encode(Sha256::digest(r)).into();
            }
        }
    }
    if let Some(r) = data {
        members.iter_mut().find(|(n, _)| *n == name).unwrap().1 = r;
    }
    let manifest = serde_json::to_vec(&m).unwrap();
    let sk = hup::bundle::sign::SecretKey::load(key).unwrap();
    members[1].1 = sk.sign(&manifest, "test").into_bytes();
    members[0].1 = manifest;
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, data) in members {
        let mut h = Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, Cursor::new(data)).unwrap();
    }
    b.finish().unwrap();
}

/// Slot A's boot files on the boot partition.
fn slot_a_boot_files(img: &Path) -> String {
    let (start, _) = part(img, "hup-boot");
    ["vmlinuz", "initrd", "cmdline"]
        .map(|f| sh(&format!("mtype -i {}@@{start} ::/hup/a/{f}", p(img))))
        .join("\n")
}

/// `hup apply` of `bundle` on `img` fails (in bounded time) with `expect` in its last line;
/// slot A, its boot files and the active slot are as they were (and the whole boot
/// partition too, unless `boot_step`: the boot-files step empties the target slot's boot
/// directory before it writes).
fn apply_refused(w: &World, img: &Path, bundle: &Path, expect: &str, boot_step: bool) {
    let root_a = range_sha(img, part(img, "hup-root-a"));
    let boot = range_sha(img, part(img, "hup-boot"));
    let boot_a = slot_a_boot_files(img);
    let o = bounded(&[
        "apply",
        "--disk",
        p(img),
        "--bundle",
        p(bundle),
        "--key",
        p(&w.pubkey),
    ]);
    assert_ne!(o.status.code(), Some(124), "the apply did not finish");
    assert!(!o.status.success(), "the apply went through");
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(last.contains(expect), "{expect:?} not in {err}");
    assert_eq!(
        root_a,
        range_sha(img, part(img, "hup-root-a")),
        "slot A changed"
    );
    assert_eq!(
        boot_a,
        slot_a_boot_files(img),
        "slot A's boot files changed"
    );
    if !boot_step {
        assert_eq!(
            boot,
            range_sha(img, part(img, "hup-boot")),
            "boot partition changed"
        );
    }
    let b = hup::boot::open("gpt", img, &Default::default()).unwrap();
    assert_eq!(b.active().unwrap(), hup::boot::Slot::A);
}

/// A signed bundle whose rootfs holds a huge sparse member (which `hup pack` refuses):
/// `hup apply` refuses it in bounded time instead of hashing or writing its holes.
#[test]
fn apply_refuses_a_huge_sparse_member_in_bounded_time() {
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", "gpt", &[]);
    let base = w.bundle("2.0.0");
    let hostname = ustar("etc/hostname", EntryType::Regular, b"dev\n", None);
    for (realsize, expect) in [
        (
            1u64 << 60,
            "file size 1152921504606846976 is beyond ext4's limit",
        ),
        (
            1u64 << 40,
            "file size 1099511627776 is larger than the whole filesystem",
        ),
    ] {
        let tar = archive(&[hostname.clone(), sparse10("huge", realsize, &[(0, b"x")])]);
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let bundle = w.dir.join("huge.hup");
        resign(
            &base,
            &w.key,
            "rootfs",
            Some(zst),
            tar.len() as u64,
            &bundle,
        );
        apply_refused(&w, &img, &bundle, expect, false);
    }
}

#[test]
fn a_payload_that_decompresses_past_its_signed_size_is_stopped() {
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", "gpt", &[]);
    let root = w.dir.join("rootfs-1.0.0");
    // A valid rootfs tar followed by 256 MiB of zeros, compressed (a few KiB).
    let tar = w.dir.join("rootfs.tar");
    sh(&format!(
        "tar --numeric-owner -C {} -cf {} .",
        p(&root),
        p(&tar)
    ));
    let tar_len = std::fs::metadata(&tar).unwrap().len();
    let zst = w.dir.join("rootfs.tar.zst");
    sh(&format!(
        "(cat {} && head -c 268435456 /dev/zero) | zstd -q -1 -o {}",
        p(&tar),
        p(&zst)
    ));
    let honest = w.dir.join("honest.hup");
    succeeded(&[
        "pack",
        "--rootfs",
        p(&zst),
        "--version",
        "2.0.0",
        "--compatible",
        COMPATIBLE,
        "--key",
        p(&w.key),
        "-o",
        p(&honest),
    ]);
    let lying = w.dir.join("lying.hup");
    resign(&honest, &w.key, "rootfs", None, tar_len, &lying);
    succeeded(&["verify", p(&lying), "--key", p(&w.pubkey)]);
    apply_refused(
        &w,
        &img,
        &lying,
        &format!(
            "member rootfs.tar.zst: decompresses to more than the {tar_len} bytes the manifest \
             signs (unpacked_size); refused"
        ),
        false,
    );

    // The boot payload is bounded the same way.
    let lying = w.dir.join("lying-boot.hup");
    resign(&w.bundle("2.0.0"), &w.key, "boot", None, 1024, &lying);
    apply_refused(
        &w,
        &img,
        &lying,
        "member boot.tar.zst: decompresses to more than the 1024 bytes the manifest signs",
        true,
    );
}

/// The restore of a data partition's backup goes through the same checks: a NUL in a
/// member name stops it (the backup writer cannot produce one; a damaged or forged backup
/// region could).
#[test]
fn a_backup_restore_refuses_nul_names() {
    let d = Dir::new();
    let img = d.path.join("data.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let dest = hup::ext4::Dest::image(&img, 32 << 20).unwrap();
    hup::ext4::format(&dest, &Default::default()).unwrap();
    let mut nul = pax(&[("path", b"home/a\0b")]);
    nul.extend(ustar("placeholder", EntryType::Regular, b"user data", None));
    let tar = archive(&[ustar("home/", EntryType::Directory, b"", None), nul]);
    let zst = zstd::encode_all(&tar[..], 1).unwrap();
    let stream =
        hup::data::backup::restore_stream(Cursor::new(zst), tar.len() as u64, None).unwrap();
    let e = hup::ext4::populate(&dest, stream).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("the name contains a NUL byte; refused"),
        "{msg}"
    );
    assert_ne!(
        fsck_status(&img),
        0,
        "a refused restore left a valid filesystem"
    );
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
