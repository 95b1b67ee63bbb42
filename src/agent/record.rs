//! The agent's record in state.json (`crate::model::agent`), read and changed under the
//! state lock, the same lock `hup stage` takes to store a bundle and `hup mark-good` to
//! commit, so no write of theirs is lost.

use anyhow::Result;

use crate::device::{Device, lock};
use crate::model::agent::{AgentAction, AgentRecord};
use crate::model::slot::Slot;
use crate::model::state::State;

/// state.json as it is now (a fresh state when there is none yet).
pub fn state(dev: &Device, booted: Slot) -> Result<State> {
    dev.load_state_or_new(booted)
}

/// Changes the agent's record (created for `server`, `controller_id` when absent) under the
/// state lock and writes state.json.
pub fn update<T>(
    dev: &Device,
    booted: Slot,
    who: (&str, &str),
    f: impl FnOnce(&mut AgentRecord) -> T,
) -> Result<T> {
    let _lock = lock::acquire(&dev.data, "hup agent")?;
    dev.data.create()?;
    let mut state = dev.load_state_or_new(booted)?;
    let rec = state.agent.get_or_insert_with(|| AgentRecord {
        server: who.0.to_string(),
        controller_id: who.1.to_string(),
        last_poll_at: None,
        last_error: None,
        action: None,
    });
    rec.server = who.0.to_string();
    rec.controller_id = who.1.to_string();
    let out = f(rec);
    dev.data.save_state(&state)?;
    Ok(out)
}

/// Replaces the record's action.
pub fn set_action(
    dev: &Device,
    booted: Slot,
    who: (&str, &str),
    action: &AgentAction,
) -> Result<()> {
    update(dev, booted, who, |r| r.action = Some(action.clone()))
}
