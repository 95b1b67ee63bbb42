//! Issue 6, scenarios 4 and 5 on the gpt backend: an update that never confirms itself
//! (runs, but never `hup mark-good`), and one that cannot boot at all (no /sbin/init). In
//! both the device ends up running the previous version by itself, and `hup status` there
//! says rolled back, with the reason and the apply log.

use crate::artifacts::{self, OsSpec};
use crate::device::{Backend, Boot, BootOpts, Device, boot_slot, s, scripts};
use crate::update::{expect_applied, expect_same_data, v2_device};

/// max_tries of initramfs/system.json.
pub const MAX_TRIES: u64 = 3;

/// Asserts what the previous version's status says after a rollback of `version` in
/// `slot`, and that the apply log it names was printed by the guest and is complete.
pub fn expect_rolled_back(b: &Boot, version: &str, slot: &str, reason_has: &str) {
    let st = b.status();
    let other = if slot == "a" { "b" } else { "a" };
    assert_eq!(s(&st, "booted/slot"), other, "{st:#}");
    assert_eq!(s(&st, "booted/health"), "good", "{st:#}");
    assert_eq!(s(&st, "last_result/outcome"), "rolled-back", "{st:#}");
    assert_eq!(s(&st, "last_result/version"), version, "{st:#}");
    assert_eq!(s(&st, "last_result/slot"), slot, "{st:#}");
    let reason = s(&st, "last_result/reason");
    assert!(reason.contains(reason_has), "reason {reason:?}: {st:#}");
    assert_ne!(s(&st, "other/health"), "good", "{st:#}");
    assert_ne!(st["boot"]["next"], slot, "{st:#}");
    assert!(st["staged"].is_null() && st["applying"].is_null(), "{st:#}");
    // The log named by the status was readable in the guest and holds the whole apply.
    let log = s(&st, "last_result/log");
    assert!(log.starts_with("/mnt/data/hup/log/apply-"), "{st:#}");
    let logs = b.printed_logs();
    let text = logs
        .get(log)
        .unwrap_or_else(|| panic!("the guest printed no apply log {log}: {:?}", logs.keys()));
    for step in ["preflight", "format", "populate", "switch-boot", "finalize"] {
        assert!(
            text.contains(&format!("step {step}: done")),
            "{log}:\n{text}"
        );
    }
    // The human-readable form says it too.
    b.expect(&format!(
        "last update: rolled-back: {version} on slot {slot}"
    ));
}

#[test]
fn s4_v3_never_marks_good_and_the_device_runs_v2_again() {
    let a = artifacts::get();
    a.bundle(&OsSpec::gpt("v3-never-healthy", "3", &["--never-healthy"]));
    let url = artifacts::server().guest_url("bundles/v3-never-healthy.hup");
    let u = v2_device();
    let mut dev = u.device.copy("rollback-never-healthy").unwrap();
    let b = dev
        .boot(BootOpts::new("v2-stage-v3").script(&format!(
            "{}{}",
            scripts::stage(&url),
            scripts::REBOOT
        )))
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-STAGE rc=0");
    let b = dev.boot(BootOpts::new("apply-v3")).unwrap();
    expect_applied(&b, "3", "a");

    // v3 boots once per try, never marks itself good, and reboots.
    for n in 1..=MAX_TRIES {
        let b = dev
            .boot(BootOpts::new(&format!("v3-try{n}")).script(&format!(
                "{}{}",
                scripts::STATUS,
                scripts::REBOOT
            )))
            .unwrap();
        b.expect_os("3", "a");
        b.expect("HUP-OS-UNHEALTHY version=3 slot=a");
        b.expect_not("HUP-MARK-GOOD");
        let st = b.status();
        assert_eq!(s(&st, "booted/slot"), "a", "{st:#}");
        assert_eq!(st["booted"]["tries_left"], MAX_TRIES - n, "{st:#}");
        if n < MAX_TRIES {
            assert_eq!(s(&st, "booted/health"), "trying", "{st:#}");
            assert_eq!(st["boot"]["next"], "a", "{st:#}");
        } else {
            // This boot used the last try: the next one falls back.
            assert_eq!(s(&st, "booted/health"), "bad", "{st:#}");
            assert_eq!(st["boot"]["next"], "b", "{st:#}");
        }
        assert_eq!(s(&st, "last_result/outcome"), "applied", "{st:#}");
        assert_eq!(s(&st, "other/version"), "2", "{st:#}");
    }

    // The tries are used up: the initramfs boots v2 by itself and records the rollback.
    let b = dev
        .boot(BootOpts::new("v2-again").script(&format!(
            "{}{}{}{}",
            scripts::STATUS,
            scripts::PRINT_APPLY_LOGS,
            scripts::PRINT_USER_DATA,
            scripts::POWEROFF
        )))
        .unwrap();
    b.expect("hup: booting slot b from /dev/vda3 (hup-root-b)");
    b.expect("hup: warn: rolled back:");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    expect_rolled_back(&b, "3", "a", "did not confirm itself");
    let st = b.status();
    assert_eq!(s(&st, "booted/version"), "2", "{st:#}");
    assert_eq!(boot_slot(&st, "a")["tries_left"], 0, "{st:#}");
    expect_same_data(&u.v1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

#[test]
fn s5_a_version_that_cannot_boot_falls_back_by_itself() {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    a.bundle(&OsSpec::gpt("v2-cannot-boot", "2", &["--cannot-boot"]));
    let url = artifacts::server().guest_url("bundles/v2-cannot-boot.hup");
    let mut dev = Device::provision("rollback-cannot-boot", &v1, Backend::Gpt).unwrap();
    let b = dev
        .boot(BootOpts::new("v1-stage-v2").script(&format!(
            "{}{}{}{}",
            scripts::WRITE_USER_DATA,
            scripts::PRINT_USER_DATA,
            scripts::stage(&url),
            scripts::REBOOT
        )))
        .unwrap();
    b.expect_os("1", "a");
    b.expect("HUP-STAGE rc=0");
    let sums = b.data_sums();
    let b = dev.boot(BootOpts::new("apply-v2")).unwrap();
    expect_applied(&b, "2", "b");

    // Slot B is tried first, has no /sbin/init, is given up, and slot A boots in the same boot.
    let b = dev
        .boot(BootOpts::new("fallback-v1").script(&format!(
            "{}{}{}{}",
            scripts::STATUS,
            scripts::PRINT_APPLY_LOGS,
            scripts::PRINT_USER_DATA,
            scripts::POWEROFF
        )))
        .unwrap();
    b.expect("hup: error: slot b: root /dev/vda3 (hup-root-b): the root has no /sbin/init");
    b.expect("slot b could not boot: marked bad");
    b.expect("hup: warn: falling back to slot a");
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_os("1", "a");
    expect_rolled_back(&b, "2", "b", "slot b (2) could not be booted");
    let st = b.status();
    assert_eq!(boot_slot(&st, "b")["status"], "bad", "{st:#}");
    assert_eq!(s(&st, "booted/version"), "1", "{st:#}");
    expect_same_data(&sums, &b);

    // And it stays that way: the next boot goes straight to slot A.
    let b = dev
        .boot(BootOpts::new("v1-again").script(scripts::POWEROFF))
        .unwrap();
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_not("hup: error:");
    b.expect_os("1", "a");
    dev.fsck("hup-data").unwrap();
}
