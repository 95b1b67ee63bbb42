//! The grub backend on OVMF with the real GRUB: the devices are provisioned with
//! `--boot-backend grub`, so the loader is the GRUB image `hup provision` makes with
//! `grub-mkimage` from Debian's modules, running hup's script (`/EFI/hup/grub.cfg`), which
//! counts the tries down in the environment block `/EFI/hup/grubenv` with `save_env`. Each
//! bundle's boot payload holds `vmlinuz`, `initrd` (the initramfs with the grub
//! configuration) and `cmdline`; the apply writes them to `/hup/<slot>/` and the slot's
//! snippet `/EFI/hup/slot-<s>.cfg` last. `grub-editenv` reads the block on the host.
//! The helpers and the power-cut scenario are [`crate::loader`]'s, shared with `uboot`.
//!
//! Also here: power-on to OS-up times of GRUB and systemd-boot, measured the same way.

use std::path::PathBuf;

use hup::model::slot::{Slot, SlotStatus};

use crate::artifacts::{self, BootPayload, OsSpec};
use crate::device::{Backend, BootOpts, Device};
use crate::loader::{Loader, url};
use crate::rollback::{MAX_TRIES, expect_rolled_back, run_all_tries};
use crate::script::Script;
use crate::status::{backend, boot_slot, booted};
use crate::update::{expect_applied, expect_committed, expect_same_data};

/// GRUB as [`crate::loader`]'s scenarios see it: the state in `/EFI/hup/grubenv`, read on
/// the host with `grub-editenv`; a slot is bootable while its `<S>_OK` is 1, and `<S>_LEFT`
/// counts its tries while it is on trial.
const GRUB: Loader = Loader {
    backend: Backend::Grub,
    make_bundle: grub_bundle,
    booting: ["hup grub: booting slot a", "hup grub: booting slot b"],
    v1_lines: &[],
    read_env: Device::grub_env,
    env_name: "GRUB environment block",
    kept: &[],
    switched_to_b: &[
        ("ORDER", "B A"),
        ("A_OK", "1"),
        ("B_OK", "1"),
        ("B_LEFT", "3"),
    ],
    committed_b: &[("ORDER", "B A"), ("B_OK", "1"), ("B_LEFT", "")],
};

