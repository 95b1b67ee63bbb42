//! `hup mkinitramfs` through the real binary, checked with the system `cpio` tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::runner::{HUP, Hup};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// A static executable that is always there (busybox-static, scripts/install-deps).
const STATIC_EXE: &str = "/bin/busybox";

fn hup(args: &[&str]) -> Output {
    Hup::with(args).run()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `e_machine` of x86_64, the architecture of [`STATIC_EXE`].
const EM_X86_64: u16 = 62;

/// A fake kernel module: an ELF64 relocatable header for `machine` (what mkinitramfs checks
/// against the binary's), then `body`.
fn fake_ko(machine: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 64];
    v[..6].copy_from_slice(b"\x7fELF\x02\x01");
    v[6] = 1; // EI_VERSION
    v[0x10..0x12].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    v[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// A fake kernel package: lib/modules/6.1.0-test/{kernel/**.ko, modules.builtin}.
fn fake_modules(root: &Path) -> PathBuf {
    let m = root.join("kmod/lib/modules/6.1.0-test");
    for (rel, body) in [
        ("kernel/drivers/virtio/virtio_ring.ko", b"ring".as_slice()),
        ("kernel/drivers/virtio/virtio.ko", b"virtio"),
        ("kernel/drivers/block/virtio_blk.ko", b"blk"),
        ("kernel/arch/x86/crypto/crc32c-intel.ko", b"crc"),
    ] {
        let p = m.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, fake_ko(EM_X86_64, body)).unwrap();
    }
    // A zstd-compressed module is stored decompressed.
    let zst = zstd::encode_all(fake_ko(EM_X86_64, b"fat module").as_slice(), 3).unwrap();
    std::fs::create_dir_all(m.join("kernel/fs/fat")).unwrap();
    std::fs::write(m.join("kernel/fs/fat/fat.ko.zst"), zst).unwrap();
    std::fs::write(m.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    root.join("kmod")
}

struct Inputs {
    _dir: tempfile::TempDir,
    args: Vec<String>,
    root: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let kmod = fake_modules(&root);
    let list = root.join("modules");
    std::fs::write(
        &list,
        "# order matters\nvirtio_ring\nvirtio\nvirtio_blk\ncrc32c_intel\next4\nfat\n",
    )
    .unwrap();
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("a.pub"), "untrusted comment: a\nRWQ...\n").unwrap();
    std::fs::write(keys.join("b.pub"), "untrusted comment: b\nRWQ...\n").unwrap();
    std::fs::write(keys.join("notes.txt"), "not a key").unwrap();
    let args = vec![
        "--hup".into(),
        STATIC_EXE.into(),
        "--config".into(),
        format!("{REPO}/initramfs/system.json"),
        "--modules-from".into(),
        kmod.display().to_string(),
        "--modules".into(),
        list.display().to_string(),
        "--keys".into(),
        keys.display().to_string(),
    ];
    Inputs {
        _dir: dir,
        args,
        root,
    }
}

fn build(inp: &Inputs, out: &Path) -> Output {
    let mut args = vec!["mkinitramfs", "-o", out.to_str().unwrap()];
    args.extend(inp.args.iter().map(String::as_str));
    hup(&args)
}

#[test]
fn cpio_lists_extracts_and_is_reproducible() {
    let inp = inputs();
    let out1 = inp.root.join("initrd1.cpio");
    let out2 = inp.root.join("initrd2.cpio");
    let o = build(&inp, &out1);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("ext4 is built into the kernel"),
        "{}",
        text(&o)
    );
    let o = build(&inp, &out2);
    assert!(o.status.success(), "{}", text(&o));
    let (b1, b2) = (std::fs::read(&out1).unwrap(), std::fs::read(&out2).unwrap());
    assert_eq!(b1, b2, "two runs gave different bytes");
    assert_eq!(b1.len() % 512, 0);

    // cpio -itv lists every member, with fixed owners and mtimes.
    let list = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -itv < {}", out1.display()))
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list));
    let listing = String::from_utf8(list.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "etc",
            "etc/hup",
            "etc/hup/keys",
            "etc/hup/keys/a.pub",
            "etc/hup/keys/b.pub",
            "etc/hup/modules",
            "etc/hup/system.json",
            "init",
            "lib",
            "lib/modules",
            "lib/modules/crc32c_intel.ko",
            "lib/modules/fat.ko",
            "lib/modules/virtio.ko",
            "lib/modules/virtio_blk.ko",
            "lib/modules/virtio_ring.ko",
            "proc",
            "run",
            "sys",
        ]
    );
    for l in listing.lines() {
        assert!(l.contains(" root     root "), "owner not root: {l}");
        assert!(l.contains("1970"), "mtime not zero: {l}");
    }
    let console = listing
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(console.contains("5,   1"), "{console}");
    let init = listing.lines().find(|l| l.ends_with(" init")).unwrap();
    assert!(init.starts_with("-rwxr-xr-x"), "{init}");

    // cpio -idm extracts it (the device node is left out: creating it needs root).
    let x = inp.root.join("x");
    std::fs::create_dir_all(&x).unwrap();
    let ex = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cpio -idm --nonmatching 'dev/console' < {}",
            out1.display()
        ))
        .current_dir(&x)
        .output()
        .unwrap();
    assert!(ex.status.success(), "{}", text(&ex));
    assert_eq!(
        std::fs::read(x.join("init")).unwrap(),
        std::fs::read(STATIC_EXE).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(x.join("etc/hup/modules")).unwrap(),
        "virtio_ring\nvirtio\nvirtio_blk\ncrc32c_intel\nfat\n"
    );
    assert_eq!(
        std::fs::read(x.join("lib/modules/crc32c_intel.ko")).unwrap(),
        fake_ko(EM_X86_64, b"crc")
    );
    assert_eq!(
        std::fs::read(x.join("lib/modules/fat.ko")).unwrap(),
        fake_ko(EM_X86_64, b"fat module")
    );
    assert_eq!(
        std::fs::read(x.join("etc/hup/system.json")).unwrap(),
        std::fs::read(format!("{REPO}/initramfs/system.json")).unwrap()
    );
    assert!(!x.join("etc/hup/keys/notes.txt").exists());
}

