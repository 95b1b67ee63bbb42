//! scripts/mk-test-os builds the busybox test OS trees the QEMU tests boot.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Any file will do as the hup binary here: the script only copies it.
use crate::support::runner::HUP;

fn mk(version: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(format!("{REPO}/scripts/mk-test-os"))
        .arg(version)
        .arg(out)
        .args(["--hup", HUP])
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn healthy_tree_has_init_hook_config_and_key() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("test.pub");
    std::fs::write(&key, "untrusted comment: k\nRWQ\n").unwrap();
    let os = t.path().join("os");
    let o = mk("1.2.3", &os, &["--key", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    assert_eq!(
        std::fs::read_link(os.join("sbin/init")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        std::fs::read(os.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    let release = std::fs::read_to_string(os.join("etc/os-release")).unwrap();
    assert!(release.contains("VERSION_ID=1.2.3\n"), "{release}");
    let inittab = std::fs::read_to_string(os.join("etc/inittab")).unwrap();
    assert!(
        inittab.contains("::sysinit:/etc/hup-test/boot"),
        "{inittab}"
    );
    let boot = std::fs::read_to_string(os.join("etc/hup-test/boot")).unwrap();
    assert!(boot.contains("HUP-OS-UP version=$VERSION_ID slot=$slot"));
    assert!(boot.contains("hup mark-good"));
    let mode = std::fs::metadata(os.join("etc/hup-test/boot"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
    assert_eq!(
        std::fs::read(os.join("usr/bin/hup")).unwrap(),
        std::fs::read(HUP).unwrap()
    );
    assert_eq!(
        std::fs::read(os.join("etc/hup/system.json")).unwrap(),
        std::fs::read(format!("{REPO}/initramfs/system.json")).unwrap()
    );
    assert!(os.join("etc/hup/keys/test.pub").is_file());
    assert!(os.join("mnt/data").is_dir());
    assert!(!os.join("etc/hup-test/never-healthy").exists());

    // The hook is valid shell.
    let n = Command::new("sh")
        .arg("-n")
        .arg(os.join("etc/hup-test/boot"))
        .output()
        .unwrap();
    assert!(n.status.success(), "{}", text(&n));

    // A non-empty output directory is refused.
    let again = mk("1.2.3", &os, &[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
}

#[test]
fn failure_variants() {
    let t = tempfile::tempdir().unwrap();
    let never = t.path().join("never");
    let o = mk("2", &never, &["--never-healthy"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(never.join("etc/hup-test/never-healthy").exists());
    assert!(std::fs::symlink_metadata(never.join("sbin/init")).is_ok());

    let cannot = t.path().join("cannot");
    let o = mk("3", &cannot, &["--cannot-boot"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::symlink_metadata(cannot.join("sbin/init")).is_err());
    assert!(std::fs::symlink_metadata(cannot.join("bin/sh")).is_ok());

    let o = mk("bad version", &t.path().join("x"), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("bad VERSION"), "{}", text(&o));
}
