use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::agent::client::Client;
use crate::agent::config::{AGENT_JSON, AgentConfig, MACHINE_ID};
use crate::agent::{Agent, run};
use crate::device::{self, Device, DeviceArgs};

/// Poll a hawkBit DDI server (hawkBit, goosebit) for updates, stage them and report the
/// result (docs/fleet.md).
#[derive(FromArgs)]
#[argh(subcommand, name = "agent")]
pub struct AgentCmd {
    /// run one poll cycle and exit (tests, cron)
    #[argh(switch)]
    once: bool,
    /// the agent configuration (default /etc/hup/agent.json)
    #[argh(option)]
    agent_config: Option<PathBuf>,
    /// never reboot: stage and report, the operator reboots (always so with --disk)
    #[argh(switch)]
    no_reboot: bool,
    /// device configuration (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// whole disk holding the hup partitions, or a disk image (default: found by
    /// partition label)
    #[argh(option)]
    disk: Option<PathBuf>,
}

impl AgentCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let config = AgentConfig::load(
            self.agent_config
                .as_deref()
                .unwrap_or(Path::new(AGENT_JSON)),
        )?;
        let host = self.disk.is_some();
        let dev = Device::open(&DeviceArgs {
            config: self.config,
            data_dir: self.data_dir,
            disk: self.disk,
        })?;
        let booted = device::booted_slot(&dev.config.labels)?.slot;
        let controller_id = config.controller_id(Path::new(MACHINE_ID))?;
        let client = Client::new(&config.server, config.ca.as_deref(), config.authorization())?;
        let agent = Agent {
            dev: &dev,
            config: &config,
            client,
            base: config.base_url(&controller_id),
            controller_id,
            booted,
            no_reboot: self.no_reboot || host,
        };
        log::debug!(
            "agent {} polling {} (slot {booted}){}",
            agent.controller_id,
            agent.base,
            if self.once { ", once" } else { "" }
        );
        run::run(&agent, self.once)
    }
}
