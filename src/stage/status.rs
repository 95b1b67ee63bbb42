//! `hup status`: what runs, what is staged, what the last update did, what the boot loader
//! will do. The JSON form is stable (`status_version`) and documented with a JSON Schema in
//! docs/status.md; [`Status`] is that document, so the init and the apply pipeline can
//! produce or read it too.
//!
//! Gathering never fails as a whole: a piece that cannot be read (the boot backend without
//! a disk, a missing state file) is left `null` and its reason added to `errors`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod render;

pub use render::{render, utc};

use super::device::Booted;
use crate::boot::{self, BootState};
use crate::fsutil::DataDir;
use crate::model::config::{BootBackendKind, Labels, SystemConfig};
use crate::model::slot::{Slot, SlotStatus};
use crate::model::state::{Outcome, State};

/// Version of the JSON document; raised only for incompatible changes.
pub const STATUS_VERSION: u32 = 1;

/// The whole status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub status_version: u32,
    /// The device type from system.json (`null` without a configuration).
    pub compatible: Option<String>,
    /// hup's data directory (`DATA/hup`), when known.
    pub data_dir: Option<String>,
    /// The slot the running system booted, `null` when unknown (e.g. on a disk image).
    pub booted: Option<SlotReport>,
    /// The slot that is not booted, `null` when the booted one is unknown.
    pub other: Option<SlotReport>,
    /// Both slots, A then B.
    pub slots: Vec<SlotReport>,
    pub staged: Option<StagedReport>,
    /// An apply that started and has not finished (interrupted by a power cut).
    pub applying: Option<ApplyingReport>,
    pub last_result: Option<LastResultReport>,
    /// The last partition layout migration, `null` when there was none.
    pub layout_migration: Option<LayoutMigrationReport>,
    /// The boot backend's own view (see docs/boot-backends.md).
    pub boot: Option<BootReport>,
    /// Both copies of the disk's GPT and what is wrong with them, `null` without a readable
    /// disk. Added within status_version 1 (absent from older documents).
    #[serde(default)]
    pub partition_table: Option<PartitionTableReport>,
    /// What could not be read, one message each.
    pub errors: Vec<String>,
}

/// One root slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotReport {
    pub slot: Slot,
    pub booted: bool,
    /// Installed version (state.json), `null` when empty, being written, or unknown.
    pub version: Option<String>,
    /// Unix seconds.
    pub installed_at: Option<u64>,
    /// The boot backend's verdict: `good`, `trying`, `bad`, `missing`; `null` when unknown.
    pub health: Option<SlotStatus>,
    /// Boots left on trial (`null` when the backend does not say).
    pub tries_left: Option<u32>,
    /// The boot loader starts this slot next.
    pub next_boot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedReport {
    pub version: String,
    pub size: u64,
    pub sha256: String,
    /// Unix seconds.
    pub staged_at: u64,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyingReport {
    pub version: String,
    pub target: Slot,
    pub completed: Vec<String>,
    pub running: Option<String>,
    pub log: String,
    pub started_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastResultReport {
    /// `applied`, `committed`, `rolled-back` or `failed`.
    pub outcome: Outcome,
    pub version: String,
    pub slot: Slot,
    pub reason: Option<String>,
    /// Absolute path of the apply's log file.
    pub log: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// A partition layout migration (docs/layout-migration.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutMigrationReport {
    pub layout_version: u32,
    /// The bundle that needed it.
    pub version: String,
    /// `started`, `completed` or `failed`.
    pub phase: String,
    pub started_at: u64,
    pub completed_at: Option<u64>,
    /// The running system was first copied into the slot that keeps its place.
    pub normalized: bool,
    /// Bytes of the compressed backup of the data partition.
    pub backup_bytes: u64,
    pub entries: u64,
    /// Milliseconds per phase, in order.
    pub phases: Vec<PhaseTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub ms: u64,
}

/// The disk's partition table (docs/boot-backends.md): a table with problems is warned
/// about; one whose entries are invalid is refused by every command that writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTableReport {
    /// The whole disk the table was read from.
    pub disk: String,
    /// The primary copy is whole (CRCs) and its entries are valid.
    pub primary_ok: bool,
    /// The backup copy is whole and its entries are valid.
    pub backup_ok: bool,
    /// Both are whole, valid and describe the same partitions.
    pub in_sync: bool,
    /// One message per problem (a damaged copy, an invalid entry); empty when clean.
    pub problems: Vec<String>,
}

/// The boot backend's state, in this document's own stable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootReport {
    /// `gpt` or `systemd-boot`.
    pub backend: String,
    /// The slot the next boot starts, if any.
    pub next: Option<Slot>,
    /// Slot A, then slot B.
    pub slots: Vec<BootSlotReport>,
}

/// One slot as the boot backend sees it; fields a backend does not have are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSlotReport {
    pub slot: Slot,
    pub status: SlotStatus,
    /// gpt: priority bits (0 = never boots).
    pub priority: Option<u8>,
    pub tries_left: Option<u32>,
    /// systemd-boot: boots already counted.
    pub tries_done: Option<u32>,
    pub successful: bool,
    /// Clean-shutdown refunds left for the current trial.
    pub refunds_left: Option<u32>,
    /// systemd-boot: the entry file name.
    pub entry: Option<String>,
    /// systemd-boot: the entry's `version` (hup's generation counter).
    pub entry_version: Option<u64>,
}

