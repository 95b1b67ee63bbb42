//! Smaller refusals: duplicate keys in the manifest, control characters in version and
//! compatible, a migration named twice, a broken key file in a key directory (skipped, not
//! fatal), and an accurate message for a disk too small to provision.

use std::io::Read;
use std::path::Path;

use crate::support::bundle::BundleBuilder;
use crate::support::bundle_fixture::*;
use crate::support::*;
use hup::bundle::sign::SecretKey;
use hup::bundle::writer::{Member, write_bundle};

/// The fixture's bundle with its manifest text replaced by `edit(text)`, re-signed.
fn with_manifest(f: &Fixture, edit: impl Fn(&str) -> String, out: &Path) {
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&f.bundle).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        members.push((name, data));
    }
    let text = edit(std::str::from_utf8(&members[0].1).unwrap());
    let sig = SecretKey::load(&f.key)
        .unwrap()
        .sign(text.as_bytes(), "hup test");
    members[0].1 = text.into_bytes();
    members[1].1 = sig.into_bytes();
    write_bundle(
        out,
        members
            .iter()
            .map(|(n, d)| Member {
                name: n,
                size: d.len() as u64,
                data: Box::new(&d[..]),
            })
            .collect(),
    )
    .unwrap();
}

fn verify_err(f: &Fixture, bundle: &Path) -> String {
    hup_err(&["verify", p(bundle), "--key", p(&f.pubkey)])
}

#[test]
fn duplicate_keys_in_the_manifest_are_refused() {
    let f = fixture();
    let out = f.dir.join("dup.hup");
    // serde_json alone would keep the last "version" (2.0.0); another parser the first.
    with_manifest(
        &f,
        |t| t.replacen('{', "{\n  \"version\": \"9.9.9\",", 1),
        &out,
    );
    let err = verify_err(&f, &out);
    assert!(err.contains("duplicate key \"version\""), "{err}");
    // A nested object too.
    with_manifest(
        &f,
        |t| {
            t.replacen(
                "\"kind\": \"rootfs\",",
                "\"kind\": \"rootfs\", \"kind\": \"boot\",",
                1,
            )
        },
        &out,
    );
    let err = verify_err(&f, &out);
    assert!(err.contains("duplicate key \"kind\""), "{err}");
    // The unchanged manifest, re-signed the same way, verifies.
    with_manifest(&f, |t| t.to_string(), &out);
    hup_ok(&["verify", p(&out), "--key", p(&f.pubkey)]);
}

#[test]
fn control_characters_in_version_and_compatible_are_refused() {
    let f = fixture();
    let out = f.dir.join("ctl.hup");
    for (from, to, expect) in [
        ("\"2.0.0\"", "\"2.0.0-rc\\n1\"", "control character"),
        ("\"2.0.0\"", "\"2.0.0-\\u001b[2J\"", "control character"),
        ("\"1.0.0\"", "\"1.0.0+\\r\"", "control character"),
        (
            "\"qemu-x86_64\"",
            "\"qemu-x86_64\\u0007\"",
            "invalid \"compatible\"",
        ),
    ] {
        with_manifest(&f, |t| t.replacen(from, to, 1), &out);
        let err = verify_err(&f, &out);
        assert!(err.contains(expect), "{to}: {err}");
    }
    // And at pack time.
    let root = f.dir.join("rootfs");
    for (version, compatible, expect) in [
        ("2.0.0-rc\n1", "qemu-x86_64", "control character"),
        ("2.0.0-\u{7f}", "qemu-x86_64", "control character"),
        ("2.0.0", "qemu\tx86", "compatible"),
    ] {
        let err = BundleBuilder::new(&root, version, &f.key)
            .compatible(compatible)
            .command(&out.with_extension("new"))
            .err_line();
        assert!(err.contains(expect), "{version:?} {compatible:?}: {err}");
    }
}

#[test]
fn a_migration_named_twice_is_refused() {
    let f = fixture();
    let out = f.dir.join("mig.hup");
    let err = BundleBuilder::new(&f.dir.join("rootfs"), "2.0.0", &f.key)
        .compatible("qemu-x86_64")
        .migration("wifi-config-json-to-networkmanager")
        .migration("wifi-config-json-to-networkmanager")
        .command(&out)
        .err_line();
    assert!(
        err.contains("migration \"wifi-config-json-to-networkmanager\" listed twice"),
        "{err}"
    );
    assert!(!out.exists());
    // A signed manifest naming it twice is refused by every reader.
    with_manifest(
        &f,
        |t| {
            t.replacen(
                "\"payloads\"",
                "\"migrations\": [\"x\", \"y\", \"x\"],\n  \"payloads\"",
                1,
            )
        },
        &out,
    );
    let err = verify_err(&f, &out);
    assert!(err.contains("migration \"x\" listed twice"), "{err}");
}

#[test]
fn a_broken_key_file_in_the_key_directory_is_skipped() {
    let f = fixture();
    let keys = f.dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(&f.pubkey, keys.join("release.pub")).unwrap();
    std::fs::write(
        keys.join("0-broken.pub"),
        "untrusted comment: x\nnot base64 !!\n",
    )
    .unwrap();
    std::fs::write(keys.join("empty.pub"), "").unwrap();
    std::fs::create_dir(keys.join("dir.pub")).unwrap();
    let o = hup(&["verify", p(&f.bundle), "--keys", p(&keys)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping key file") && stderr.contains("0-broken.pub"),
        "{stderr}"
    );
    // Only broken files: no trusted key at all is still an error.
    std::fs::remove_file(keys.join("release.pub")).unwrap();
    let o = hup(&["verify", p(&f.bundle), "--keys", p(&keys)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("no trusted public keys"), "{stderr}");
    // A key file named on the command line is not skipped: the user asked for it.
    let err = hup_err(&[
        "verify",
        p(&f.bundle),
        "--key",
        p(&keys.join("0-broken.pub")),
    ]);
    assert!(err.contains("0-broken.pub"), "{err}");
}

#[test]
fn a_disk_too_small_to_provision_gets_an_accurate_message() {
    let f = fixture();
    let img = f.dir.join("tiny.img");
    let err = hup_err(&[
        "provision",
        "--bundle",
        p(&f.bundle),
        "--key",
        p(&f.pubkey),
        "--size",
        "44M",
        "--boot-size",
        "40M",
        p(&img),
    ]);
    assert!(!err.contains("slots of 0"), "{err}");
    assert!(
        err.contains("too small for this bundle") && err.contains("2 slots of at least 1048576"),
        "{err}"
    );
    assert!(
        !img.exists(),
        "a refused provision created {}",
        img.display()
    );
}
