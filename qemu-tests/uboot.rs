//! The uboot backend on aarch64 with the real U-Boot: `qemu-system-aarch64 -M virt` (TCG)
//! runs the test U-Boot (scripts/qemu-uboot), whose environment is redundant, in
//! `uboot.env` and `uboot-redund.env` on the FAT boot partition, as Raspberry Pi's U-Boot
//! keeps it. The devices are provisioned with `--boot-backend uboot`, the board's default
//! environment and the device's fw_env.config; U-Boot's `distro_bootcmd` finds hup's
//! `/boot.scr`, which walks `BOOT_ORDER`, counts the trial slot down with `setexpr` and
//! `saveenv`, and boots `/hup/<slot>/` with `booti`. The arm64 initramfs and the running
//! OS switch and commit through the same files with hup's FAT code, and after every step
//! the host's `fw_printenv` reads them from the image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hup::model::slot::{Slot, SlotStatus};

use crate::aarch64::{self, CONSOLE, uboot_env};
use crate::artifacts;
use crate::device::{Backend, BootOpts, Device};
use crate::rollback::{MAX_TRIES, expect_rolled_back, run_all_tries};
use crate::script::Script;
use crate::status::{backend, boot_slot, booted, next};
use crate::update::{expect_applied, expect_committed, expect_same_data, v1_stages};

/// The aarch64 bundle `name` of `device`; its command line points at the device's script
/// and ends with `extra`.
fn bundle(device: &str, name: &str, version: &str, flags: &[&str], extra: &str) -> PathBuf {
    let cmdline = format!(
        "{CONSOLE} panic=-1 quiet hup.test={} {extra}",
        Device::test_url(device)
    );
    aarch64::get().bundle(
        &format!("{device}-{name}"),
        version,
        flags,
        cmdline.trim_end(),
    )
}

fn url(device: &str, name: &str) -> String {
    artifacts::server().guest_url(&format!("bundles/{device}-{name}.hup"))
}

/// Asserts `want` in the device's environment as the host's `fw_printenv` reads it (`""`:
/// unset), and that the board's own variables are still there.
fn expect_env(dev: &Device, want: &[(&str, &str)]) -> BTreeMap<String, String> {
    let env = uboot_env(dev).unwrap();
    for (k, v) in want {
        assert_eq!(
            env.get(*k).map(String::as_str).unwrap_or(""),
            *v,
            "{k} in the U-Boot environment: {env:?}"
        );
    }
    assert_eq!(
        env.get("bootcmd").map(String::as_str),
        Some("run distro_bootcmd"),
        "the board's bootcmd is gone: {env:?}"
    );
    env
}

/// A provisioned aarch64 device, its v1 boot writing the user's files and staging `to`,
/// then the apply boot into slot b. Returns v1's boot.
fn stage_and_apply(dev: &mut Device, to_url: &str, version: &str) -> crate::device::Boot {
    let v1 = v1_stages(dev, "v1-stage", to_url);
    v1.expect("Loading Environment from FAT... OK");
    v1.expect("hup uboot: booting slot A");
    v1.expect("HUP-MARK-GOOD rc=0");
    if let Some(t) = v1.os_up_secs {
        eprintln!("boot time aarch64 uboot: power-on to OS up {t:.2} s");
    }
    let b = dev
        .boot(BootOpts::new(&format!("apply-v{version}")))
        .unwrap();
    expect_applied(&b, version, "b");
    b.expect("boot files: 3 files into hup/b");
    v1
}

