//! `hup mark-good` and `hup mark-bad`: the running OS's verdict on the slot it booted.
//!
//! mark-good commits the booted slot with the boot backend (it becomes the preferred good
//! slot; a pending trial of the other slot is cancelled) and in state.json (an update
//! applied to this slot becomes `committed`). It is idempotent: the OS may call it on every
//! boot once it is healthy.
//!
//! mark-bad gives the booted slot up: the backend will not boot it again while the other
//! slot is usable, so the next reboot falls back. It refuses when the other slot is not
//! bootable, since the device would then have nothing to boot.
//!
//! refund-try runs in the OS's clean shutdown path: a reboot that is not a failed boot gives
//! back the try this boot of a slot on trial used ([`BootBackend::refund_try`], a budget
//! of 3 refunds per trial; docs/boot-backends.md).

use anyhow::{Context, Result, bail};

use super::lock;
use crate::boot::BootBackend;
use crate::device::{self, Booted, Device};
use crate::fsutil::now;
use crate::model::slot::{Slot, SlotStatus};
use crate::model::state::{Outcome, State};

/// What a mark command did.
#[derive(Debug, Clone)]
pub struct Marked {
    pub slot: Slot,
    /// The booted slot's version, when known.
    pub version: Option<String>,
    /// The last result as recorded now, when it changed.
    pub outcome: Option<Outcome>,
}

fn load_state(dev: &Device, booted: Slot) -> Result<Option<State>> {
    if dev.data.state_path().exists() {
        return dev.data.load_state().map(Some);
    }
    Ok(dev.load_state_or_new(booted).ok())
}

/// Commits the booted slot (see the module documentation).
pub fn mark_good(dev: &Device) -> Result<Marked> {
    let _lock = lock::acquire(&dev.data, "hup mark-good")?;
    let Booted { slot, source } = device::booted_slot(&dev.config.labels)?;
    log::debug!("booted slot {slot} (from {source})");
    let backend = dev.backend()?;
    backend.mark_good(slot)?;
    let Some(mut state) = load_state(dev, slot)? else {
        log::warn!(
            "no state.json and no version in /etc/os-release: only the boot backend was updated"
        );
        return Ok(Marked {
            slot,
            version: None,
            outcome: None,
        });
    };
    let before = state.clone();
    let mut outcome = None;
    if let Some(last) = state.last_result.clone()
        && last.outcome == Outcome::Applied
    {
        if last.slot == slot {
            state.commit(slot, now());
            outcome = Some(Outcome::Committed);
        } else {
            // The update went to the other slot, yet this one runs and is healthy: the new
            // slot never confirmed itself and the device fell back.
            let reason = format!(
                "slot {} never marked itself good; slot {slot} booted instead",
                last.slot
            );
            state.record_rollback(last.slot, reason, now());
            outcome = Some(Outcome::RolledBack);
        }
    }
    if state != before || !dev.data.state_path().exists() {
        dev.data.create()?;
        dev.data.save_state(&state)?;
    }
    Ok(Marked {
        slot,
        version: state.slot(slot).version.clone(),
        outcome,
    })
}

/// Marks the booted slot bad so that the next boot falls back to the other slot.
pub fn mark_bad(dev: &Device) -> Result<Marked> {
    let _lock = lock::acquire(&dev.data, "hup mark-bad")?;
    let Booted { slot, source } = device::booted_slot(&dev.config.labels)?;
    log::debug!("booted slot {slot} (from {source})");
    let backend = dev.backend()?;
    let other = backend.state()?.slot(slot.other()).status;
    if matches!(other, SlotStatus::Bad | SlotStatus::Missing) {
        bail!(
            "slot {} is not bootable ({}): marking the booted slot {slot} bad would leave nothing to boot",
            slot.other(),
            other
        );
    }
    backend.mark_bad(slot)?;
    let mut outcome = None;
    if let Some(mut state) = load_state(dev, slot)?
        && dev.data.state_path().exists()
    {
        // The version the slot held, before a rollback clears its record.
        let version = state.slot(slot).version.clone();
        let reason = format!("slot {slot} was marked bad (hup mark-bad)");
        if state.record_rollback(slot, reason, now()) {
            outcome = Some(Outcome::RolledBack);
            dev.data.save_state(&state)?;
        }
        return Ok(Marked {
            slot,
            version,
            outcome,
        });
    }
    Ok(Marked {
        slot,
        version: None,
        outcome,
    })
}

/// What `hup refund-try` did for the booted slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refund {
    /// The try of this boot is given back; `refunds_left` remain in this trial.
    GivenBack { slot: Slot, refunds_left: u32 },
    /// The slot is not on trial (committed, given up, or its trial was cancelled): no try
    /// was used, nothing to give back.
    NotOnTrial { slot: Slot },
    /// The slot is on trial but its refund budget is used up: this boot counts.
    NoRefundsLeft { slot: Slot },
    /// The slot is on trial with refunds left, but no try was counted for it (systemd-boot:
    /// no boot counted yet; gpt: tries at their maximum).
    NoTryUsed { slot: Slot },
}

/// Gives back the try that this boot of the booted slot used, because the OS shuts down
/// cleanly. Takes the state lock like mark-good (never the download lock). Not being on trial and having no refunds left
/// are outcomes, not errors.
pub fn refund_try(dev: &Device) -> Result<Refund> {
    let _lock = lock::acquire(&dev.data, "hup refund-try")?;
    let Booted { slot, source } = device::booted_slot(&dev.config.labels)?;
    log::debug!("booted slot {slot} (from {source})");
    let backend = dev.backend()?;
    refund_slot(backend.as_ref(), slot)
}

/// [`refund_try`] for `slot` on `backend`, without the lock.
pub fn refund_slot(backend: &dyn BootBackend, slot: Slot) -> Result<Refund> {
    let given = backend
        .refund_try(slot)
        .with_context(|| format!("giving back the try of slot {slot}"))?;
    let st = backend
        .state()
        .with_context(|| format!("reading the boot state after a refund of slot {slot}"))?
        .slot(slot)
        .clone();
    if given {
        return Ok(Refund::GivenBack {
            slot,
            refunds_left: st.refunds_left.unwrap_or(0),
        });
    }
    // A trial that used its last try shows as `bad` with a counter or tries bits left at
    // 0; a trial still has its counter (systemd-boot) or a priority (gpt). A committed
    // slot, a slot given up (gpt: priority 0) or one without an entry is not on trial.
    let on_trial = !st.successful
        && st.priority != Some(0)
        && st.status != SlotStatus::Missing
        && st.tries_left.is_some();
    Ok(match st.refunds_left {
        Some(0) if on_trial => Refund::NoRefundsLeft { slot },
        Some(_) if on_trial && st.status == SlotStatus::Trying => Refund::NoTryUsed { slot },
        _ => Refund::NotOnTrial { slot },
    })
}
