//! boot: which root slot boots, and how a new slot is tried, committed or given up.
//!
//! [`BootBackend`] is the contract (docs/boot-backends.md); [`gpt::GptBackend`] keeps the state
//! in GPT attribute bits of the root partitions, [`systemd_boot::SystemdBootBackend`] in Boot
//! Loader Specification entries on the ESP. The on-disk formats are in docs/boot-backends.md.
//!
//! Every backend call opens the disk, reads the current state, writes and closes: nothing is
//! cached between calls, so several processes (or a reboot in between) see the same truth.

mod bls;
pub mod cmdline;
pub mod gpt;
pub mod systemd_boot;

use std::fmt;
use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::model::config::Labels;

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// Both slots, A first.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// `a` or `b`, as in `hup.slot=` and in entry and directory names.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a`/`A` or `b`/`B`.
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The PARTLABEL of this slot's root partition.
    pub fn label(self, labels: &Labels) -> &str {
        match self {
            Slot::A => &labels.root_a,
            Slot::B => &labels.root_b,
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a slot is to the boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotStatus {
    /// Marked good: boots when preferred, and is the fallback otherwise.
    Good,
    /// On trial: boots while tries are left, then is given up.
    Trying,
    /// Given up, exhausted or never tried: not booted while another slot is usable.
    Bad,
    /// No boot entry at all (systemd-boot: nothing installed for this slot).
    Missing,
}

/// One slot's boot state, for `hup status --json`. Fields a backend does not have are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    pub slot: Slot,
    pub status: SlotStatus,
    /// gpt: priority bits (0-15; 0 = never boot).
    pub priority: Option<u8>,
    /// Boots left before the slot is given up (gpt: tries bits; systemd-boot: `+LEFT`).
    pub tries_left: Option<u32>,
    /// systemd-boot: boots already counted (`-DONE`).
    pub tries_done: Option<u32>,
    /// The slot is marked good (gpt: successful bit; systemd-boot: no counter in the name).
    pub successful: bool,
    /// Clean-shutdown refunds left for the current trial (see [`BootBackend::refund_try`]).
    pub refunds_left: Option<u32>,
    /// systemd-boot: the entry file name in `loader/entries/`.
    pub entry: Option<String>,
    /// systemd-boot: the entry's `version` (hup's generation counter; higher sorts first).
    pub version: Option<u64>,
}

/// The whole boot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// `gpt` or `systemd-boot`.
    pub backend: String,
    /// The slot the next boot starts (what [`BootBackend::active`] returns), if any.
    pub next: Option<Slot>,
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
    /// `gpt` or `systemd-boot`.
    fn name(&self) -> &'static str;

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

/// The backend named `name` (`gpt` or `systemd-boot`) for the disk at `disk`.
pub fn open(name: &str, disk: &Path, labels: &Labels) -> Result<Box<dyn BootBackend>> {
    Ok(match name {
        "gpt" => Box::new(gpt::GptBackend::with_labels(disk, labels.clone())),
        "systemd-boot" => Box::new(systemd_boot::SystemdBootBackend::with_labels(
            disk,
            labels.clone(),
        )),
        other => bail!("unknown boot backend {other:?} (expected \"gpt\" or \"systemd-boot\")"),
    })
}

fn check_tries(tries: u8, max: u8) -> Result<()> {
    if tries == 0 || tries > max {
        bail!("tries must be between 1 and {max}, not {tries}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::parse("B"), Some(Slot::B));
        assert_eq!(Slot::parse("c"), None);
        assert_eq!(Slot::B.label(&Labels::default()), "hup-root-b");
        assert_eq!(Slot::A.to_string(), "a");
        assert_eq!(serde_json::to_string(&Slot::B).unwrap(), "\"b\"");
        assert_eq!(
            serde_json::to_string(&SlotStatus::Trying).unwrap(),
            "\"trying\""
        );
    }

    #[test]
    fn open_by_name() {
        let l = Labels::default();
        let p = Path::new("/nonexistent.img");
        assert_eq!(open("gpt", p, &l).unwrap().name(), "gpt");
        assert_eq!(open("systemd-boot", p, &l).unwrap().name(), "systemd-boot");
        let err = open("grub", p, &l).err().unwrap();
        assert!(err.to_string().contains("grub"));
        assert!(check_tries(0, 15).is_err());
        assert!(check_tries(16, 15).is_err());
        assert!(check_tries(3, 15).is_ok());
    }
}
