//! `hup status`: what runs, what is staged, what the last update did, what the boot loader
//! will do. The JSON form is stable (`status_version`) and documented with a JSON Schema in
//! docs/status.md; [`Status`] is that document, so the init and the apply pipeline can
//! produce or read it too.
//!
//! Gathering never fails as a whole: a piece that cannot be read (the boot backend without
//! a disk, a missing state file) is left `null` and its reason added to `errors`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::device::Booted;
use super::progress::human;
use crate::boot::{self, BootState, Slot, SlotStatus};
use crate::fsutil::DataDir;
use crate::model::config::{Labels, SystemConfig};
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
            backend: b.backend.clone(),
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
        .map_or_else(|| "gpt".to_string(), |c| c.boot_backend.clone());
    let state: Option<State> = inp.data.as_ref().and_then(|d| {
        if !d.state_path().exists() {
            return None;
        }
        d.load_state()
            .map_err(|e| errors.push(format!("{e:#}")))
            .ok()
    });
    let boot: Option<BootState> = inp.disk.as_ref().and_then(|disk| {
        boot::open(&backend_name, disk, &labels)
            .and_then(|b| b.state())
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
            running: j.running.clone(),
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
            phase: m.phase.clone(),
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
        booted: booted.map(|b| slots[index(b)].clone()),
        other: booted.map(|b| slots[index(b.other())].clone()),
        slots,
        staged,
        applying,
        last_result,
        layout_migration,
        boot: boot.as_ref().map(BootReport::from),
        errors,
    }
}

fn index(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// `2024-05-01 12:00:00 UTC` for Unix seconds.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn health(s: &SlotReport) -> String {
    match (s.health, s.tries_left) {
        (Some(SlotStatus::Trying), Some(t)) => format!("trying, {t} tries left"),
        (Some(h), _) => format!("{h:?}").to_lowercase(),
        (None, _) => "health unknown".into(),
    }
}

fn slot_line(s: &SlotReport) -> String {
    let version = match &s.version {
        Some(v) => format!("version {v}"),
        None => "no version recorded".into(),
    };
    let next = if s.next_boot { ", boots next" } else { "" };
    format!("slot {}, {version}, {}{next}", s.slot, health(s))
}