/// A test OS bundle for `device` with a boot payload for `loader` (`BootPayload::Grub` or
/// `BootPayload::SystemdBoot` is made from the cmdline); its `cmdline` points at the
/// device's script and ends with `extra`.
fn bundle_for(
    device: &str,
    loader: fn(String) -> BootPayload,
    name: &str,
    version: &str,
    flags: &[&str],
    extra: &str,
) -> PathBuf {
    let cmdline = format!(
        "console=ttyS0 panic=-1 quiet hup.test={} {extra}",
        Device::test_url(device)
    );
    artifacts::get().bundle(&OsSpec {
        name: format!("{device}-{name}"),
        version: version.to_string(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        boot: loader(cmdline.trim_end().to_string()),
    })
}

fn grub_bundle(device: &str, name: &str, version: &str, flags: &[&str], extra: &str) -> PathBuf {
    bundle_for(device, BootPayload::Grub, name, version, flags, extra)
}

#[test]
fn a_grub_update_boots_the_new_slot_committed() {
    const DEV: &str = "grub-update";
    let v1 = GRUB.bundle(DEV, "v1", "1", &[]);
    GRUB.bundle(DEV, "v2", "2", &[]);
    let mut dev = Device::provision(DEV, &v1, Backend::Grub).unwrap();
    GRUB.expect_env(&dev, &[("ORDER", "A B"), ("A_OK", "1"), ("B_OK", "0")]);

    let b1 = GRUB.stage_and_apply(&mut dev, &url(DEV, "v2"), "2");
    let st = &b1.statuses()[0];
    assert_eq!(backend(st), "grub", "{st:#?}");
    assert_eq!(boot_slot(st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    // Slot b on trial with all its tries, slot a good behind it.
    GRUB.expect_env(&dev, GRUB.switched_to_b);

    let b = dev
        .boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect("hup grub: booting slot b");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    let st = b.status();
    expect_committed(&st, "2", "b");
    assert_eq!(boot_slot(&st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    // GRUB counted the boot (3 -> 2) before mark-good ended the countdown.
    GRUB.expect_env(
        &dev,
        &[
            ("ORDER", "B A"),
            ("B_OK", "1"),
            ("B_LEFT", ""),
            ("A_OK", "1"),
        ],
    );
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

#[test]
fn a_grub_update_that_never_marks_itself_good_falls_back_after_its_tries() {
    const DEV: &str = "grub-rollback";
    let v1 = GRUB.bundle(DEV, "v1", "1", &[]);
    GRUB.bundle(DEV, "v2", "2", &[]);
    GRUB.bundle(DEV, "v3-never-healthy", "3", &["--never-healthy"]);
    let mut dev = Device::provision(DEV, &v1, Backend::Grub).unwrap();
    let b1 = GRUB.stage_and_apply(&mut dev, &url(DEV, "v2"), "2");

    // v2 commits itself and stages v3, which lands in slot a.
    let b = dev
        .boot(
            BootOpts::new("v2-stage-v3").script(
                Script::new()
                    .status()
                    .stage(&url(DEV, "v3-never-healthy"))
                    .reboot(),
            ),
        )
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    b.expect("HUP-STAGE rc=0");
    expect_committed(&b.statuses()[0], "2", "b");
    let b = dev.boot(BootOpts::new("apply-v3")).unwrap();
    expect_applied(&b, "3", "a");
    GRUB.expect_env(
        &dev,
        &[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_LEFT", "3"),
            ("B_LEFT", ""),
        ],
    );

    // GRUB saved the decremented counter before each boot of v3.
    run_all_tries(&mut dev, "3", "a", |n, b, st| {
        b.expect("hup grub: booting slot a");
        b.expect_not("HUP-MARK-GOOD");
        assert_eq!(booted(st).slot, Slot::A, "{st:#?}");
        assert_eq!(
            booted(st).tries_left.map(u64::from),
            Some(MAX_TRIES - n),
            "{st:#?}"
        );
    });
    // The counter is at 0: the script skips slot a.
    GRUB.expect_env(&dev, &[("ORDER", "A B"), ("A_LEFT", "0"), ("B_OK", "1")]);

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
    b.expect("hup grub: booting slot b");
    b.expect_os("2", "b");
    b.expect("hup: warn: rolled back:");
    expect_rolled_back(&b, "3", "a", "did not confirm itself");
    let st = b.status();
    assert_eq!(booted(&st).version.as_deref(), Some("2"), "{st:#?}");
    assert_eq!(boot_slot(&st, Slot::A).tries_left, Some(0), "{st:#?}");
    // grub-editenv on the host: slot a's counter at 0, slot b committed.
    let env = GRUB.expect_env(&dev, &[("A_LEFT", "0"), ("B_OK", "1"), ("B_LEFT", "")]);
    assert_eq!(env["ORDER"].split_whitespace().next(), Some("B"), "{env:?}");
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

#[test]
fn a_power_cut_right_after_the_grub_boot_switch_ends_committed() {
    GRUB.power_cut_right_after_the_boot_switch("grub-powercut");
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn grub_and_systemd_boot_bring_the_os_up_in_comparable_times() {
    const BOOTS: usize = 3;
    let mut medians = Vec::new();
    for (backend, loader, dev_name) in [
        (
            Backend::Grub,
            BootPayload::Grub as fn(String) -> BootPayload,
            "time-grub",
        ),
        (
            Backend::SystemdBoot,
            BootPayload::SystemdBoot,
            "time-systemd-boot",
        ),
    ] {
        let v1 = bundle_for(dev_name, loader, "v1", "1", &[], "");
        let mut dev = Device::provision(dev_name, &v1, backend).unwrap();
        let mut times = Vec::new();
        for n in 1..=BOOTS {
            let b = dev
                .boot(BootOpts::new(&format!("boot{n}")).script(Script::new().poweroff()))
                .unwrap();
            b.expect_os("1", "a");
            let up = b.os_up_secs.expect("no OS-up time");
            assert!(up < b.secs, "OS up at {up} s, QEMU ran {} s", b.secs);
            times.push(up);
        }
        let m = median(times.clone());
        eprintln!("boot time {backend:?}: power-on to OS up {times:.2?} s, median {m:.2} s");
        medians.push(m);
    }
    // A GRUB that waited for a menu or a timeout would show here.
    assert!(
        medians[0] < 2.0 * medians[1],
        "GRUB {:.2} s vs systemd-boot {:.2} s",
        medians[0],
        medians[1]
    );
}
