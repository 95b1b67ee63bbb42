use std::path::PathBuf;

use argh::FromArgs;

use crate::device::mark::{Marked, Refund};
use crate::device::{Device, DeviceArgs};

/// Commit the booted slot: the OS runs this once it is healthy after an update.
#[derive(FromArgs)]
#[argh(subcommand, name = "mark-good")]
pub struct MarkGood {
    /// device configuration (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// whole disk holding the hup partitions (default: found by partition label)
    #[argh(option)]
    disk: Option<PathBuf>,
}

/// Give up the booted slot: the next boot falls back to the other slot.
#[derive(FromArgs)]
#[argh(subcommand, name = "mark-bad")]
pub struct MarkBad {
    /// device configuration (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// whole disk holding the hup partitions (default: found by partition label)
    #[argh(option)]
    disk: Option<PathBuf>,
}

/// Give back the try this boot used: the OS runs this in its clean shutdown path.
#[derive(FromArgs)]
#[argh(subcommand, name = "refund-try")]
pub struct RefundTry {
    /// device configuration (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
    /// hup's data directory (default <data_mount>/hup from the configuration)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// whole disk holding the hup partitions (default: found by partition label)
    #[argh(option)]
    disk: Option<PathBuf>,
}

fn device(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    disk: Option<PathBuf>,
) -> anyhow::Result<Device> {
    Device::open(&DeviceArgs {
        config,
        data_dir,
        disk,
    })
}

fn describe(m: &Marked) -> String {
    let version = m
        .version
        .as_deref()
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    let outcome = m
        .outcome
        .and_then(|o| serde_json::to_value(o).ok())
        .and_then(|v| v.as_str().map(|s| format!("; last update: {s}")))
        .unwrap_or_default();
    format!("slot {}{version}{outcome}", m.slot)
}

impl MarkGood {
    pub fn run(self) -> anyhow::Result<()> {
        let dev = device(self.config, self.data_dir, self.disk)?;
        let m = crate::device::mark::mark_good(&dev)?;
        println!("marked good: {}", describe(&m));
        Ok(())
    }
}

impl MarkBad {
    pub fn run(self) -> anyhow::Result<()> {
        let dev = device(self.config, self.data_dir, self.disk)?;
        let m = crate::device::mark::mark_bad(&dev)?;
        println!(
            "marked bad: {}; the next boot starts slot {}",
            describe(&m),
            m.slot.other()
        );
        Ok(())
    }
}

/// The one line `hup refund-try` prints.
fn describe_refund(r: &Refund) -> String {
    match r {
        Refund::GivenBack {
            slot,
            refunds_left: 1,
        } => format!("slot {slot}: the try of this boot is given back (1 refund left)"),
        Refund::GivenBack { slot, refunds_left } => {
            format!("slot {slot}: the try of this boot is given back ({refunds_left} refunds left)")
        }
        Refund::NotOnTrial { slot } => format!("slot {slot} is not on trial: nothing to give back"),
        Refund::NoTryUsed { slot } => {
            format!("slot {slot}: this boot used no try: nothing to give back")
        }
        Refund::NoRefundsLeft { slot } => {
            format!("slot {slot}: no refunds left in this trial: this boot counts")
        }
    }
}

impl RefundTry {
    pub fn run(self) -> anyhow::Result<()> {
        let dev = device(self.config, self.data_dir, self.disk)?;
        let r = crate::device::mark::refund_try(&dev)?;
        println!("{}", describe_refund(&r));
        Ok(())
    }
}
