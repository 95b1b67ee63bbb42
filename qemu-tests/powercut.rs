//! Power cuts while the initramfs applies an update (gpt backend).
//!
//! At fixed points through failpoints: `hup.failpoint=NAME` on the kernel command line arms
//! `HUP_FAILPOINT` in the initramfs (built with `--features failpoints`); hup stops with
//! exit status 99 there, PID 1 exiting panics the kernel, and `panic=-1` with `-no-reboot`
//! ends QEMU: the disk is left exactly as a power cut would leave it (the guest's caches
//! are lost). At random times: QEMU is killed. On the next boots the device either
//! completes the update or keeps running the old version; it is never unbootable, and the
//! user's files on the data partition are intact.

use std::time::Duration;

use anyhow::Result;

use hup::device::status::Status;
use hup::model::slot::{Slot, SlotStatus};
use hup::model::state::Outcome;

use crate::artifacts::{self, OsSpec};
use crate::device::{Backend, Boot, BootOpts, Device};
use crate::fixture::Cached;
use crate::script::Script;
use crate::status::{boot_slot, booted, last_result, next, slot};
use crate::update::{expect_committed, expect_same_data};

/// A v1 device with v2 staged, powered off before the apply.
struct Staged {
    device: Device,
    v1: Boot,
}

static STAGED: Cached<Staged> = Cached::new("staging v2 on a v1 device failed");

fn staged_device() -> &'static Staged {
    STAGED.get(build_staged)
}

fn build_staged() -> Result<Staged> {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    a.bundle(&OsSpec::gpt("v2", "2", &[]));
    let url = artifacts::server().guest_url("bundles/v2.hup");
    let mut dev = Device::provision("powercut-staged", &v1, Backend::Gpt)?;
    let b = dev.boot(
        BootOpts::new("v1-stage-v2").script(
            Script::new()
                .write_user_data()
                .print_user_data()
                .stage(&url)
                .poweroff(),
        ),
    )?;
    b.expect_os("1", "a");
    b.expect("HUP-STAGE rc=0");
    anyhow::ensure!(b.data_sums().len() == 4, "v1 printed no checksums");
    Ok(Staged { device: dev, v1: b })
}

/// The script of an OS boot after the cuts: status, the user's files, power off.
fn check_script() -> Script {
    Script::new().status().print_user_data().poweroff()
}

/// The device right after a cut, seen from the host: something is bootable and the boot
/// loader will start a slot that is good or still has tries.
fn expect_bootable(dev: &Device) -> Status {
    let st = dev.host_status().unwrap();
    let next = next(&st).unwrap_or_else(|| panic!("nothing boots next: {st:#?}"));
    let health = boot_slot(&st, next).status;
    assert!(
        health == SlotStatus::Good || health == SlotStatus::Trying,
        "slot {} is {health:?}: {st:#?}",
        next.name()
    );
    assert_eq!(
        boot_slot(&st, Slot::A).status,
        SlotStatus::Good,
        "slot a lost: {st:#?}"
    );
    st
}

