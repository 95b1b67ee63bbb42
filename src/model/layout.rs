//! The partition layout a bundle requires, and the partitions of a table to create.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

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

impl PartitionSpec {
    pub fn new(label: &str, size: Option<u64>, type_guid: &str) -> PartitionSpec {
        PartitionSpec {
            label: label.to_string(),
            size,
            type_guid: type_guid.to_string(),
        }
    }

    /// Checks partitions placed one after another on a disk: at least one, labels of 1 to 36
    /// UTF-16 units and unique, no size 0, only the last without a size, type GUIDs that
    /// parse. Both a bundle's [`TargetLayout`] and a freshly created table are checked here.
    pub fn check_all(specs: &[PartitionSpec]) -> Result<()> {
        ensure!(!specs.is_empty(), "a layout needs at least one partition");
        let last = specs.len() - 1;
        for (i, p) in specs.iter().enumerate() {
            if p.label.is_empty() || p.label.encode_utf16().count() > 36 {
                bail!("partition label {:?} must be 1 to 36 characters", p.label);
            }
            if specs[..i].iter().any(|o| o.label == p.label) {
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
        PartitionSpec::check_all(&self.partitions)
    }

    /// The spec of the partition labelled `label`.
    pub fn partition(&self, label: &str) -> Option<&PartitionSpec> {
        self.partitions.iter().find(|p| p.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux filesystem data type GUID.
    const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

    fn spec(label: &str, size: Option<u64>) -> PartitionSpec {
        PartitionSpec {
            label: label.into(),
            size,
            type_guid: LINUX_FS.into(),
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

    #[test]
    fn a_created_table_is_checked_like_a_bundle_layout_but_without_a_version() {
        let list = vec![
            PartitionSpec::new("a", Some(1), LINUX_FS),
            PartitionSpec::new("b", None, LINUX_FS),
        ];
        PartitionSpec::check_all(&list).unwrap();
        let e = PartitionSpec::check_all(&[]).unwrap_err();
        assert_eq!(e.to_string(), "a layout needs at least one partition");
        // More partitions than a bundle layout may name are fine for a created table.
        let many: Vec<_> = (0..MAX_PARTITIONS + 1)
            .map(|i| PartitionSpec::new(&format!("p{i}"), Some(1), LINUX_FS))
            .collect();
        PartitionSpec::check_all(&many).unwrap();
        let as_target = TargetLayout {
            version: 1,
            partitions: many,
        };
        assert!(as_target.validate().is_err());
        let dup = [
            PartitionSpec::new("x", Some(1), LINUX_FS),
            PartitionSpec::new("x", Some(1), LINUX_FS),
        ];
        let e = PartitionSpec::check_all(&dup).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
    }
}