#[test]
fn refuses_dynamic_binary_and_unknown_module() {
    let inp = inputs();
    let out = inp.root.join("initrd.cpio");
    // The test build of hup is dynamically linked (glibc): not usable as /init.
    let mut args: Vec<String> = inp.args.clone();
    args[1] = HUP.to_string();
    let mut a = vec!["mkinitramfs", "-o", out.to_str().unwrap()];
    a.extend(args.iter().map(String::as_str));
    let o = hup(&a);
    assert!(!o.status.success());
    assert!(text(&o).contains("dynamically linked"), "{}", text(&o));
    assert!(!out.exists());

    std::fs::write(inp.root.join("modules"), "virtio\nno_such_driver\n").unwrap();
    let o = build(&inp, &out);
    assert!(!o.status.success());
    assert!(text(&o).contains("module no_such_driver"), "{}", text(&o));
    assert!(!out.exists());

    // A broken config is refused before anything is written.
    let bad = inp.root.join("bad.json");
    std::fs::write(&bad, r#"{"compatible":"x","boot_backend":"lilo"}"#).unwrap();
    let o = hup(&[
        "mkinitramfs",
        "-o",
        out.to_str().unwrap(),
        "--hup",
        STATIC_EXE,
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("lilo"), "{}", text(&o));
}

#[test]
fn refuses_modules_of_another_architecture_and_non_elf_modules() {
    let inp = inputs();
    let out = inp.root.join("initrd.cpio");
    let blk = inp
        .root
        .join("kmod/lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko");
    // /init is x86_64 (busybox); an aarch64 module cannot be loaded by its kernel.
    std::fs::write(&blk, fake_ko(183, b"blk")).unwrap();
    let o = build(&inp, &out);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("module virtio_blk")
            && text(&o).contains("built for aarch64, the hup binary for x86_64"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    std::fs::write(&blk, b"not a module").unwrap();
    let o = build(&inp, &out);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("module virtio_blk") && text(&o).contains("not an ELF file"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
}

#[test]
fn minimal_initramfs_without_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("i.cpio");
    let o = hup(&[
        "mkinitramfs",
        "-o",
        out.to_str().unwrap(),
        "--hup",
        STATIC_EXE,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no /etc/hup/system.json"), "{}", text(&o));
    let list = Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -it < {}", out.display()))
        .output()
        .unwrap();
    let names = String::from_utf8(list.stdout).unwrap();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "dev",
            "dev/console",
            "etc",
            "etc/hup",
            "init",
            "lib",
            "lib/modules",
            "proc",
            "run",
            "sys"
        ]
    );
}
