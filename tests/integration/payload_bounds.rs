//! Payloads bounded by what the signed manifest says: a rootfs that decompresses past its
//! `unpacked_size`, a huge sparse member in a signed bundle, and the data-backup restore's
//! name checks. Nothing outside the target changes (slot A, the boot files, the active slot).
//!
//! Commands run under `timeout`: a hang becomes a failed assertion instead of a stuck run.

use std::io::{Cursor, Read};
use std::path::Path;

use crate::support::bundle::BundleBuilder;
use crate::support::ext4::fsck_status;
use crate::support::hostile_tar::*;
use crate::support::image::{World, part, range_sha};
use crate::support::{p, sh};
use tar::{EntryType, Header};

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
    let o = bounded(&w.apply_args(img, bundle));
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
    let b = hup::boot::open(
        hup::model::config::BootBackendKind::Gpt,
        img,
        &Default::default(),
    );
    assert_eq!(b.active().unwrap(), hup::model::slot::Slot::A);
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
    BundleBuilder::new(&zst, "2.0.0", &w.key)
        .command(&honest)
        .watchdog(120)
        .ok();
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
