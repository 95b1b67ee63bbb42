//! `hup mkinitramfs --fw-env-config`: the uboot backend's initramfs carries the device's
//! `fw_env.config` at the path its system.json names, checked with the system `cpio`.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::runner::Hup;

/// A static executable that is always there (busybox-static, scripts/install-deps).
const STATIC_EXE: &str = "/bin/busybox";

const FW_ENV: &str = "# the boot partition's two copies\n\
                      /boot/uboot.env 0x0 0x4000\n\
                      /boot/uboot-redund.env 0x0 0x4000\n";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn config(dir: &Path, json: &str) -> String {
    let p = dir.join("system.json");
    std::fs::write(&p, json).unwrap();
    p.display().to_string()
}

fn mkinitramfs(out: &Path, config: &str, fw_env: Option<&Path>) -> Output {
    let out = out.display().to_string();
    let mut args = vec![
        "mkinitramfs",
        "-o",
        &out,
        "--hup",
        STATIC_EXE,
        "--config",
        config,
    ];
    let fw;
    if let Some(f) = fw_env {
        fw = f.display().to_string();
        args.extend(["--fw-env-config", &fw]);
    }
    Hup::with(&args).run()
}

/// `path` extracted from the cpio archive `archive` with the system `cpio`.
fn member(archive: &Path, path: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cpio -i --to-stdout {path} < {}",
            archive.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_uboot_initramfs_carries_fw_env_config_where_system_json_says() {
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("fw_env.config");
    std::fs::write(&fw, FW_ENV).unwrap();
    let cfg = config(
        dir.path(),
        r#"{"compatible":"x","boot_backend":"uboot","fw_env_config":"/etc/u-boot/fw_env.config"}"#,
    );
    let out = dir.path().join("initrd.cpio");
    let o = mkinitramfs(&out, &cfg, Some(&fw));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(member(&out, "etc/u-boot/fw_env.config"), FW_ENV);
    // The parent directory is a member of its own (the kernel does not make parents).
    let list = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -it < {}", out.display()))
        .output()
        .unwrap();
    let names = String::from_utf8(list.stdout).unwrap();
    assert!(names.lines().any(|l| l == "etc/u-boot"), "{names}");
}

#[test]
fn the_uboot_backend_without_fw_env_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), r#"{"compatible":"x","boot_backend":"uboot"}"#);
    let out = dir.path().join("initrd.cpio");
    let o = mkinitramfs(&out, &cfg, None);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("needs --fw-env-config") && t.contains("/etc/fw_env.config"),
        "{t}"
    );
    assert!(!out.exists(), "an initramfs was written: {t}");
}

#[test]
fn fw_env_config_with_another_backend_or_a_bad_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("fw_env.config");
    std::fs::write(&fw, FW_ENV).unwrap();
    let out = dir.path().join("initrd.cpio");
    let gpt = config(dir.path(), r#"{"compatible":"x","boot_backend":"gpt"}"#);
    let o = mkinitramfs(&out, &gpt, Some(&fw));
    assert!(!o.status.success());
    assert!(text(&o).contains("boot_backend is uboot"), "{}", text(&o));

    std::fs::write(&fw, "# nothing but a comment\n").unwrap();
    let uboot = config(dir.path(), r#"{"compatible":"x","boot_backend":"uboot"}"#);
    let o = mkinitramfs(&out, &uboot, Some(&fw));
    assert!(!o.status.success());
    assert!(text(&o).contains("names no environment"), "{}", text(&o));
    assert!(!out.exists());
}
