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

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

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
    plan(disk, target, labels, active).map_err(|e| match e.downcast::<PlanError>() {
        Ok(refusal) => {
            anyhow::anyhow!("bundle needs a partition layout this device cannot reach: {refusal}")
        }
        Err(e) => e.context(format!(
            "planning the layout migration of {}",
            disk.path().display()
        )),
    })
}

/// Most partitions a target layout may name (they are all recorded in the backup header).
pub const MAX_PARTITIONS: usize = 16;

/// The partition layout a bundle requires (manifest field `layout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLayout {
    /// Layout version, from 1; recorded in the backup header and shown by `hup inspect`.
    pub version: u32,
    /// The partitions in disk order, each placed 1 MiB aligned after the previous one.
    pub partitions: Vec<PartitionSpec>,
}

/// One partition of a [`TargetLayout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// GPT name (PARTLABEL), 1 to 36 characters, unique in the layout.
    pub label: String,
    /// Size in bytes, rounded up to whole MiB; `None` (last partition only): the rest of the
    /// disk, rounded down to whole MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Partition type GUID, e.g. `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
    pub type_guid: String,
}

impl TargetLayout {
    /// Checks what a layout must satisfy on any disk.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.version >= 1, "layout version must be 1 or more");
        ensure!(
            !self.partitions.is_empty() && self.partitions.len() <= MAX_PARTITIONS,
            "a layout needs 1 to {MAX_PARTITIONS} partitions, not {}",
            self.partitions.len()
        );
        let last = self.partitions.len() - 1;
        for (i, p) in self.partitions.iter().enumerate() {
            if p.label.is_empty() || p.label.encode_utf16().count() > 36 {
                bail!("partition label {:?} must be 1 to 36 characters", p.label);
            }
            if self.partitions[..i].iter().any(|o| o.label == p.label) {
                bail!("partition label {:?} is used twice", p.label);
            }
            match p.size {
                Some(0) => bail!("partition {:?} has size 0", p.label),
                None if i != last => bail!(
                    "only the last partition may take the rest of the disk ({:?} is not last)",
                    p.label
                ),
                _ => {}
            }
            p.type_guid.parse::<uuid::Uuid>().with_context(|| {
                format!("type GUID {:?} of partition {:?}", p.type_guid, p.label)
            })?;
        }
        Ok(())
    }

    /// The spec of the partition labelled `label`.
    pub fn partition(&self, label: &str) -> Option<&PartitionSpec> {
        self.partitions.iter().find(|p| p.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(label: &str, size: Option<u64>) -> PartitionSpec {
        PartitionSpec {
            label: label.into(),
            size,
            type_guid: crate::disk::TYPE_LINUX_FS.into(),
        }
    }

    #[test]
    fn json_and_validation() {
        let json = r#"{"version":2,"partitions":[
            {"label":"hup-boot","size":67108864,"type_guid":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
            {"label":"hup-data","type_guid":"0FC63DAF-8483-4772-8E79-3D69D8477DE4"}]}"#;
        let l: TargetLayout = serde_json::from_str(json).unwrap();
        l.validate().unwrap();
        assert_eq!(l.partitions[1].size, None);
        assert_eq!(l.partition("hup-boot").unwrap().size, Some(64 << 20));
        assert!(
            serde_json::from_str::<TargetLayout>(r#"{"version":1,"partitions":[],"x":1}"#).is_err()
        );

        let bad = |parts: Vec<PartitionSpec>| TargetLayout {
            version: 1,
            partitions: parts,
        };
        assert!(bad(vec![]).validate().is_err());
        assert!(
            bad(vec![spec("a", None), spec("b", Some(1))])
                .validate()
                .is_err()
        );
        assert!(
            bad(vec![spec("a", Some(1)), spec("a", Some(1))])
                .validate()
                .is_err()
        );
        assert!(bad(vec![spec("a", Some(0))]).validate().is_err());
        assert!(bad(vec![spec(&"x".repeat(37), None)]).validate().is_err());
        let mut p = spec("a", None);
        p.type_guid = "not-a-guid".into();
        let err = bad(vec![p]).validate().unwrap_err();
        assert!(format!("{err:#}").contains("not-a-guid"), "{err:#}");
        assert!(
            TargetLayout {
                version: 0,
                partitions: vec![spec("a", None)]
            }
            .validate()
            .is_err()
        );
    }
}
