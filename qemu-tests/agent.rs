//! Fleet updates in QEMU (docs/fleet.md): a v1 device runs `hup agent --once` against a
//! real goosebit on the host (reached at 10.0.2.2, tests/support/goosebit.rs) and is
//! updated to v2 through a goosebit rollout: the agent stages v2 and reboots, the
//! initramfs applies it, v2 marks itself good and the agent reports success, so goosebit
//! ends with the device on v2, state `Finished`. A second rollout of a never-healthy v3 is
//! staged, applied and tried until the device falls back to v2 by itself; there the agent
//! reports the rollback, and goosebit ends with state `Error`, the rollback reason in the
//! device log, and the device on v2.

use serde_json::Value;

use crate::artifacts::{self, OsSpec};
use crate::device::{Backend, Boot, BootOpts, Device};
use crate::goosebit::Goosebit;
use crate::rollback::run_all_tries;
use crate::script::Script;
use crate::update::expect_applied;

const ID: &str = "qemu-agent-1";

/// One poll cycle of the agent in the guest, then `HUP-AGENT rc=N`. The agent reboots by
/// itself when it staged a bundle the deployment lets it install.
fn agent(server_port: u16) -> Script {
    Script::new().sh(&format!(
        "cat > /tmp/agent.json <<'EOF'\n{{\"server\": \"http://10.0.2.2:{server_port}\", \"controller_id\": \"{ID}\"}}\nEOF\n\
         hup agent --once --agent-config /tmp/agent.json 2>&1\necho \"HUP-AGENT rc=$?\"\nsync\n"
    ))
}

fn port(g: &Goosebit) -> u16 {
    g.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A boot whose agent polls and then powers off (it must not reboot).
fn poll_and_poweroff(dev: &mut Device, label: &str, g: &Goosebit) -> Boot {
    let b = dev
        .boot(BootOpts::new(label).script(agent(port(g)).status().poweroff()))
        .unwrap();
    b.expect("HUP-AGENT rc=0");
    b
}

/// A boot whose agent stages the rollout's bundle and reboots by itself: the script
/// ends after the agent without a reboot or poweroff of its own (busybox's init carries
/// out the agent's `reboot` once the script is done; without it the guest would stay up
/// until the boot's timeout).
fn poll_stage_and_reboot(dev: &mut Device, label: &str, g: &Goosebit, version: &str) -> Boot {
    let b = dev
        .boot(BootOpts::new(label).script(agent(port(g))))
        .unwrap();
    b.expect(&format!("staged {version} (sha256"));
    b.expect("rebooting to apply the update");
    b.expect("HUP-AGENT rc=0");
    b.expect("Requesting system reboot");
    b
}

fn summary(g: &Goosebit) -> String {
    let d = g.device(ID);
    let rollouts: Vec<Value> = g.api("GET", "/rollouts", None)["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::json!({ "name": r["name"], "software": r["software"]["version"],
                "success_count": r["success_count"], "failure_count": r["failure_count"] })
        })
        .collect();
    format!(
        "device {ID}: last_state={} sw_version={} update_mode={}\nrollouts: {}",
        d["last_state"],
        d["sw_version"],
        d["update_mode"],
        serde_json::to_string(&rollouts).unwrap()
    )
}

#[test]
fn goosebit_rollouts_update_to_v2_and_report_the_rollback_of_v3() {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    let v2 = a.bundle(&OsSpec::gpt("v2", "2", &[]));
    let v3 = a.bundle(&OsSpec::gpt("v3-never-healthy", "3", &["--never-healthy"]));
    let g = Goosebit::start();
    let sw2 = g.upload(&v2).unwrap();
    let sw3 = g.upload(&v3).unwrap();
    let mut dev = Device::provision("agent-goosebit", &v1, Backend::Gpt).unwrap();

    // v1 registers (configData: its version and device type).
    let b = poll_and_poweroff(&mut dev, "v1-register", &g);
    b.expect_os("1", "a");
    let d = g.device(ID);
    assert_eq!(d["sw_version"], "1", "{d}");

    // The rollout of v2: staged by the agent, applied at the reboot, committed by v2, and
    // reported by the agent on v2.
    g.rollout(ID, "to-v2", sw2);
    poll_stage_and_reboot(&mut dev, "v1-agent-stages-v2", &g, "2");
    let b = dev.boot(BootOpts::new("apply-v2")).unwrap();
    expect_applied(&b, "2", "b");
    let b = poll_and_poweroff(&mut dev, "v2-agent-reports", &g);
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    b.expect("reported success to the server");
    g.expect_rollout(ID, ("Finished", "2"), "to-v2", (1, 0));
    eprintln!("goosebit after the v2 rollout:\n{}", summary(&g));

    // The rollout of v3, which never marks itself good: staged, applied, tried, rolled back.
    g.rollout(ID, "to-v3", sw3);
    poll_stage_and_reboot(&mut dev, "v2-agent-stages-v3", &g, "3");
    let b = dev.boot(BootOpts::new("apply-v3")).unwrap();
    expect_applied(&b, "3", "a");
    run_all_tries(&mut dev, "3", "a", |_, b, _| b.expect_not("HUP-MARK-GOOD"));
    assert_eq!(
        g.device(ID)["last_state"],
        "Running",
        "nothing reported during the trial"
    );
    let b = poll_and_poweroff(&mut dev, "v2-again-agent-reports", &g);
    b.expect("hup: warn: rolled back:");
    b.expect_os("2", "b");
    b.expect("reported failure to the server");
    g.expect_rollout(ID, ("Error", "2"), "to-v3", (0, 1));
    let log = g.device_log(ID);
    assert!(
        log.contains("rolled-back: 3 on slot a: slot a (3) did not confirm itself"),
        "{log}"
    );
    assert!(log.contains("apply log /mnt/data/hup/log/apply-"), "{log}");
    eprintln!(
        "goosebit after the v3 rollout:\n{}\ndevice log: {log}",
        summary(&g)
    );
}
