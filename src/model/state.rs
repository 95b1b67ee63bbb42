//! `DATA/hup/state.json`: what is staged, the apply journal, the last result, slot versions.
//!
//! Versioned (`state_version`); older versions are upgraded on load and their fixtures are
//! kept as tests (docs/state-file.md). Pure types: the file itself is read and written by
//! the data directory helper (`DataDir`).
//!
//! How an update ends is recorded only by the transitions on [`State`]
//! ([`State::record_applied`], [`State::record_failed`], [`State::record_rollback`],
//! [`State::commit`]); they also keep the slots' [`SlotInfo`] true (docs/state-file.md).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::journal::Journal;
use super::slot::Slot;

/// The version this hup writes.
pub const STATE_VERSION: u32 = 1;

/// A bundle waiting in `DATA/hup/staged/` for the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staged {
    /// File name inside `DATA/hup/staged/`.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub version: String,
    /// Unix seconds.
    pub staged_at: u64,
}

/// How the last update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Written and switched to; waiting for the new OS to mark itself good.
    Applied,
    /// The new OS marked itself good.
    Committed,
    /// The new OS never marked itself good (or could not boot); the old slot runs again.
    RolledBack,
    /// The apply stopped with an error before switching; the old slot runs unchanged.
    Failed,
}

impl Outcome {
    /// The name in state.json and status: `applied`, `committed`, `rolled-back`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastResult {
    pub outcome: Outcome,
    pub version: String,
    pub slot: Slot,
    /// Why it failed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Log file relative to `DATA/hup/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    pub at: u64,
}

/// What hup knows of a slot's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotInfo {
    /// Version installed, or `None` when empty, being written, or given up.
    pub version: Option<String>,
    pub installed_at: Option<u64>,
}

impl SlotInfo {
    /// A slot that holds no version hup would boot.
    pub const EMPTY: SlotInfo = SlotInfo {
        version: None,
        installed_at: None,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub state_version: u32,
    pub slot_a: SlotInfo,
    pub slot_b: SlotInfo,
    #[serde(default)]
    pub staged: Option<Staged>,
    #[serde(default)]
    pub journal: Option<Journal>,
    #[serde(default)]
    pub last_result: Option<LastResult>,
    /// The last partition layout migration (docs/layout-migration.md), while it runs and
    /// after it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_migration: Option<LayoutMigration>,
    /// The fleet agent's record (docs/fleet.md); absent until `hup agent` ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<super::agent::AgentRecord>,
}

/// A partition layout migration as recorded in state.json. The record written before the
/// backup travels inside it and comes back with the restored data; the restore completes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutMigration {
    /// Target layout version.
    pub layout_version: u32,
    /// Version of the bundle that required it.
    pub bundle_version: String,
    /// `started` (before the backup), `completed`, or `failed` (refused or failed before
    /// the point of no return).
    pub phase: LayoutPhase,
    /// Unix seconds.
    pub started_at: u64,
    #[serde(default)]
    pub completed_at: Option<u64>,
    /// The running slot was copied into the slot that keeps its start first.
    #[serde(default)]
    pub normalized: bool,
    /// Bytes of the data backup (tar + zstd) and of the tar inside it, and its entries.
    #[serde(default)]
    pub backup_bytes: u64,
    #[serde(default)]
    pub tar_bytes: u64,
    #[serde(default)]
    pub entries: u64,
    /// (phase, milliseconds) measured by the runs that did them (a phase redone after a
    /// power cut is timed by the run that completed it).
    #[serde(default)]
    pub timings_ms: Vec<(String, u64)>,
}

/// Where a layout migration is, as state.json records it. This is the migration's life as
/// the apply sees it; the backup header on the disk has its own phases (backed up, table
/// written, restored: `layout::Phase`), which say how far the disk work got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutPhase {
    /// Recorded before the backup, so that the restored copy of state.json says it.
    Started,
    /// The data is restored into the new layout.
    Completed,
    /// Refused or failed before the point of no return; the old layout is in place.
    Failed,
}

impl LayoutPhase {
    /// The name in state.json and status: `started`, `completed`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            LayoutPhase::Started => "started",
            LayoutPhase::Completed => "completed",
            LayoutPhase::Failed => "failed",
        }
    }
}

impl fmt::Display for LayoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl LayoutMigration {
    /// A migration to `layout_version` for `bundle_version` that starts at `at`.
    pub fn started(layout_version: u32, bundle_version: &str, at: u64) -> LayoutMigration {
        LayoutMigration {
            layout_version,
            bundle_version: bundle_version.to_string(),
            phase: LayoutPhase::Started,
            started_at: at,
            completed_at: None,
            normalized: false,
            backup_bytes: 0,
            tar_bytes: 0,
            entries: 0,
            timings_ms: Vec::new(),
        }
    }
}

