//! Foundation: keygen, pack, inspect, verify on real files. Bad inputs refused are in
//! tests/bundle_refusals.rs.

use crate::support::bundle::BundleBuilder;
use crate::support::bundle_fixture::*;
use crate::support::*;

#[test]
fn pack_inspect_verify_roundtrip() {
    let f = fixture();
    let out = hup_ok(&[
        "verify",
        p(&f.bundle),
        "--key",
        p(&f.other_pub),
        "--key",
        p(&f.pubkey),
    ]);
    assert!(out.contains("OK (qemu-x86_64 2.0.0"), "{out}");
    let out = hup_ok(&["verify", p(&f.bundle), "--keys", p(&f.dir)]);
    assert!(out.contains("3 payloads verified"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&hup_ok(&["inspect", p(&f.bundle), "--json"])).unwrap();
    assert_eq!(json["manifest"]["version"], "2.0.0");
    assert_eq!(json["manifest"]["min_from_version"], "1.0.0");
    assert_eq!(json["manifest"]["payloads"][0]["name"], "rootfs.tar.zst");
    assert_eq!(json["manifest"]["payloads"][1]["kind"], "boot");
    assert_eq!(json["manifest"]["payloads"][2]["name"], "fingerprint.json");
    assert_eq!(json["manifest"]["payloads"][2]["kind"], "fingerprint");
    let text = hup_ok(&["inspect", p(&f.bundle)]);
    assert!(
        text.contains("rootfs.tar.zst") && text.contains("qemu-x86_64"),
        "{text}"
    );
}

#[test]
fn minisign_tool_accepts_our_signature() {
    let f = fixture();
    let x = f.dir.join("x");
    std::fs::create_dir(&x).unwrap();
    sh(&format!(
        "tar -xf {} -C {} manifest.json manifest.json.minisig",
        p(&f.bundle),
        p(&x)
    ));
    let out = sh(&format!(
        "cd {} && minisign -Vm manifest.json -x manifest.json.minisig -p {}",
        p(&x),
        p(&f.pubkey)
    ));
    assert!(
        out.contains("Signature and comment signature verified"),
        "{out}"
    );
    assert!(out.contains("hup bundle qemu-x86_64 2.0.0"), "{out}");
    let bad = std::process::Command::new("minisign")
        .current_dir(&x)
        .args([
            "-Vm",
            "manifest.json",
            "-x",
            "manifest.json.minisig",
            "-p",
            p(&f.other_pub),
        ])
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "minisign accepted a signature by another key"
    );
}

#[test]
fn pack_is_deterministic_and_keeps_metadata() {
    let f = fixture();
    let again = fixture_bundle(&f.dir, &f.key).pack(&f.dir.join("again.hup"));
    assert_eq!(
        std::fs::read(&f.bundle).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // The rootfs payload, unpacked by GNU tar, has every kind of entry with its metadata.
    let x = f.dir.join("x");
    let out = f.dir.join("out");
    std::fs::create_dir_all(&x).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    sh(&format!(
        "tar -xf {} -C {} rootfs.tar.zst",
        p(&f.bundle),
        p(&x)
    ));
    sh(&format!(
        "tar --zstd --xattrs --xattrs-include='*' --numeric-owner -xpf {}/rootfs.tar.zst -C {}",
        p(&x),
        p(&out)
    ));
    let stat = |rel: &str| {
        sh(&format!(
            "stat -c '%F %a %u:%g %h %t:%T %Y' {}/{rel}",
            p(&out)
        ))
    };
    assert_eq!(
        stat("bin/tool").trim(),
        "regular file 4755 0:0 1 0:0 1700000000"
    );
    assert_eq!(stat("tmp").trim(), "directory 1777 0:0 2 0:0 1700000000");
    assert_eq!(
        stat("etc/os-release").trim(),
        "regular file 644 1000:1001 1 0:0 1700000000"
    );
    assert_eq!(
        stat("dev/null").trim(),
        "character special file 666 0:0 1 1:3 1700000000"
    );
    assert_eq!(
        stat("dev/vda").trim(),
        "block special file 644 0:0 1 fe:0 1700000000"
    );
    assert!(stat("dev/fifo").starts_with("fifo "));
    assert!(stat("usr/lib/data-link.bin").starts_with("regular file 644 0:0 2 "));
    assert_eq!(
        sh(&format!("readlink {}/bin/rel-link", p(&out))).trim(),
        "../usr/lib/data.bin"
    );
    let long = "n".repeat(200);
    assert_eq!(
        std::fs::read(out.join(format!("usr/lib/deep/{long}"))).unwrap(),
        b"long name"
    );
    assert!(out.join("etc/grüße.txt").exists());
    let attrs = sh(&format!("getfattr -d -m - -e base64 {}/bin/tool", p(&out)));
    assert!(attrs.contains("user.hup=0saGVsbG8="), "{attrs}");
    assert!(
        attrs.contains("security.capability=0sAQAAAgAgAAAAAAAAAAAAAAAAAAA="),
        "{attrs}"
    );
}

#[test]
fn pack_takes_tar_and_tar_zst() {
    let f = fixture();
    let tar = f.dir.join("rootfs.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        p(&f.dir.join("rootfs")),
        p(&tar)
    ));
    sh(&format!("zstd -q -3 {} -o {}.zst", p(&tar), p(&tar)));
    for input in [tar.clone(), f.dir.join("rootfs.tar.zst")] {
        let out = f.dir.join("from-tar.hup");
        BundleBuilder::new(&input, "3.0", &f.key)
            .compatible("qemu-x86_64")
            .level(3)
            .pack(&out);
        hup_ok(&["verify", p(&out), "--key", p(&f.pubkey)]);
        let json: serde_json::Value =
            serde_json::from_str(&hup_ok(&["inspect", p(&out), "--json"])).unwrap();
        let tar_len = std::fs::metadata(&tar).unwrap().len();
        assert_eq!(json["manifest"]["payloads"][0]["unpacked_size"], tar_len);
    }
}
