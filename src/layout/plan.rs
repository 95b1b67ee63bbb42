//! The planner: from the current GPT, a target layout and the active slot to the steps of a
//! migration, or the reason it cannot be done safely (docs/layout-migration.md).

use std::fmt;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::region::{ALIGN, PAYLOAD_START, REGION_ALIGN};
use crate::data::backup::{Scan, Source};
use crate::disk::{Disk, Part};
use crate::model::config::Labels;
use crate::model::layout::TargetLayout;
use crate::model::slot::Slot;
use crate::size::mib;

const MIB: u64 = 1 << 20;
/// The GPT entry array hup and sgdisk write: 128 entries of 128 bytes.
const ENTRY_ARRAY: u64 = 128 * 128;
/// Smallest backup region worth using.
const MIN_REGION: u64 = 2 * MIB;
/// Bits 48-63 of a GPT entry's attributes belong to the partition type (the gpt boot state).
const TYPE_BITS: u64 = 0xFFFF << 48;

fn range(start: u64, len: u64) -> String {
    format!(
        "{}..{} ({})",
        mib(start),
        mib(start.saturating_add(len)),
        mib(len)
    )
}

/// Why a migration is refused. Nothing has been written when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("invalid target layout: {0}")]
    Invalid(String),
    #[error("the {place} has no partition labelled {label:?} (the {role} partition)")]
    Missing {
        place: &'static str,
        label: String,
        role: &'static str,
    },
    #[error("the disk ({}) is too small for the target layout: partition {label:?} would end at {}", mib(*.size), mib(*.end))]
    DiskTooSmall { label: String, end: u64, size: u64 },
    #[error("partition {label:?} is not in the target layout: its content would be lost")]
    DropsPartition { label: String },
    #[error(
        "the boot partition {label:?} would change from {now} to {after}: it must keep its place and size"
    )]
    BootMoves {
        label: String,
        now: String,
        after: String,
    },
    #[error(
        "neither root slot keeps its start in the target layout (slot a: {a}, slot b: {b}): the active slot would move"
    )]
    ActiveSlotMoves { a: String, b: String },
    #[error("slot {from} ({}) does not fit into slot {to} ({}), where it has to move to keep its start", mib(*.len), mib(*.room))]
    NormalizeTooBig {
        from: Slot,
        to: Slot,
        len: u64,
        room: u64,
    },
    #[error("partition {label:?} would shrink to {}, below the {} of the active system it holds", mib(*.after), mib(*.content))]
    SlotShrinks {
        label: String,
        content: u64,
        after: u64,
    },
    #[error(
        "the new data partition {label:?} ({range}) covers the spare slot {spare:?} ({spare_range}): the backup would be overwritten before the restore"
    )]
    BackupOverwritten {
        label: String,
        range: String,
        spare: String,
        spare_range: String,
    },
    #[error("the backup needs {} but the backup region holds {}: nothing was changed", mib(*.needed), mib(*.capacity))]
    BackupTooBig { needed: u64, capacity: u64 },
    #[error("the data takes {} but the new data partition {label:?} holds about {}", mib(*.needed), mib(*.room))]
    DataTooBig {
        label: String,
        needed: u64,
        room: u64,
    },
    #[error("the data has {entries} files but the new data partition {label:?} can hold {inodes}")]
    TooManyFiles {
        label: String,
        entries: u64,
        inodes: u64,
    },
}

/// The normalization copy: the active slot moves to the slot that keeps its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Normalize {
    pub from: Slot,
    pub to: Slot,
    pub from_label: String,
    pub to_label: String,
    pub src_start: u64,
    pub dst_start: u64,
    /// Bytes copied: the whole source partition.
    pub len: u64,
}

/// The backup region: a byte range of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Region {
    pub start: u64,
    pub len: u64,
}

/// What a migration will do. Printable (`Display`) and serializable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub disk: String,
    pub disk_size: u64,
    pub sector_size: u64,
    pub layout_version: u32,
    pub labels: Labels,
    /// The slot running now.
    pub active: Slot,
    /// The slot that keeps its start: its first `keeper_content` bytes never change.
    pub keeper: Slot,
    pub keeper_content: u64,
    /// Set when the active slot is not the keeper: copy it there first.
    pub normalize: Option<Normalize>,
    /// The table now and after the migration (same labels keep their GUIDs and attributes).
    pub current: Vec<Part>,
    pub table: Vec<Part>,
    /// Where the backup goes: the part of the old spare slot the new data partition leaves.
    pub region: Region,
    /// Room for the restored files on the new data partition (an estimate), and the most
    /// inodes it can be formatted with.
    pub data_room: u64,
    pub data_max_inodes: u64,
}

