//! dist/initramfs-tools/ (docs/initramfs-integration.md): what `install ROOT` puts into a
//! system tree, and the scripts' shell syntax. Building a Debian initrd with them needs a
//! Debian tree and runs in the Debian QEMU scenario.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/initramfs-tools")
}

#[test]
fn install_copies_the_hook_and_the_premount_script_executable() {
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(dist().join("install"))
        .arg(t.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (installed, shipped) in [
        ("etc/initramfs-tools/hooks/hup", "hooks/hup"),
        (
            "etc/initramfs-tools/scripts/local-premount/hup",
            "scripts/local-premount/hup",
        ),
    ] {
        let p = t.path().join(installed);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{installed}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(dist().join(shipped)).unwrap(),
            "{installed}"
        );
    }
    let premount = std::fs::read_to_string(
        t.path()
            .join("etc/initramfs-tools/scripts/local-premount/hup"),
    )
    .unwrap();
    assert!(premount.contains("/usr/bin/hup apply-pending"));
}

#[test]
fn install_refuses_a_missing_root() {
    let t = tempfile::tempdir().unwrap();
    for args in [vec![], vec![t.path().join("absent")]] {
        let out = Command::new(dist().join("install"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    assert!(!t.path().join("absent").exists());
}

#[test]
fn the_scripts_parse_as_posix_sh_and_answer_prereqs() {
    let dracut = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/dracut/90hup");
    for f in [
        dist().join("install"),
        dist().join("hooks/hup"),
        dist().join("scripts/local-premount/hup"),
        dracut.join("hup-apply-pending.sh"),
    ] {
        let out = Command::new("sh").arg("-n").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("bash")
        .arg("-n")
        .arg(dracut.join("module-setup.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // initramfs-tools orders its scripts by calling each with `prereqs`: nothing else may run.
    for f in [
        dist().join("hooks/hup"),
        dist().join("scripts/local-premount/hup"),
    ] {
        let out = Command::new("sh").arg(&f).arg("prereqs").output().unwrap();
        assert!(out.status.success(), "{}", f.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "",
            "{}",
            f.display()
        );
        assert!(out.stderr.is_empty(), "{}", f.display());
    }
}
