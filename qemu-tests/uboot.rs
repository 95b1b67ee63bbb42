//! The uboot backend on aarch64 with the real U-Boot: `qemu-system-aarch64 -M virt` (TCG)
//! runs the test U-Boot (scripts/qemu-uboot), whose environment is redundant, in
//! `uboot.env` and `uboot-redund.env` on the FAT boot partition, as Raspberry Pi's U-Boot
//! keeps it. The devices are provisioned with `--boot-backend uboot`, the board's default
//! environment and the device's fw_env.config; U-Boot's `distro_bootcmd` finds hup's
//! `/boot.scr`, which walks `BOOT_ORDER`, counts the trial slot down with `setexpr` and
//! `saveenv`, and boots `/hup/<slot>/` with `booti`. The arm64 initramfs and the running
//! OS switch and commit through the same files with hup's FAT code, and after every step
//! the host's `fw_printenv` reads them from the image. The helpers and the power-cut
//! scenario are [`crate::loader`]'s, shared with `grub`.

use std::path::PathBuf;

use hup::model::slot::{Slot, SlotStatus};

use crate::aarch64::{self, CONSOLE, uboot_env};
use crate::device::{Backend, BootOpts, Device};
use crate::loader::{Loader, url};
use crate::rollback::{MAX_TRIES, expect_rolled_back, run_all_tries};
use crate::script::Script;
use crate::status::{backend, boot_slot, booted};
use crate::update::{expect_applied, expect_committed, expect_same_data};

/// U-Boot as [`crate::loader`]'s scenarios see it: the state in the redundant environment,
/// read on the host with `fw_printenv`; `BOOT_<S>_LEFT` counts a slot's tries, `HUP_TRIAL`
/// names the slot on trial, and the board's `bootcmd` must survive every write.
const UBOOT: Loader = Loader {
    backend: Backend::Uboot,
    make_bundle: bundle,
    booting: ["hup uboot: booting slot A", "hup uboot: booting slot B"],
    v1_lines: &["Loading Environment from FAT... OK"],
    read_env: uboot_env,
    env_name: "U-Boot environment",
    kept: &[("bootcmd", "run distro_bootcmd")],
    switched_to_b: &[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "3"),
        ("HUP_TRIAL", "B"),
    ],
    committed_b: &[
        ("BOOT_ORDER", "B A"),
        ("BOOT_B_LEFT", "3"),
        ("HUP_TRIAL", ""),
    ],
};

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

#[test]
fn a_uboot_update_on_aarch64_commits_and_a_never_healthy_one_falls_back() {
    const DEV: &str = "uboot-update";
    let v1 = UBOOT.bundle(DEV, "v1", "1", &[]);
    UBOOT.bundle(DEV, "v2", "2", &[]);
    UBOOT.bundle(DEV, "v3-never-healthy", "3", &["--never-healthy"]);
    let mut dev = Device::provision(DEV, &v1, Backend::Uboot).unwrap();
    UBOOT.expect_env(
        &dev,
        &[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "0"),
        ],
    );

    let b1 = UBOOT.stage_and_apply(&mut dev, &url(DEV, "v2"), "2");
    let st = &b1.statuses()[0];
    assert_eq!(backend(st), "uboot", "{st:#?}");
    assert_eq!(boot_slot(st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    // The initramfs switched through hup's FAT code: slot b on trial with all its tries.
    UBOOT.expect_env(&dev, UBOOT.switched_to_b);

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
    UBOOT.expect_env(
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
    UBOOT.expect_env(&dev, &[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "0")]);

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
    let env = UBOOT.expect_env(&dev, &[("BOOT_A_LEFT", "0"), ("HUP_TRIAL", "")]);
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
    UBOOT.power_cut_right_after_the_boot_switch("uboot-powercut");
}
