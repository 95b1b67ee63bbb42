//! `hup agent` against a real goosebit (tests/support/goosebit.rs, installed by
//! scripts/install-deps with hup's plugin): the device registers, a rollout offers a
//! bundle uploaded as it is, the agent stages it into the disk image's data directory,
//! and goosebit's REST API shows what the agent reported: `Finished` on 2.0.0 after
//! `hup mark-good`, `Error` with the reason after a rollback or a refused bundle, and the
//! rollout's success and failure counts.

use serde_json::json;

use crate::support::agent::Fleet;
use crate::support::device::BundleSpec;
use crate::support::goosebit::Goosebit;
use hup::model::agent::{ActionPhase, ActionResult};

const ID: &str = "hup-dev";

/// goosebit, a registered device, and a rollout `r` of the bundle `spec` (uploaded as it
/// is); the agent has polled once more and staged it when `spec` fits the device.
fn rolled_out(spec: &BundleSpec) -> (Goosebit, Fleet) {
    let g = Goosebit::start();
    let fleet = Fleet::new(&g.url, ID, json!({ "attributes": { "site": "lab" } }));
    let file = fleet.dev.file("v2.hup", &fleet.dev.bundle(spec));
    let sw = g
        .upload(&file)
        .unwrap_or_else(|e| panic!("upload refused: {e:?}"));
    // The first poll registers the device and sends configData.
    fleet.agent_ok("a", &[]);
    let d = g.device(ID);
    assert_eq!(d["sw_version"], "1.0.0", "{d}");
    assert_eq!(d["hardware"]["model"], "qemu-x86_64", "{d}");
    assert_eq!(d["last_state"], "Registered", "{d}");
    g.rollout(ID, "r", sw);
    fleet.agent_ok("a", &[]);
    (g, fleet)
}

#[test]
fn goosebit_success_after_mark_good() {
    let (g, fleet) = rolled_out(&BundleSpec::default());
    assert_eq!(fleet.dev.state().staged.unwrap().version, "2.0.0");
    let d = g.device(ID);
    assert_eq!(
        d["last_state"], "Running",
        "proceeding reached goosebit: {d}"
    );
    assert!(
        g.device_log(ID).contains("staged 2.0.0"),
        "{}",
        g.device_log(ID)
    );

    // Another poll before the reboot: nothing changes, nothing is reported.
    fleet.agent_ok("a", &[]);
    assert_eq!(g.device(ID)["last_state"], "Running");

    fleet.boot_and_apply();
    fleet.agent_ok("b", &[]);
    assert_eq!(
        g.device(ID)["last_state"],
        "Running",
        "no success before mark-good"
    );
    fleet.mark("mark-good", "b");
    fleet.agent_ok("b", &[]);
    g.expect_rollout(ID, ("Finished", "2.0.0"), "r", (1, 0));
    assert!(
        g.device_log(ID).contains("2.0.0 runs on slot b"),
        "{}",
        g.device_log(ID)
    );
    // Polling on: goosebit offers nothing more and nothing is reported again.
    fleet.agent_ok("b", &[]);
    let r = g.rollout_named("r");
    assert_eq!(r["success_count"].as_u64(), Some(1), "{r}");
    let a = fleet.action().unwrap();
    assert_eq!(
        (a.phase, a.result, a.reported),
        (ActionPhase::Closed, Some(ActionResult::Success), true)
    );

    // The plugin lets hup bundles in and leaves other files refused as before.
    let junk = fleet.dev.file("junk.bin", &[7u8; 4096]);
    assert_eq!(g.upload(&junk).unwrap_err().0, 422);
}

#[test]
fn goosebit_failure_after_rollback() {
    let (g, fleet) = rolled_out(&BundleSpec::default());
    fleet.boot_and_apply();
    fleet.append_to_apply_log("1 hup: the apply's last line");
    fleet.mark("mark-bad", "b");
    fleet.agent_ok("a", &[]);
    g.expect_rollout(ID, ("Error", "1.0.0"), "r", (0, 1));
    let log = g.device_log(ID);
    assert!(
        log.contains("rolled-back: 2.0.0 on slot b: slot b was marked bad"),
        "{log}"
    );
    assert!(log.contains("apply log"), "{log}");
    assert!(log.contains("1 hup: the apply's last line"), "{log}");
    fleet.agent_ok("a", &[]);
    assert_eq!(
        g.rollout_named("r")["failure_count"].as_u64(),
        Some(1),
        "reported once"
    );
}

#[test]
fn goosebit_failure_after_a_refused_bundle() {
    let (g, fleet) = rolled_out(&BundleSpec {
        other_key: true,
        ..BundleSpec::default()
    });
    fleet.assert_nothing_staged();
    let d = g.device(ID);
    assert_eq!(d["last_state"], "Error", "{d}");
    let r = g.rollout_named("r");
    assert_eq!(
        (r["success_count"].as_u64(), r["failure_count"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    let log = g.device_log(ID);
    assert!(log.contains("which is not trusted"), "{log}");
}
