//! Feedback to the server: deployment progress and results, cancel answers, configData.

use anyhow::{Context, Result};

use super::context::Agent;
use super::ddi::{self, Execution, Finished};

/// Steps of a deployment, as `progress` counts them: downloading, staged, rebooting.
pub const STEPS: u32 = 3;

/// `proceeding` feedback at step `cnt` of [`STEPS`] with one line of details.
pub fn proceeding(a: &Agent, action: &str, cnt: u32, line: &str) -> Result<()> {
    log::info!("action {action}: {line}");
    let body = ddi::feedback(
        action,
        Execution::Proceeding,
        Finished::None,
        Some((cnt, STEPS)),
        &[line.to_string()],
    );
    a.client
        .send(
            &format!("{}/deploymentBase/{action}/feedback", a.base),
            false,
            &body,
        )
        .with_context(|| format!("sending the progress of action {action}"))
}

/// The closing feedback of a deployment action.
pub fn closed(a: &Agent, action: &str, success: bool, details: &[String]) -> Result<()> {
    let finished = if success {
        Finished::Success
    } else {
        Finished::Failure
    };
    let body = ddi::feedback(action, Execution::Closed, finished, None, details);
    a.client
        .send(
            &format!("{}/deploymentBase/{action}/feedback", a.base),
            false,
            &body,
        )
        .with_context(|| format!("reporting the result of action {action}"))
}

/// The answer to a cancel request: done (`closed`/`success`) or refused (`rejected`).
pub fn cancel_answer(a: &Agent, cancel_id: &str, done: bool, line: &str) -> Result<()> {
    let (execution, finished) = if done {
        (Execution::Closed, Finished::Success)
    } else {
        (Execution::Rejected, Finished::Failure)
    };
    let body = ddi::feedback(cancel_id, execution, finished, None, &[line.to_string()]);
    a.client
        .send(
            &format!("{}/cancelAction/{cancel_id}/feedback", a.base),
            false,
            &body,
        )
        .with_context(|| format!("answering cancel action {cancel_id}"))
}

/// configData: the configured attributes, `compatible`, `sw_version`, and `hw_boardname`
/// (the compatible, unless an attribute sets it: goosebit matches it against a
/// software's compatibility).
pub fn config_data(a: &Agent, href: &str, running: &str) -> Result<()> {
    let mut attrs = a.config.attributes.clone();
    let compatible = a.dev.config.compatible.clone();
    attrs
        .entry("hw_boardname".into())
        .or_insert_with(|| compatible.clone());
    attrs.insert("compatible".into(), compatible);
    attrs.insert("sw_version".into(), running.to_string());
    a.client
        .send(href, true, &ddi::config_data(&attrs))
        .context("sending configData")
}
