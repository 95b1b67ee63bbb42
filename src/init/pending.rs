//! The call sites of the apply pipeline from the init.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use nix::mount::MsFlags;

use super::bootlog;
use super::devices::Devices;
use crate::apply::BaseRoot;
use crate::apply::layout::DataMount;
use crate::boot::cmdline::Cmdline;
use crate::disk::Part;
use crate::fsutil::DataDir;
use crate::model::config::SystemConfig;
use crate::model::slot::Slot;
use crate::sys::mount::{mount, umount};

/// Where the data partition is mounted read-write in the initramfs (by hup's /init and by
/// `hup apply-pending`): in the initramfs's own root, not under /run, which a distribution's
/// initramfs moves into the real root.
pub const DATA_MNT: &str = "/hup/data";

/// What the init hands to the apply pipeline.
#[derive(Debug)]
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

/// Runs a pending update if there is one (with the layout migration it needs, which
/// unmounts and mounts the data partition through `data`). An error is logged by the init,
/// which then boots the current slot normally; the pipeline recorded the failure in
/// state.json.
pub fn run_pending(ctx: &PendingContext, data_mount: &mut InitDataMount) -> Result<Pending> {
    let data = DataDir::under_mount(ctx.data_dir);
    if !data.state_path().exists() {
        log::warn!("no {}: nothing to apply", data.state_path().display());
        return Ok(Pending::None);
    }
    let disk = disk_of(ctx.config, ctx.devices)?;
    let base = InitBase {
        devices: ctx.devices,
    };
    match crate::apply::run_staged(&disk, &data, ctx.config, Some(&base), Some(data_mount))? {
        None => Ok(Pending::None),
        Some(r) => Ok(Pending::Reboot {
            reason: format!("{} written to slot {}, trying it next", r.version, r.target),
        }),
    }
}

/// [`run_pending`] with the data partition mounted at `ctx.data_dir` (through the
/// partition labelled `data` in `ctx.devices`). Returns the pipeline's answer and whether
/// the partition is still mounted (a layout migration unmounts and mounts it again); when it
/// is and the boot log lost its file (a migration that stopped before its point of no
/// return), the log is attached to the data partition again.
pub fn run_mounted(ctx: &PendingContext) -> (Result<Pending>, bool) {
    let node = ctx
        .devices
        .get(&ctx.config.labels.data)
        .map(|p| p.node.clone())
        .unwrap_or_default();
    let mut data = InitDataMount {
        dir: ctx.data_dir.to_path_buf(),
        node,
        mounted: true,
    };
    let result = run_pending(ctx, &mut data);
    if data.mounted
        && !bootlog::is_attached()
        && let Err(e) = bootlog::attach_file(&ctx.data_dir.join("hup/log"))
    {
        log::warn!("no boot log on the data partition: {e:#}");
    }
    (result, data.mounted)
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

/// Where the init mounts the running slot for a fingerprint check, before any root is
/// chosen (and unmounts it right after: a mounted partition would stop a layout migration's
/// table write).
pub const BASE_MNT: &str = "/hup/base";

/// The running slot's files for preflight: its partition mounted read-only for the check.
struct InitBase<'a> {
    devices: &'a Devices,
}

impl BaseRoot for InitBase<'_> {
    fn with_root(&self, label: &str, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        let part = self
            .devices
            .get(label)
            .with_context(|| format!("no partition labelled {label}"))?;
        let dir = Path::new(BASE_MNT);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {BASE_MNT}"))?;
        let node = part.node.display().to_string();
        mount(&node, dir, "ext4", MsFlags::MS_RDONLY, None)?;
        let r = f(dir);
        umount(dir)?;
        r
    }
}

/// The init's data partition, for the layout migration: it is unmounted before the new
/// table is written and mounted again (same device node, new range) after the restore.
#[derive(Debug)]
pub struct InitDataMount {
    pub dir: PathBuf,
    pub node: PathBuf,
    pub mounted: bool,
}

impl DataMount for InitDataMount {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn quiesce(&mut self) {
        // Log lines stay in memory until the restored partition is mounted again.
        bootlog::detach_file();
    }

    fn unmount(&mut self) -> Result<()> {
        umount(&self.dir)?;
        self.mounted = false;
        Ok(())
    }

    fn mount(&mut self, _disk: &Path, part: &Part) -> Result<()> {
        wait_for_size(&self.node, part.len)?;
        let node = self.node.display().to_string();
        mount(&node, &self.dir, "ext4", MsFlags::MS_NODEV, None)?;
        self.mounted = true;
        match bootlog::attach_file(&self.dir.join("hup/log")) {
            Ok(p) => log::info!(
                "data partition {node} mounted again; log in {}",
                p.display()
            ),
            Err(e) => log::warn!("no boot log on the data partition: {e:#}"),
        }
        Ok(())
    }
}

/// Waits (up to 5 s) until the kernel shows the partition `node` with `len` bytes: after a
/// new table it re-reads the partitions, and a stale node must not be mounted.
fn wait_for_size(node: &Path, len: u64) -> Result<()> {
    let name = node
        .file_name()
        .with_context(|| format!("{} has no name", node.display()))?;
    let size_file = Path::new("/sys/class/block").join(name).join("size");
    let mut seen = String::new();
    for _ in 0..50 {
        seen = std::fs::read_to_string(&size_file).unwrap_or_default();
        // devtmpfs removes and adds the node again with the partition.
        if seen.trim().parse::<u64>().ok().map(|s| s * 512) == Some(len) && node.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!(
        "{} still has {} sectors, the new table says {} bytes: the kernel did not take the new partition table",
        node.display(),
        seen.trim(),
        len
    )
}

/// Before the data partition is mounted: continues a layout migration that a power cut
/// interrupted past its backup. Returns what [`complete_layout`] records once it is mounted.
pub fn resume_layout(
    config: &SystemConfig,
    devices: &Devices,
) -> Result<Option<(crate::layout::Record, f64)>> {
    let disk = disk_of(config, devices)?;
    crate::apply::layout::resume_at_boot(&disk, &config.labels)
}

/// Records a resumed migration in state.json and clears its backup header.
pub fn complete_layout(
    config: &SystemConfig,
    devices: &Devices,
    data_dir: &Path,
    rec: &crate::layout::Record,
    secs: f64,
) -> Result<()> {
    let disk = disk_of(config, devices)?;
    let data = DataDir::under_mount(data_dir);
    crate::apply::layout::complete(&disk, &data, rec, &[("resume".into(), secs)])
}
