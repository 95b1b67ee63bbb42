//! The static arm64 build (`scripts/build-musl --target aarch64-unknown-linux-musl`, which
//! scripts/test runs before the tests) run on this host under QEMU user emulation
//! (`qemu-aarch64-static`, scripts/install-deps): keygen, pack and verify agree with the
//! x86_64 build in both directions, mkfs writes the same filesystem, and `hup mkinitramfs`
//! takes the arm64 binary with the modules of Debian's arm64 cloud kernel
//! (`scripts/qemu-kernel --arch aarch64`, initramfs/modules-qemu-aarch64).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::bundle::BundleBuilder;
use crate::support::ext4::{Node, assert_fsck_clean, readback, run};
use crate::support::runner::{HUP, Hup};
use crate::support::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TARGET: &str = "aarch64-unknown-linux-musl";
/// `e_machine` of aarch64 and x86_64.
const EM_AARCH64: u16 = 183;
const EM_X86_64: u16 = 62;

/// The arm64 hup and the user-mode emulator that runs it here.
struct Arm64 {
    qemu: PathBuf,
    bin: PathBuf,
}

fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[0x12], bytes[0x13]])
}

/// The target directory the test binary was built in (TARGET_DIR/debug/hup).
fn target_dir() -> PathBuf {
    Path::new(HUP)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

fn arm64() -> Arm64 {
    let bin = target_dir().join(TARGET).join("release/hup");
    assert!(
        bin.is_file(),
        "no arm64 hup at {}: build it with `scripts/build-musl --target {TARGET}` \
         (scripts/test does, before cargo test)",
        bin.display()
    );
    let bytes = std::fs::read(&bin).unwrap();
    assert_eq!(
        elf_machine(&bytes),
        EM_AARCH64,
        "{} is not an aarch64 binary",
        bin.display()
    );
    let qemu = in_path(&["qemu-aarch64-static", "qemu-aarch64"]).unwrap_or_else(|| {
        panic!("no qemu-aarch64-static or qemu-aarch64 in PATH (scripts/install-deps installs qemu-user-static)")
    });
    Arm64 { qemu, bin }
}

impl Arm64 {
    /// A run of the arm64 hup under emulation.
    fn hup(&self) -> Hup {
        Hup::new().program(&self.qemu, [&self.bin])
    }
}

/// A small tree of files, a directory, a symlink and a hard link, with fixed mtimes.
fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/hup")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=hup-test\nVERSION_ID=2\n").unwrap();
    std::fs::write(
        root.join("usr/bin/tool"),
        (0..100_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("../etc/os-release", root.join("usr/os-release")).unwrap();
    sh(&format!(
        "chmod 0755 {r}/usr/bin/tool && find {r} -exec touch -h -d @1700000000 {{}} +",
        r = p(root)
    ));
}

#[test]
fn keygen_pack_and_verify_agree_with_the_x86_64_build() {
    let arm = arm64();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("root");
    small_tree(&tree);

    // keygen under arm64; the x86_64 build's pair for the other direction.
    arm.hup().args(["keygen", "-o"]).arg(d.join("arm")).ok();
    let (arm_key, arm_pub) = (d.join("arm.key"), d.join("arm.pub"));
    assert!(arm_key.is_file() && arm_pub.is_file());
    let (x86_key, x86_pub) = keygen(d, "x86");

    // pack under arm64 (signed with the arm64 key) and with the x86_64 build.
    let arm_bundle = d.join("arm.hup");
    BundleBuilder::new(&tree, "2.0.0", &arm_key)
        .command(&arm_bundle)
        .program(&arm.qemu, [&arm.bin])
        .ok();
    let x86_bundle = BundleBuilder::new(&tree, "2.0.0", &x86_key).pack(&d.join("x86.hup"));

    // Each build verifies the other's signature.
    let out = arm
        .hup()
        .arg("verify")
        .arg(&x86_bundle)
        .arg("--key")
        .arg(&x86_pub)
        .ok();
    assert!(out.contains("OK (qemu-x86_64 2.0.0"), "{out}");
    let out = hup_ok(&["verify", p(&arm_bundle), "--key", p(&arm_pub)]);
    assert!(out.contains("OK (qemu-x86_64 2.0.0"), "{out}");
    // ...and refuses a key that did not sign.
    let o = arm
        .hup()
        .arg("verify")
        .arg(&x86_bundle)
        .arg("--key")
        .arg(&arm_pub)
        .run();
    assert!(!o.status.success(), "arm64 verify accepted the wrong key");
    let o = hup(&["verify", p(&arm_bundle), "--key", p(&x86_pub)]);
    assert!(!o.status.success(), "x86_64 verify accepted the wrong key");

    // pack is deterministic across architectures: same tree, same key, same bytes.
    let x86_same = BundleBuilder::new(&tree, "2.0.0", &arm_key).pack(&d.join("x86-arm-key.hup"));
    assert!(
        std::fs::read(&arm_bundle).unwrap() == std::fs::read(&x86_same).unwrap(),
        "the arm64 and x86_64 builds packed different bundles from one tree and key"
    );
}

#[test]
fn mkfs_under_arm64_is_clean_and_equals_the_x86_64_image() {
    let arm = arm64();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("root");
    small_tree(&tree);
    let tar = d.join("root.tar");
    sh(&format!(
        "tar --format=pax -C {} -cf {} .",
        p(&tree),
        p(&tar)
    ));

    let mkfs = |h: Hup, img: &Path| {
        h.arg("mkfs")
            .arg("--from")
            .arg(&tar)
            .args(["--size", "32M"])
            .arg(img)
            .ok()
    };
    let arm_img = d.join("arm.img");
    let out = mkfs(arm.hup(), &arm_img);
    assert!(
        out.contains("2 files") && out.contains("1 symlinks, 1 hard links"),
        "{out}"
    );
    assert_fsck_clean(&arm_img);
    let ls = run(Command::new("debugfs")
        .arg("-R")
        .arg("ls -l /usr/bin")
        .arg(&arm_img))
    .stdout;
    let ls = String::from_utf8_lossy(&ls);
    for name in ["tool", "tool2"] {
        assert!(ls.contains(&format!(" {name}")), "debugfs ls: {ls}");
    }
    let files = readback(&arm_img);
    assert_eq!(files["/usr/bin/tool"].links, 2);
    assert_eq!(
        files["/usr/os-release"].fast_link.as_deref(),
        Some("Fast link dest: \"../etc/os-release\"")
    );

    // Every path reads back as from the x86_64 build's image, but for the time of day
    // libext2fs gives /lost+found when it makes it.
    let x86_img = d.join("x86.img");
    mkfs(Hup::new(), &x86_img);
    let without_lpf_time = |mut m: std::collections::BTreeMap<String, Node>| {
        m.get_mut("/lost+found").unwrap().mtime.clear();
        m
    };
    assert_eq!(
        without_lpf_time(files),
        without_lpf_time(readback(&x86_img))
    );
}

/// `scripts/qemu-kernel [--arch A]`: the unpacked Debian cloud kernel package's root.
fn kernel_root(args: &[&str]) -> PathBuf {
    let out = run(Command::new(format!("{REPO}/scripts/qemu-kernel")).args(args)).stdout;
    let out = String::from_utf8(out).unwrap();
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("root="))
        .unwrap_or_else(|| panic!("no root= from qemu-kernel: {out}"));
    PathBuf::from(root)
}

