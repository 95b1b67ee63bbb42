//! The contract every boot backend keeps (docs/boot-backends.md) and the state it reports.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::model::config::BootBackendKind;
use crate::model::slot::{Slot, SlotStatus};

/// One slot's boot state, for `hup status --json`. Fields a backend does not have are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    pub slot: Slot,
    pub status: SlotStatus,
    /// gpt: priority bits (0-15; 0 = never boot).
    pub priority: Option<u8>,
    /// Boots left before the slot is given up (gpt: tries bits; systemd-boot: `+LEFT`;
    /// uboot: `BOOT_<S>_LEFT`).
    pub tries_left: Option<u32>,
    /// systemd-boot: boots already counted (`-DONE`); grub and uboot: of the trial.
    pub tries_done: Option<u32>,
    /// The slot is marked good (gpt: successful bit; systemd-boot: no counter in the name).
    pub successful: bool,
    /// Clean-shutdown refunds left for the current trial (see [`BootBackend::refund_try`]).
    pub refunds_left: Option<u32>,
    /// systemd-boot: the entry file name in `loader/entries/`.
    pub entry: Option<String>,
    /// systemd-boot: the entry's `version` (hup's generation counter; higher sorts first).
    pub version: Option<u64>,
    /// grub: `<S>_OK` of the environment block (`null` when absent).
    #[serde(default)]
    pub ok: Option<bool>,
}

/// The whole boot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// `gpt`, `systemd-boot`, `grub` or `uboot`.
    pub backend: BootBackendKind,
    /// The slot the next boot starts (what [`BootBackend::active`] returns), if any.
    pub next: Option<Slot>,
    /// grub: the slots of `ORDER`, uboot: of `BOOT_ORDER`, in order of preference (`null`
    /// for other backends).
    #[serde(default)]
    pub order: Option<Vec<Slot>>,
    /// Slot A, then slot B.
    pub slots: Vec<SlotState>,
}

impl BootState {
    /// The state of `slot`.
    pub fn slot(&self, slot: Slot) -> &SlotState {
        &self.slots[slot.index()]
    }
}

/// A boot backend (docs/boot-backends.md). All methods act on the disk immediately.
pub trait BootBackend {
    /// Which backend this is.
    fn kind(&self) -> BootBackendKind;

    /// The slot the next boot starts if nothing changes: a slot on trial while it has tries
    /// left, else the preferred good slot. Reads only; changes nothing (no try is used).
    fn active(&self) -> Result<Slot>;

    /// Makes `slot` the one to try on the next boots, `tries` times (1-15), before falling
    /// back to the other slot. The slot's boot files must already be in place.
    fn set_try_next(&self, slot: Slot, tries: u8) -> Result<()>;

    /// Commits `slot`: it becomes the preferred good slot. A trial of the other slot that is
    /// still pending is cancelled; a good other slot stays as the fallback.
    fn mark_good(&self, slot: Slot) -> Result<()>;

    /// Gives `slot` up: it is not booted while the other slot is usable. Call it before
    /// writing the first byte of a slot.
    fn mark_bad(&self, slot: Slot) -> Result<()>;

    /// Per-slot state for `hup status`.
    fn state(&self) -> Result<BootState>;

    /// Gives back the try that the current boot of `slot` used, because the system is shutting
    /// down cleanly (a reboot that is not a failed boot). Only a slot on trial with refunds
    /// left is changed; returns whether it was. Each trial has a small refund budget, so an OS
    /// that reboots itself cleanly forever still falls back eventually.
    fn refund_try(&self, slot: Slot) -> Result<bool>;
}

pub(crate) fn check_tries(tries: u8, max: u8) -> Result<()> {
    if tries == 0 || tries > max {
        bail!("tries must be between 1 and {max}, not {tries}");
    }
    Ok(())
}
