//! The agent tests' device: the stage fixture ([`super::device::Device`]) with an
//! agent.json, `hup agent --once` on its disk image, and the boot that applies a staged
//! bundle simulated in-process (`apply::staged::run_staged`, what the initramfs runs).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

use super::device::{Device, p};
use super::runner::Hup;
use hup::fsutil::DataDir;
use hup::model::agent::AgentAction;
use hup::model::config::SystemConfig;

pub struct Fleet {
    pub dev: Device,
    pub agent_json: PathBuf,
}

impl Fleet {
    /// A device (slot a runs 1.0.0) whose agent talks to `server` as `controller_id`, with
    /// the extra agent.json keys of `extra`.
    pub fn new(server: &str, controller_id: &str, extra: serde_json::Value) -> Fleet {
        let dev = Device::new();
        let agent_json = dev.dir.join("agent.json");
        let mut cfg = serde_json::json!({ "server": server, "controller_id": controller_id });
        if let serde_json::Value::Object(m) = extra {
            for (k, v) in m {
                cfg[k] = v;
            }
        }
        std::fs::write(&agent_json, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        Fleet { dev, agent_json }
    }

    /// `hup agent --once` with the booted slot `booted` and `env`.
    pub fn agent(&self, booted: &str, env: &[(&str, &str)]) -> Output {
        Hup::on_device(booted)
            .args([
                "agent",
                "--once",
                "--agent-config",
                p(&self.agent_json),
                "--config",
                p(&self.dev.config),
                "--data-dir",
                p(&self.dev.data),
                "--disk",
                p(&self.dev.disk),
            ])
            .envs(env)
            .watchdog(120)
            .run()
    }

    /// [`Fleet::agent`] that must succeed; its stderr (the log).
    pub fn agent_ok(&self, booted: &str, env: &[(&str, &str)]) -> String {
        let o = self.agent(booted, env);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "hup agent failed ({}): {err}", o.status);
        err
    }

    /// The agent's action in state.json.
    pub fn action(&self) -> Option<AgentAction> {
        self.dev.state().agent.and_then(|a| a.action)
    }

    /// The boot after a stage: the initramfs applies the staged bundle to slot b.
    pub fn boot_and_apply(&self) {
        let config = SystemConfig::load(&self.dev.config).unwrap();
        let r = hup::apply::run_staged(
            &self.dev.disk,
            &DataDir::new(&self.dev.data),
            &config,
            None,
            None,
        )
        .unwrap();
        assert!(r.is_some(), "a bundle was staged and applied");
    }

    /// Appends `line` to the apply log that state.json's last result names (in-process, the
    /// apply writes no log lines: hup's logger is not installed in the test binary, and
    /// installing it would feed every in-process test's lines into one another's logs).
    pub fn append_to_apply_log(&self, line: &str) {
        use std::io::Write;
        let log = self.dev.state().last_result.unwrap().log.unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dev.data.join(log))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// `hup mark-good` or `hup mark-bad` in slot `booted`.
    pub fn mark(&self, cmd: &str, booted: &str) {
        let o = self.dev.cmd(cmd, &[], &[("HUP_BOOTED_SLOT", booted)]);
        assert!(
            o.status.success(),
            "{cmd} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Nothing staged: no record, no file, nothing in staging/.
    pub fn assert_nothing_staged(&self) {
        assert_eq!(self.dev.state().staged, None, "nothing staged");
        assert!(!self.dev.staged_file().exists(), "no staged file");
        assert!(
            self.dev.staging().is_empty(),
            "staging/: {:?}",
            self.dev.staging()
        );
    }
}
