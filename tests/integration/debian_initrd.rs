//! dist/initramfs-tools/ in a real Debian tree: `scripts/mk-debian-os os v1 ...
//! --initramfs-tools` installs it and runs Debian's `update-initramfs` in the tree; the
//! initrd then holds hup, its configuration, the key and the premount script. Without
//! `/usr/bin/hup` the initrd build stops with one clear line instead of leaving hup out.
//! Needs root (chroot) and the cached Debian tree (built once per machine, with the network).

use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

#[test]
fn update_initramfs_in_debian_takes_hup_in_and_refuses_to_build_without_it() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let os = scratch.path().join("os");
    let keys = scratch.path().join("test");
    let hup = env!("CARGO_BIN_EXE_hup");
    let out = run(Command::new(hup).arg("keygen").arg("-o").arg(&keys));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(Command::new(Path::new(REPO).join("scripts/mk-debian-os"))
        .args(["os", "v1", "1"])
        .arg(&os)
        .arg("--initramfs-tools")
        .args(["--hup", hup])
        .arg("--key")
        .arg(keys.with_extension("pub")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let initrd = std::fs::read_dir(os.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("initrd.img-"))
        .expect("no /boot/initrd.img-* in the tree");
    let list = run(Command::new("chroot")
        .arg(&os)
        .arg("lsinitramfs")
        .arg(format!("/boot/{initrd}")));
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let list = String::from_utf8_lossy(&list.stdout);
    for member in [
        "usr/bin/hup",
        "etc/hup/system.json",
        "etc/hup/keys/test.pub",
        "scripts/local-premount/hup",
    ] {
        assert!(
            list.lines().any(|l| l == member),
            "{member} is not in {initrd}"
        );
    }

    // With the uboot backend the initrd also carries the fw_env.config system.json names,
    // and refuses to be built without it.
    let sys = os.join("etc/hup/system.json");
    let gpt = std::fs::read_to_string(&sys).unwrap();
    let mut uboot: serde_json::Value = serde_json::from_str(&gpt).unwrap();
    uboot["boot_backend"] = "uboot".into();
    uboot["fw_env_config"] = "/etc/u-boot/fw_env.config".into();
    std::fs::write(&sys, serde_json::to_vec_pretty(&uboot).unwrap()).unwrap();
    std::fs::create_dir_all(os.join("etc/u-boot")).unwrap();
    std::fs::write(
        os.join("etc/u-boot/fw_env.config"),
        "/boot/uboot.env 0x0 0x4000\n",
    )
    .unwrap();
    let update = || {
        run(Command::new("chroot")
            .arg(&os)
            .args(["update-initramfs", "-u", "-k", "all"]))
    };
    let out = update();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = run(Command::new("chroot")
        .arg(&os)
        .arg("lsinitramfs")
        .arg(format!("/boot/{initrd}")));
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines().any(|l| l == "etc/u-boot/fw_env.config"),
        "no fw_env.config in {initrd}"
    );
    std::fs::remove_file(os.join("etc/u-boot/fw_env.config")).unwrap();
    let out = update();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "built an initrd without fw_env.config:\n{err}"
    );
    assert!(
        err.contains("hup: /etc/u-boot/fw_env.config is missing"),
        "{err}"
    );
    std::fs::write(&sys, &gpt).unwrap();

    // Without the binary the build fails and says why; the old initrd stays.
    let before = std::fs::read(os.join("boot").join(&initrd)).unwrap();
    std::fs::remove_file(os.join("usr/bin/hup")).unwrap();
    let out = run(Command::new("chroot")
        .arg(&os)
        .args(["update-initramfs", "-u", "-k", "all"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built an initrd without hup:\n{err}");
    assert!(
        err.contains("hup: /usr/bin/hup is missing or not executable"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(os.join("boot").join(&initrd)).unwrap(),
        before
    );
}
