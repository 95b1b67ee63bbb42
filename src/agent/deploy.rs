//! A deployment the server offers: take its `.hup` artifact, stage it through
//! [`crate::stage::stage`] (the code of `hup stage`: resume, checks, verification, the
//! server's hash), report progress, and reboot when the deployment allows it.

use std::sync::Arc;

use anyhow::{Result, bail};

use crate::device::lock;
use crate::error::{code, exit_code};
use crate::fsutil::now;
use crate::model::agent::{ActionPhase, ActionResult, AgentAction};
use crate::stage::{FileCheck, StageOptions};

use super::context::Agent;
use super::ddi::{Artifact, Deployment, Handling};
use super::record;
use super::report;

/// What became of a deployment in this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Staged (now or earlier) and waiting for the reboot that applies it.
    Staged { reboot: bool },
    /// Closed at once (refused, or the version already runs); the result is recorded.
    Closed,
    /// Not taken now (`download: skip`, or an action already handled).
    Ignored,
}

/// Handles the deployment `d`; `current`: the action in state.json, if any.
pub fn take(a: &Agent, d: &Deployment, current: Option<&AgentAction>) -> Result<Taken> {
    if let Some(cur) = current.filter(|c| c.id == d.id) {
        match cur.phase {
            ActionPhase::Staged => {
                return Ok(Taken::Staged {
                    reboot: reboot_now(a, d, &d.id),
                });
            }
            ActionPhase::Downloading => {
                log::info!("action {}: resuming its download", d.id);
            }
            phase => {
                log::debug!("action {}: already handled ({phase})", d.id);
                return Ok(Taken::Ignored);
            }
        }
    }
    if d.download == Handling::Skip {
        log::info!("action {}: the server says download: skip; waiting", d.id);
        return Ok(Taken::Ignored);
    }
    let mut action = AgentAction::new(&d.id, now());
    let artifact = match d.hup_artifact().and_then(|art| {
        art.link.as_ref().map(|_| art).ok_or_else(|| {
            anyhow::anyhow!(
                "artifact {}: no download or download-http link",
                art.filename
            )
        })
    }) {
        Ok(art) => art,
        Err(e) => return close_failed(a, action, &format!("{e:#}")),
    };
    record::set_action(a.dev, a.booted, a.who(), &action)?;
    let link = artifact.link.clone().unwrap_or_default();
    report::proceeding(
        a,
        &d.id,
        1,
        &format!(
            "downloading {}{}",
            artifact.filename,
            artifact
                .size
                .map(|s| format!(" ({s} bytes)"))
                .unwrap_or_default()
        ),
    )?;
    let opts = options(a, artifact, &link);
    match crate::stage::stage(a.dev, &opts) {
        Ok(r) => {
            action.version = Some(r.staged.version.clone());
            action.phase = ActionPhase::Staged;
            record::set_action(a.dev, a.booted, a.who(), &action)?;
            report::proceeding(
                a,
                &d.id,
                2,
                &format!(
                    "staged {} (sha256 {}); it is applied at the next boot",
                    r.staged.version, r.staged.sha256
                ),
            )?;
        }
        Err(e) if exit_code(&e) == code::LOCKED => return Err(e),
        Err(e) if exit_code(&e) == code::NOTHING_TO_DO => {
            let state = record::state(a.dev, a.booted)?;
            match state.staged {
                Some(s) => {
                    log::info!("action {}: {} is staged already", d.id, s.version);
                    action.version = Some(s.version);
                    action.phase = ActionPhase::Staged;
                    record::set_action(a.dev, a.booted, a.who(), &action)?;
                }
                None => {
                    let line = format!("{e:#}");
                    log::info!("action {}: {line}", d.id);
                    action.close(ActionResult::Success, vec![line]);
                    record::set_action(a.dev, a.booted, a.who(), &action)?;
                    return Ok(Taken::Closed);
                }
            }
        }
        Err(e) => {
            drop_partial(a);
            return close_failed(a, action, &format!("{e:#}"));
        }
    }
    Ok(Taken::Staged {
        reboot: reboot_now(a, d, &d.id),
    })
}

/// Records the action closed with one failure line (the server is told by the cycle).
fn close_failed(a: &Agent, mut action: AgentAction, line: &str) -> Result<Taken> {
    log::error!("action {}: {line}", action.id);
    action.close(ActionResult::Failure, vec![line.to_string()]);
    record::set_action(a.dev, a.booted, a.who(), &action)?;
    Ok(Taken::Closed)
}

/// A failed action's partial download is of no use: removed, so nothing of it stays.
fn drop_partial(a: &Agent) {
    let Ok(_lock) = lock::download(&a.dev.data, "hup agent (cleanup)") else {
        return;
    };
    if let Ok(removed) = crate::device::staged::clean_staging(&a.dev.data, "") {
        for r in removed {
            log::info!("removed the partial download {r}");
        }
    }
}

/// The stage request for `artifact`: the server's sha256 as `--sha256`, else its sha1 or
/// md5 checked on the whole file before the store.
fn options(a: &Agent, artifact: &Artifact, link: &str) -> StageOptions {
    let h = &artifact.hashes;
    let file_check = if h.contains_key("sha256") {
        None
    } else if let Some(want) = h.get("sha1") {
        Some(digest_check::<sha1::Sha1>("sha1", want))
    } else {
        h.get("md5")
            .map(|want| digest_check::<md5::Md5>("md5", want))
    };
    if h.is_empty() {
        log::warn!("artifact {}: the server sends no hash", artifact.filename);
    }
    StageOptions {
        source: link.to_string(),
        sha256: h.get("sha256").cloned(),
        ca: a.config.ca.clone(),
        authorization: a.client.authorization().map(str::to_string),
        file_check,
        ..StageOptions::default()
    }
}

/// A [`FileCheck`] comparing the file's `name` digest with `want`.
fn digest_check<D: sha1::Digest + Default>(name: &'static str, want: &str) -> FileCheck {
    let want = want.to_ascii_lowercase();
    FileCheck(Arc::new(move |path| {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut d = D::default();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
        }
        let got = hex::encode(d.finalize());
        if got != want {
            bail!("the bundle's {name} is {got}, the server's is {want}");
        }
        Ok(())
    }))
}

/// Whether to reboot now for action `id`: allowed by the deployment and by the agent.
fn reboot_now(a: &Agent, d: &Deployment, id: &str) -> bool {
    if !d.may_install() {
        log::info!(
            "action {id}: staged; the server does not allow the update yet (update: {}, maintenance window: {})",
            d.update.name(),
            match d.window_open {
                Some(false) => "unavailable",
                _ => "available",
            }
        );
        return false;
    }
    if a.no_reboot {
        log::info!("action {id}: staged; reboot to apply it (no reboot by the agent)");
        return false;
    }
    true
}