impl State {
    /// The state of a freshly provisioned device: `slot` holds `version`.
    pub fn new(slot: Slot, version: &str, now: u64) -> State {
        let mut s = State {
            state_version: STATE_VERSION,
            slot_a: SlotInfo::EMPTY,
            slot_b: SlotInfo::EMPTY,
            staged: None,
            journal: None,
            last_result: None,
            layout_migration: None,
            agent: None,
        };
        *s.slot_mut(slot) = SlotInfo {
            version: Some(version.to_string()),
            installed_at: Some(now),
        };
        s
    }

    pub fn slot(&self, slot: Slot) -> &SlotInfo {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    pub fn slot_mut(&mut self, slot: Slot) -> &mut SlotInfo {
        match slot {
            Slot::A => &mut self.slot_a,
            Slot::B => &mut self.slot_b,
        }
    }

    /// The apply of `journal` finished: its target holds its version (installed `at`) and
    /// waits for the new OS to mark itself good.
    pub fn record_applied(&mut self, journal: &Journal, at: u64) {
        *self.slot_mut(journal.target) = SlotInfo {
            version: Some(journal.version.clone()),
            installed_at: Some(at),
        };
        self.last_result = Some(LastResult {
            outcome: Outcome::Applied,
            version: journal.version.clone(),
            slot: journal.target,
            reason: None,
            log: Some(journal.log.clone()),
            at,
        });
    }

    /// An apply of `version` into `slot` stopped with `reason` before the switch. The slots'
    /// records stay as they are: the running slot is untouched, and the target's was
    /// cleared before its first byte was written (`mark-target-bad`, or the layout
    /// migration's backup).
    pub fn record_failed(
        &mut self,
        version: &str,
        slot: Slot,
        reason: &str,
        log: Option<&str>,
        at: u64,
    ) {
        self.last_result = Some(LastResult {
            outcome: Outcome::Failed,
            version: version.to_string(),
            slot,
            reason: Some(reason.to_string()),
            log: log.map(str::to_string),
            at,
        });
    }

    /// The update last applied or committed to `slot` is rolled back for `reason`: the
    /// slot was given up (it is not booted while the other slot is usable), so it no longer
    /// counts as holding that version and its record is cleared. The version, slot and log
    /// of the update stay in the result. Returns false, changing nothing, when the last
    /// result is not an applied or committed update of `slot`.
    pub fn record_rollback(&mut self, slot: Slot, reason: String, at: u64) -> bool {
        let Some(last) = self.last_result.as_mut().filter(|l| {
            l.slot == slot && matches!(l.outcome, Outcome::Applied | Outcome::Committed)
        }) else {
            return false;
        };
        last.outcome = Outcome::RolledBack;
        last.reason = Some(reason);
        last.at = at;
        *self.slot_mut(slot) = SlotInfo::EMPTY;
        true
    }

    /// The new OS in `slot` marked itself good: an update applied to it is committed (and
    /// the slot's record names its version if it had none). Returns false, changing
    /// nothing, when the last result is not an applied update of `slot`.
    pub fn commit(&mut self, slot: Slot, at: u64) -> bool {
        let Some(last) = self
            .last_result
            .as_mut()
            .filter(|l| l.slot == slot && l.outcome == Outcome::Applied)
        else {
            return false;
        };
        last.outcome = Outcome::Committed;
        last.at = at;
        let version = last.version.clone();
        let info = self.slot_mut(slot);
        if info.version.is_none() {
            info.version = Some(version);
        }
        true
    }

    /// Parses any known state version, upgrading it to the current one.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<State> {
        let raw: serde_json::Value = serde_json::from_slice(bytes)?;
        match raw.get("state_version").and_then(|v| v.as_u64()) {
            Some(1) => {
                let s: State = serde_json::from_value(raw)?;
                s.check_paths()?;
                Ok(s)
            }
            Some(v) => anyhow::bail!(
                "state_version {v} is newer than this hup understands ({STATE_VERSION})"
            ),
            None => anyhow::bail!("missing state_version"),
        }
    }

