//! layout: partition layout migration (docs/layout-migration.md).
//!
//! A bundle may require another partition layout than the device has (bigger root slots,
//! a moved data partition). The migration runs offline, before the normal apply, in steps
//! that are each idempotent and resumable (docs/layout-migration.md):
//!
//! 1. [`normalize`]: when the active slot is not the one that keeps its start, copy it
//!    there (raw, verified by sha256); the caller then switches boot to it.
//! 2. [`backup`]: the data partition (tar + zstd) and the staged bundle go into the spare
//!    root slot, behind a header ([`Record`]) with magic, phase, lengths and sha256. What
//!    does not fit is refused before the first write.
//! 3. [`write_table`]: the point of no return, the new GPT (both copies).
//! 4. [`restore`]: the new data partition is formatted and filled from the backup, the
//!    bundle goes back to `DATA/hup/staged/`.
//!
//! [`plan`] computes the steps from the disk and refuses what cannot be reached safely;
//! [`resume`] continues after a power cut from the header found by [`resume_phase`].

mod migrate;
mod plan;
mod region;
mod table;

use anyhow::Result;

use crate::model::layout::TargetLayout;

pub use migrate::{
    Resumed, backup, backup_checked, discard, finish, normalize, restore, resume, resume_phase,
    write_table,
};
pub use plan::{Estimate, Normalize, Plan, PlanError, Region, estimate, plan};
pub use region::{Payload, Phase, Record};

/// [`plan`] for the layout a bundle names: a refusal becomes the one-line error `hup stage`,
/// preflight and the initramfs show.
pub fn plan_bundle(
    disk: &crate::disk::Disk,
    target: &TargetLayout,
    labels: &crate::model::config::Labels,
    active: crate::model::slot::Slot,
) -> Result<Option<Plan>> {
    plan(disk, target, labels, active).map_err(|refusal| {
        anyhow::anyhow!("bundle needs a partition layout this device cannot reach: {refusal}")
    })
}
