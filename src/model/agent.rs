//! The fleet agent's record in state.json (`agent`, docs/fleet.md): the server it talks to,
//! its last poll, and the DDI action it works on, so that the report survives reboots and
//! each action is reported once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What `hup agent` remembers between runs and boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    /// The DDI server's base URL.
    pub server: String,
    pub controller_id: String,
    /// Unix seconds of the last poll that the server answered.
    #[serde(default)]
    pub last_poll_at: Option<u64>,
    /// The last poll's error, `None` after a poll that worked.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The action being worked on, or the last one.
    #[serde(default)]
    pub action: Option<AgentAction>,
}

/// One DDI deployment action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAction {
    /// The server's action id.
    pub id: String,
    /// The bundle's version once known (the staged bundle's).
    #[serde(default)]
    pub version: Option<String>,
    pub phase: ActionPhase,
    /// Unix seconds when the agent took the action.
    pub started_at: u64,
    /// The result once the action is closed.
    #[serde(default)]
    pub result: Option<ActionResult>,
    /// The lines sent as the closing feedback's `details`.
    #[serde(default)]
    pub details: Vec<String>,
    /// The server accepted the closing feedback (or the cancel answer).
    #[serde(default)]
    pub reported: bool,
}

/// Where an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionPhase {
    /// The bundle is being downloaded and staged.
    Downloading,
    /// Staged, waiting for the reboot that applies it.
    Staged,
    /// Applied at boot; the new OS has not marked itself good yet.
    Applied,
    /// Decided (`result`); `reported` says whether the server has it.
    Closed,
    /// The server cancelled it before it was applied.
    Cancelled,
}

impl ActionPhase {
    /// The name in state.json and status.
    pub fn name(self) -> &'static str {
        match self {
            ActionPhase::Downloading => "downloading",
            ActionPhase::Staged => "staged",
            ActionPhase::Applied => "applied",
            ActionPhase::Closed => "closed",
            ActionPhase::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ActionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How a closed action ended, as DDI's `finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionResult {
    Success,
    Failure,
}

impl ActionResult {
    /// The name in state.json, status and DDI feedback.
    pub fn name(self) -> &'static str {
        match self {
            ActionResult::Success => "success",
            ActionResult::Failure => "failure",
        }
    }
}

impl fmt::Display for ActionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl AgentAction {
    /// A new action taken at `now`.
    pub fn new(id: &str, now: u64) -> AgentAction {
        AgentAction {
            id: id.to_string(),
            version: None,
            phase: ActionPhase::Downloading,
            started_at: now,
            result: None,
            details: Vec::new(),
            reported: false,
        }
    }

    /// Closes the action with `result` and `details`, to be reported.
    pub fn close(&mut self, result: ActionResult, details: Vec<String>) {
        self.phase = ActionPhase::Closed;
        self.result = Some(result);
        self.details = details;
        self.reported = false;
    }

    /// Still to be done by the agent: downloading, staged, applied, or closed but not
    /// reported.
    pub fn open(&self) -> bool {
        match self.phase {
            ActionPhase::Downloading | ActionPhase::Staged | ActionPhase::Applied => true,
            ActionPhase::Closed | ActionPhase::Cancelled => !self.reported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        let mut a = AgentAction::new("7", 10);
        assert!(a.open());
        a.close(ActionResult::Failure, vec!["why".into()]);
        assert!(a.open(), "closed but not reported");
        a.reported = true;
        assert!(!a.open());
        let r = AgentRecord {
            server: "http://s".into(),
            controller_id: "c".into(),
            last_poll_at: Some(5),
            last_error: None,
            action: Some(a),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains(r#""phase":"closed""#), "{j}");
        assert!(j.contains(r#""result":"failure""#), "{j}");
        assert_eq!(serde_json::from_str::<AgentRecord>(&j).unwrap(), r);
        assert!(
            serde_json::from_str::<AgentRecord>(r#"{"server":"s","controller_id":"c","x":1}"#)
                .is_err()
        );
    }
}