/// What a backup of the data needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// Bytes of the backup region: headers, the bundle and the compressed data.
    pub needed: u64,
    /// `needed` was measured by compressing; else it is an upper bound from sizes alone.
    pub exact: bool,
    pub bundle_bytes: u64,
    pub scan: Scan,
}

impl Estimate {
    /// Saturating: an estimate too large to count is larger than any backup region.
    fn new(scan: Scan, bundle_bytes: u64, data: u64, exact: bool) -> Estimate {
        Estimate {
            needed: PAYLOAD_START
                .saturating_add(bundle_bytes.div_ceil(ALIGN).saturating_mul(ALIGN))
                .saturating_add(data),
            exact,
            bundle_bytes,
            scan,
        }
    }

    /// Upper bound: zstd never grows data by more than this.
    pub(crate) fn bound(scan: Scan, bundle_bytes: u64) -> Estimate {
        let t = scan.tar_bytes;
        Estimate::new(
            scan,
            bundle_bytes,
            t.saturating_add(t / 128).saturating_add(MIB),
            false,
        )
    }

    pub(crate) fn exact(scan: Scan, bundle_bytes: u64, compressed: u64) -> Estimate {
        Estimate::new(scan, bundle_bytes, compressed, true)
    }
}

/// Upper bound of the backup region bytes for the data under `data_dir` (the mounted data
/// partition) plus a bundle of `bundle_size` bytes, from metadata alone (fast: no file is
/// read). [`Plan::check_fit`] measures exactly when the bound does not fit.
pub fn estimate(data_dir: &Path, bundle_size: u64) -> Result<Estimate> {
    Ok(Estimate::bound(Source::new(data_dir)?.scan()?, bundle_size))
}

impl Plan {
    /// The new data partition.
    pub fn new_data(&self) -> &Part {
        find(&self.table, &self.labels.data).expect("the plan has a data partition")
    }

    /// Checks an estimate against the backup region and the new data partition.
    pub fn check(&self, est: &Estimate) -> Result<(), PlanError> {
        let data = self.new_data();
        if est.needed > self.region.len {
            return Err(PlanError::BackupTooBig {
                needed: est.needed,
                capacity: self.region.len,
            });
        }
        if restore_inodes(est.scan.entries, data.len) > self.data_max_inodes {
            return Err(PlanError::TooManyFiles {
                label: data.label.clone(),
                entries: est.scan.entries,
                inodes: self.data_max_inodes,
            });
        }
        if est.scan.fs_bytes > self.data_room {
            return Err(PlanError::DataTooBig {
                label: data.label.clone(),
                needed: est.scan.fs_bytes,
                room: self.data_room,
            });
        }
        Ok(())
    }

    /// The estimate of `src` with a bundle of `bundle_size` bytes, checked: an upper bound
    /// first, measured by compressing everything (to nowhere) when the bound does not fit.
    /// The outer error is reading the data failing; the inner one the planner's refusal.
    pub fn check_fit(&self, src: &Source, bundle_size: u64) -> Result<Result<Estimate, PlanError>> {
        let est = Estimate::bound(src.scan()?, bundle_size);
        let est = match self.check(&est) {
            Err(PlanError::BackupTooBig { .. }) => {
                log::info!("measuring the compressed size of the data backup");
                let (scan, z) = src.compressed_size()?;
                Estimate::exact(scan, bundle_size, z)
            }
            _ => est,
        };
        Ok(self.check(&est).map(|()| est))
    }
}

/// Inodes the new data filesystem gets for `entries` files: mke2fs' default, or more.
pub(crate) fn restore_inodes(entries: u64, len: u64) -> u64 {
    let default = len / crate::ext4::inode_ratio(len);
    default.max(entries.saturating_add(entries / 4).saturating_add(64))
}

fn find<'a>(parts: &'a [Part], label: &str) -> Option<&'a Part> {
    parts.iter().find(|p| p.label == label)
}

/// `table` with the attributes the partitions have now on the disk (`current`, by label),
/// those of the `spare` slot without their boot state: the boot backend may have changed them
/// since the plan, and the new spare slot holds no system to boot.
pub(crate) fn current_attrs(table: &[Part], current: &[Part], spare: &str) -> Vec<Part> {
    let mut out = table.to_vec();
    for p in &mut out {
        if let Some(c) = find(current, &p.label) {
            p.attrs = c.attrs;
        }
        if p.label == spare {
            p.attrs &= !TYPE_BITS;
        }
    }
    out
}

