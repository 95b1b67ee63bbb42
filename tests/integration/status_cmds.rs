//! `hup status`, `hup mark-good`, `hup mark-bad`, `hup cancel` on a disk image and a data
//! directory, with the gpt boot backend.

use crate::support::device::*;
use crate::support::runner::*;
use hup::boot::BootBackend;
use hup::boot::gpt::GptBackend;
use hup::fsutil::DataDir;
use hup::model::slot::{Slot, SlotStatus};
use hup::model::state::{LastResult, Outcome, SlotInfo};
use serde_json::Value;

/// Records an apply of 2.0.0 into slot b, as the apply pipeline leaves it: slot b on trial.
fn applied_to_b(dev: &Device) {
    let d = DataDir::new(&dev.data);
    let mut st = d.load_state().unwrap();
    *st.slot_mut(Slot::B) = SlotInfo {
        version: Some("2.0.0".into()),
        installed_at: Some(1_700_000_500),
    };
    st.last_result = Some(LastResult {
        outcome: Outcome::Applied,
        version: "2.0.0".into(),
        slot: Slot::B,
        reason: None,
        log: Some("log/apply-1700000500.log".into()),
        at: 1_700_000_500,
    });
    d.save_state(&st).unwrap();
    GptBackend::new(&dev.disk).set_try_next(Slot::B, 3).unwrap();
}

fn status(dev: &Device, booted: &str) -> Value {
    let o = dev.cmd("status", &["--json"], &[("HUP_BOOTED_SLOT", booted)]);
    serde_json::from_str(&ok(&o)).unwrap()
}

#[test]
fn status_of_a_fresh_device() {
    let dev = Device::new();
    let st = status(&dev, "a");
    assert_eq!(st["compatible"], "qemu-x86_64");
    assert_eq!(st["data_dir"], p(&dev.data));
    assert_eq!(st["booted"]["slot"], "a");
    assert_eq!(st["booted"]["version"], "1.0.0");
    assert_eq!(st["booted"]["health"], "good");
    assert_eq!(st["booted"]["next_boot"], true);
    assert_eq!(st["other"]["slot"], "b");
    assert_eq!(st["other"]["version"], Value::Null);
    assert_eq!(st["other"]["health"], "bad");
    assert_eq!(st["staged"], Value::Null);
    assert_eq!(st["last_result"], Value::Null);
    assert_eq!(st["applying"], Value::Null);
    assert_eq!(st["boot"]["next"], "a");
    assert_eq!(st["slots"].as_array().unwrap().len(), 2);
    let text = ok(&dev.cmd("status", &[], &[]));
    assert!(
        text.contains("booted:      slot a, version 1.0.0, good, boots next"),
        "{text}"
    );
    assert!(text.contains("staged:      nothing"), "{text}");
    assert!(
        text.contains("boot:        gpt backend, next boot: slot a"),
        "{text}"
    );

    // Host use on a bare image: no configuration, no data directory, no booted slot.
    let o = Hup::new()
        .args(["status", "--json", "--disk", p(&dev.disk)])
        .env_remove("HUP_BOOTED_SLOT")
        .run();
    let st: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(st["booted"], Value::Null);
    assert_eq!(st["compatible"], Value::Null);
    assert_eq!(st["slots"][0]["health"], "good");
    assert_eq!(st["slots"][1]["health"], "bad");
    assert_eq!(st["boot"]["backend"], "gpt");
    // A disk that is not there is reported, not fatal.
    let o = Hup::new()
        .args(["status", "--json", "--disk", "/nonexistent.img"])
        .run();
    let st: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert!(
        st["errors"][0]
            .as_str()
            .unwrap()
            .contains("/nonexistent.img"),
        "{st}"
    );
}

#[test]
fn mark_good_commits_the_booted_slot() {
    let dev = Device::new();
    applied_to_b(&dev);
    let st = status(&dev, "b");
    assert_eq!(st["booted"]["health"], "trying");
    assert_eq!(st["booted"]["tries_left"], 3);
    assert_eq!(st["last_result"]["outcome"], "applied");
    assert_eq!(
        st["last_result"]["log"],
        p(&dev.data.join("log/apply-1700000500.log"))
    );

    let out = ok(&dev.cmd("mark-good", &[], &[("HUP_BOOTED_SLOT", "b")]));
    assert!(
        out.contains("marked good: slot b (2.0.0); last update: committed"),
        "{out}"
    );
    let gpt = GptBackend::new(&dev.disk).state().unwrap();
    assert_eq!(gpt.slot(Slot::B).status, SlotStatus::Good);
    assert_eq!(gpt.next, Some(Slot::B));
    assert_eq!(
        gpt.slot(Slot::A).status,
        SlotStatus::Good,
        "a stays the fallback"
    );
    let st = status(&dev, "b");
    assert_eq!(st["last_result"]["outcome"], "committed");
    assert_eq!(st["booted"]["version"], "2.0.0");
    assert_eq!(st["booted"]["health"], "good");
    assert_eq!(st["other"]["version"], "1.0.0");
    // Idempotent: the OS may call it on every boot.
    let before = std::fs::read(dev.data.join("state.json")).unwrap();
    ok(&dev.cmd("mark-good", &[], &[("HUP_BOOTED_SLOT", "b")]));
    assert_eq!(std::fs::read(dev.data.join("state.json")).unwrap(), before);
}

