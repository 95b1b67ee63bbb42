//! Delta bundles that must not be applied or staged, each refused before anything is
//! written to either slot: a wrong base version, a base file modified on the running slot,
//! a patch that does not give the sha256 it names, a truncated or bit-flipped bundle; and
//! `hup stage` refusing a delta for another base from the manifest alone; and a written tree
//! that is not the signed one failing the apply after populate, with the boot untouched.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::delta::DeltaWorld;
use crate::support::device::sha256_hex;
use crate::support::image::*;
use crate::support::layout::Mount;
use crate::support::server::Server;
use crate::support::*;
use hup::bundle::delta::{self, Record};
use hup::bundle::reader::Bundle;
use hup::model::manifest::PayloadKind;

/// What must not change when an apply is refused: both slots and the boot state.
fn snapshot(img: &Path) -> (String, String, String) {
    let st = hup::boot::open(
        hup::model::config::BootBackendKind::Gpt,
        img,
        &hup::model::config::Labels::default(),
    )
    .state()
    .unwrap();
    (
        range_sha(img, part(img, "hup-root-a")),
        range_sha(img, part(img, "hup-root-b")),
        format!("{st:?}"),
    )
}

/// Applies `bundle` on `img`, which must be refused with `needle` and nothing written.
fn refused(d: &DeltaWorld, img: &Path, bundle: &Path, needle: &str) {
    let before = snapshot(img);
    let (ok, err) = d.apply(img, bundle);
    assert!(!ok && err.contains(needle), "want {needle:?}:\n{err}");
    assert_eq!(snapshot(img), before, "{needle}: something was written");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.data/state.json", p(img))).unwrap())
            .unwrap();
    assert_eq!(state["last_result"]["outcome"], "failed", "{state}");
    assert_eq!(state["slot_a"]["version"], "1.0.0");
}

/// The delta bundle of `d` with its stream rewritten by `f` (records in, records out), signed
/// again with the world's key: authentic, but wrong.
fn resigned(d: &DeltaWorld, name: &str, f: impl Fn(&mut Vec<u8>, Record, &mut &[u8])) -> PathBuf {
    resigned_with(d, name, f, |_| {})
}

/// [`resigned`], with the manifest also changed by `edit`.
fn resigned_with(
    d: &DeltaWorld,
    name: &str,
    f: impl Fn(&mut Vec<u8>, Record, &mut &[u8]),
    edit: impl Fn(&mut hup::model::manifest::Manifest),
) -> PathBuf {
    let b = Bundle::open_unverified(&d.delta).unwrap();
    let mut stream = Vec::new();
    zstd::stream::read::Decoder::new(b.reader_for(PayloadKind::Rootfs).unwrap().unwrap())
        .unwrap()
        .read_to_end(&mut stream)
        .unwrap();
    let mut out = Vec::new();
    let mut r = &stream[..];
    while let Some(rec) = delta::read_record(&mut r).unwrap() {
        f(&mut out, rec, &mut r);
    }
    let z = zstd::encode_all(&out[..], 1).unwrap();
    let mut m = b.manifest.clone();
    edit(&mut m);
    for p in &mut m.payloads {
        if p.kind == PayloadKind::Rootfs {
            p.size = z.len() as u64;
            p.sha256 = sha256_hex(&z);
            p.unpacked_size = out.len() as u64;
        }
    }
    let mb = m.to_json();
    let sig = hup::bundle::sign::SecretKey::load(&d.w.key)
        .unwrap()
        .sign(&mb, "hup bundle test");
    let mut others = Vec::new();
    for p in &m.payloads {
        if p.kind == PayloadKind::Rootfs {
            others.push(z.clone());
        } else {
            let mut v = Vec::new();
            b.payload_reader(p).unwrap().read_to_end(&mut v).unwrap();
            others.push(v);
        }
    }
    let mut members = vec![
        hup::bundle::writer::Member {
            name: hup::bundle::MANIFEST,
            size: mb.len() as u64,
            data: Box::new(&mb[..]),
        },
        hup::bundle::writer::Member {
            name: hup::bundle::SIGNATURE,
            size: sig.len() as u64,
            data: Box::new(sig.as_bytes()),
        },
    ];
    for (p, data) in m.payloads.iter().zip(&others) {
        members.push(hup::bundle::writer::Member {
            name: &p.name,
            size: p.size,
            data: Box::new(&data[..]),
        });
    }
    let path = d.w.dir.join(name);
    hup::bundle::writer::write_bundle(&path, members).unwrap();
    path
}

