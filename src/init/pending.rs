//! The call sites of the apply pipeline from the init.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::cmdline::Cmdline;
use super::devices::Devices;
use super::slot::Slot;
use crate::fsutil::DataDir;
use crate::model::config::SystemConfig;

/// What the init hands to the apply pipeline.
pub struct PendingContext<'a> {
    pub config: &'a SystemConfig,
    pub cmdline: &'a Cmdline,
    /// Partitions by label (boot, root_a, root_b, data), with their disk.
    pub devices: &'a Devices,
    /// Where the data partition is mounted read-write in the initramfs
    /// (hup's files are under `<data_dir>/hup/`).
    pub data_dir: &'a Path,
}

/// The pipeline's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Nothing staged (or nothing left to do): boot normally.
    None,
    /// An update was applied: the init syncs and reboots into it.
    Reboot { reason: String },
}

/// The whole disk holding the root partitions.
pub fn disk_of(config: &SystemConfig, devices: &Devices) -> Result<PathBuf> {
    let part = devices
        .get(&config.labels.root_a)
        .or_else(|| devices.get(&config.labels.root_b))
        .context("no root partition found")?;
    part.disk
        .clone()
        .with_context(|| format!("no whole-disk device known for {}", part.node.display()))
}

/// Runs a pending update if there is one. An error is logged by the init, which then boots
/// the current slot normally; the pipeline recorded the failure in state.json.
pub fn run_pending(ctx: &PendingContext) -> Result<Pending> {
    let data = DataDir::under_mount(ctx.data_dir);
    if !data.state_path().exists() {
        log::warn!("no {}: nothing to apply", data.state_path().display());
        return Ok(Pending::None);
    }
    let disk = disk_of(ctx.config, ctx.devices)?;
    match crate::apply::run_staged(&disk, &data, ctx.config)? {
        None => Ok(Pending::None),
        Some(r) => Ok(Pending::Reboot {
            reason: format!("{} written to slot {}, trying it next", r.version, r.target),
        }),
    }
}

/// Records in state.json which slot boots (detects a rolled-back update).
pub fn note_booted(ctx: &PendingContext, booted: Slot) -> Result<()> {
    let data = DataDir::under_mount(ctx.data_dir);
    if !data.state_path().exists() {
        return Ok(());
    }
    let disk = disk_of(ctx.config, ctx.devices)?;
    crate::apply::note_booted(&disk, &data, ctx.config, booted)
}

/// A slot that failed to boot is given up when it was on trial (and its update recorded as
/// rolled back, with `why`, when the data partition is mounted at `data_dir`).
pub fn give_up_slot(
    config: &SystemConfig,
    devices: &Devices,
    data_dir: Option<&Path>,
    slot: Slot,
    why: &str,
) -> Result<()> {
    let disk = disk_of(config, devices)?;
    let data = data_dir.map(DataDir::under_mount);
    if crate::apply::give_up_slot(&disk, data.as_ref(), config, slot, why)? {
        log::warn!("slot {slot} could not boot: marked bad, it will not be tried again");
    }
    Ok(())
}
