//! The offline apply on disk images: provision, apply, every refusal before the first write.

use std::path::Path;

use crate::support::bundle::BundleBuilder;
use crate::support::image::*;
use crate::support::*;
use hup::boot;
use hup::model::config::Labels;
use hup::model::slot::{Slot, SlotStatus};

fn backend(img: &Path, name: &str) -> Box<dyn boot::BootBackend> {
    boot::open(name.parse().unwrap(), img, &Labels::default())
}

fn apply(w: &World, img: &Path, bundle: &Path) -> String {
    hup_ok(&[
        "apply",
        "--disk",
        p(img),
        "--bundle",
        p(bundle),
        "--key",
        p(&w.pubkey),
    ])
}

fn state(img: &Path) -> serde_json::Value {
    let s = std::fs::read(format!("{}.data/state.json", p(img))).unwrap();
    serde_json::from_slice(&s).unwrap()
}

#[test]
fn provision_each_backend() {
    let w = World::new();
    for backend_name in ["gpt", "systemd-boot"] {
        let img = w.provision(&format!("{backend_name}.img"), "1.0.0", backend_name, &[]);
        let table = sh(&format!("sgdisk -p {}", p(&img)));
        for label in ["hup-boot", "hup-root-a", "hup-root-b", "hup-data"] {
            assert!(table.contains(label), "{table}");
        }
        sh(&format!("sgdisk -v {}", p(&img)));
        assert_eq!(
            ext4_listing(&img, "hup-root-a"),
            listing(&w.dir.join("rootfs-1.0.0"))
        );
        // The slot carries its fingerprint, and the slot matches it.
        with_ext4(&img, "hup-root-a", |mnt| {
            hup_ok(&["fingerprint", "check", "--root", p(mnt)]);
        });
        let st: serde_json::Value = with_ext4(&img, "hup-data", |data| {
            assert!(data.join("hup/staged").is_dir() && data.join("hup/log").is_dir());
            serde_json::from_slice(&std::fs::read(data.join("hup/state.json")).unwrap()).unwrap()
        });
        assert_eq!(st["slot_a"]["version"], "1.0.0");
        let (start, _) = part(&img, "hup-boot");
        let esp = sh(&format!("mdir -i {}@@{} -/ ::", p(&img), start));
        assert!(esp.contains("vmlinuz") && esp.contains("initrd"), "{esp}");
        let b = backend(&img, backend_name);
        assert_eq!(b.active().unwrap(), Slot::A);
        assert_eq!(b.state().unwrap().slot(Slot::A).status, SlotStatus::Good);
        if backend_name == "systemd-boot" {
            assert!(
                esp.contains("BOOTX64.EFI") && esp.contains("hup-a.conf"),
                "{esp}"
            );
        }
    }
}

#[test]
fn apply_v2_then_v3_alternates_slots() {
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", "gpt", &[]);
    let a_range = part(&img, "hup-root-a");
    let a_before = range_sha(&img, a_range);

    let out = apply(&w, &img, &w.bundle("2.0.0"));
    assert!(out.contains("applied 2.0.0 to slot b"), "{out}");
    assert_eq!(range_sha(&img, a_range), a_before, "slot A changed");
    let b = backend(&img, "gpt");
    let st = b.state().unwrap();
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Trying);
    assert_eq!(st.slot(Slot::B).tries_left, Some(3));
    assert_eq!(b.active().unwrap(), Slot::B);
    assert_eq!(
        ext4_listing(&img, "hup-root-b"),
        listing(&w.dir.join("rootfs-2.0.0"))
    );
    let s = state(&img);
    assert_eq!(s["slot_b"]["version"], "2.0.0");
    assert_eq!(s["last_result"]["outcome"], "applied");
    let log = img
        .with_extension("img.data")
        .join(s["last_result"]["log"].as_str().unwrap());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("step populate: done"), "{log}");

    // v2 marks itself good; v3 then goes to slot A and B stays the fallback.
    b.mark_good(Slot::B).unwrap();
    let b_range = part(&img, "hup-root-b");
    let b_before = range_sha(&img, b_range);
    let out = apply(&w, &img, &w.bundle("3.0.0"));
    assert!(out.contains("applied 3.0.0 to slot a"), "{out}");
    assert_eq!(range_sha(&img, b_range), b_before, "slot B changed");
    let st = b.state().unwrap();
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Trying);
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Good);
    assert_eq!(
        ext4_listing(&img, "hup-root-a"),
        listing(&w.dir.join("rootfs-3.0.0"))
    );
}