#[test]
fn mark_good_on_the_old_slot_records_the_rollback() {
    let dev = Device::new();
    applied_to_b(&dev);
    // The new slot never confirmed; the device fell back to a, which is healthy.
    ok(&dev.cmd("mark-good", &[], &[("HUP_BOOTED_SLOT", "a")]));
    let st = status(&dev, "a");
    assert_eq!(st["last_result"]["outcome"], "rolled-back");
    assert!(
        st["last_result"]["reason"]
            .as_str()
            .unwrap()
            .contains("slot b never marked itself good"),
        "{st}"
    );
    assert_eq!(st["boot"]["next"], "a");
    assert_eq!(st["other"]["health"], "bad", "the trial of b is cancelled");
}

#[test]
fn mark_bad_falls_back_and_refuses_to_strand_the_device() {
    let dev = Device::new();
    // On a fresh device the other slot is empty: marking a bad would leave nothing.
    let o = dev.cmd("mark-bad", &[], &[("HUP_BOOTED_SLOT", "a")]);
    fails(
        &o,
        1,
        "slot b is not bootable (bad): marking the booted slot a bad would leave nothing to boot",
    );
    assert_eq!(
        GptBackend::new(&dev.disk)
            .state()
            .unwrap()
            .slot(Slot::A)
            .status,
        SlotStatus::Good
    );

    applied_to_b(&dev);
    let out = ok(&dev.cmd("mark-bad", &[], &[("HUP_BOOTED_SLOT", "b")]));
    assert!(out.contains("the next boot starts slot a"), "{out}");
    let st = status(&dev, "b");
    assert_eq!(st["booted"]["health"], "bad");
    assert_eq!(st["boot"]["next"], "a");
    assert_eq!(st["last_result"]["outcome"], "rolled-back");
    assert_eq!(
        st["last_result"]["reason"],
        "slot b was marked bad (hup mark-bad)"
    );
}

#[test]
fn cancel_drops_the_staged_bundle_and_locks_are_exclusive() {
    let dev = Device::new();
    fails(&dev.cmd("cancel", &[], &[]), 2, "nothing is staged");
    let v2 = dev.bundle(&BundleSpec::default());
    let f = dev.file("v2.hup", &v2);
    ok(&dev.stage(p(&f), &[]));
    dev.assert_staged(&v2, "2.0.0");

    // While a download runs, cancel and another stage exit 3; while another hup holds the
    // state lock longer than the wait, mark-good exits 3.
    let held =
        hup::device::lock::download(&DataDir::new(&dev.data), "hup stage test-holder").unwrap();
    let e = fails(&dev.cmd("cancel", &[], &[]), 3, "locked");
    assert!(e.contains("hup stage test-holder"), "{e}");
    fails(&dev.stage(p(&f), &[]), 3, "locked");
    drop(held);
    let held = hup::device::lock::acquire(&DataDir::new(&dev.data), "hup test-holder").unwrap();
    let wait = [("HUP_LOCK_WAIT_MS", "200")];
    fails(&dev.cmd("mark-good", &[], &wait), 3, "locked");
    drop(held);

    let out = ok(&dev.cmd("cancel", &[], &[]));
    assert!(out.contains("dropped the staged bundle 2.0.0"), "{out}");
    assert!(!dev.staged_file().exists());
    assert!(dev.state().staged.is_none());
    assert_eq!(status(&dev, "a")["staged"], Value::Null);
    fails(&dev.cmd("cancel", &[], &[]), 2, "nothing is staged");

    // A partial download alone is removed too.
    std::fs::write(dev.data.join("staging/x.hup.part"), b"partial").unwrap();
    let out = ok(&dev.cmd("cancel", &[], &[]));
    assert!(
        out.contains("removed partial downloads: x.hup.part"),
        "{out}"
    );
    assert_eq!(dev.staging(), Vec::<String>::new());
}
