//! What an apply is given (disk, data directory, configuration, keys, the running base) and
//! what it reports; the running slot it must not touch.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::boot::BootBackend;
use crate::bundle::sign::TrustedKeys;
use crate::fsutil::DataDir;
use crate::model::config::SystemConfig;
use crate::model::journal::Step;
use crate::model::slot::{Slot, SlotStatus};

/// Where and with what to apply.
pub struct Context<'a> {
    /// The whole disk (block device or image file) holding the hup partitions.
    pub disk: &'a Path,
    pub data: &'a DataDir,
    pub config: &'a SystemConfig,
    pub keys: &'a TrustedKeys,
    /// Access to the running slot's files, for bundles that require an unmodified base
    /// (`requires_unmodified_base`); `None`: such bundles are refused.
    pub base: Option<&'a dyn BaseRoot>,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Gives the running slot's files to the fingerprint check of preflight.
pub trait BaseRoot {
    /// Runs `f` with the root of the slot whose partition is labelled `label` mounted
    /// (read-only is enough); unmounts it again before returning.
    fn with_root(&self, label: &str, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()>;
}

/// A base root that is mounted already (the host: `hup apply --base-root DIR`).
#[derive(Debug)]
pub struct MountedBase(pub PathBuf);

impl BaseRoot for MountedBase {
    fn with_root(&self, _label: &str, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
        f(&self.0)
    }
}

/// What an apply did.
#[derive(Debug)]
pub struct Report {
    pub version: String,
    pub target: Slot,
    /// (step, seconds) for the steps this run executed.
    pub timings: Vec<(Step, f64)>,
    pub log: PathBuf,
}

/// The slot that is running and must not be touched: the good slot (the preferred one when
/// both are good). Refuses when no slot is good, since the update would then overwrite the
/// only fallback.
pub fn current_slot(backend: &dyn BootBackend) -> Result<Slot> {
    let st = backend.state()?;
    let good: Vec<Slot> = st
        .slots
        .iter()
        .filter(|s| s.status == SlotStatus::Good)
        .map(|s| s.slot)
        .collect();
    match good.as_slice() {
        [one] => Ok(*one),
        [_, _] => backend.active(),
        _ => bail!(
            "no slot is marked good ({}): refusing to update; the running OS must run `hup mark-good` first",
            st.slots
                .iter()
                .map(|s| format!("{} {}", s.slot, s.status))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Where migrations read and write: the data partition (the parent of hup's directory) and
/// a temporary directory holding the boot partition's `config.json` (the boot partition is
/// FAT and is not mounted). Outputs go to `DATA/hup/migrated/system-connections/`.
pub(crate) fn migration_context(
    ctx: &Context,
) -> Result<(crate::migrate::MigrationContext, tempfile::TempDir)> {
    let data_root = ctx
        .data
        .root
        .parent()
        .context("hup's data directory has no parent directory")?;
    let old_boot = tempfile::Builder::new()
        .prefix(".old-boot-")
        .tempdir_in(&ctx.data.root)
        .with_context(|| format!("creating a directory in {}", ctx.data.root.display()))?;
    let disk = crate::disk::Disk::open_read_only(ctx.disk)?;
    let esp = crate::disk::Esp::open(disk.open_partition(&ctx.config.labels.boot)?)?;
    if esp.exists("config.json")? {
        let dst = old_boot.path().join("config.json");
        std::fs::write(&dst, esp.read_file("config.json")?)
            .with_context(|| format!("writing {}", dst.display()))?;
    }
    Ok((
        crate::migrate::MigrationContext::new(data_root, old_boot.path()),
        old_boot,
    ))
}
