//! The update and the rollback of an update that never confirms itself, on OVMF +
//! systemd-boot. The devices are provisioned with
//! `--boot-backend systemd-boot`; each bundle's boot payload holds `vmlinuz`, `initrd` (the
//! initramfs with the systemd-boot configuration) and `cmdline`, which the apply writes to
//! `/hup/<slot>/` on the ESP with the entry `hup-<slot>+N-0.conf`. systemd-boot counts the
//! tries by renaming the entry. Each device has its own copy of the OVMF variables.

use hup::model::slot::{Slot, SlotStatus};

use crate::artifacts::{self, BootPayload, OsSpec};
use crate::device::{Backend, BootOpts, Device};
use crate::rollback::{MAX_TRIES, expect_rolled_back, run_all_tries};
use crate::script::Script;
use crate::status::{backend, boot_slot};
use crate::update::{expect_applied, expect_committed, expect_same_data, v1_stages};

/// A systemd-boot test OS bundle for `device` (its `cmdline` points at the device's script).
fn sb_bundle(device: &str, name: &str, version: &str, flags: &[&str]) -> std::path::PathBuf {
    let cmdline = format!(
        "console=ttyS0 panic=-1 quiet hup.test={}",
        Device::test_url(device)
    );
    artifacts::get().bundle(&OsSpec {
        name: format!("{device}-{name}"),
        version: version.to_string(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        boot: BootPayload::SystemdBoot(cmdline),
    })
}

#[test]
fn a_systemd_boot_update_boots_the_new_slot_committed() {
    const DEV: &str = "sb-update";
    let v1 = sb_bundle(DEV, "v1", "1", &[]);
    sb_bundle(DEV, "v2", "2", &[]);
    let url = artifacts::server().guest_url(&format!("bundles/{DEV}-v2.hup"));
    let mut dev = Device::provision(DEV, &v1, Backend::SystemdBoot).unwrap();

    let b = v1_stages(&mut dev, "v1-stage-v2", &url);
    b.expect("HUP-MARK-GOOD rc=0");
    let st = &b.statuses()[0];
    assert_eq!(backend(st), "systemd-boot", "{st:#?}");
    assert_eq!(
        boot_slot(st, Slot::A).entry.as_deref(),
        Some("hup-a.conf"),
        "{st:#?}"
    );
    let sums = b.data_sums();

    let b = dev.boot(BootOpts::new("apply-v2")).unwrap();
    expect_applied(&b, "2", "b");
    b.expect("boot files: 3 files into hup/b");

    let b = dev
        .boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    let st = b.status();
    expect_committed(&st, "2", "b");
    // mark-good renamed the counted entry to a plain one; slot a stays the fallback.
    assert_eq!(
        boot_slot(&st, Slot::B).entry.as_deref(),
        Some("hup-b.conf"),
        "{st:#?}"
    );
    assert_eq!(boot_slot(&st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    expect_same_data(&sums, &b);
    dev.fsck("hup-data").unwrap();
}

#[test]
fn a_systemd_boot_update_that_never_marks_itself_good_rolls_back() {
    const DEV: &str = "sb-rollback";
    let v1 = sb_bundle(DEV, "v1", "1", &[]);
    sb_bundle(DEV, "v2-never-healthy", "2", &["--never-healthy"]);
    let url = artifacts::server().guest_url(&format!("bundles/{DEV}-v2-never-healthy.hup"));
    let mut dev = Device::provision(DEV, &v1, Backend::SystemdBoot).unwrap();

    let b = v1_stages(&mut dev, "v1-stage-v2", &url);
    let sums = b.data_sums();
    let b = dev.boot(BootOpts::new("apply-v2")).unwrap();
    expect_applied(&b, "2", "b");

    // No try left after the last: systemd-boot sorts the entry last, slot a boots next.
    run_all_tries(&mut dev, "2", "b", |n, _, st| {
        // systemd-boot renamed the entry before starting the kernel.
        let entry = format!("hup-b+{}-{n}.conf", MAX_TRIES - n);
        assert_eq!(
            boot_slot(st, Slot::B).entry.as_deref(),
            Some(entry.as_str()),
            "{st:#?}"
        );
    });

    let b = dev
        .boot(
            BootOpts::new("v1-again").script(
                Script::new()
                    .status()
                    .print_apply_logs()
                    .print_user_data()
                    .poweroff(),
            ),
        )
        .unwrap();
    b.expect_os("1", "a");
    b.expect("hup: warn: rolled back:");
    expect_rolled_back(&b, "2", "b", "did not confirm itself");
    let st = b.status();
    assert_eq!(
        boot_slot(&st, Slot::A).entry.as_deref(),
        Some("hup-a.conf"),
        "{st:#?}"
    );
    expect_same_data(&sums, &b);
    dev.fsck("hup-data").unwrap();
}