    /// The paths state.json names must stay inside `DATA/hup/`: `staged.file` is a plain
    /// file name (in `staged/`), `journal.log` and `last_result.log` are `log/NAME`. A hup
    /// removes and appends to these files, so anything else is refused on load.
    pub fn check_paths(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.staged {
            plain_name(&s.file).map_err(|why| {
                anyhow::anyhow!(
                    "staged.file {:?}: {why} (a file name inside staged/)",
                    s.file
                )
            })?;
        }
        if let Some(j) = &self.journal {
            log_name(&j.log).map_err(|why| anyhow::anyhow!("journal.log {:?}: {why}", j.log))?;
        }
        if let Some(l) = self.last_result.as_ref().and_then(|l| l.log.as_ref()) {
            log_name(l).map_err(|why| anyhow::anyhow!("last_result.log {l:?}: {why}"))?;
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("state serializes");
        v.push(b'\n');
        v
    }
}

/// A single path component naming a file: not empty, not `.` or `..`, no `/`, no NUL.
fn plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name == "." || name == ".." {
        return Err("not a file name");
    }
    if name.contains('/') {
        return Err("not a plain file name (it contains '/')");
    }
    if name.contains('\0') {
        return Err("not a plain file name (it contains NUL)");
    }
    Ok(())
}

