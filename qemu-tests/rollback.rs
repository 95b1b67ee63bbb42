//! Rollbacks on the gpt backend: an update that never confirms itself
//! (runs, but never `hup mark-good`), and one that cannot boot at all (no /sbin/init). In
//! both the device ends up running the previous version by itself, and `hup status` there
//! says rolled back, with the reason and the apply log.

use hup::device::status::Status;
use hup::model::slot::{Slot, SlotStatus};
use hup::model::state::Outcome;

use crate::artifacts::{self, OsSpec};
use crate::device::{Backend, Boot, BootOpts, Device};
use crate::script::Script;
use crate::status::{boot_slot, booted, last_result, next, other, slot};
use crate::update::{expect_applied, expect_same_data, v1_stages, v2_device};

/// max_tries of initramfs/system.json.
pub const MAX_TRIES: u64 = 3;

/// Asserts what the previous version's status says after a rollback of `version` in
/// `slot`, and that the apply log it names was printed by the guest and is complete.
pub fn expect_rolled_back(b: &Boot, version: &str, slot_name: &str, reason_has: &str) {
    let st = b.status();
    let slot = slot(slot_name);
    assert_eq!(booted(&st).slot, slot.other(), "{st:#?}");
    assert_eq!(booted(&st).health, Some(SlotStatus::Good), "{st:#?}");
    assert_eq!(last_result(&st).outcome, Outcome::RolledBack, "{st:#?}");
    assert_eq!(last_result(&st).version, version, "{st:#?}");
    assert_eq!(last_result(&st).slot, slot, "{st:#?}");
    let reason = last_result(&st).reason.as_deref().unwrap_or("");
    assert!(reason.contains(reason_has), "reason {reason:?}: {st:#?}");
    assert_ne!(
        st.other.as_ref().and_then(|o| o.health),
        Some(SlotStatus::Good),
        "{st:#?}"
    );
    assert_ne!(next(&st), Some(slot), "{st:#?}");
    assert!(st.staged.is_none() && st.applying.is_none(), "{st:#?}");
    // The log named by the status was readable in the guest and holds the whole apply.
    let log = last_result(&st).log.as_deref().unwrap_or("");
    assert!(log.starts_with("/mnt/data/hup/log/apply-"), "{st:#?}");
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
        "last update: rolled-back: {version} on slot {slot_name}"
    ));
}

/// Boots `slot_name`, where `version` runs and never marks itself good, through all its
/// tries: [`MAX_TRIES`] boots (`v<version>-try<n>`) that print the status and reboot. Each
/// must come up in that slot and say it is unhealthy; while tries are left the slot is
/// `trying` and boots next, after the last one it is `bad` and the other slot boots next.
/// `each(n, boot, status)` checks what the caller adds.
pub fn run_all_tries(
    dev: &mut Device,
    version: &str,
    slot_name: &str,
    mut each: impl FnMut(u64, &Boot, &Status),
) {
    let slot = slot(slot_name);
    for n in 1..=MAX_TRIES {
        let b = dev
            .boot(
                BootOpts::new(&format!("v{version}-try{n}"))
                    .script(Script::new().status().reboot()),
            )
            .unwrap();
        b.expect_os(version, slot_name);
        b.expect(&format!(
            "HUP-OS-UNHEALTHY version={version} slot={slot_name}"
        ));
        let st = b.status();
        each(n, &b, &st);
        if n < MAX_TRIES {
            assert_eq!(booted(&st).health, Some(SlotStatus::Trying), "{st:#?}");
            assert_eq!(next(&st), Some(slot), "{st:#?}");
        } else {
            // This boot used the last try: the next one falls back.
            assert_eq!(booted(&st).health, Some(SlotStatus::Bad), "{st:#?}");
            assert_eq!(next(&st), Some(slot.other()), "{st:#?}");
        }
    }
}

#[test]
fn an_update_that_never_marks_itself_good_rolls_back_after_its_tries() {
    let a = artifacts::get();
    a.bundle(&OsSpec::gpt("v3-never-healthy", "3", &["--never-healthy"]));
    let url = artifacts::server().guest_url("bundles/v3-never-healthy.hup");
    let u = v2_device();
    let mut dev = u.device.copy("rollback-never-healthy").unwrap();
    let b = dev
        .boot(BootOpts::new("v2-stage-v3").script(Script::new().stage(&url).reboot()))
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-STAGE rc=0");
    let b = dev.boot(BootOpts::new("apply-v3")).unwrap();
    expect_applied(&b, "3", "a");

    // v3 boots once per try, never marks itself good, and reboots.
    run_all_tries(&mut dev, "3", "a", |n, b, st| {
        b.expect_not("HUP-MARK-GOOD");
        assert_eq!(booted(st).slot, Slot::A, "{st:#?}");
        assert_eq!(
            booted(st).tries_left.map(u64::from),
            Some(MAX_TRIES - n),
            "{st:#?}"
        );
        assert_eq!(last_result(st).outcome, Outcome::Applied, "{st:#?}");
        assert_eq!(other(st).version.as_deref(), Some("2"), "{st:#?}");
    });

    // The tries are used up: the initramfs boots v2 by itself and records the rollback.
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
    b.expect("hup: booting slot b from /dev/vda3 (hup-root-b)");
    b.expect("hup: warn: rolled back:");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    expect_rolled_back(&b, "3", "a", "did not confirm itself");
    let st = b.status();
    assert_eq!(booted(&st).version.as_deref(), Some("2"), "{st:#?}");
    assert_eq!(boot_slot(&st, Slot::A).tries_left, Some(0), "{st:#?}");
    expect_same_data(&u.v1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

#[test]
fn an_update_that_cannot_boot_falls_back_to_the_old_slot_in_the_same_boot() {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    a.bundle(&OsSpec::gpt("v2-cannot-boot", "2", &["--cannot-boot"]));
    let url = artifacts::server().guest_url("bundles/v2-cannot-boot.hup");
    let mut dev = Device::provision("rollback-cannot-boot", &v1, Backend::Gpt).unwrap();
    let b = v1_stages(&mut dev, "v1-stage-v2", &url);
    let sums = b.data_sums();
    let b = dev.boot(BootOpts::new("apply-v2")).unwrap();
    expect_applied(&b, "2", "b");

    // Slot B is tried first, has no /sbin/init, is given up, and slot A boots in the same boot.
    let b = dev
        .boot(
            BootOpts::new("fallback-v1").script(
                Script::new()
                    .status()
                    .print_apply_logs()
                    .print_user_data()
                    .poweroff(),
            ),
        )
        .unwrap();
    b.expect("hup: error: slot b: root /dev/vda3 (hup-root-b): the root has no /sbin/init");
    b.expect("slot b could not boot: marked bad");
    b.expect("hup: warn: falling back to slot a");
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_os("1", "a");
    expect_rolled_back(&b, "2", "b", "slot b (2) could not be booted");
    let st = b.status();
    assert_eq!(boot_slot(&st, Slot::B).status, SlotStatus::Bad, "{st:#?}");
    assert_eq!(booted(&st).version.as_deref(), Some("1"), "{st:#?}");
    expect_same_data(&sums, &b);

    // And it stays that way: the next boot goes straight to slot A.
    let b = dev
        .boot(BootOpts::new("v1-again").script(Script::new().poweroff()))
        .unwrap();
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_not("hup: error:");
    b.expect_os("1", "a");
    dev.fsck("hup-data").unwrap();
}
