//! The `hup status` document: the stable JSON types (`status_version`), documented with a
//! JSON Schema in docs/status.md. [`Status`] is that document, so the init and the apply
//! pipeline can produce or read it too. Changing a field here changes the JSON form:
//! `golden/*.json` and tests/integration/status_schema.rs check that it does not.

use serde::{Deserialize, Serialize};

use crate::model::agent::{ActionPhase, ActionResult};
use crate::model::journal::Step;
use crate::model::slot::{Slot, SlotStatus};
use crate::model::state::{LayoutPhase, Outcome};

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
    /// The fleet agent (`hup agent`, docs/fleet.md), `null` when it never ran. Added
    /// within status_version 1 (absent from older documents).
    #[serde(default)]
    pub agent: Option<AgentReport>,
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
    pub completed: Vec<Step>,
    pub running: Option<Step>,
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
    pub phase: LayoutPhase,
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
    /// `gpt`, `systemd-boot` or `grub`.
    pub backend: String,
    /// The slot the next boot starts, if any.
    pub next: Option<Slot>,
    /// grub: the slots of `ORDER`, in order of preference (absent in older outputs).
    #[serde(default)]
    pub order: Option<Vec<Slot>>,
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
    /// grub: the slot's `<S>_OK` (absent in older outputs).
    #[serde(default)]
    pub ok: Option<bool>,
}

/// The fleet agent's view: its server, last poll and current action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The DDI server's base URL.
    pub server: String,
    pub controller_id: String,
    /// Unix seconds of the last poll the server answered.
    pub last_poll_at: Option<u64>,
    /// The last poll's error (`null` after a poll that worked).
    pub last_error: Option<String>,
    /// The action being worked on, or the last one.
    pub action: Option<AgentActionReport>,
}

/// A DDI deployment action as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentActionReport {
    /// The server's action id.
    pub id: String,
    /// The bundle's version once known.
    pub version: Option<String>,
    /// `downloading`, `staged`, `applied`, `closed` or `cancelled`.
    pub state: ActionPhase,
    /// `success` or `failure` once closed.
    pub result: Option<ActionResult>,
    /// The server has the result (or the cancel answer).
    pub reported: bool,
    /// Unix seconds when the agent took it.
    pub started_at: u64,
}
