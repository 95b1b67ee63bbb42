//! One poll cycle: settle the current action from state.json (applied, committed, rolled
//! back), send a result not yet reported, poll, answer configData and cancelAction, take
//! a deployment. Every server answer that cannot be used is one log line, and a failure
//! report when an action it belongs to is known.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::device::{self, lock};
use crate::fsutil::now;
use crate::model::agent::{ActionPhase, ActionResult, AgentAction};

use super::client::HttpStatus;
use super::context::Agent;
use super::ddi;
use super::deploy::{self, Taken};
use super::outcome;
use super::record;
use super::report;

/// Runs one cycle; the server's polling interval when it gave one.
pub fn cycle(a: &Agent) -> Result<Option<Duration>> {
    let state = record::state(a.dev, a.booted)?;
    let mut current = state.agent.as_ref().and_then(|r| r.action.clone());
    if let Some(cur) = &current
        && let Some(next) = outcome::settle(cur, &state, &a.dev.data.root)
    {
        log::info!(
            "action {}: {} -> {}{}",
            next.id,
            cur.phase,
            next.phase,
            next.result.map(|r| format!(" ({r})")).unwrap_or_default()
        );
        record::set_action(a.dev, a.booted, a.who(), &next)?;
        current = Some(next);
    }
    report_closed(a, &mut current)?;

    let running = device::running_version(&state, a.booted)?;
    let polled = a
        .client
        .get(&a.base)
        .and_then(|b| ddi::parse_poll(&b).with_context(|| format!("polling {}", a.base)));
    let poll = match polled {
        Ok(p) => p,
        Err(e) => {
            let line = format!("{e:#}");
            record::update(a.dev, a.booted, a.who(), |r| r.last_error = Some(line))?;
            return Err(e);
        }
    };
    record::update(a.dev, a.booted, a.who(), |r| {
        r.last_poll_at = Some(now());
        r.last_error = None;
    })?;
    if let Some(href) = &poll.config_data {
        report::config_data(a, href, &running)?;
    }
    if let Some(href) = &poll.cancel {
        cancel(a, href, &mut current)?;
    }
    if let Some(href) = &poll.deployment {
        let d = match a.client.get(href).and_then(|b| ddi::parse_deployment(&b)) {
            Ok(d) => d,
            Err(e) => {
                bad_deployment(a, href, &e, current.as_ref())?;
                return Ok(poll.sleep);
            }
        };
        match deploy::take(a, &d, current.as_ref())? {
            Taken::Closed => {
                current = record::state(a.dev, a.booted)?.agent.and_then(|r| r.action);
                report_closed(a, &mut current)?;
            }
            Taken::Staged { reboot: true } => {
                report::proceeding(a, &d.id, 3, "rebooting to apply the update")?;
                crate::stage::request_reboot()
                    .context("the update is staged, but the reboot failed")?;
            }
            Taken::Staged { reboot: false } | Taken::Ignored => {}
        }
    }
    Ok(poll.sleep)
}

/// Sends the closing feedback of `current` when it is closed and not reported yet, and
/// records that the server has it. An action the server no longer knows (HTTP 404, 410)
/// counts as reported.
fn report_closed(a: &Agent, current: &mut Option<AgentAction>) -> Result<()> {
    let Some(cur) = current.as_mut() else {
        return Ok(());
    };
    if cur.phase != ActionPhase::Closed || cur.reported {
        return Ok(());
    }
    let success = cur.result == Some(ActionResult::Success);
    match report::closed(a, &cur.id, success, &cur.details) {
        Ok(()) => log::info!(
            "action {}: reported {} to the server",
            cur.id,
            if success { "success" } else { "failure" }
        ),
        Err(e)
            if e.downcast_ref::<HttpStatus>()
                .is_some_and(|s| matches!(s.status, 404 | 410)) =>
        {
            log::warn!(
                "action {}: the server no longer knows it ({e:#}); not reporting it again",
                cur.id
            );
        }
        Err(e) => return Err(e),
    }
    cur.reported = true;
    record::set_action(a.dev, a.booted, a.who(), cur)
}

/// A deployment resource that cannot be used: one line, and a failure report for its
/// action (its id is the link's last path segment) unless that action is already known.
fn bad_deployment(
    a: &Agent,
    href: &str,
    e: &anyhow::Error,
    current: Option<&AgentAction>,
) -> Result<()> {
    let line = format!("deployment {href}: {e:#}");
    log::error!("{line}");
    let id = href
        .split(['?', '#'])
        .next()
        .and_then(|p| p.rsplit('/').next())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string);
    let Some(id) = id else {
        return Ok(());
    };
    if current.is_some_and(|c| c.id == id && !c.open()) {
        return Ok(());
    }
    let mut action = AgentAction::new(&id, now());
    action.close(ActionResult::Failure, vec![line]);
    record::set_action(a.dev, a.booted, a.who(), &action)?;
    let mut cur = Some(action);
    report_closed(a, &mut cur)
}

/// A cancel request: a staged bundle that is not applied yet is dropped (as `hup cancel`
/// does) and the cancel confirmed; an applied one cannot be cancelled (rejected).
fn cancel(a: &Agent, href: &str, current: &mut Option<AgentAction>) -> Result<()> {
    let (cancel_id, stop) = a
        .client
        .get(href)
        .and_then(|b| ddi::parse_cancel(&b))
        .context("reading the cancel request")?;
    let Some(cur) = current.as_mut().filter(|c| c.id == stop) else {
        return report::cancel_answer(
            a,
            &cancel_id,
            true,
            &format!("action {stop} is not known to this device: nothing to cancel"),
        );
    };
    match cur.phase {
        ActionPhase::Downloading | ActionPhase::Staged => {
            {
                let _download = lock::download(&a.dev.data, "hup agent (cancel)")?;
                let _state = lock::acquire(&a.dev.data, "hup agent (cancel)")?;
                match device::staged::cancel(&a.dev.data) {
                    Ok(c) => log::info!(
                        "action {stop}: cancelled by the server; dropped {}",
                        c.staged
                            .map(|s| format!("the staged bundle {}", s.version))
                            .unwrap_or_else(|| "its partial download".into())
                    ),
                    Err(e) if crate::error::exit_code(&e) == crate::error::code::NOTHING_TO_DO => {}
                    Err(e) => return Err(e.context(format!("cancelling action {stop}"))),
                }
            }
            cur.phase = ActionPhase::Cancelled;
            cur.details = vec![format!(
                "cancelled by the server (cancel action {cancel_id})"
            )];
            cur.reported = false;
            record::set_action(a.dev, a.booted, a.who(), cur)?;
            report::cancel_answer(a, &cancel_id, true, "the staged bundle was dropped")?;
            cur.reported = true;
            record::set_action(a.dev, a.booted, a.who(), cur)
        }
        ActionPhase::Applied => report::cancel_answer(
            a,
            &cancel_id,
            false,
            &format!(
                "action {stop} is already applied ({}); it cannot be cancelled",
                cur.version.as_deref().unwrap_or("?")
            ),
        ),
        ActionPhase::Closed | ActionPhase::Cancelled => report::cancel_answer(
            a,
            &cancel_id,
            true,
            &format!("action {stop} has already ended ({})", cur.phase),
        ),
    }
}