/// Cut at failpoint `point`, then boot until v2 runs; `next_after_cut` is the slot the
/// boot loader starts after the cut (b only once `switch-boot` completed).
fn cut_at(point: &str, next_after_cut: &str) {
    let f = staged_device();
    let mut dev = f.device.copy(&format!("powercut-{point}")).unwrap();
    let b = dev
        .boot(BootOpts::new(&format!("cut-{point}")).failpoint(point))
        .unwrap();
    b.expect(&format!("hup: failpoint {point} armed"));
    // "failpoint NAME: stopping" (steps), "failpoint populate-middle: exiting after N
    // archive members".
    b.expect(&format!("hup: warn: failpoint {point}: "));
    b.expect("Kernel panic");
    assert!(b.os_up().is_none(), "an OS came up despite the cut");
    let st = expect_bootable(&dev);
    assert_eq!(next(&st), Some(slot(next_after_cut)), "{st:#?}");

    // The next boot resumes the journaled apply and reboots into v2.
    let b = dev.boot(BootOpts::new("resume")).unwrap();
    b.expect("resuming the apply of 2 into slot b");
    b.expect("rebooting: 2 written to slot b, trying it next");
    b.expect_not("Kernel panic");
    if point == "format" || point == "populate-middle" {
        // The half-written slot is formatted again, never continued.
        b.expect("step format: start");
        b.expect("step populate: done");
    } else {
        b.expect("step populate: done before, skipping");
    }
    let b = dev
        .boot(BootOpts::new("v2").script(check_script()))
        .unwrap();
    b.expect("hup: booting slot b from /dev/vda3 (hup-root-b)");
    b.expect_os("2", "b");
    expect_committed(&b.status(), "2", "b");
    expect_same_data(&f.v1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
    dev.fsck("hup-root-b").unwrap();
}

#[test]
fn a_power_cut_after_format_is_resumed_to_a_committed_update() {
    cut_at("format", "a");
}

#[test]
fn a_power_cut_in_the_middle_of_populate_is_resumed_to_a_committed_update() {
    cut_at("populate-middle", "a");
}

#[test]
fn a_power_cut_just_before_the_boot_switch_is_resumed_to_a_committed_update() {
    // `boot-files` is the last step before `switch-boot` (`migrations` runs before
    // `format`: `populate` copies the migrated keyfiles into the slot).
    cut_at("boot-files", "a");
}

#[test]
fn a_power_cut_right_after_the_boot_switch_is_resumed_to_a_committed_update() {
    cut_at("switch-boot", "b");
}

#[test]
fn an_apply_cut_again_and_again_is_given_up_and_v1_runs_on() {
    let f = staged_device();
    let mut dev = f.device.copy("powercut-every-time").unwrap();
    for n in 1..=3 {
        let b = dev
            .boot(BootOpts::new(&format!("cut{n}-format")).failpoint("format"))
            .unwrap();
        b.expect("hup: warn: failpoint format: ");
        b.expect("Kernel panic");
        expect_bootable(&dev);
    }
    // The 4th run gives the update up (a bundle whose apply keeps crashing the device must
    // not loop forever) and v1 boots in the same boot.
    let b = dev
        .boot(BootOpts::new("v1").script(check_script()))
        .unwrap();
    b.expect("the apply was interrupted 3 times");
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_os("1", "a");
    let st = b.status();
    assert_eq!(booted(&st).health, Some(SlotStatus::Good), "{st:#?}");
    assert_eq!(last_result(&st).outcome, Outcome::Failed, "{st:#?}");
    assert_eq!(last_result(&st).version, "2", "{st:#?}");
    assert!(
        last_result(&st)
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("interrupted 3 times"),
        "{st:#?}"
    );
    assert!(st.staged.is_none() && st.applying.is_none(), "{st:#?}");
    assert_eq!(next(&st), Some(Slot::A), "{st:#?}");
    expect_same_data(&f.v1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

/// xorshift64*: enough randomness for cut times, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("HUP_QEMU_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("powercut-random: seed {seed} (HUP_QEMU_SEED={seed} repeats it)");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where random cuts are anchored: a line the init prints during the apply (the cut then
/// comes up to [`CUT_DELAY_MS`] later, so it lands in that step or the next). The apply
/// takes 2-3 s under TCG: format about 1 s, populate about 0.5 s, the rest a few ms.
const CUT_MARKERS: [&str; 6] = [
    "hup: staged: ",
    "step preflight: done",
    "step format: start",
    "step populate: start",
    "step boot-files: start",
    "step switch-boot: start",
];
const CUT_DELAY_MS: u64 = 400;

#[test]
fn power_cuts_at_random_times_end_committed_or_with_v1_running() {
    let f = staged_device();
    let mut dev = f.device.copy("powercut-random").unwrap();
    let mut rng = Rng::new();
    // 1 to 3 cuts: after 3 interrupted runs the apply gives up and v1 runs on.
    let cuts = 1 + rng.below(3);
    let mut cut = 0;
    let mut applied = false;
    let mut up = None;
    for n in 1..=cuts + 3 {
        let mut opts = BootOpts::new(&format!("boot{n}")).script(check_script());
        if cut < cuts && !applied {
            // The first cut comes early enough that it always lands inside the apply.
            let marker = if cut == 0 {
                CUT_MARKERS[rng.below(4) as usize]
            } else {
                CUT_MARKERS[rng.below(CUT_MARKERS.len() as u64) as usize]
            };
            let ms = rng.below(CUT_DELAY_MS);
            eprintln!("powercut-random: boot {n}: cut {ms} ms after {marker:?}");
            opts = opts.kill_after(marker, Duration::from_millis(ms));
        }
        let b = dev.boot(opts).unwrap();
        b.expect_not("nothing bootable");
        b.expect_not("Kernel panic");
        if b.killed {
            cut += 1;
            let at = b
                .lines()
                .filter(|l| l.contains("hup: step "))
                .last()
                .unwrap_or("before the first step")
                .to_string();
            eprintln!("powercut-random: boot {n} cut; last step line: {at}");
            expect_bootable(&dev);
            continue;
        }
        if b.os_up().is_some() {
            up = Some(b);
            break;
        }
        // Not cut, no OS: the apply ran to its end and rebooted.
        b.expect("rebooting: 2 written to slot b, trying it next");
        applied = true;
    }
    assert!(cut >= 1, "no cut landed inside the apply");
    let b = up.expect("no OS came up after the power cuts");
    let st = b.status();
    match b.os_up().unwrap() {
        (v, slot) if v == "2" && slot == "b" => expect_committed(&st, "2", "b"),
        (v, slot) if v == "1" && slot == "a" => {
            // The update did not complete: v1 runs on, good, and says why.
            assert_eq!(booted(&st).health, Some(SlotStatus::Good), "{st:#?}");
            let staged = st.staged.as_ref().map(|s| s.version.as_str());
            let outcome = st.last_result.as_ref().map(|l| l.outcome);
            assert!(
                staged == Some("2") || outcome == Some(Outcome::Failed),
                "v1 runs but v2 is neither staged nor failed: {st:#?}"
            );
        }
        other => panic!("unexpected OS {other:?} after the cuts"),
    }
    expect_same_data(&f.v1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}
