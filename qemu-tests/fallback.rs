//! The init's own fallbacks: a slot without /sbin/init makes it boot the other
//! slot in the same boot; with nothing bootable it reboots after a bounded wait
//! (PID 1 never exits, so the kernel never panics).

use std::time::Duration;

use crate::artifacts;
use crate::disk::{self, DiskSpec};
use crate::vm::{Vm, VmConfig};

#[test]
fn falls_back_to_the_other_slot_when_the_chosen_one_cannot_boot() {
    let a = artifacts::get();
    let dir = a.scratch("fallback-other-slot").unwrap();
    let (os1, os2) = (dir.join("os1"), dir.join("os2"));
    a.test_os("1", &os1, &["--cannot-boot"]).unwrap();
    a.test_os("2", &os2, &[]).unwrap();
    let img = disk::build(
        &dir.join("disk.img"),
        &DiskSpec {
            root_a: Some(&os1),
            root_b: Some(&os2),
            a_good: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut cfg = VmConfig::direct("fallback-other-slot", &a.vmlinuz, &a.initrd, &img.path);
    cfg.timeout = Duration::from_secs(90);
    cfg.net = false;
    let vm = Vm::start(&cfg).unwrap();
    vm.wait_for("HUP-OS-UP version=2 slot=b").unwrap();
    let out = vm.output();
    drop(vm);
    assert!(
        out.contains("hup: error: slot a: root /dev/vda2 (hup-root-a): the root has no /sbin/init"),
        "{out}"
    );
    assert!(out.contains("hup: warn: falling back to slot b"), "{out}");
    assert!(
        out.contains("hup: booting slot b from /dev/vda3 (hup-root-b)"),
        "{out}"
    );
}

#[test]
fn reboots_when_nothing_can_boot() {
    let a = artifacts::get();
    let dir = a.scratch("fallback-reboot").unwrap();
    let os1 = dir.join("os1");
    a.test_os("1", &os1, &["--cannot-boot"]).unwrap();
    // Slot B stays an empty filesystem.
    let img = disk::build(
        &dir.join("disk.img"),
        &DiskSpec {
            root_a: Some(&os1),
            a_good: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut cfg = VmConfig::direct("fallback-reboot", &a.vmlinuz, &a.initrd, &img.path);
    cfg.append.push_str(" hup.rebootdelay=1");
    cfg.timeout = Duration::from_secs(60);
    cfg.net = false;
    let vm = Vm::start(&cfg).unwrap();
    vm.wait_for("nothing bootable; rebooting in 1 s").unwrap();
    // -no-reboot: the guest's reboot ends QEMU.
    vm.wait_exit().unwrap();
    let out = vm.output();
    drop(vm);
    assert!(out.contains("hup: error: slot a:"), "{out}");
    assert!(out.contains("hup: error: slot b:"), "{out}");
    assert!(out.contains("reboot: Restarting system"), "{out}");
    assert!(!out.contains("Kernel panic"), "{out}");

    // The boot log of the failed boot is on the data partition.
    let log = String::from_utf8(
        img.read_ext4_file("hup-data", "/hup/log/boot-1.log")
            .unwrap(),
    )
    .unwrap();
    assert!(log.contains("no slot could be booted"), "{log}");
}
