use std::path::PathBuf;

use argh::FromArgs;

use crate::init::premount::{self, Paths};
use crate::model::config::SYSTEM_JSON;

/// Run a pending update from a distribution's initramfs (before the root is mounted);
/// with nothing pending, write nothing. Exits 0 unless the arguments are wrong, so the
/// boot goes on.
#[derive(FromArgs)]
#[argh(subcommand, name = "apply-pending")]
pub struct ApplyPending {
    /// device configuration (default: /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
}

impl ApplyPending {
    pub fn run(self) -> anyhow::Result<()> {
        premount::install_log();
        let paths = Paths::new(self.config.unwrap_or_else(|| SYSTEM_JSON.into()));
        // After a successful apply this does not return: the machine reboots.
        if let Err(e) = premount::run(&paths) {
            log::error!("{e:#}; the boot continues with the current root");
        }
        Ok(())
    }
}