#[test]
fn apply_with_systemd_boot_writes_entries() {
    let w = World::new();
    let img = w.provision("sdb.img", "1.0.0", "systemd-boot", &[]);
    let a_range = part(&img, "hup-root-a");
    let a_before = range_sha(&img, a_range);
    apply(&w, &img, &w.bundle("2.0.0"));
    assert_eq!(range_sha(&img, a_range), a_before);
    let (start, _) = part(&img, "hup-boot");
    let entries = sh(&format!(
        "mdir -i {}@@{} -b ::/loader/entries",
        p(&img),
        start
    ));
    assert!(entries.contains("hup-b+3-0.conf"), "{entries}");
    assert!(entries.contains("hup-a.conf"), "{entries}");
    let conf = sh(&format!(
        "mtype -i {}@@{} ::/loader/entries/hup-b+3-0.conf",
        p(&img),
        start
    ));
    assert!(
        conf.contains("hup.slot=b") && conf.contains("console=ttyS0"),
        "{conf}"
    );
    let kernel = sh(&format!("mtype -i {}@@{} ::/hup/b/vmlinuz", p(&img), start));
    assert!(kernel.starts_with("kernel 2.0.0"), "{kernel}");
}

/// Each refusal leaves every byte of the image as it was.
#[test]
fn refusals_write_nothing() {
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", "gpt", &[]);
    let before = file_sha(&img);
    let other = w.bundle_with("2.0.0", "other-device", &[]);
    let err = hup_fail(&w, &img, &other);
    assert!(
        err.contains("bundle is for device type \"other-device\""),
        "{err}"
    );

    // A bundle signed by a key the device does not trust.
    let (_, untrusted) = keygen(&w.dir, "stranger");
    let o = hup(&[
        "apply",
        "--disk",
        p(&img),
        "--bundle",
        p(&w.bundle("2.0.0")),
        "--key",
        p(&untrusted),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not trusted"));

    // A rootfs bigger than the 64 MiB slot.
    let big = w.dir.join("rootfs-big");
    make_rootfs(&big, "9.0");
    sh(&format!(
        "head -c 70000000 /dev/urandom > {}/big.bin",
        p(&big)
    ));
    let bundle = BundleBuilder::new(&big, "9.0", &w.key)
        .level(1)
        .pack(&w.dir.join("big.hup"));
    let err = hup_fail(&w, &img, &bundle);
    assert!(err.contains("more than slot b's partition"), "{err}");

    // Boot files bigger than the 40 MiB boot partition.
    let boot = w.dir.join("boot-big");
    std::fs::create_dir_all(&boot).unwrap();
    sh(&format!(
        "head -c 45000000 /dev/urandom > {}/vmlinuz",
        p(&boot)
    ));
    let bundle = BundleBuilder::new(&w.dir.join("rootfs-1.0.0"), "9.1", &w.key)
        .boot(&boot)
        .level(1)
        .pack(&w.dir.join("bigboot.hup"));
    let err = hup_fail(&w, &img, &bundle);
    assert!(err.contains("boot partition hup-boot has"), "{err}");

    // A bundle that needs a newer running version.
    let bundle = w.bundle_with("2.5.0", COMPATIBLE, &["--min-from-version", "1.5"]);
    let err = hup_fail(&w, &img, &bundle);
    assert!(err.contains("requires at least version 1.5"), "{err}");

    assert_eq!(file_sha(&img), before, "a refused apply changed the image");
    assert_eq!(state(&img)["last_result"]["outcome"], "failed");

    // A table whose hup-root-b entry points into hup-root-a (the field bug): refused.
    let (a_start, _) = part(&img, "hup-root-a");
    let mut g = gpt::GptConfig::new().writable(true).open(&img).unwrap();
    let mut parts = g.partitions().clone();
    let (_, b) = parts
        .iter_mut()
        .find(|(_, p)| p.name == "hup-root-b")
        .unwrap();
    b.first_lba = a_start / 512;
    b.last_lba = b.first_lba + 2047;
    g.update_partitions(parts).unwrap();
    g.write().unwrap();
    let before = file_sha(&img);
    let err = hup_fail(&w, &img, &w.bundle("2.0.0"));
    assert!(
        err.contains("hup-root-a") && err.contains("hup-root-b"),
        "{err}"
    );
    assert_eq!(file_sha(&img), before, "a refused apply changed the image");
}

fn hup_fail(w: &World, img: &Path, bundle: &Path) -> String {
    let o = hup(&[
        "apply",
        "--disk",
        p(img),
        "--bundle",
        p(bundle),
        "--key",
        p(&w.pubkey),
    ]);
    assert!(
        !o.status.success(),
        "apply of {} succeeded",
        bundle.display()
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    err.lines().last().unwrap_or("").to_string()
}

/// Boot directories are flat: a subdirectory in the target slot's directory stops the
/// `boot-files` step (before the boot switch) instead of being left behind.
#[test]
fn a_directory_in_the_slots_boot_files_is_refused() {
    let w = World::new();
    let img = w.provision("flat.img", "1.0.0", "gpt", &[]);
    {
        let d = hup::disk::Disk::open(&img).unwrap();
        let esp = hup::disk::Esp::open(d.open_partition("hup-boot").unwrap()).unwrap();
        esp.create_dir_all("hup/b/extra").unwrap();
        esp.close().unwrap();
    }
    let err = hup_fail(&w, &img, &w.bundle("2.0.0"));
    assert!(
        err.contains("step boot-files") && err.contains("hup/b/extra is a directory"),
        "{err}"
    );
    assert_eq!(backend(&img, "gpt").active().unwrap(), Slot::A);
}