/// True when both tables have the same partitions (label, place, size, type).
pub(crate) fn same_layout(a: &[Part], b: &[Part]) -> bool {
    let key = |p: &Part| (p.label.clone(), p.start, p.len, p.type_guid.to_uppercase());
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

/// Computes the migration of `disk` to `target`; `None` when the disk has it already.
/// Works on the table read when `disk` was opened: the only failures are refusals.
pub fn plan(
    disk: &Disk,
    target: &TargetLayout,
    labels: &Labels,
    active: Slot,
) -> Result<Option<Plan>, PlanError> {
    let name = disk.path().display().to_string();
    let current = disk.partitions();
    plan_parts(
        &name,
        disk.size(),
        disk.sector_size(),
        &current,
        target,
        labels,
        active,
    )
}

/// [`plan`] on a table in memory.
pub(crate) fn plan_parts(
    disk: &str,
    size: u64,
    ss: u64,
    current: &[Part],
    target: &TargetLayout,
    labels: &Labels,
    active: Slot,
) -> Result<Option<Plan>, PlanError> {
    target
        .validate()
        .map_err(|e| PlanError::Invalid(format!("{e:#}")))?;
    let roles = [
        (&labels.boot, "boot"),
        (&labels.root_a, "slot a"),
        (&labels.root_b, "slot b"),
        (&labels.data, "data"),
    ];
    for (label, role) in roles {
        for (place, found) in [
            ("disk", find(current, label).is_some()),
            ("target layout", target.partition(label).is_some()),
        ] {
            if !found {
                return Err(PlanError::Missing {
                    place,
                    label: label.clone(),
                    role,
                });
            }
        }
    }
    let table = place(target, size, ss, current)?;
    if same_layout(current, &table) {
        return Ok(None);
    }
    if let Some(p) = current
        .iter()
        .find(|p| target.partition(&p.label).is_none())
    {
        return Err(PlanError::DropsPartition {
            label: p.label.clone(),
        });
    }
    let cur = |l: &str| find(current, l).expect("checked above");
    let new = |l: &str| find(&table, l).expect("checked above");
    let (boot, new_boot) = (cur(&labels.boot), new(&labels.boot));
    if (boot.start, boot.len) != (new_boot.start, new_boot.len) {
        return Err(PlanError::BootMoves {
            label: boot.label.clone(),
            now: range(boot.start, boot.len),
            after: range(new_boot.start, new_boot.len),
        });
    }

    // The keeper: the root slot whose start does not move (slot a when both keep it).
    let keeper = Slot::ALL
        .into_iter()
        .find(|s| cur(s.label(labels)).start == new(s.label(labels)).start)
        .ok_or_else(|| {
            let r = |s: Slot| {
                let (c, n) = (cur(s.label(labels)), new(s.label(labels)));
                format!("{} -> {}", mib(c.start), mib(n.start))
            };
            PlanError::ActiveSlotMoves {
                a: r(Slot::A),
                b: r(Slot::B),
            }
        })?;
    let keep = cur(keeper.label(labels));
    let spare = cur(keeper.other().label(labels));
    let normalize = if active == keeper {
        None
    } else {
        if spare.len > keep.len {
            return Err(PlanError::NormalizeTooBig {
                from: active,
                to: keeper,
                len: spare.len,
                room: keep.len,
            });
        }
        Some(Normalize {
            from: active,
            to: keeper,
            from_label: spare.label.clone(),
            to_label: keep.label.clone(),
            src_start: spare.start,
            dst_start: keep.start,
            len: spare.len,
        })
    };
    let content = normalize.as_ref().map_or(keep.len, |n| n.len);
    let new_keep = new(&keep.label);
    if new_keep.len < content {
        return Err(PlanError::SlotShrinks {
            label: keep.label.clone(),
            content,
            after: new_keep.len,
        });
    }
    // Partitions are placed one after the other, so with the keeper starting where it did
    // and not shrinking below the content, no other partition reaches into the content.

    let data = new(&labels.data);
    if data.len < crate::ext4::MIN_SIZE {
        return Err(PlanError::Invalid(format!(
            "the data partition {:?} would have {}, less than the {} of the smallest filesystem",
            data.label,
            mib(data.len),
            mib(crate::ext4::MIN_SIZE)
        )));
    }
    let region = backup_region(spare, data).ok_or_else(|| PlanError::BackupOverwritten {
        label: data.label.clone(),
        range: range(data.start, data.len),
        spare: spare.label.clone(),
        spare_range: range(spare.start, spare.len),
    })?;

    let data_len = data.len;
    let data_max_inodes = data_len / 2 / 256;
    let used = restore_inodes(0, data_len)
        .saturating_mul(256)
        .saturating_add((data_len / 16).clamp(4 * MIB, 1 << 30));
    let table = current_attrs(&table, current, &spare.label);
    Ok(Some(Plan {
        disk: disk.to_string(),
        disk_size: size,
        sector_size: ss,
        layout_version: target.version,
        labels: labels.clone(),
        active,
        keeper,
        keeper_content: content,
        normalize,
        current: current.to_vec(),
        data_room: data_len.saturating_sub(used.saturating_add(data_len / 64)),
        data_max_inodes,
        table,
        region,
    }))
}

/// The larger part of the old spare slot outside the new data partition, starting on a MiB
/// boundary; `None` when less than [`MIN_REGION`] is left.
fn backup_region(spare: &Part, data: &Part) -> Option<Region> {
    let (s, e) = (spare.start, spare.end());
    let pieces = [(s, e.min(data.start)), (s.max(data.end()), e)];
    pieces
        .into_iter()
        .filter_map(|(a, b)| Some((a.div_ceil(REGION_ALIGN).checked_mul(REGION_ALIGN)?, b)))
        .filter(|(a, b)| b > a)
        .map(|(a, b)| Region {
            start: a,
            len: b - a,
        })
        .max_by_key(|r| r.len)
        .filter(|r| r.len >= MIN_REGION)
}

/// Places the target's partitions like `disk::create_layout`: 1 MiB aligned, one after the
/// other; labels found on the disk keep their GUID and attributes.
fn place(
    target: &TargetLayout,
    size: u64,
    ss: u64,
    current: &[Part],
) -> Result<Vec<Part>, PlanError> {
    let first_usable = (2 + ENTRY_ARRAY.div_ceil(ss)) * ss;
    let end_usable = (size / ss).saturating_sub(1 + ENTRY_ARRAY.div_ceil(ss)) * ss;
    let mut next = first_usable.div_ceil(MIB) * MIB;
    let mut out = Vec::new();
    for (i, s) in target.partitions.iter().enumerate() {
        // A size too large to add up is too large for the disk.
        let end = match s.size {
            Some(b) => b
                .div_ceil(MIB)
                .checked_mul(MIB)
                .and_then(|len| next.checked_add(len))
                .unwrap_or(u64::MAX),
            None => end_usable / MIB * MIB,
        };
        if end > end_usable || end <= next {
            return Err(PlanError::DiskTooSmall {
                label: s.label.clone(),
                end: end.max(next),
                size,
            });
        }
        let old = find(current, &s.label);
        out.push(Part {
            label: s.label.clone(),
            number: i as u32 + 1,
            start: next,
            len: end - next,
            guid: old.map_or_else(
                || uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase(),
                |p| p.guid.clone(),
            ),
            type_guid: s.type_guid.to_uppercase(),
            attrs: old.map_or(0, |p| p.attrs),
        });
        next = end;
    }
    Ok(out)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "layout migration of {} ({}, {}-byte sectors) to layout version {}",
            self.disk,
            mib(self.disk_size),
            self.sector_size,
            self.layout_version
        )?;
        if let Some(n) = &self.normalize {
            writeln!(
                f,
                "first: copy slot {} ({}) into slot {} ({}), then boot slot {}",
                n.from,
                mib(n.len),
                n.to,
                n.to_label,
                n.to
            )?;
        }
        writeln!(f, "{:<16} {:<30} after", "partition", "now")?;
        let spare = self.keeper.other().label(&self.labels).to_string();
        for p in &self.table {
            let now =
                find(&self.current, &p.label).map_or("(new)".into(), |c| range(c.start, c.len));
            let note = if p.label == self.keeper.label(&self.labels) {
                format!(
                    "slot {}: keeps its start and its {}",
                    self.keeper,
                    mib(self.keeper_content)
                )
            } else if p.label == self.labels.data {
                "formatted, then restored from the backup".into()
            } else if p.label == spare {
                "spare slot: the next system goes here".into()
            } else if p.label == self.labels.boot {
                "unchanged".into()
            } else {
                "new, left empty".into()
            };
            writeln!(
                f,
                "{:<16} {:<30} {:<30} {note}",
                p.label,
                now,
                range(p.start, p.len)
            )?;
        }
        write!(
            f,
            "backup region: {} in the old {}; room for the data afterwards: about {}",
            range(self.region.start, self.region.len),
            spare,
            mib(self.data_room)
        )
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
