//! `DATA/hup/state.json`: what is staged, the apply journal, the last result, slot versions.
//!
//! Versioned (`state_version`); older versions are upgraded on load and their fixtures are
//! kept as tests (docs/state-file.md). Pure types: the file itself is read and written by the data directory helper (`DataDir`).

use serde::{Deserialize, Serialize};

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

/// The journal of an apply in progress: which steps completed, for which bundle and slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// sha256 of the bundle being applied; a different staged bundle restarts the journal.
    pub bundle_sha256: String,
    pub version: String,
    pub target: Slot,
    /// Steps that completed, in order.
    pub completed: Vec<String>,
    /// The step that started and has not completed (a power cut happened in it).
    pub running: Option<String>,
    /// Log file of this apply, relative to `DATA/hup/`.
    pub log: String,
    pub started_at: u64,
    /// Runs that started this apply; a run that keeps dying is given up after a few.
    #[serde(default)]
    pub attempts: u32,
    /// Configuration migrations that ran to completion in the `migrations` step, by id
    /// (a resumed step does not run them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<String>,
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
    /// Version installed, or `None` when empty or being written.
    pub version: Option<String>,
    pub installed_at: Option<u64>,
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
    pub phase: String,
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

impl LayoutMigration {
    /// A migration to `layout_version` for `bundle_version` that starts at `at`.
    pub fn started(layout_version: u32, bundle_version: &str, at: u64) -> LayoutMigration {
        LayoutMigration {
            layout_version,
            bundle_version: bundle_version.to_string(),
            phase: "started".into(),
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
            slot_a: SlotInfo {
                version: None,
                installed_at: None,
            },
            slot_b: SlotInfo {
                version: None,
                installed_at: None,
            },
            staged: None,
            journal: None,
            last_result: None,
            layout_migration: None,
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
            s.journal.as_ref().unwrap().running.as_deref(),
            Some("format")
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
}