fn cpio_names(cpio: &Path) -> Vec<String> {
    sh(&format!("cpio -it --quiet < {}", p(cpio)))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn mkinitramfs_takes_the_arm64_binary_and_debian_arm64_modules() {
    let arm = arm64();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = kernel_root(&["--arch", "aarch64"]);
    let list = format!("{REPO}/initramfs/modules-qemu-aarch64");
    let args = |out: &Path| -> Vec<String> {
        [
            "mkinitramfs",
            "-o",
            p(out),
            "--hup",
            p(&arm.bin),
            "--config",
            &format!("{REPO}/initramfs/system.json"),
            "--modules-from",
            p(&root),
            "--modules",
            &list,
        ]
        .map(str::to_string)
        .to_vec()
    };
    let out = d.join("initrd.cpio");
    hup_ok(&args(&out).iter().map(String::as_str).collect::<Vec<_>>());

    let wanted: Vec<String> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert_eq!(wanted.len(), 14, "{wanted:?}");
    let names = cpio_names(&out);
    assert!(names.contains(&"init".to_string()), "{names:?}");
    let modules: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("lib/modules/"))
        .collect();
    let mut sorted: Vec<String> = wanted.iter().map(|m| format!("{m}.ko")).collect();
    sorted.sort();
    assert_eq!(modules, sorted);

    // /init is the arm64 binary; the load order is the list's; the modules are arm64 objects.
    let x = d.join("x");
    std::fs::create_dir(&x).unwrap();
    sh(&format!(
        "cd {} && cpio -idm --quiet --nonmatching dev/console < {}",
        p(&x),
        p(&out)
    ));
    assert_eq!(
        std::fs::read(x.join("init")).unwrap(),
        std::fs::read(&arm.bin).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(x.join("etc/hup/modules")).unwrap(),
        wanted.join("\n") + "\n"
    );
    for m in &wanted {
        let ko = std::fs::read(x.join(format!("lib/modules/{m}.ko"))).unwrap();
        assert_eq!(elf_machine(&ko), EM_AARCH64, "{m}.ko");
    }

    // The arm64 build writes the same archive under emulation.
    let arm_out = d.join("initrd-arm.cpio");
    arm.hup().args(args(&arm_out)).ok();
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&arm_out).unwrap(),
        "the arm64 and x86_64 builds wrote different initramfs images"
    );

    // An arm64 /init with the x86_64 kernel's modules is refused, naming both.
    let x86_root = kernel_root(&[]);
    let ko = std::fs::read(
        std::fs::read_dir(x86_root.join("lib/modules"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("kernel/drivers/virtio/virtio_ring.ko"),
    )
    .unwrap();
    assert_eq!(elf_machine(&ko), EM_X86_64);
    let bad = d.join("bad.cpio");
    let err = Hup::with([
        "mkinitramfs",
        "-o",
        p(&bad),
        "--hup",
        p(&arm.bin),
        "--config",
        &format!("{REPO}/initramfs/system.json"),
        "--modules-from",
        p(&x86_root),
        "--modules",
        &format!("{REPO}/initramfs/modules-qemu-x86_64"),
    ])
    .err_line();
    assert!(
        err.contains("module virtio_ring")
            && err.contains("built for x86_64, the hup binary for aarch64"),
        "{err}"
    );
    assert!(!bad.exists());
}
