//! What the initramfs does with hup's state at boot: apply a staged bundle, and note which
//! slot really boots (an update whose slot did not boot is rolled back).

use std::path::Path;

use anyhow::{Context as _, Result};

use super::context::{BaseRoot, Context, Report};
use super::layout::DataMount;
use super::pipeline::apply_known;
use crate::boot;
use crate::bundle::sign::TrustedKeys;
use crate::fsutil::{DataDir, now};
use crate::model::config::SystemConfig;
use crate::model::slot::{Slot, SlotStatus};
use crate::model::state::Outcome;

/// Applies the staged bundle, if any, after the layout migration it needs (when `mount`
/// holds the data partition; without it such a bundle is refused). `base`: the running
/// slot's files, for bundles that require an unmodified base. `Ok(None)`: nothing
/// staged. On an error the failure is recorded and the staged bundle dropped, so that a
/// bundle that cannot be applied is not retried at every boot (an interruption is not an
/// error: the journal and the layout backup header resume it).
pub fn run_staged(
    disk: &Path,
    data: &DataDir,
    config: &SystemConfig,
    base: Option<&dyn BaseRoot>,
    mount: Option<&mut dyn DataMount>,
) -> Result<Option<Report>> {
    let mut state = data.load_state()?;
    let Some(staged) = state.staged.clone() else {
        if let Some(j) = state.journal.take() {
            log::warn!(
                "dropping the journal of {} (its bundle is no longer staged)",
                j.version
            );
            data.save_state(&state)?;
        }
        return Ok(None);
    };
    let path = data.staged_dir().join(&staged.file);
    let keys = TrustedKeys::load(&[], &[config.keys_dir.clone().into()])
        .with_context(|| format!("trusted keys in {}", config.keys_dir))?;
    let ctx = Context {
        disk,
        data,
        config,
        keys: &keys,
        base,
    };
    log::info!("staged: {} ({})", staged.version, path.display());
    let result = match mount {
        Some(mount) => super::layout::migrate_staged(&ctx, mount).map(drop),
        None => Ok(()),
    }
    .and_then(|()| apply_known(&ctx, &path, Some(&staged.sha256)));
    match result {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            // After the point of no return of a layout migration the data partition may
            // be unmounted: the error is what matters, the next boot resumes.
            let Ok(mut state) = data.load_state() else {
                return Err(e);
            };
            if state
                .staged
                .as_ref()
                .is_some_and(|s| s.sha256 == staged.sha256)
            {
                state.staged = None;
                data.save_state(&state)?;
                let _ = std::fs::remove_file(&path);
                log::warn!(
                    "dropped the staged bundle {}: stage it again once fixed",
                    staged.version
                );
            }
            Err(e)
        }
    }
}

/// Called by the init just before it switches into `booted`: when the last update was
/// applied to the other slot and that slot is no longer on trial, the update was rolled
/// back; record why.
pub fn note_booted(disk: &Path, data: &DataDir, config: &SystemConfig, booted: Slot) -> Result<()> {
    let mut state = data.load_state()?;
    let Some(last) = state.last_result.clone() else {
        return Ok(());
    };
    if last.outcome != Outcome::Applied || last.slot == booted {
        return Ok(());
    }
    let backend = boot::open_config(config, disk);
    let st = backend.state()?;
    let target = st.slot(last.slot);
    if target.status == SlotStatus::Trying && target.tries_left.unwrap_or(0) > 0 {
        // Still on trial: this boot is a fallback inside one trial (the init could not
        // mount it); the slot may come back. Nothing to record yet.
        return Ok(());
    }
    let reason = format!(
        "slot {} ({}) did not confirm itself with `hup mark-good` within {} boots; slot {booted} runs again",
        last.slot, last.version, config.max_tries
    );
    log::warn!("rolled back: {reason}");
    state.record_rollback(last.slot, reason, now());
    data.save_state(&state)
}

/// Called by the init when `slot` could not be booted (no mountable root, no /sbin/init):
/// a slot on trial is given up at once rather than retried at every boot, and when it held
/// the last update, the update is recorded as rolled back with `why`.
pub fn give_up_slot(
    disk: &Path,
    data: Option<&DataDir>,
    config: &SystemConfig,
    slot: Slot,
    why: &str,
) -> Result<bool> {
    let backend = boot::open_config(config, disk);
    let st = backend.state()?;
    if st.slot(slot).status != SlotStatus::Trying {
        return Ok(false);
    }
    backend.mark_bad(slot)?;
    let Some(data) = data else {
        return Ok(true);
    };
    let mut state = data.load_state()?;
    if let Some(last) = state.last_result.clone()
        && last.outcome == Outcome::Applied
        && last.slot == slot
    {
        let reason = format!(
            "slot {slot} ({}) could not be booted: {why}; slot {} runs again",
            last.version,
            slot.other()
        );
        state.record_rollback(slot, reason, now());
        data.save_state(&state)?;
    }
    Ok(true)
}
