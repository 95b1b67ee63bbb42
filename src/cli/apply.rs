use std::path::PathBuf;

use anyhow::Context as _;
use argh::FromArgs;

use crate::apply::provision::default_data_dir;
use crate::apply::{Context, apply};
use crate::bundle::sign::TrustedKeys;
use crate::fsutil::DataDir;
use crate::model::config::SystemConfig;

/// Apply a bundle to a disk image offline: the pipeline the initramfs runs, without the reboot.
#[derive(FromArgs)]
#[argh(subcommand, name = "apply")]
pub struct Apply {
    /// disk image (or block device) holding the hup partitions
    #[argh(option)]
    disk: PathBuf,
    /// the bundle to apply
    #[argh(option)]
    bundle: PathBuf,
    /// trusted public key file (repeatable)
    #[argh(option)]
    key: Vec<PathBuf>,
    /// host directory standing for the data partition's hup/ (default: DISK.data)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// device configuration (default: system.json in the data directory)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the running slot's root, mounted, for bundles that require an unmodified base
    #[argh(option)]
    base_root: Option<PathBuf>,
}

impl Apply {
    pub fn run(self) -> anyhow::Result<()> {
        let data = DataDir::new(
            self.data_dir
                .unwrap_or_else(|| default_data_dir(&self.disk)),
        );
        let config_path = self.config.unwrap_or_else(|| data.root.join("system.json"));
        let config =
            SystemConfig::load(&config_path).context("device configuration (use --config)")?;
        let keys = TrustedKeys::load(&self.key, &[])?;
        let base = self.base_root.clone().map(crate::apply::MountedBase);
        let ctx = Context {
            disk: &self.disk,
            data: &data,
            config: &config,
            keys: &keys,
            base: base.as_ref().map(|b| b as &dyn crate::apply::BaseRoot),
        };
        let r = apply(&ctx, &self.bundle)?;
        let total: f64 = r.timings.iter().map(|(_, s)| s).sum();
        println!(
            "applied {} to slot {} in {total:.1} s; it boots next with {} tries (log: {})",
            r.version,
            r.target,
            config.max_tries,
            r.log.display()
        );
        for (step, secs) in &r.timings {
            println!("  {step:<16} {secs:>7.2} s");
        }
        Ok(())
    }
}
