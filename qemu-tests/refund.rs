//! Reboots that are not failed boots (docs/boot-backends.md), gpt backend: v2 is built with
//! `--refund-on-shutdown` (its busybox init runs `hup refund-try` in the clean shutdown
//! path) and never marks itself good. It reboots itself cleanly every boot: the first 3
//! clean reboots give the try back (tries left stay at 3, the refund budget goes 3 -> 0),
//! after that every boot counts, and once the tries are used up the device runs v1 again.

use hup::device::status::Status;
use hup::model::slot::Slot;
use hup::model::state::Outcome;

use crate::artifacts::{self, OsSpec};
use crate::device::{Backend, BootOpts, Device};
use crate::rollback::{MAX_TRIES, expect_rolled_back};
use crate::script::Script;
use crate::status::{boot_slot, booted, last_result, next};
use crate::update::expect_applied;

/// Refunds each trial gets (`REFUND_BUDGET` of the gpt backend).
const REFUND_BUDGET: u64 = 3;

/// (tries_left, refunds_left) of slot b in a status document.
fn slot_b(st: &Status) -> (u64, u64) {
    let b = boot_slot(st, Slot::B);
    (
        b.tries_left.unwrap_or_else(|| panic!("{st:#?}")).into(),
        b.refunds_left.unwrap_or_else(|| panic!("{st:#?}")).into(),
    )
}

#[test]
fn clean_reboots_of_a_trial_are_refunded_three_times_then_count() {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    a.bundle(&OsSpec::gpt(
        "v2-refund",
        "2",
        &["--never-healthy", "--refund-on-shutdown"],
    ));
    let url = artifacts::server().guest_url("bundles/v2-refund.hup");
    let mut dev = Device::provision("refund-on-shutdown", &v1, Backend::Gpt).unwrap();
    let b = dev
        .boot(BootOpts::new("v1-stage-v2").script(Script::new().stage(&url).reboot()))
        .unwrap();
    b.expect_os("1", "a");
    b.expect("HUP-STAGE rc=0");
    // v1 is built without the flag: its shutdown path does not run refund-try.
    b.expect_not("HUP-REFUND");
    let b = dev.boot(BootOpts::new("apply-v2")).unwrap();
    expect_applied(&b, "2", "b");
    assert_eq!(
        slot_b(&dev.host_status().unwrap()),
        (MAX_TRIES, REFUND_BUDGET)
    );

    // Each boot of v2 uses a try (the initramfs counts it before v2 starts) and v2 reboots
    // cleanly; the shutdown hook gives the try back while refunds are left.
    let mut tries = MAX_TRIES;
    let mut refunds = REFUND_BUDGET;
    for n in 1..=REFUND_BUDGET + MAX_TRIES {
        let b = dev
            .boot(BootOpts::new(&format!("v2-clean-reboot{n}")).script(Script::new().reboot()))
            .unwrap();
        b.expect_os("2", "b");
        b.expect("HUP-OS-UNHEALTHY version=2 slot=b");
        b.expect_not("HUP-MARK-GOOD");
        // During the boot: one try used.
        let st = b.status();
        assert_eq!(booted(&st).slot, Slot::B, "{st:#?}");
        assert_eq!(slot_b(&st), (tries - 1, refunds), "boot {n}: {st:#?}");
        assert_eq!(last_result(&st).outcome, Outcome::Applied, "{st:#?}");
        // At its clean shutdown: given back, or counted once the budget is used up.
        if refunds > 0 {
            refunds -= 1;
            let noun = if refunds == 1 { "refund" } else { "refunds" };
            b.expect(&format!(
                "HUP-REFUND slot b: the try of this boot is given back ({refunds} {noun} left)"
            ));
        } else {
            tries -= 1;
            b.expect("HUP-REFUND slot b: no refunds left in this trial: this boot counts");
        }
        b.expect("HUP-REFUND rc=0");
        let host = dev.host_status().unwrap();
        assert_eq!(slot_b(&host), (tries, refunds), "after boot {n}: {host:#?}");
        let want = if tries > 0 { Slot::B } else { Slot::A };
        assert_eq!(next(&host), Some(want), "after boot {n}: {host:#?}");
    }
    assert_eq!((tries, refunds), (0, 0));

    // The tries are used up: the initramfs boots v1 and the rollback is recorded.
    let b = dev
        .boot(
            BootOpts::new("v1-again").script(Script::new().status().print_apply_logs().poweroff()),
        )
        .unwrap();
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_os("1", "a");
    b.expect("HUP-MARK-GOOD rc=0");
    expect_rolled_back(&b, "2", "b", "did not confirm itself");
    b.expect_not("HUP-REFUND");
    dev.fsck("hup-data").unwrap();
}