/// Writes a record back as it was read (the rest of its bytes taken from `r`), with the new
/// file's sha256 of a patch changed when `break_patch`.
fn copy_record(out: &mut Vec<u8>, rec: Record, r: &mut &[u8], break_patch: bool) {
    match rec {
        Record::Raw(n) => {
            out.push(delta::TAG_RAW);
            out.extend(n.to_le_bytes());
            out.extend(&r[..n as usize]);
            *r = &r[n as usize..];
        }
        Record::Copy(b) => {
            out.push(delta::TAG_COPY);
            delta::write_base(out, &b).unwrap();
        }
        Record::Patch {
            base,
            mut sha256,
            size,
            pieces,
        } => {
            if break_patch {
                sha256[0] ^= 1;
            }
            out.push(delta::TAG_PATCH);
            delta::write_base(out, &base).unwrap();
            out.extend(sha256);
            out.extend(size.to_le_bytes());
            out.extend(pieces.to_le_bytes());
            let mut done = 0;
            for _ in 0..pieces {
                let piece = delta::read_piece(r, done, size, base.size).unwrap();
                delta::write_piece(out, &piece).unwrap();
                let n = piece.patch_len as usize;
                out.extend(&r[..n]);
                *r = &r[n..];
                done += u64::from(piece.out_len);
            }
        }
        Record::End => out.push(delta::TAG_END),
    }
}

#[test]
fn bad_deltas_are_refused_before_any_write() {
    let d = DeltaWorld::new();
    let img = d.w.provision("dev.img", "1.0.0", "gpt", &[]);

    // The stream rewritten unchanged is still applied (the rewrite itself is right) ...
    let same = resigned(&d, "same.hup", |o, rec, r| copy_record(o, rec, r, false));
    // ... but a patch that does not give its sha256 is refused.
    let bad_patch = resigned(&d, "bad-patch.hup", |o, rec, r| {
        copy_record(o, rec, r, true)
    });
    refused(&d, &img, &bad_patch, "patched file /");
    refused(&d, &img, &bad_patch, "has sha256");

    // Truncated, and one bit flipped inside the delta stream.
    let bytes = std::fs::read(&d.delta).unwrap();
    let cut = d.w.dir.join("cut.hup");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    refused(&d, &img, &cut, "truncated");
    let b = Bundle::open_unverified(&d.delta).unwrap();
    let member = b
        .scan
        .payload_members
        .iter()
        .find(|m| m.name == "rootfs.delta.zst")
        .unwrap();
    let mut flipped = bytes.clone();
    flipped[(member.offset + member.size / 2) as usize] ^= 0x10;
    let flip = d.w.dir.join("flip.hup");
    std::fs::write(&flip, &flipped).unwrap();
    refused(&d, &img, &flip, "sha256");

    let (ok, err) = d.apply(&img, &same);
    assert!(ok, "{err}");
}

#[test]
fn a_modified_base_file_refuses_the_apply() {
    let d = DeltaWorld::new();
    for (name, file) in [
        ("patched.img", "usr/lib/changed.bin"),
        ("copied.img", "usr/lib/same.bin"),
    ] {
        let img = d.w.provision(name, "1.0.0", "gpt", &[]);
        {
            let m = Mount::new(&img, "hup-root-a", false);
            let f = m.path().join(file);
            let mut v = std::fs::read(&f).unwrap();
            v[7] ^= 1;
            std::fs::write(&f, v).unwrap();
        }
        refused(&d, &img, &d.delta, &format!("base file /{file}"));
        let (_, err) = d.apply(&img, &d.delta);
        assert!(err.contains("the running slot was modified"), "{err}");
    }
}

