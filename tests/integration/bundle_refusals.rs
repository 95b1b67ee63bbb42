//! Every bad input refused: pack failures, truncated, flipped, untrusted and malformed bundles.

use std::path::Path;

use crate::support::bundle_fixture::*;
use crate::support::*;
use hup::bundle::sign::SecretKey;
use hup::bundle::writer::{Member, write_bundle};

fn verify_err(f: &Fixture, bundle: &Path) -> String {
    hup_err(&["verify", p(bundle), "--key", p(&f.pubkey)])
}
#[test]
fn pack_failures_write_nothing() {
    let f = fixture();
    let out = f.dir.join("fail.hup");
    let rootfs = f.dir.join("rootfs");
    let base = [
        "pack",
        "--compatible",
        "qemu-x86_64",
        "--level",
        "3",
        "-o",
        p(&out),
    ];
    let r = p(&rootfs);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--rootfs", r, "--version", "2.0", "--key", p(&f.pubkey)],
            "secret key",
        ),
        (
            vec!["--rootfs", r, "--version", "two", "--key", p(&f.key)],
            "version",
        ),
        (
            vec![
                "--rootfs",
                r,
                "--version",
                "2.0",
                "--key",
                p(&f.key),
                "--boot",
                r,
            ],
            "boot partition",
        ),
        (
            vec![
                "--version",
                "2.0",
                "--key",
                p(&f.key),
                "--rootfs",
                p(&f.pubkey),
            ],
            "not a tar",
        ),
    ];
    for (extra, msg) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let err = hup_err(&args);
        assert!(err.contains(msg), "{err} lacks {msg}");
        assert!(!out.exists(), "a failed pack left {}", out.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&f.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".hup-pack"))
        .collect();
    assert!(leftovers.is_empty(), "work directories left behind");
    let err = hup_err(&["keygen", "-o", p(&f.dir.join("release"))]);
    assert!(err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn truncated_bundles_are_refused() {
    let f = fixture();
    let bytes = std::fs::read(&f.bundle).unwrap();
    let cut = f.dir.join("cut.hup");
    // In the first header, in the manifest, in the signature, in the rootfs, in the boot payload.
    let (sig_off, _) = member(&f.bundle, "manifest.json.minisig");
    let (root_off, root_len) = member(&f.bundle, "rootfs.tar.zst");
    let (boot_off, boot_len) = member(&f.bundle, "boot.tar.zst");
    for (at, member) in [
        (100, "invalid tar header at the start"),
        (700, "member manifest.json: truncated"),
        (
            sig_off - 100,
            "invalid tar header after member manifest.json",
        ),
        (sig_off + 10, "member manifest.json.minisig: truncated"),
        (root_off + root_len / 2, "member rootfs.tar.zst: truncated"),
        (boot_off + boot_len - 1, "member boot.tar.zst: truncated"),
        (0, "empty bundle"),
    ] {
        std::fs::write(&cut, &bytes[..at]).unwrap();
        let err = verify_err(&f, &cut);
        assert!(err.contains(member), "cut at {at}: {err} lacks {member}");
    }
}

/// Offset and size of a member's data in the bundle.
fn member(bundle: &Path, name: &str) -> (usize, usize) {
    let s = hup::bundle::reader::scan(bundle).unwrap();
    if name == "manifest.json" {
        return (512, s.manifest_bytes.len());
    }
    if name == "manifest.json.minisig" {
        return (
            512 * 2 + s.manifest_bytes.len().div_ceil(512) * 512,
            s.signature.len(),
        );
    }
    let m = s.payload_members.iter().find(|m| m.name == name).unwrap();
    (m.offset as usize, m.size as usize)
}

#[test]
fn flipped_bytes_are_refused() {
    let f = fixture();
    let bytes = std::fs::read(&f.bundle).unwrap();
    let bad = f.dir.join("flip.hup");
    for (name, expect) in [
        (
            "manifest.json",
            "manifest.json.minisig: signature does not match",
        ),
        ("manifest.json.minisig", "manifest.json.minisig"),
        ("rootfs.tar.zst", "member rootfs.tar.zst: sha256 mismatch"),
        ("boot.tar.zst", "member boot.tar.zst: sha256 mismatch"),
    ] {
        let (off, size) = member(&f.bundle, name);
        let mut b = bytes.clone();
        b[off + size / 2] ^= 0x01;
        std::fs::write(&bad, &b).unwrap();
        let err = verify_err(&f, &bad);
        assert!(err.contains(expect), "flip in {name}: {err}");
    }
}

#[test]
fn untrusted_key_is_refused() {
    let f = fixture();
    let err = hup_err(&["verify", p(&f.bundle), "--key", p(&f.other_pub)]);
    assert!(
        err.contains("manifest.json.minisig") && err.contains("not trusted"),
        "{err}"
    );
    let err = hup_err(&["verify", p(&f.bundle)]);
    assert!(err.contains("no trusted public keys"), "{err}");
}

/// Builds a bundle from raw parts: (name, bytes, tar type).
fn craft(path: &Path, members: &[(&str, Vec<u8>, tar::EntryType)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data, ty) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(*ty);
        h.set_size(if ty.is_file() { data.len() as u64 } else { 0 });
        if ty.is_symlink() {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, if ty.is_file() { &data[..] } else { &[][..] })
            .unwrap();
    }
    b.finish().unwrap();
}

