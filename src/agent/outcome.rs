//! What became of a staged action, read from state.json: applied at boot, committed by
//! `hup mark-good`, rolled back, failed, or dropped before it was applied. Decided here,
//! reported by the cycle.

use std::path::Path;

use crate::model::agent::{ActionPhase, ActionResult, AgentAction};
use crate::model::state::{Outcome, State};

/// Lines of the apply log sent with a failure.
pub const LOG_TAIL_LINES: usize = 20;

/// The action's next phase (and its closing details) from `state`; `None` when nothing
/// changed. `data_root`: `DATA/hup`, where the apply logs are.
pub fn settle(action: &AgentAction, state: &State, data_root: &Path) -> Option<AgentAction> {
    if !matches!(action.phase, ActionPhase::Staged | ActionPhase::Applied) {
        return None;
    }
    let version = action.version.as_deref()?;
    let mut next = action.clone();
    let last = state
        .last_result
        .as_ref()
        .filter(|l| l.version == version && l.at >= action.started_at);
    match last {
        Some(l) => match l.outcome {
            Outcome::Applied => {
                if action.phase == ActionPhase::Applied {
                    return None;
                }
                next.phase = ActionPhase::Applied;
            }
            Outcome::Committed => next.close(
                ActionResult::Success,
                vec![format!(
                    "{version} runs on slot {} and marked itself good (hup mark-good)",
                    l.slot
                )],
            ),
            Outcome::RolledBack | Outcome::Failed => {
                let mut details = vec![format!(
                    "{}: {version} on slot {}: {}",
                    l.outcome,
                    l.slot,
                    l.reason.as_deref().unwrap_or("no reason recorded")
                )];
                if let Some(log) = &l.log {
                    details.extend(log_tail(&data_root.join(log)));
                }
                next.close(ActionResult::Failure, details);
            }
        },
        None if action.phase == ActionPhase::Staged
            && state.staged.as_ref().map(|s| s.version.as_str()) != Some(version) =>
        {
            next.close(
                ActionResult::Failure,
                vec![format!(
                    "the staged bundle {version} was removed on the device before it was applied (hup cancel, or another bundle was staged)"
                )],
            );
        }
        None => return None,
    }
    Some(next)
}

/// The last [`LOG_TAIL_LINES`] lines of a log (its last 64 KiB), prefixed with its name.
pub fn log_tail(path: &Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![format!("(apply log {} not readable)", path.display())];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![format!("apply log {}, last lines:", path.display())];
    out.extend(
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
            .iter()
            .map(|l| l.to_string()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::slot::Slot;
    use crate::model::state::{LastResult, Staged};

    fn staged_action() -> AgentAction {
        let mut a = AgentAction::new("3", 100);
        a.phase = ActionPhase::Staged;
        a.version = Some("2.0.0".into());
        a
    }

    fn with_last(outcome: Outcome, at: u64) -> State {
        let mut s = State::new(Slot::A, "1.0.0", 1);
        s.last_result = Some(LastResult {
            outcome,
            version: "2.0.0".into(),
            slot: Slot::B,
            reason: Some("never healthy".into()),
            log: Some("log/apply-1.log".into()),
            at,
        });
        s
    }

    #[test]
    fn transitions() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("log")).unwrap();
        let lines: String = (0..30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(t.path().join("log/apply-1.log"), lines).unwrap();
        let a = staged_action();
        // Still staged: nothing.
        let mut s = State::new(Slot::A, "1.0.0", 1);
        s.staged = Some(Staged {
            file: "bundle.hup".into(),
            sha256: "x".into(),
            size: 1,
            version: "2.0.0".into(),
            staged_at: 100,
        });
        assert_eq!(settle(&a, &s, t.path()), None);
        // Dropped before the apply.
        s.staged = None;
        let c = settle(&a, &s, t.path()).unwrap();
        assert_eq!(
            (c.phase, c.result),
            (ActionPhase::Closed, Some(ActionResult::Failure))
        );
        // Applied, then committed.
        let applied = settle(&a, &with_last(Outcome::Applied, 200), t.path()).unwrap();
        assert_eq!(applied.phase, ActionPhase::Applied);
        assert_eq!(
            settle(&applied, &with_last(Outcome::Applied, 200), t.path()),
            None
        );
        let ok = settle(&applied, &with_last(Outcome::Committed, 300), t.path()).unwrap();
        assert_eq!(ok.result, Some(ActionResult::Success));
        // Rolled back: the reason and the log's last lines.
        let bad = settle(&applied, &with_last(Outcome::RolledBack, 300), t.path()).unwrap();
        assert_eq!(bad.result, Some(ActionResult::Failure));
        assert!(
            bad.details[0].contains("rolled-back: 2.0.0 on slot b: never healthy"),
            "{:?}",
            bad.details
        );
        assert_eq!(bad.details.last().unwrap(), "line 29");
        assert_eq!(bad.details.len(), 2 + LOG_TAIL_LINES);
        // A result older than the action is not its result.
        assert_eq!(
            settle(&applied, &with_last(Outcome::Committed, 50), t.path()),
            None
        );
    }
}
