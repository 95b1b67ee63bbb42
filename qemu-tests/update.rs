//! Updates on the gpt backend (direct kernel boot):
//! 1. a device provisioned with v1 (`hup provision`) boots v1 in slot A;
//! 2. in v1, `hup stage http://10.0.2.2:PORT/.../v2.hup`, reboot: the initramfs applies, v2
//!    boots in slot B and marks itself good, status says committed, the user's files on
//!    the data partition are intact;
//! 3. v2 -> v3 lands in slot A.
//!
//! 1 and 2 are the first boots of one device ([`v2_device`]), which other tests copy as
//! their starting point.

use std::collections::BTreeMap;

use anyhow::Result;
use hup::device::status::Status;
use hup::model::slot::{Slot, SlotStatus};
use hup::model::state::Outcome;

use crate::artifacts::{self, OsSpec};
use crate::device::{Backend, Boot, BootOpts, Device};
use crate::fixture::Cached;
use crate::script::Script;
use crate::status::{backend, boot_slot, booted, last_result, next, other, slot};

/// A device updated from v1 to v2 (committed, powered off), with the boots that got it there.
pub struct Updated {
    pub device: Device,
    /// v1's first boot (writes the user's files, stages v2, reboots).
    pub v1: Boot,
    /// The initramfs applying v2 and rebooting.
    pub apply: Boot,
    /// v2's first boot (marks good, prints status and the user's files, powers off).
    pub v2: Boot,
}

static V2: Cached<Updated> = Cached::new("updating a device from v1 to v2 failed");

/// The device updated from v1 to v2 (points 1 and 2 above), built on first use.
pub fn v2_device() -> &'static Updated {
    V2.get(build_v2)
}

fn build_v2() -> Result<Updated> {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    a.bundle(&OsSpec::gpt("v2", "2", &[]));
    let url = artifacts::server().guest_url("bundles/v2.hup");
    let mut dev = Device::provision("update-v1-v2", &v1, Backend::Gpt)?;
    let b1 = dev.boot(
        BootOpts::new("v1-stage-v2").script(
            Script::new()
                .write_user_data()
                .print_user_data()
                .stage(&url)
                .reboot(),
        ),
    )?;
    let b2 = dev.boot(BootOpts::new("apply-v2"))?;
    let b3 =
        dev.boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))?;
    Ok(Updated {
        device: dev,
        v1: b1,
        apply: b2,
        v2: b3,
    })
}

/// v1's usual first boot: it writes the user's files on the data partition, prints their
/// checksums, stages `url` and reboots. Asserts v1 ran in slot a and the stage succeeded.
pub fn v1_stages(dev: &mut Device, label: &str, url: &str) -> Boot {
    let b = dev
        .boot(
            BootOpts::new(label).script(
                Script::new()
                    .write_user_data()
                    .print_user_data()
                    .stage(url)
                    .reboot(),
            ),
        )
        .unwrap();
    b.expect_os("1", "a");
    b.expect("HUP-STAGE rc=0");
    b
}

/// Asserts that the initramfs applied `version` into `slot` during `b` and rebooted.
pub fn expect_applied(b: &Boot, version: &str, slot: &str) {
    b.expect(&format!("hup: staged: {version} "));
    for step in [
        "preflight",
        "format",
        "populate",
        "boot-files",
        "switch-boot",
        "finalize",
    ] {
        b.expect(&format!("step {step}: done"));
    }
    b.expect(&format!(
        "rebooting: {version} written to slot {slot}, trying it next"
    ));
    assert!(
        b.os_up().is_none(),
        "boot {}: an OS came up during the apply boot",
        b.label
    );
    b.expect_not("Kernel panic");
}

/// Asserts a status document says `version` runs committed in `slot`, with nothing staged.
pub fn expect_committed(st: &Status, version: &str, slot_name: &str) {
    let slot = slot(slot_name);
    assert_eq!(booted(st).slot, slot, "{st:#?}");
    assert_eq!(booted(st).version.as_deref(), Some(version), "{st:#?}");
    assert_eq!(booted(st).health, Some(SlotStatus::Good), "{st:#?}");
    assert_eq!(last_result(st).outcome, Outcome::Committed, "{st:#?}");
    assert_eq!(last_result(st).version, version, "{st:#?}");
    assert_eq!(last_result(st).slot, slot, "{st:#?}");
    assert!(st.staged.is_none(), "{st:#?}");
    assert!(st.applying.is_none(), "{st:#?}");
    assert_eq!(boot_slot(st, slot).status, SlotStatus::Good, "{st:#?}");
    assert_eq!(next(st), Some(slot), "{st:#?}");
}

