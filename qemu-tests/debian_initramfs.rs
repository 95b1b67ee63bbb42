//! A device that keeps its distribution's own initramfs (docs/initramfs-integration.md):
//! GRUB boots each slot's Debian kernel with the initrd made inside the image, by
//! `update-initramfs` with dist/initramfs-tools installed, or by `dracut` with
//! dist/dracut/90hup. Its premount hook runs `hup apply-pending`: nothing staged leaves the
//! Debian boot as it is; a staged v2 is applied (the same pipeline as hup's own `/init`)
//! before the root is mounted, the device reboots, and GRUB boots v2, which commits itself
//! through boot-complete.target.

use crate::artifacts;
use crate::debian::{self, DebianOs, opts};
use crate::device::{Backend, Device};
use crate::script::Script;
use crate::status::{backend, booted};
use crate::update::{expect_committed, expect_same_data};

/// Which initramfs generator made the initrd.
#[derive(Debug, Clone, Copy)]
enum Generator {
    InitramfsTools,
    Dracut,
}

/// A Debian OS with its own initrd as its grub boot payload.
fn spec(name: &str, base: &'static str, version: &str, device: &str, g: Generator) -> DebianOs {
    let flag = match g {
        Generator::InitramfsTools => "--initramfs-tools",
        Generator::Dracut => "--dracut",
    };
    let mut s = DebianOs::gpt(name, base, version, &[flag]);
    s.grub_cmdline = Some(format!(
        "console=ttyS0 panic=-1 quiet hup.test={}",
        Device::test_url(device)
    ));
    s
}

#[test]
fn debians_own_initrd_applies_a_staged_update_and_boots_it() {
    let v1 = spec(
        "deb-it-v1",
        "v1",
        "1",
        "deb-initramfs-tools",
        Generator::InitramfsTools,
    );
    let v2 = spec(
        "deb-it-v2",
        "v2",
        "2",
        "deb-initramfs-tools",
        Generator::InitramfsTools,
    );
    own_initrd_updates(&v1, &v2, "deb-initramfs-tools");
}

#[test]
fn a_dracut_initrd_applies_a_staged_update_and_boots_it() {
    let v1 = spec(
        "deb-dracut-v1",
        "dracut",
        "1",
        "deb-dracut",
        Generator::Dracut,
    );
    let v2 = spec(
        "deb-dracut-v2",
        "dracut",
        "2",
        "deb-dracut",
        Generator::Dracut,
    );
    own_initrd_updates(&v1, &v2, "deb-dracut");
}

/// v1 boots through its own initrd with nothing pending and stages v2; the next boot's
/// initrd applies v2 and reboots; v2 boots through its own initrd and commits.
fn own_initrd_updates(v1: &DebianOs, v2: &DebianOs, device: &str) {
    debian::bundle(v2);
    let url = artifacts::server().guest_url(&format!("bundles/{}.hup", v2.name));
    let mut dev = debian::provision(device, v1, Backend::Grub).unwrap();

    // Nothing staged: Debian's initrd boots v1 as usual.
    let b = dev
        .boot(
            opts("v1-stage-v2").script(
                Script::new()
                    .write_user_data()
                    .print_user_data()
                    .stage(&url)
                    .reboot(),
            ),
        )
        .unwrap();
    b.expect("hup: nothing pending");
    b.expect_not("hup: error");
    b.expect_os("1", "a");
    b.expect("HUP-MARK-GOOD rc=0");
    b.expect("HUP-STAGE rc=0");
    assert_eq!(backend(&b.status()), "grub", "{:#?}", b.status());
    let sums = b.data_sums();
    assert_eq!(sums.len(), 4, "{}", b.log.display());

    // The staged update: applied from Debian's local-premount, then a reboot.
    let b = dev.boot(opts("apply-in-debian-initrd")).unwrap();
    for step in [
        "preflight",
        "format",
        "populate",
        "boot-files",
        "switch-boot",
    ] {
        b.expect(&format!("step {step}: done"));
    }
    b.expect("rebooting: 2 written to slot b, trying it next");
    assert!(b.os_up().is_none(), "an OS came up during the apply boot");

    // GRUB boots v2 with v2's own kernel and initrd; it commits itself.
    let b = dev
        .boot(opts("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect("hup: nothing pending");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    let st = b.status();
    expect_committed(&st, "2", "b");
    assert_eq!(booted(&st).version.as_deref(), Some("2"), "{st:#?}");
    expect_same_data(&sums, &b);
    dev.fsck("hup-root-a").unwrap();
    dev.fsck("hup-root-b").unwrap();
    dev.fsck("hup-data").unwrap();
}
