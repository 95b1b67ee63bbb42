//! The stage-time checks of what a bundle requires of the device beyond sizes and versions
//! (docs/staging.md): the partition layout it names (`manifest.layout`: reachable from this
//! disk, and the data survives the migration) and an unmodified running system
//! (`manifest.requires_unmodified_base`, checked by
//! [`check_base`](crate::data::fingerprint::check_base)). `hup inspect --disk` shows the
//! same plan.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::data::backup::Source;
use crate::disk::Disk;
use crate::layout::{Plan, PlanError};
use crate::model::config::Labels;
use crate::model::layout::TargetLayout;
use crate::model::slot::Slot;
use crate::size::human;

/// What migrating a disk to a target layout would take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutStatus {
    /// The disk has the layout already.
    NotNeeded,
    /// The migration the apply will run first.
    Plan(Box<Plan>),
    /// The planner refuses: the layout cannot be reached safely from this disk.
    Refused(PlanError),
}

/// Plans the migration of `disk` (opened read-only) to `target`, with slot `active` running.
/// A refusal of the planner is [`LayoutStatus::Refused`]; reading the disk failing is an
/// error.
pub fn layout_status(
    disk: &Path,
    target: &TargetLayout,
    labels: &Labels,
    active: Slot,
) -> Result<LayoutStatus> {
    let d = Disk::open_read_only(disk)?;
    match crate::layout::plan(&d, target, labels, active) {
        Ok(None) => Ok(LayoutStatus::NotNeeded),
        Ok(Some(p)) => Ok(LayoutStatus::Plan(Box::new(p))),
        Err(refusal) => Ok(LayoutStatus::Refused(refusal)),
    }
}

/// The stage-time layout check: `None` when the disk has `target` already; else the plan,
/// after checking that the backup of the data under `data_root` (the mounted data
/// partition, leaving out the files in `exclude`: the staged bundle this one replaces and
/// the download) plus a bundle of `bundle_size` bytes fits the backup region, and that the
/// files fit the new data partition. Any refusal is a one-line error.
pub fn check_layout(
    disk: &Path,
    target: &TargetLayout,
    labels: &Labels,
    booted: Slot,
    data_root: &Path,
    exclude: &[&Path],
    bundle_size: u64,
) -> Result<Option<Plan>> {
    let Some(plan) =
        crate::layout::plan_bundle(&Disk::open_read_only(disk)?, target, labels, booted)?
    else {
        return Ok(None);
    };
    let mut src = Source::new(data_root)?;
    for f in exclude {
        src.exclude(f)?;
    }
    let fit = plan.check_fit(&src, bundle_size).with_context(|| {
        format!(
            "checking that the data in {} survives the layout migration",
            data_root.display()
        )
    })?;
    if let Err(refusal) = fit {
        let scan = src.scan()?;
        bail!(
            "bundle needs a partition layout migration that the data does not survive: {} \
             holds {} files and directories ({} of file content); {refusal}",
            data_root.display(),
            scan.entries,
            human(scan.file_bytes)
        );
    }
    Ok(Some(plan))
}