/// Populate does not hash the expanded tar: the tree it wrote must have the fingerprint the
/// manifest signs, else the apply fails after populate, with slot a and the boot untouched.
/// On a device that happens when the running slot changes between preflight and populate;
/// here the signed fingerprint is another one.
#[test]
fn a_written_tree_without_the_signed_fingerprint_fails_the_apply() {
    let d = DeltaWorld::new();
    let img = d.w.provision("dev.img", "1.0.0", "gpt", &[]);
    let other = resigned_with(
        &d,
        "other-fingerprint.hup",
        |o, rec, r| copy_record(o, rec, r, false),
        |m| {
            let fp = &mut m.delta.as_mut().unwrap().fingerprint;
            *fp = sha256_hex(fp.as_bytes());
        },
    );
    let before = snapshot(&img);
    let (ok, err) = d.apply(&img, &other);
    assert!(
        !ok && err.contains("the running slot changed while it was read"),
        "{err}"
    );
    assert!(err.contains("populate"), "failed in populate: {err}");
    let after = snapshot(&img);
    assert_eq!(after.0, before.0, "slot a was written");
    assert_ne!(
        after.1, before.1,
        "slot b was not written: the check did not run after populate"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.data/state.json", p(&img))).unwrap())
            .unwrap();
    assert_eq!(state["last_result"]["outcome"], "failed", "{state}");
    assert_eq!(state["slot_a"]["version"], "1.0.0");
    assert_eq!(
        after.2, before.2,
        "the boot state changed: slot b must stay bad"
    );
    // The right delta still applies on the same device.
    let (ok, err) = d.apply(&img, &d.delta);
    assert!(ok, "{err}");
}

#[test]
fn a_delta_for_another_base_is_refused_by_apply_and_by_stage() {
    let d = DeltaWorld::new();
    // The same tree installed as 1.1.0: another version than the delta's base.
    sh(&format!(
        "cp -a {}/. {}",
        p(&d.w.dir.join("rootfs-1.0.0")),
        p(&d.w.dir.join("rootfs-1.1.0"))
    ));
    let img = d.w.provision("v11.img", "1.1.0", "gpt", &[]);
    let before = snapshot(&img);
    let (ok, err) = d.apply(&img, &d.delta);
    assert!(
        !ok && err.contains("delta bundle needs base version 1.0.0 with fingerprint ")
            && err.contains("the running slot has version 1.1.0 with fingerprint "),
        "{err}"
    );
    assert_eq!(snapshot(&img), before);

    // hup stage: the right base is staged; the wrong one refused from the manifest alone.
    let keys = d.w.dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(&d.w.pubkey, keys.join("release.pub")).unwrap();
    let config = d.w.dir.join("system.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&serde_json::json!({
            "compatible": crate::support::bundle::COMPATIBLE,
            "keys_dir": keys,
        }))
        .unwrap(),
    )
    .unwrap();
    let stage = |img: &Path, source: &str| {
        let data = format!("{}.data", p(img));
        let o = crate::support::device::hup(&[
            "stage",
            source,
            "--config",
            p(&config),
            "--data-dir",
            &data,
            "--disk",
            p(img),
        ]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let good = d.w.provision("v10.img", "1.0.0", "gpt", &[]);
    let (ok, err) = stage(&good, p(&d.delta));
    assert!(ok, "the base the delta names is the running slot: {err}");

    let srv = Server::http();
    let bytes = std::fs::read(&d.delta).unwrap();
    srv.put("/delta.hup", bytes.clone());
    srv.reset_counters();
    // Only the first 8 KiB (manifest and signature) come; then the server stalls.
    srv.set_stall(Some(8 * 1024));
    let (ok, err) = stage(&img, &srv.url("/delta.hup"));
    let line = err.lines().last().unwrap_or_default();
    assert!(
        !ok && line.contains("needs base version 1.0.0")
            && line.contains("the running slot has version 1.1.0"),
        "{err}"
    );
    assert!(srv.served() < bytes.len() as u64 / 2, "{}", srv.served());
}