/// Asserts the user's files printed in `b` match `before` (same files, same checksums).
pub fn expect_same_data(before: &BTreeMap<String, String>, b: &Boot) {
    assert_eq!(
        before.len(),
        4,
        "the user's files were not all summed: {before:?}"
    );
    assert_eq!(
        &b.data_sums(),
        before,
        "boot {}: the user's files changed ({})",
        b.label,
        b.log.display()
    );
}

#[test]
fn a_provisioned_device_boots_v1_in_slot_a_and_marks_it_good() {
    let u = v2_device();
    let b = &u.v1;
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b.expect_os("1", "a");
    b.expect("HUP-MARK-GOOD rc=0");
    // The status the boot hook printed right after mark-good.
    let st = &b.statuses()[0];
    assert_eq!(st.compatible.as_deref(), Some("qemu-x86_64"), "{st:#?}");
    assert_eq!(booted(st).slot, Slot::A, "{st:#?}");
    assert_eq!(booted(st).version.as_deref(), Some("1"), "{st:#?}");
    assert_eq!(booted(st).health, Some(SlotStatus::Good), "{st:#?}");
    assert_eq!(other(st).slot, Slot::B, "{st:#?}");
    assert!(other(st).version.is_none(), "{st:#?}");
    assert_ne!(other(st).health, Some(SlotStatus::Good), "{st:#?}");
    assert!(st.last_result.is_none(), "{st:#?}");
    assert!(st.staged.is_none(), "{st:#?}");
    assert_eq!(backend(st), "gpt", "{st:#?}");
    assert_eq!(next(st), Some(Slot::A), "{st:#?}");
    assert!(st.errors.is_empty(), "{st:#?}");
    b.expect_not("panicked");
}

#[test]
fn an_update_staged_over_http_boots_in_slot_b_committed_with_data_intact() {
    let u = v2_device();
    // v1 staged v2 from the harness's HTTP server.
    u.v1.expect("HUP-STAGE rc=0");
    let staged = u.v1.status();
    assert_eq!(
        staged.staged.as_ref().map(|s| s.version.as_str()),
        Some("2"),
        "{staged:#?}"
    );
    assert!(
        artifacts::server()
            .requests()
            .iter()
            .any(|r| r == "GET /bundles/v2.hup 200"),
        "the guest never fetched v2: {:?}",
        artifacts::server().requests()
    );
    // The initramfs applied it and rebooted.
    expect_applied(&u.apply, "2", "b");
    // v2 runs in slot B, committed.
    let b = &u.v2;
    b.expect("hup: booting slot b from /dev/vda3 (hup-root-b)");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    let st = b.status();
    expect_committed(&st, "2", "b");
    assert_eq!(other(&st).version.as_deref(), Some("1"), "{st:#?}");
    assert_eq!(other(&st).health, Some(SlotStatus::Good), "{st:#?}");
    // The user's files survived, as the guest and the host see them.
    expect_same_data(&u.v1.data_sums(), b);
    u.device.fsck("hup-data").unwrap();
    let note = u
        .device
        .read_file("hup-data", "/userdata/note.txt")
        .unwrap();
    assert_eq!(note, b"written by 1 in slot a\n");
    // The apply's log is on the data partition.
    let log = last_result(&st).log.clone().unwrap_or_default();
    let rel = log.strip_prefix("/mnt/data").expect("log under /mnt/data");
    let text = String::from_utf8(u.device.read_file("hup-data", rel).unwrap()).unwrap();
    assert!(text.contains("step switch-boot: done"), "{text}");
}

#[test]
fn the_next_update_lands_in_slot_a_again() {
    let a = artifacts::get();
    a.bundle(&OsSpec::gpt("v3", "3", &[]));
    let url = artifacts::server().guest_url("bundles/v3.hup");
    let u = v2_device();
    let mut dev = u.device.copy("update-v2-v3").unwrap();
    let b1 = dev
        .boot(BootOpts::new("v2-stage-v3").script(Script::new().stage(&url).reboot()))
        .unwrap();
    b1.expect_os("2", "b");
    b1.expect("HUP-STAGE rc=0");
    let b2 = dev.boot(BootOpts::new("apply-v3")).unwrap();
    expect_applied(&b2, "3", "a");
    let b3 = dev
        .boot(BootOpts::new("v3").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b3.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    b3.expect_os("3", "a");
    let st = b3.status();
    expect_committed(&st, "3", "a");
    assert_eq!(other(&st).version.as_deref(), Some("2"), "{st:#?}");
    expect_same_data(&u.v1.data_sums(), &b3);
    dev.fsck("hup-data").unwrap();
}