fn manifest_json(payloads: &[(&str, &[u8])], format: u32) -> Vec<u8> {
    let list: Vec<serde_json::Value> = payloads
        .iter()
        .map(|(name, data)| {
            serde_json::json!({
                "name": name, "kind": if name.starts_with("boot") { "boot" } else { "rootfs" },
                "size": data.len(), "sha256": hup::bundle::verified::sha256_of(*data).unwrap().0,
                "unpacked_size": 0,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "format": format, "compatible": "qemu-x86_64", "version": "2.0", "payloads": list,
    }))
    .unwrap()
}

#[test]
fn malformed_bundles_are_refused() {
    let f = fixture();
    let sk = SecretKey::load(&f.key).unwrap();
    let sign = |m: &[u8]| sk.sign(m, "test").into_bytes();
    let reg = tar::EntryType::Regular;
    let rootfs = b"rootfs bytes".to_vec();
    let boot = b"boot bytes".to_vec();
    let good = manifest_json(&[("rootfs.tar.zst", &rootfs), ("boot.tar.zst", &boot)], 1);
    let path = f.dir.join("crafted.hup");
    let m = |name: &str, data: &[u8]| (name.to_string(), data.to_vec(), reg);

    type Case = (
        &'static str,
        Vec<(String, Vec<u8>, tar::EntryType)>,
        &'static str,
    );
    let big = vec![b' '; (1 << 20) + 1];
    let bad_json = b"{\"format\": 1,".to_vec();
    let future = manifest_json(&[("rootfs.tar.zst", &rootfs)], 2);
    let smaller = {
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["payloads"][0]["size"] = serde_json::json!(rootfs.len() - 1);
        serde_json::to_vec(&v).unwrap()
    };
    let larger = {
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["payloads"][1]["size"] = serde_json::json!(boot.len() + 1);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<Case> = vec![
        (
            "no signature",
            vec![m("manifest.json", &good), m("rootfs.tar.zst", &rootfs)],
            "second member is rootfs.tar.zst, expected manifest.json.minisig",
        ),
        (
            "unsigned only manifest",
            vec![m("manifest.json", &good)],
            "manifest.json.minisig: missing",
        ),
        (
            "manifest over 1 MiB",
            vec![
                m("manifest.json", &big),
                m("manifest.json.minisig", &sign(&big)),
            ],
            "manifest.json: 1048577 bytes exceeds",
        ),
        (
            "invalid json",
            vec![
                m("manifest.json", &bad_json),
                m("manifest.json.minisig", &sign(&bad_json)),
            ],
            "manifest.json: invalid JSON",
        ),
        (
            "unknown format",
            vec![
                m("manifest.json", &future),
                m("manifest.json.minisig", &sign(&future)),
                m("rootfs.tar.zst", &rootfs),
            ],
            "manifest.json: unknown format 2",
        ),
        (
            "payload missing",
            vec![
                m("manifest.json", &good),
                m("manifest.json.minisig", &sign(&good)),
                m("rootfs.tar.zst", &rootfs),
            ],
            "member boot.tar.zst: listed in the manifest but missing",
        ),
        (
            "extra member",
            vec![
                m("manifest.json", &good),
                m("manifest.json.minisig", &sign(&good)),
                m("rootfs.tar.zst", &rootfs),
                m("boot.tar.zst", &boot),
                m("evil.sh", b"x"),
            ],
            "member evil.sh: not in the manifest",
        ),
        (
            "duplicate member",
            vec![
                m("manifest.json", &good),
                m("manifest.json.minisig", &sign(&good)),
                m("rootfs.tar.zst", &rootfs),
                m("rootfs.tar.zst", &rootfs),
            ],
            "member rootfs.tar.zst: duplicate",
        ),
        (
            "wrong order",
            vec![
                m("manifest.json", &good),
                m("manifest.json.minisig", &sign(&good)),
                m("boot.tar.zst", &boot),
                m("rootfs.tar.zst", &rootfs),
            ],
            "member boot.tar.zst: out of order",
        ),
        (
            "manifest not first",
            vec![
                m("manifest.json.minisig", &sign(&good)),
                m("manifest.json", &good),
            ],
            "first member is manifest.json.minisig",
        ),
        (
            "symlink member",
            vec![
                m("manifest.json", &good),
                m("manifest.json.minisig", &sign(&good)),
                ("rootfs.tar.zst".into(), vec![], tar::EntryType::Symlink),
            ],
            "member rootfs.tar.zst: not a regular file",
        ),
        (
            "device member",
            vec![
                m("manifest.json", &good),
                m("manifest.json.minisig", &sign(&good)),
                ("rootfs.tar.zst".into(), vec![], tar::EntryType::Block),
            ],
            "member rootfs.tar.zst: not a regular file",
        ),
        (
            "manifest size smaller",
            vec![
                m("manifest.json", &smaller),
                m("manifest.json.minisig", &sign(&smaller)),
                m("rootfs.tar.zst", &rootfs),
                m("boot.tar.zst", &boot),
            ],
            "member rootfs.tar.zst: size 12 differs from the manifest's 11",
        ),
        (
            "manifest size larger",
            vec![
                m("manifest.json", &larger),
                m("manifest.json.minisig", &sign(&larger)),
                m("rootfs.tar.zst", &rootfs),
                m("boot.tar.zst", &boot),
            ],
            "member boot.tar.zst: size 10 differs from the manifest's 11",
        ),
    ];
    for (what, members, expect) in cases {
        let refs: Vec<(&str, Vec<u8>, tar::EntryType)> = members
            .iter()
            .map(|(n, d, t)| (n.as_str(), d.clone(), *t))
            .collect();
        craft(&path, &refs);
        let err = verify_err(&f, &path);
        assert!(err.contains(expect), "{what}: {err} lacks {expect}");
    }
    // The same parts in the right shape pass: the cases above fail for their one reason.
    craft(
        &path,
        &[
            ("manifest.json", good.clone(), reg),
            ("manifest.json.minisig", sign(&good), reg),
            ("rootfs.tar.zst", rootfs.clone(), reg),
            ("boot.tar.zst", boot.clone(), reg),
        ],
    );
    hup_ok(&["verify", p(&path), "--key", p(&f.pubkey)]);
    // And the writer used by pack produces the same accepted shape.
    let w = f.dir.join("written.hup");
    let sig = sign(&good);
    write_bundle(
        &w,
        vec![
            Member {
                name: "manifest.json",
                size: good.len() as u64,
                data: Box::new(&good[..]),
            },
            Member {
                name: "manifest.json.minisig",
                size: sig.len() as u64,
                data: Box::new(&sig[..]),
            },
            Member {
                name: "rootfs.tar.zst",
                size: rootfs.len() as u64,
                data: Box::new(&rootfs[..]),
            },
            Member {
                name: "boot.tar.zst",
                size: boot.len() as u64,
                data: Box::new(&boot[..]),
            },
        ],
    )
    .unwrap();
    hup_ok(&["verify", p(&w), "--key", p(&f.pubkey)]);
}
