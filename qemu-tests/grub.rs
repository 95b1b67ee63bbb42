//! The grub backend on OVMF with the real GRUB: the devices are provisioned with
//! `--boot-backend grub`, so the loader is the GRUB image `hup provision` makes with
//! `grub-mkimage` from Debian's modules, running hup's script (`/EFI/hup/grub.cfg`), which
//! counts the tries down in the environment block `/EFI/hup/grubenv` with `save_env`. Each
//! bundle's boot payload holds `vmlinuz`, `initrd` (the initramfs with the grub
//! configuration) and `cmdline`; the apply writes them to `/hup/<slot>/` and the slot's
//! snippet `/EFI/hup/slot-<s>.cfg` last. `grub-editenv` reads the block on the host.
//!
//! Also here: power-on to OS-up times of GRUB and systemd-boot, measured the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hup::model::slot::{Slot, SlotStatus};

use crate::artifacts::{self, BootPayload, OsSpec};
use crate::device::{Backend, Boot, BootOpts, Device};
use crate::rollback::{MAX_TRIES, expect_rolled_back, run_all_tries};
use crate::script::Script;
use crate::status::{backend, boot_slot, booted, next};
use crate::update::{expect_applied, expect_committed, expect_same_data, v1_stages};

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

fn grub_bundle(device: &str, name: &str, version: &str, flags: &[&str]) -> PathBuf {
    bundle_for(device, BootPayload::Grub, name, version, flags, "")
}

/// The guest URL of `device`'s bundle `name`.
fn url(device: &str, name: &str) -> String {
    artifacts::server().guest_url(&format!("bundles/{device}-{name}.hup"))
}

/// Asserts the variables `want` in the device's GRUB environment block, as `grub-editenv`
/// on the host reads it (`""`: empty or absent).
fn expect_env(dev: &Device, want: &[(&str, &str)]) -> BTreeMap<String, String> {
    let env = dev.grub_env().unwrap();
    for (k, v) in want {
        assert_eq!(
            env.get(*k).map(String::as_str).unwrap_or(""),
            *v,
            "{k} in the GRUB environment block: {env:?}"
        );
    }
    env
}

/// v1 provisioned, stages `to` (writing the user's files), and the initramfs applies it to
/// slot b: the first two boots of every scenario here. Returns v1's boot.
fn stage_and_apply(dev: &mut Device, to_url: &str, version: &str) -> Boot {
    let v1 = v1_stages(dev, "v1-stage", to_url);
    v1.expect("hup grub: booting slot a");
    v1.expect("HUP-MARK-GOOD rc=0");
    let b = dev
        .boot(BootOpts::new(&format!("apply-v{version}")))
        .unwrap();
    expect_applied(&b, version, "b");
    b.expect("boot files: 3 files into hup/b");
    v1
}

#[test]
fn a_grub_update_boots_the_new_slot_committed() {
    const DEV: &str = "grub-update";
    let v1 = grub_bundle(DEV, "v1", "1", &[]);
    grub_bundle(DEV, "v2", "2", &[]);
    let mut dev = Device::provision(DEV, &v1, Backend::Grub).unwrap();
    expect_env(&dev, &[("ORDER", "A B"), ("A_OK", "1"), ("B_OK", "0")]);

    let b1 = stage_and_apply(&mut dev, &url(DEV, "v2"), "2");
    let st = &b1.statuses()[0];
    assert_eq!(backend(st), "grub", "{st:#?}");
    assert_eq!(boot_slot(st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    expect_env(
        &dev,
        &[
            ("ORDER", "B A"),
            ("B_OK", "1"),
            ("B_LEFT", "3"),
            ("A_OK", "1"),
        ],
    );

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
    expect_env(
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
    let v1 = grub_bundle(DEV, "v1", "1", &[]);
    grub_bundle(DEV, "v2", "2", &[]);
    grub_bundle(DEV, "v3-never-healthy", "3", &["--never-healthy"]);
    let mut dev = Device::provision(DEV, &v1, Backend::Grub).unwrap();
    let b1 = stage_and_apply(&mut dev, &url(DEV, "v2"), "2");

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
    expect_env(
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
    expect_env(&dev, &[("ORDER", "A B"), ("A_LEFT", "0"), ("B_OK", "1")]);

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
    let env = expect_env(&dev, &[("A_LEFT", "0"), ("B_OK", "1"), ("B_LEFT", "")]);
    assert_eq!(env["ORDER"].split_whitespace().next(), Some("B"), "{env:?}");
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

#[test]
fn a_power_cut_right_after_the_grub_boot_switch_ends_committed() {
    const DEV: &str = "grub-powercut";
    // v1's initramfs applies v2: the failpoint rides on v1's kernel command line.
    let v1 = bundle_for(
        DEV,
        BootPayload::Grub,
        "v1-failpoint",
        "1",
        &[],
        "hup.failpoint=switch-boot",
    );
    grub_bundle(DEV, "v2", "2", &[]);
    let mut dev = Device::provision(DEV, &v1, Backend::Grub).unwrap();
    let b1 = v1_stages(&mut dev, "v1-stage", &url(DEV, "v2"));
    b1.expect("hup: failpoint switch-boot armed");

    let b = dev.boot(BootOpts::new("cut-switch-boot")).unwrap();
    b.expect("step switch-boot: done");
    b.expect("hup: warn: failpoint switch-boot: ");
    b.expect("Kernel panic");
    assert!(b.os_up().is_none(), "an OS came up despite the cut");
    // The switch is on the disk: slot b on trial, slot a still good behind it.
    expect_env(
        &dev,
        &[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("B_OK", "1"),
            ("B_LEFT", "3"),
        ],
    );
    let st = dev.host_status().unwrap();
    assert_eq!(next(&st), Some(Slot::B), "{st:#?}");
    assert_eq!(boot_slot(&st, Slot::A).status, SlotStatus::Good, "{st:#?}");

    // GRUB boots slot b (one try), whose initramfs finishes the journaled apply.
    let b = dev.boot(BootOpts::new("resume")).unwrap();
    b.expect("hup grub: booting slot b");
    b.expect("resuming the apply of 2 into slot b");
    b.expect("step switch-boot: done before, skipping");
    b.expect("rebooting: 2 written to slot b, trying it next");
    b.expect_not("Kernel panic");
    let b = dev
        .boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect("hup grub: booting slot b");
    b.expect_os("2", "b");
    expect_committed(&b.status(), "2", "b");
    expect_env(&dev, &[("ORDER", "B A"), ("B_OK", "1"), ("B_LEFT", "")]);
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
    dev.fsck("hup-root-b").unwrap();
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
