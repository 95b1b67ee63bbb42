//! What every step of a poll cycle shares: the device, the configuration, the server
//! connection and this boot's facts.

use crate::device::Device;
use crate::model::slot::Slot;

use super::client::Client;
use super::config::AgentConfig;

/// One run of `hup agent` against one server.
#[derive(Debug)]
pub struct Agent<'a> {
    pub dev: &'a Device,
    pub config: &'a AgentConfig,
    pub client: Client,
    pub controller_id: String,
    /// `SERVER/TENANT/controller/v1/ID`.
    pub base: String,
    pub booted: Slot,
    /// Never reboot: stage, report, and leave the reboot to the operator (`--no-reboot`,
    /// and always with `--disk`).
    pub no_reboot: bool,
}

impl Agent<'_> {
    /// (server, controller id) for the record in state.json.
    pub fn who(&self) -> (&str, &str) {
        (&self.config.server, &self.controller_id)
    }
}
