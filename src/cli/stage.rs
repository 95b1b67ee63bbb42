use std::path::PathBuf;

use argh::FromArgs;

use crate::device::{Device, DeviceArgs};
use crate::size::human;
use crate::stage::StageOptions;

/// Download, verify and store an update bundle; it is applied at the next boot.
#[derive(FromArgs)]
#[argh(subcommand, name = "stage")]
pub struct Stage {
    /// bundle: a local path, an http:// or an https:// URL
    #[argh(positional)]
    source: String,
    /// expected sha256 of the whole bundle file (64 hex digits)
    #[argh(option)]
    sha256: Option<String>,
    /// reboot once the bundle is staged, so that it is applied now
    #[argh(switch)]
    reboot: bool,
    /// accept a version older than the running one
    #[argh(switch)]
    allow_downgrade: bool,
    /// trust only the CA certificates of this PEM file for https (default: the system CA bundle)
    #[argh(option)]
    ca: Option<PathBuf>,
    /// device configuration (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// whole disk holding the hup partitions (default: found by partition label)
    #[argh(option)]
    disk: Option<PathBuf>,
    /// root of the running system, compared with its fingerprint when the bundle requires an
    /// unmodified base (default /; for tests)
    #[argh(option)]
    base_root: Option<PathBuf>,
    /// give the download up after this many seconds, keeping it for resume (default:
    /// system.json download.deadline_s, 43200; 0: no deadline)
    #[argh(option)]
    deadline: Option<u64>,
    /// give the download up when it brings fewer bytes per second than this over the
    /// window, keeping it for resume (default: system.json download.min_rate, 512; 0: none)
    #[argh(option)]
    min_rate: Option<u64>,
    /// the window of --min-rate in seconds (default: system.json download.min_rate_window_s, 120)
    #[argh(option)]
    min_rate_window: Option<u64>,
}

impl Stage {
    pub fn run(self) -> anyhow::Result<()> {
        let dev = Device::open(&DeviceArgs {
            config: self.config,
            data_dir: self.data_dir,
            disk: self.disk,
        })?;
        let opts = StageOptions {
            source: self.source.clone(),
            sha256: self.sha256,
            allow_downgrade: self.allow_downgrade,
            ca: self.ca,
            base_root: self.base_root,
            deadline_s: self.deadline,
            min_rate: self.min_rate,
            min_rate_window_s: self.min_rate_window,
            ..StageOptions::default()
        };
        let r = crate::stage::stage(&dev, &opts)?;
        if let Some(plan) = &r.layout_plan {
            println!("this update migrates the partition layout first:");
            println!("{plan}");
        }
        println!(
            "staged {} ({}, sha256 {}, signed by key {}) as {}; it is applied at the next boot",
            r.staged.version,
            human(r.staged.size),
            r.staged.sha256,
            r.signed_by,
            r.path.display()
        );
        log::debug!(
            "payloads verified from the digests taken while downloading: {} of {} read again",
            r.reread,
            r.payloads
        );
        if let Some(kib) = crate::stage::peak_rss_kib() {
            log::debug!("peak memory (VmHWM): {kib} KiB");
        }
        if self.reboot {
            log::info!("rebooting to apply {}", r.staged.version);
            crate::stage::request_reboot().map_err(|e| {
                e.context(format!(
                    "{} is staged, but the reboot failed",
                    r.staged.version
                ))
            })?;
        }
        Ok(())
    }
}
