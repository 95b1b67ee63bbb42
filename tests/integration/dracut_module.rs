//! dist/dracut/90hup with the host's real dracut (dracut-core, scripts/install-deps): with
//! the uboot backend the initramfs carries the fw_env.config system.json names, and without
//! that file the build stops with one clear line and writes no image.
//!
//! The module reads the device's own paths (/usr/bin/hup, /etc/hup/system.json, the
//! fw_env.config) and dracut its modules from /usr/lib/dracut/modules.d: the test gives
//! dracut those in a private mount namespace (`unshare --mount`), with overlays on /etc,
//! /usr/bin and modules.d whose upper layers are in the test's scratch directory. The host's
//! own files are never changed. Needs root (mount).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Mounts the overlays and runs dracut; `$1` is the scratch directory, `$2` the image.
const DRACUT_IN_NAMESPACE: &str = r#"
t=$1
for layer in etc:/etc bin:/usr/bin modules:/usr/lib/dracut/modules.d; do
    name=${layer%%:*}
    dir=${layer#*:}
    mkdir -p "$t/work/$name"
    rm -rf "$t/work/$name"/*
    mount -t overlay overlay \
        -o "lowerdir=$dir,upperdir=$t/upper/$name,workdir=$t/work/$name" "$dir"
done
exec dracut --no-kernel --no-hostonly --modules hup --tmpdir "$t/tmp" --force "$2"
"#;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn dracut(scratch: &Path, image: &Path) -> Output {
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(DRACUT_IN_NAMESPACE)
        .arg("sh")
        .arg(scratch)
        .arg(image))
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

#[test]
fn dracut_takes_the_uboot_fw_env_config_in_and_refuses_to_build_without_it() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let s = scratch.path();
    let upper = s.join("upper");
    std::fs::create_dir_all(s.join("tmp")).unwrap();
    // The module as distributed, and a device with hup, a key and a uboot system.json.
    let module = upper.join("modules/90hup");
    std::fs::create_dir_all(&module).unwrap();
    for f in ["module-setup.sh", "hup-apply-pending.sh"] {
        std::fs::copy(
            Path::new(REPO).join("dist/dracut/90hup").join(f),
            module.join(f),
        )
        .unwrap();
    }
    let hup = upper.join("bin/hup");
    write(&hup, "#!/bin/sh\necho 'hup (stand-in)'\n");
    std::fs::set_permissions(&hup, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(
        &upper.join("etc/hup/system.json"),
        r#"{"boot_backend": "uboot", "fw_env_config": "/etc/u-boot/fw_env.config"}"#,
    );
    write(&upper.join("etc/hup/keys/test.pub"), "a key\n");
    let fw_env = upper.join("etc/u-boot/fw_env.config");
    write(&fw_env, "/boot/uboot.env 0x0 0x4000\n");

    let image = s.join("initrd.img");
    let out = dracut(s, &image);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let list = run(Command::new("lsinitrd").arg(&image));
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
        "etc/u-boot/fw_env.config",
        "usr/lib/dracut/hooks/pre-mount/90-hup-apply-pending.sh",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {member}"))),
            "{member} is not in the image:\n{list}"
        );
    }

    // Without the fw_env.config: one line says what is missing, no image, nothing left.
    std::fs::remove_file(&fw_env).unwrap();
    let refused = s.join("refused.img");
    let out = dracut(s, &refused);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "built an initramfs without fw_env.config:\n{err}"
    );
    let missing = "hup: /etc/u-boot/fw_env.config is missing \
                   (the fw_env.config of the uboot backend in /etc/hup/system.json)";
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("is missing"))
            .collect::<Vec<_>>(),
        [format!("dracut: {missing}")],
        "{err}"
    );
    assert!(!refused.exists(), "dracut wrote {}", refused.display());
    assert_eq!(
        std::fs::read_dir(s.join("tmp")).unwrap().count(),
        0,
        "dracut left its temporary directory"
    );
}