impl From<&BootState> for BootReport {
    fn from(b: &BootState) -> BootReport {
        BootReport {
            backend: b.backend.to_string(),
            next: b.next,
            slots: b
                .slots
                .iter()
                .map(|s| BootSlotReport {
                    slot: s.slot,
                    status: s.status,
                    priority: s.priority,
                    tries_left: s.tries_left,
                    tries_done: s.tries_done,
                    successful: s.successful,
                    refunds_left: s.refunds_left,
                    entry: s.entry.clone(),
                    entry_version: s.version,
                })
                .collect(),
        }
    }
}

/// What to gather the status from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub config: Option<SystemConfig>,
    pub data: Option<DataDir>,
    /// The whole disk for the boot backend and partition sizes.
    pub disk: Option<PathBuf>,
    pub booted: Option<Booted>,
    /// Version of the running system when state.json does not say (os-release).
    pub running_fallback: Option<String>,
    /// Errors met while finding the inputs.
    pub errors: Vec<String>,
}

/// Gathers the status; never fails.
pub fn gather(inp: Inputs) -> Status {
    let mut errors = inp.errors;
    let labels = inp
        .config
        .as_ref()
        .map_or_else(Labels::default, |c| c.labels.clone());
    let backend_name = inp
        .config
        .as_ref()
        .map_or_else(BootBackendKind::default, |c| c.boot_backend);
    let state: Option<State> = inp.data.as_ref().and_then(|d| {
        if !d.state_path().exists() {
            return None;
        }
        d.load_state()
            .map_err(|e| errors.push(format!("{e:#}")))
            .ok()
    });
    // The table first: when the disk cannot be read at all, that is one error, not two.
    let partition_table = inp.disk.as_ref().and_then(|disk| {
        crate::disk::inspect(disk)
            .map(|t| PartitionTableReport {
                disk: disk.display().to_string(),
                primary_ok: t.primary_ok,
                backup_ok: t.backup_ok,
                in_sync: t.in_sync,
                problems: t.problems,
            })
            .map_err(|e| errors.push(format!("partition table: {e:#}")))
            .ok()
    });
    let boot: Option<BootState> = inp
        .disk
        .as_ref()
        .filter(|_| partition_table.is_some())
        .and_then(|disk| {
            boot::open(backend_name, disk, &labels)
                .state()
                .map_err(|e| errors.push(format!("boot backend {backend_name}: {e:#}")))
                .ok()
        });
    let booted = inp.booted.as_ref().map(|b| b.slot);
    let slots: Vec<SlotReport> = Slot::ALL
        .iter()
        .map(|&s| {
            let info = state.as_ref().map(|st| st.slot(s).clone());
            let bs = boot.as_ref().map(|b| b.slot(s));
            let mut version = info.as_ref().and_then(|i| i.version.clone());
            if version.is_none() && booted == Some(s) && state.is_none() {
                version = inp.running_fallback.clone();
            }
            SlotReport {
                slot: s,
                booted: booted == Some(s),
                version,
                installed_at: info.and_then(|i| i.installed_at),
                health: bs.map(|b| b.status),
                tries_left: bs.and_then(|b| b.tries_left),
                next_boot: boot.as_ref().is_some_and(|b| b.next == Some(s)),
            }
        })
        .collect();
    let data_root = inp.data.as_ref().map(|d| d.root.clone());
    let abs = |rel: &str| {
        data_root
            .as_ref()
            .map_or_else(|| rel.to_string(), |r| r.join(rel).display().to_string())
    };
    let staged = state
        .as_ref()
        .and_then(|st| st.staged.as_ref())
        .map(|s| StagedReport {
            version: s.version.clone(),
            size: s.size,
            sha256: s.sha256.clone(),
            staged_at: s.staged_at,
            path: abs(&format!("staged/{}", s.file)),
        });
    let applying = state
        .as_ref()
        .and_then(|st| st.journal.as_ref())
        .map(|j| ApplyingReport {
            version: j.version.clone(),
            target: j.target,
            completed: j.completed.iter().map(|s| s.to_string()).collect(),
            running: j.running.map(|s| s.to_string()),
            log: abs(&j.log),
            started_at: j.started_at,
        });
    let last_result = state
        .as_ref()
        .and_then(|st| st.last_result.as_ref())
        .map(|l| LastResultReport {
            outcome: l.outcome,
            version: l.version.clone(),
            slot: l.slot,
            reason: l.reason.clone(),
            log: l.log.as_deref().map(abs),
            at: l.at,
        });
    let layout_migration = state
        .as_ref()
        .and_then(|st| st.layout_migration.as_ref())
        .map(|m| LayoutMigrationReport {
            layout_version: m.layout_version,
            version: m.bundle_version.clone(),
            phase: m.phase.to_string(),
            started_at: m.started_at,
            completed_at: m.completed_at,
            normalized: m.normalized,
            backup_bytes: m.backup_bytes,
            entries: m.entries,
            phases: m
                .timings_ms
                .iter()
                .map(|(phase, ms)| PhaseTime {
                    phase: phase.clone(),
                    ms: *ms,
                })
                .collect(),
        });
    Status {
        status_version: STATUS_VERSION,
        compatible: inp.config.as_ref().map(|c| c.compatible.clone()),
        data_dir: data_root.map(|r| r.display().to_string()),
        booted: booted.map(|b| slots[b.index()].clone()),
        other: booted.map(|b| slots[b.other().index()].clone()),
        slots,
        staged,
        applying,
        last_result,
        layout_migration,
        boot: boot.as_ref().map(BootReport::from),
        partition_table,
        errors,
    }
}

#[cfg(test)]
mod tests;