#[test]
fn a_uboot_update_on_aarch64_commits_and_a_never_healthy_one_falls_back() {
    const DEV: &str = "uboot-update";
    let v1 = bundle(DEV, "v1", "1", &[], "");
    bundle(DEV, "v2", "2", &[], "");
    bundle(DEV, "v3-never-healthy", "3", &["--never-healthy"], "");
    let mut dev = Device::provision(DEV, &v1, Backend::Uboot).unwrap();
    expect_env(
        &dev,
        &[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
    );

    let b1 = stage_and_apply(&mut dev, &url(DEV, "v2"), "2");
    let st = &b1.statuses()[0];
    assert_eq!(backend(st), "uboot", "{st:#?}");
    assert_eq!(boot_slot(st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    // The initramfs switched through hup's FAT code: slot b on trial with all its tries.
    expect_env(
        &dev,
        &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_B_LEFT", "3"),
            ("BOOT_A_LEFT", "3"),
            ("HUP_TRIAL", "B"),
        ],
    );

    // U-Boot counts the try down and saves it before it loads the kernel; v2 commits.
    let b = dev
        .boot(
            BootOpts::new("v2-stage-v3").script(
                Script::new()
                    .status()
                    .print_user_data()
                    .stage(&url(DEV, "v3-never-healthy"))
                    .reboot(),
            ),
        )
        .unwrap();
    b.expect("hup uboot: booting slot B");
    b.expect("Saving Environment to FAT... OK");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    b.expect("HUP-STAGE rc=0");
    expect_committed(&b.statuses()[0], "2", "b");
    expect_same_data(&b1.data_sums(), &b);

    // v3 lands in slot a and never marks itself good.
    let b = dev.boot(BootOpts::new("apply-v3")).unwrap();
    expect_applied(&b, "3", "a");
    expect_env(
        &dev,
        &[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("HUP_TRIAL", "A"),
        ],
    );
    run_all_tries(&mut dev, "3", "a", |n, b, st| {
        b.expect("hup uboot: booting slot A");
        b.expect_not("HUP-MARK-GOOD");
        assert_eq!(booted(st).slot, Slot::A, "{st:#?}");
        assert_eq!(
            booted(st).tries_left.map(u64::from),
            Some(MAX_TRIES - n),
            "{st:#?}"
        );
    });
    // U-Boot's counter is at 0: its script skips slot a.
    expect_env(&dev, &[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "0")]);

    let b = dev
        .boot(
            BootOpts::new("v2-again").script(
                Script::new()
                    .status()
                    .print_apply_logs()
                    .print_user_data()
                    .poweroff(),
            ),
        )
        .unwrap();
    b.expect("hup uboot: booting slot B");
    b.expect_os("2", "b");
    b.expect("hup: warn: rolled back:");
    expect_rolled_back(&b, "3", "a", "did not confirm itself");
    let env = expect_env(&dev, &[("BOOT_A_LEFT", "0"), ("HUP_TRIAL", "")]);
    assert_eq!(
        env["BOOT_ORDER"].split_whitespace().next(),
        Some("B"),
        "{env:?}"
    );
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
    dev.fsck("hup-root-b").unwrap();
}

#[test]
fn a_power_cut_right_after_the_uboot_boot_switch_ends_committed() {
    const DEV: &str = "uboot-powercut";
    // v1's initramfs applies v2: the failpoint rides on v1's kernel command line.
    let v1 = bundle(DEV, "v1-failpoint", "1", &[], "hup.failpoint=switch-boot");
    bundle(DEV, "v2", "2", &[], "");
    let mut dev = Device::provision(DEV, &v1, Backend::Uboot).unwrap();
    let b1 = v1_stages(&mut dev, "v1-stage", &url(DEV, "v2"));
    b1.expect("hup: failpoint switch-boot armed");

    let b = dev.boot(BootOpts::new("cut-switch-boot")).unwrap();
    b.expect("step switch-boot: done");
    b.expect("hup: warn: failpoint switch-boot: ");
    b.expect("Kernel panic");
    assert!(b.os_up().is_none(), "an OS came up despite the cut");
    // The switch is on the disk, in both copies' newest: slot b on trial, a good behind it.
    expect_env(
        &dev,
        &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
            ("HUP_TRIAL", "B"),
        ],
    );
    let st = dev.host_status().unwrap();
    assert_eq!(next(&st), Some(Slot::B), "{st:#?}");
    assert_eq!(boot_slot(&st, Slot::A).status, SlotStatus::Good, "{st:#?}");

    // U-Boot boots slot b (one try), whose initramfs finishes the journaled apply.
    let b = dev.boot(BootOpts::new("resume")).unwrap();
    b.expect("hup uboot: booting slot B");
    b.expect("resuming the apply of 2 into slot b");
    b.expect("step switch-boot: done before, skipping");
    b.expect("rebooting: 2 written to slot b, trying it next");
    b.expect_not("Kernel panic");
    let b = dev
        .boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect("hup uboot: booting slot B");
    b.expect_os("2", "b");
    expect_committed(&b.status(), "2", "b");
    expect_env(
        &dev,
        &[
            ("BOOT_ORDER", "B A"),
            ("BOOT_B_LEFT", "3"),
            ("HUP_TRIAL", ""),
        ],
    );
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
    dev.fsck("hup-root-b").unwrap();
}
