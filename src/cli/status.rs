use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::device;
use crate::device::status::{Inputs, gather, render};
use crate::fsutil::DataDir;
use crate::model::config::{SYSTEM_JSON, SystemConfig};

/// Show the booted and other slot, the staged bundle, the last update and the boot state.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
pub struct Status {
    /// print the JSON document (docs/status.md)
    #[argh(switch)]
    json: bool,
    /// device configuration (default /etc/hup/system.json; optional with --disk)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration; with --disk,
    /// DISK.data when it exists, as `hup provision` and `hup apply --disk` use it)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// a disk or disk image to read instead of this device's (host use: no booted slot)
    #[argh(option)]
    disk: Option<PathBuf>,
}

impl Status {
    pub fn run(self) -> anyhow::Result<()> {
        let st = gather(self.inputs()?);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&st)?);
        } else {
            render(&st, &mut std::io::stdout().lock())?;
        }
        Ok(())
    }

    fn inputs(&self) -> anyhow::Result<Inputs> {
        let mut inp = Inputs::default();
        let host = self.disk.is_some();
        // On the host, an image's state lives next to it (DISK.data/) unless told otherwise.
        let host_data = match (&self.disk, &self.data_dir) {
            (Some(disk), None) => {
                Some(crate::apply::provision::default_data_dir(disk)).filter(|d| d.is_dir())
            }
            _ => None,
        };
        let config_path = self.config.clone().unwrap_or_else(|| {
            host_data
                .as_ref()
                .map(|d| d.join("system.json"))
                .filter(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(SYSTEM_JSON))
        });
        inp.config = if host && !config_path.exists() {
            None
        } else {
            Some(SystemConfig::load(&config_path)?)
        };
        inp.data = match (&self.data_dir, &inp.config) {
            (Some(d), _) => Some(DataDir::new(std::path::absolute(d)?)),
            (None, _) if host_data.is_some() => host_data.map(DataDir::new),
            (None, Some(c)) if !host => Some(DataDir::under_mount(Path::new(&c.data_mount))),
            _ => None,
        };
        let labels = inp
            .config
            .as_ref()
            .map(|c| c.labels.clone())
            .unwrap_or_default();
        if host {
            inp.disk = self.disk.clone();
            // On a disk image only the test/debug override names a booted slot.
            if std::env::var_os(device::BOOTED_SLOT_ENV).is_some() {
                inp.booted = device::booted_slot(&labels)
                    .map_err(|e| inp.errors.push(format!("{e:#}")))
                    .ok();
            }
        } else {
            inp.disk = device::find_disk(&labels)
                .map_err(|e| inp.errors.push(format!("{e:#}")))
                .ok();
            inp.booted = device::booted_slot(&labels)
                .map_err(|e| inp.errors.push(format!("{e:#}")))
                .ok();
            inp.running_fallback = device::os_release_version(Path::new("/etc/os-release")).ok();
        }
        Ok(inp)
    }
}