/// `log/NAME`, relative to `DATA/hup/`, with a plain NAME.
fn log_name(path: &str) -> Result<(), &'static str> {
    let name = path
        .strip_prefix("log/")
        .ok_or("not a file in log/ (expected log/NAME)")?;
    plain_name(name).map_err(|_| "not a file in log/ (expected log/NAME)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as version 1 writes it; kept so that every later hup still reads it.
    const FIXTURE_V1: &str = r#"{
  "state_version": 1,
  "slot_a": { "version": "1.0.0", "installed_at": 1700000000 },
  "slot_b": { "version": null, "installed_at": null },
  "staged": { "file": "bundle.hup", "sha256": "ab", "size": 10, "version": "2.0.0", "staged_at": 1700000100 },
  "journal": { "bundle_sha256": "ab", "version": "2.0.0", "target": "b", "completed": ["preflight"],
               "running": "format", "log": "log/apply-1.log", "started_at": 1700000200 },
  "last_result": { "outcome": "rolled-back", "version": "1.5", "slot": "b", "reason": "never marked good",
                   "at": 1700000000 }
}"#;

    #[test]
    fn reads_v1_fixture() {
        let s = State::from_json(FIXTURE_V1.as_bytes()).unwrap();
        assert_eq!(s.slot(Slot::A).version.as_deref(), Some("1.0.0"));
        assert_eq!(s.journal.as_ref().unwrap().target, Slot::B);
        assert_eq!(
            s.journal.as_ref().unwrap().running,
            Some(crate::model::journal::Step::Format)
        );
        assert_eq!(s.last_result.as_ref().unwrap().outcome, Outcome::RolledBack);
        assert_eq!(State::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn refuses_future_and_garbage() {
        let e = State::from_json(br#"{"state_version": 9}"#).unwrap_err();
        assert!(e.to_string().contains("newer"));
        assert!(State::from_json(b"{").is_err());
        assert!(State::from_json(br#"{"slot_a":{}}"#).is_err());
    }

    #[test]
    fn refuses_paths_outside_the_data_directory() {
        let with = |field: &str, value: &str| {
            let mut v: serde_json::Value = serde_json::from_str(FIXTURE_V1).unwrap();
            let (obj, key) = field.split_once('.').unwrap();
            v[obj][key] = serde_json::Value::String(value.into());
            State::from_json(&serde_json::to_vec(&v).unwrap())
        };
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "..",
            ".",
            "",
            "a/b",
            "x\0y",
        ] {
            let e = with("staged.file", bad).unwrap_err().to_string();
            assert!(e.starts_with("staged.file"), "{bad:?}: {e}");
        }
        for bad in [
            "/var/log/x",
            "log/../../x",
            "log/",
            "apply.log",
            "../log/x",
            "log/a/b",
        ] {
            let e = with("journal.log", bad).unwrap_err().to_string();
            assert!(e.starts_with("journal.log"), "{bad:?}: {e}");
            let e = with("last_result.log", bad).unwrap_err().to_string();
            assert!(e.starts_with("last_result.log"), "{bad:?}: {e}");
        }
        assert!(with("staged.file", "bundle-2.hup").is_ok());
        assert!(with("journal.log", "log/apply-9.log").is_ok());
    }

    #[test]
    fn new_state() {
        let s = State::new(Slot::A, "1.0", 5);
        assert_eq!(s.slot(Slot::A).version.as_deref(), Some("1.0"));
        assert_eq!(s.slot(Slot::B).version, None);
        assert!(s.staged.is_none());
    }

    fn applied_to_b() -> State {
        let mut s = State::new(Slot::A, "1.0", 5);
        let mut j = Journal::new("ab", Slot::B, 10);
        j.version = "2.0".into();
        s.journal = Some(j.clone());
        s.record_applied(&j, 20);
        s.journal = None;
        s
    }

    #[test]
    fn applied_records_the_version_in_the_slot_and_the_result() {
        let s = applied_to_b();
        assert_eq!(s.slot(Slot::B).version.as_deref(), Some("2.0"));
        assert_eq!(s.slot(Slot::B).installed_at, Some(20));
        let l = s.last_result.as_ref().unwrap();
        assert_eq!(
            (l.outcome, l.version.as_str(), l.slot, l.at),
            (Outcome::Applied, "2.0", Slot::B, 20)
        );
        assert_eq!(l.log.as_deref(), Some("log/apply-10.log"));
        assert_eq!(l.reason, None);
    }

    #[test]
    fn commit_only_an_update_applied_to_that_slot() {
        let mut s = applied_to_b();
        assert!(!s.commit(Slot::A, 30), "the update went to b");
        assert_eq!(s.last_result.as_ref().unwrap().outcome, Outcome::Applied);
        // A slot record lost on the way (e.g. state.json recreated) gets the version back.
        *s.slot_mut(Slot::B) = SlotInfo::EMPTY;
        assert!(s.commit(Slot::B, 30));
        let l = s.last_result.clone().unwrap();
        assert_eq!((l.outcome, l.at), (Outcome::Committed, 30));
        assert_eq!(s.slot(Slot::B).version.as_deref(), Some("2.0"));
        assert!(!s.commit(Slot::B, 40), "committing twice changes nothing");
        assert_eq!(s.last_result.unwrap().at, 30);
    }

    #[test]
    fn a_rollback_gives_the_slot_up_and_keeps_the_update_in_the_result() {
        for committed in [false, true] {
            let mut s = applied_to_b();
            if committed {
                s.commit(Slot::B, 30);
            }
            let before = s.clone();
            assert!(!s.record_rollback(Slot::A, "x".into(), 40));
            assert_eq!(s, before, "a has no update to roll back");
            assert!(s.record_rollback(Slot::B, "never marked good".into(), 40));
            let l = s.last_result.clone().unwrap();
            assert_eq!(l.outcome, Outcome::RolledBack);
            assert_eq!(
                (l.version.as_str(), l.slot, l.at),
                ("2.0", Slot::B, 40),
                "committed: {committed}"
            );
            assert_eq!(l.reason.as_deref(), Some("never marked good"));
            assert_eq!(l.log.as_deref(), Some("log/apply-10.log"));
            assert_eq!(s.slot(Slot::B), &SlotInfo::EMPTY);
            assert_eq!(s.slot(Slot::A).version.as_deref(), Some("1.0"));
            assert!(
                !s.record_rollback(Slot::B, "again".into(), 50),
                "a rolled-back update is not rolled back twice"
            );
        }
    }

    #[test]
    fn a_failure_leaves_the_slot_records_alone() {
        let mut s = State::new(Slot::A, "1.0", 5);
        let before = (s.slot_a.clone(), s.slot_b.clone());
        s.record_failed(
            "2.0",
            Slot::B,
            "step format: boom",
            Some("log/apply-1.log"),
            9,
        );
        assert_eq!((s.slot_a.clone(), s.slot_b.clone()), before);
        let l = s.last_result.unwrap();
        assert_eq!(
            (l.outcome, l.version.as_str(), l.slot, l.at),
            (Outcome::Failed, "2.0", Slot::B, 9)
        );
        assert_eq!(l.reason.as_deref(), Some("step format: boom"));
        assert_eq!(l.log.as_deref(), Some("log/apply-1.log"));
        let mut s = State::new(Slot::A, "1.0", 5);
        s.record_failed("", Slot::B, "layout migration: no", None, 9);
        assert_eq!(s.last_result.unwrap().log, None);
    }

    #[test]
    fn outcomes_and_layout_phases_print_as_their_json_names() {
        for o in [
            Outcome::Applied,
            Outcome::Committed,
            Outcome::RolledBack,
            Outcome::Failed,
        ] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
        }
        for p in [
            LayoutPhase::Started,
            LayoutPhase::Completed,
            LayoutPhase::Failed,
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!(serde_json::from_str::<LayoutPhase>("\"backed-up\"").is_err());
    }
}
