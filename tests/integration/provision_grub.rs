//! `hup provision --boot-backend grub` and the apply's GRUB snippets on disk images, read
//! back with mtools and `grub-editenv`; GRUB itself runs in the QEMU tests (qemu-tests/grub.rs).

use std::path::{Path, PathBuf};

use crate::support::bundle::BundleBuilder;
use crate::support::disk::{assert_fsck_fat_clean, mcopy_out, mdir_tree, mtype, ok};
use crate::support::image::*;
use crate::support::runner::Hup;
use crate::support::{hup, hup_ok, make_rootfs, p};
use hup::boot::grub_script;

/// Byte offset of the boot partition.
fn esp(img: &Path) -> u64 {
    part(img, "hup-boot").0
}

/// `grub-editenv FILE list` of the block `/EFI/hup/grubenv`, one variable a line, sorted.
fn editenv_list(img: &Path) -> Vec<String> {
    let out = img.with_extension("grubenv");
    let block = mcopy_out(img, esp(img), "/EFI/hup/grubenv", &out);
    assert_eq!(block.len(), 1024);
    let mut v: Vec<String> = ok("grub-editenv", &[p(&out), "list"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn has(list: &[String], var: &str) -> bool {
    list.iter().any(|l| l == var)
}

/// A bundle of `v` whose boot payload's `cmdline` is `cmdline`.
fn bundle_with_cmdline(w: &World, v: &str, cmdline: &str) -> PathBuf {
    let root = w.dir.join(format!("rootfs-{v}"));
    if !root.exists() {
        make_rootfs(&root, v);
    }
    let boot = w.dir.join(format!("boot-cmdline-{v}"));
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz"), format!("kernel {v}")).unwrap();
    std::fs::write(boot.join("initrd"), format!("initrd {v}")).unwrap();
    std::fs::write(boot.join("cmdline"), cmdline).unwrap();
    BundleBuilder::new(&root, v, &w.key)
        .boot(&boot)
        .compatible(COMPATIBLE)
        .level(1)
        .pack(&w.dir.join(format!("cmdline-{v}.hup")))
}

#[test]
fn provision_with_grub_installs_a_small_image_the_script_and_the_block() {
    let w = World::new();
    let img = w.provision("grub.img", "1.0.0", "grub", &[]);
    let off = esp(&img);
    let tree = mdir_tree(&img, off).join("\n");
    for f in [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/hup/grub.cfg",
        "EFI/hup/grubenv",
        "EFI/hup/slot-a.cfg",
        "hup/a/vmlinuz",
        "hup/a/initrd",
    ] {
        assert!(tree.contains(f), "{f} missing:\n{tree}");
    }
    // A made image reads the script through its prefix: no stub.
    assert!(!tree.contains("EFI/BOOT/grub.cfg"), "{tree}");
    let efi = mcopy_out(&img, off, "/EFI/BOOT/BOOTX64.EFI", &w.dir.join("boot.efi"));
    assert_eq!(&efi[..2], b"MZ");
    // Only the needed modules: grub-mkstandalone's image with all of them is about 10 MB.
    assert!(efi.len() < 1 << 20, "{} bytes", efi.len());
    let text = String::from_utf8_lossy(&efi);
    assert!(text.contains("/EFI/hup"), "prefix missing");

    assert_eq!(
        mtype(&img, off, "/EFI/hup/grub.cfg"),
        grub_script::script("/EFI/hup/grubenv").unwrap()
    );
    assert_eq!(
        mtype(&img, off, "/EFI/hup/slot-a.cfg")
            .lines()
            .skip(1)
            .collect::<Vec<_>>(),
        [
            "linux /hup/a/vmlinuz 'root=PARTLABEL=hup-root-a' 'hup.slot=a' 'console=ttyS0'",
            "initrd /hup/a/initrd",
        ]
    );
    // Slot A good and first, slot B not bootable.
    let env = editenv_list(&img);
    for var in ["ORDER=A B", "A_OK=1", "B_OK=0"] {
        assert!(has(&env, var), "{var}: {env:?}");
    }
    assert!(
        !env.iter()
            .any(|l| l.starts_with("A_LEFT=") && l != "A_LEFT="),
        "{env:?}"
    );
    // The device configuration names the backend.
    let config = std::fs::read_to_string(format!("{}.data/system.json", p(&img))).unwrap();
    assert!(config.contains("\"boot_backend\": \"grub\""), "{config}");
    assert_fsck_fat_clean(&img, &w.dir);
}

#[test]
fn an_apply_with_grub_writes_the_slot_snippet_and_puts_the_slot_on_trial() {
    let w = World::new();
    let img = w.provision("grub.img", "1.0.0", "grub", &[]);
    let off = esp(&img);
    let a_range = part(&img, "hup-root-a");
    let a_before = range_sha(&img, a_range);
    let out = hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    assert!(out.contains("applied 2.0.0 to slot b"), "{out}");
    assert_eq!(range_sha(&img, a_range), a_before, "slot A changed");
    let snippet = mtype(&img, off, "/EFI/hup/slot-b.cfg");
    assert!(
        snippet.contains(
            "linux /hup/b/vmlinuz 'root=PARTLABEL=hup-root-b' 'hup.slot=b' 'console=ttyS0'\ninitrd /hup/b/initrd\n"
        ),
        "{snippet}"
    );
    assert!(mtype(&img, off, "/hup/b/vmlinuz").starts_with("kernel 2.0.0"));
    let env = editenv_list(&img);
    for var in ["ORDER=B A", "A_OK=1", "B_OK=1", "B_LEFT=3"] {
        assert!(has(&env, var), "{var}: {env:?}");
    }
    assert_fsck_fat_clean(&img, &w.dir);
}

#[test]
fn a_command_line_grub_cannot_pass_on_is_refused_before_any_write() {
    let w = World::new();
    let img = w.provision("grub.img", "1.0.0", "grub", &[]);
    let before = file_sha(&img);
    let bad = bundle_with_cmdline(&w, "2.0.0", "console=ttyS0 init=\"/sbin/x\"\n");
    let o = hup(&w.apply_args(&img, &bad));
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let err = stderr.lines().last().unwrap_or("");
    assert!(
        err.starts_with("hup: error: step preflight: the boot payload's cmdline: ")
            && err.contains("GRUB would pass it on as \\\""),
        "{stderr}"
    );
    assert_eq!(file_sha(&img), before, "the image changed");
    // Provisioning with it fails as well, and the same cmdline is fine for systemd-boot.
    let bundle = p(&bad);
    let key = p(&w.pubkey);
    let o = hup(&[
        "provision",
        "--bundle",
        bundle,
        "--key",
        key,
        "--size",
        "300M",
        "--slot-size",
        "64M",
        "--boot-size",
        "40M",
        "--boot-backend",
        "grub",
        p(&w.dir.join("x.img")),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("grub backend refuses"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!w.dir.join("x.img").exists(), "the disk was touched");
}

#[test]
fn provision_with_a_given_grub_image_installs_it_with_a_stub_next_to_it() {
    let w = World::new();
    let given = w.dir.join("grubx64.efi");
    std::fs::write(&given, b"MZ a signed GRUB image stands here").unwrap();
    let img = w.provision("given.img", "1.0.0", "grub", &["--grub-efi", p(&given)]);
    let off = esp(&img);
    assert_eq!(
        mcopy_out(&img, off, "/EFI/BOOT/BOOTX64.EFI", &w.dir.join("out.efi")),
        std::fs::read(&given).unwrap()
    );
    assert_eq!(mtype(&img, off, "/EFI/BOOT/grub.cfg"), grub_script::stub());
    assert!(grub_script::stub().contains("source /EFI/hup/grub.cfg"));
    assert_eq!(
        mtype(&img, off, "/EFI/hup/grub.cfg"),
        grub_script::script("/EFI/hup/grubenv").unwrap()
    );
}

#[test]
fn provision_says_in_one_line_what_grub_needs() {
    let w = World::new();
    let bundle = w.bundle("1.0.0");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "provision",
            "--bundle",
            p(&bundle),
            "--key",
            p(&w.pubkey),
            "--size",
            "300M",
            "--slot-size",
            "64M",
            "--boot-size",
            "40M",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(p(&w.dir.join("x.img")).to_string());
        v
    };
    // No grub-mkimage on the PATH.
    let empty = w.dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let err = Hup::with(args(&["--boot-backend", "grub"]))
        .env("PATH", p(&empty))
        .err_line();
    assert!(
        err.contains("grub-mkimage not found: install grub-common"),
        "{err}"
    );
    // No modules.
    let err = Hup::with(args(&[
        "--boot-backend",
        "grub",
        "--grub-modules",
        p(&empty),
    ]))
    .err_line();
    assert!(
        err.contains("no GRUB x86_64-efi modules in") && err.contains("grub-efi-amd64-bin"),
        "{err}"
    );
    // GRUB options with another backend.
    let err = Hup::with(args(&[
        "--boot-backend",
        "systemd-boot",
        "--grub-efi",
        p(&bundle),
    ]))
    .err_line();
    assert!(
        err.contains("--grub-efi needs --boot-backend grub"),
        "{err}"
    );
    let err = Hup::with(args(&[
        "--boot-backend",
        "grub",
        "--systemd-boot-efi",
        p(&bundle),
    ]))
    .err_line();
    assert!(
        err.contains("--systemd-boot-efi needs --boot-backend systemd-boot"),
        "{err}"
    );
}

#[test]
fn an_oversized_cmdline_is_refused_before_any_write() {
    let w = World::new();
    let img = w.provision("grub.img", "1.0.0", "grub", &[]);
    let before = file_sha(&img);
    let long = format!("console=ttyS0 {}", "x".repeat(64 << 10));
    let bad = bundle_with_cmdline(&w, "2.0.0", &long);
    let o = hup(&w.apply_args(&img, &bad));
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let err = stderr.lines().last().unwrap_or("");
    assert!(
        err.starts_with(
            "hup: error: step preflight: the boot payload's cmdline is over 65536 bytes"
        ),
        "{stderr}"
    );
    assert_eq!(file_sha(&img), before, "the image changed");
}
