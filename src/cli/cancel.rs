use std::path::PathBuf;

use argh::FromArgs;

use crate::device::{Device, DeviceArgs};

/// Drop the staged bundle (and any partial download): nothing is applied at the next boot.
#[derive(FromArgs)]
#[argh(subcommand, name = "cancel")]
pub struct Cancel {
    /// device configuration (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration)
    #[argh(option)]
    data_dir: Option<PathBuf>,
}

impl Cancel {
    pub fn run(self) -> anyhow::Result<()> {
        let dev = Device::open(&DeviceArgs {
            config: self.config,
            data_dir: self.data_dir,
            disk: None,
        })?;
        // The download lock first: a running `hup stage` would store its bundle after this
        // cancel, so cancel refuses (exit 3) while one runs.
        let _download = crate::device::lock::download(&dev.data, "hup cancel")?;
        let _lock = crate::device::lock::acquire(&dev.data, "hup cancel")?;
        let c = crate::device::staged::cancel(&dev.data)?;
        match &c.staged {
            Some(s) => println!(
                "dropped the staged bundle {} (sha256 {})",
                s.version, s.sha256
            ),
            None => println!("no bundle was staged"),
        }
        if !c.partial.is_empty() {
            println!("removed partial downloads: {}", c.partial.join(", "));
        }
        Ok(())
    }
}