/// The human-readable form.
pub fn render(st: &Status) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(o, "{k:<13}{v}");
    };
    match (&st.booted, &st.other) {
        (Some(b), Some(x)) => {
            line("booted:", &slot_line(b));
            line("other:", &slot_line(x));
        }
        _ => {
            for s in &st.slots {
                line(&format!("slot {}:", s.slot), &slot_line(s));
            }
        }
    }
    match &st.staged {
        Some(s) => {
            line(
                "staged:",
                &format!(
                    "{} ({}, sha256 {}), staged {}",
                    s.version,
                    human(s.size),
                    &s.sha256[..s.sha256.len().min(16)],
                    utc(s.staged_at)
                ),
            );
            line("", &s.path);
        }
        None => line("staged:", "nothing"),
    }
    if let Some(a) = &st.applying {
        let done = if a.completed.is_empty() {
            "nothing done yet".into()
        } else {
            format!("done: {}", a.completed.join(", "))
        };
        let running = a
            .running
            .as_deref()
            .map(|r| format!("; interrupted in {r}"))
            .unwrap_or_default();
        line(
            "applying:",
            &format!("{} into slot {} ({done}{running})", a.version, a.target),
        );
        line("", &format!("log: {}", a.log));
    }
    match &st.last_result {
        Some(l) => {
            let outcome = serde_json::to_value(l.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            line(
                "last update:",
                &format!("{outcome}: {} on slot {}, {}", l.version, l.slot, utc(l.at)),
            );
            if let Some(r) = &l.reason {
                line("", &format!("reason: {r}"));
            }
            if let Some(g) = &l.log {
                line("", &format!("log: {g}"));
            }
        }
        None => line("last update:", "none recorded"),
    }
    if let Some(m) = &st.layout_migration {
        let phases: Vec<String> = m
            .phases
            .iter()
            .map(|p| format!("{} {:.2} s", p.phase, p.ms as f64 / 1000.0))
            .collect();
        line(
            "layout:",
            &format!(
                "migration to layout {} for {}: {}, {}",
                m.layout_version,
                m.version,
                m.phase,
                utc(m.completed_at.unwrap_or(m.started_at))
            ),
        );
        if m.backup_bytes > 0 || !phases.is_empty() {
            line(
                "",
                &format!(
                    "backup {} ({} entries); {}",
                    human(m.backup_bytes),
                    m.entries,
                    phases.join(", ")
                ),
            );
        }
    }
    if let Some(b) = &st.boot {
        let next = b
            .next
            .map_or_else(|| "none".into(), |s| format!("slot {s}"));
        line(
            "boot:",
            &format!("{} backend, next boot: {next}", b.backend),
        );
        for s in &b.slots {
            let mut parts = vec![format!("{:?}", s.status).to_lowercase()];
            if let Some(p) = s.priority {
                parts.push(format!("priority {p}"));
            }
            if let Some(t) = s.tries_left {
                parts.push(format!("tries left {t}"));
            }
            if let Some(e) = &s.entry {
                parts.push(format!("entry {e}"));
            }
            line("", &format!("slot {}: {}", s.slot, parts.join(", ")));
        }
    }
    for e in &st.errors {
        line("error:", e);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::{LastResult, Staged};

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn from_state_without_disk() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path().join("hup"));
        d.create().unwrap();
        let mut s = State::new(Slot::A, "1.0.0", 1_700_000_000);
        s.staged = Some(Staged {
            file: "bundle.hup".into(),
            sha256: "ab".repeat(32),
            size: 2048,
            version: "2.0.0".into(),
            staged_at: 1_700_000_100,
        });
        s.last_result = Some(LastResult {
            outcome: Outcome::RolledBack,
            version: "1.5".into(),
            slot: Slot::B,
            reason: Some("never marked good".into()),
            log: Some("log/apply-1.log".into()),
            at: 1_700_000_000,
        });
        s.journal = Some(
            serde_json::from_value(serde_json::json!({
                "bundle_sha256": "ab", "version": "2.0.0", "target": "b",
                "completed": ["preflight"], "running": "format",
                "log": "log/apply-2.log", "started_at": 5
            }))
            .unwrap(),
        );
        s.layout_migration = Some(crate::model::state::LayoutMigration {
            layout_version: 2,
            bundle_version: "1.5".into(),
            phase: "completed".into(),
            started_at: 1_700_000_000,
            completed_at: Some(1_700_000_010),
            normalized: false,
            backup_bytes: 10 << 20,
            tar_bytes: 18 << 20,
            entries: 21,
            timings_ms: vec![("backup".into(), 2450), ("table".into(), 360)],
        });
        d.save_state(&s).unwrap();
        let st = gather(Inputs {
            data: Some(d.clone()),
            booted: Some(Booted {
                slot: Slot::A,
                source: "test".into(),
            }),
            ..Inputs::default()
        });
        assert_eq!(
            st.booted.as_ref().unwrap().version.as_deref(),
            Some("1.0.0")
        );
        assert_eq!(st.other.as_ref().unwrap().slot, Slot::B);
        assert_eq!(
            st.staged.as_ref().unwrap().path,
            d.root.join("staged/bundle.hup").display().to_string()
        );
        let lr = st.last_result.as_ref().unwrap();
        assert_eq!(
            lr.log.as_deref(),
            Some(d.root.join("log/apply-1.log").to_str().unwrap())
        );
        assert_eq!(
            st.applying.as_ref().unwrap().running.as_deref(),
            Some("format")
        );
        assert!(st.boot.is_none() && st.errors.is_empty());
        let text = render(&st);
        assert!(
            text.contains("booted:      slot a, version 1.0.0"),
            "{text}"
        );
        assert!(text.contains("rolled-back: 1.5 on slot b"), "{text}");
        assert!(text.contains("interrupted in format"), "{text}");
        assert!(
            text.contains("layout:      migration to layout 2 for 1.5: completed")
                && text.contains("backup 10.0 MiB (21 entries); backup 2.45 s, table 0.36 s"),
            "{text}"
        );
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["last_result"]["outcome"], "rolled-back");
        assert_eq!(json["booted"]["slot"], "a");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn unreadable_pieces_become_errors() {
        let st = gather(Inputs {
            disk: Some("/nonexistent/disk.img".into()),
            ..Inputs::default()
        });
        assert!(st.boot.is_none());
        assert_eq!(st.errors.len(), 1);
        assert!(
            st.errors[0].contains("/nonexistent/disk.img"),
            "{:?}",
            st.errors
        );
        assert!(st.booted.is_none() && st.slots.len() == 2);
    }
}
