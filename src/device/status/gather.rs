//! Reading the device into a [`Status`]. Gathering never fails as a whole: a piece that
//! cannot be read (the boot backend without a disk, a missing state file) is left `null` and
//! its reason added to `errors`.

use std::path::PathBuf;

use super::report::{
    AgentActionReport, AgentReport, ApplyingReport, BootReport, BootSlotReport, LastResultReport,
    LayoutMigrationReport, PartitionTableReport, PhaseTime, STATUS_VERSION, SlotReport,
    StagedReport, Status,
};
use crate::boot::{self, BootState};
use crate::device::Booted;
use crate::fsutil::DataDir;
use crate::model::config::{BootBackendKind, Labels, SystemConfig};
use crate::model::slot::Slot;
use crate::model::state::State;

impl From<&BootState> for BootReport {
    fn from(b: &BootState) -> BootReport {
        BootReport {
            backend: b.backend.to_string(),
            next: b.next,
            order: b.order.clone(),
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
                    ok: s.ok,
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
    let files = inp
        .config
        .as_ref()
        .map_or(boot::StateFiles::DEFAULT, boot::StateFiles::of);
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
            boot::open_with(backend_name, disk, &labels, files)
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
            completed: j.completed.clone(),
            running: j.running,
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
            phase: m.phase,
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
        agent: state
            .as_ref()
            .and_then(|s| s.agent.as_ref())
            .map(agent_report),
        errors,
    }
}

fn agent_report(a: &crate::model::agent::AgentRecord) -> AgentReport {
    AgentReport {
        server: a.server.clone(),
        controller_id: a.controller_id.clone(),
        last_poll_at: a.last_poll_at,
        last_error: a.last_error.clone(),
        action: a.action.as_ref().map(|x| AgentActionReport {
            id: x.id.clone(),
            version: x.version.clone(),
            state: x.phase,
            result: x.result,
            reported: x.reported,
            started_at: x.started_at,
        }),
    }
}
