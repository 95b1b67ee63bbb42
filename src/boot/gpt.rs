//! `gpt` backend: ChromeOS-style attribute bits on the two root partitions; hup's initramfs
//! chooses the slot ([`GptBackend::choose`]). Works with any loader that starts one kernel and
//! initramfs (QEMU `-kernel`, Raspberry Pi firmware, a UKI).
//!
//! Bits of each root partition's GPT attribute word (docs/boot-backends.md):
//! 48-51 priority (0 = never boot), 52-55 tries left, 56 successful,
//! 57-58 refunds left (hup: clean-shutdown refunds of the current trial). Other bits are kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::backend::{BootBackend, BootState, SlotState, check_tries};
use crate::disk::Disk;
use crate::model::config::{BootBackendKind, Labels};
use crate::model::slot::{Slot, SlotStatus};

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u32 = 56;
const REFUNDS_SHIFT: u32 = 57;
/// Bits 48..=58: everything this backend owns.
const OWNED_MASK: u64 = 0x7ff << PRIORITY_SHIFT;

/// Largest tries value the 4 bits hold.
pub const MAX_TRIES: u8 = 15;
/// Clean-shutdown refunds a trial gets (2 bits).
pub const REFUND_BUDGET: u8 = 3;
/// Priority of the preferred slot; the other usable slot gets 1.
const PRIO_FIRST: u8 = 2;
const PRIO_SECOND: u8 = 1;

/// The decoded hup bits of one root partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SlotAttrs {
    pub priority: u8,
    pub tries: u8,
    pub successful: bool,
    pub refunds: u8,
}

impl SlotAttrs {
    /// Decodes bits 48-58 of a GPT attribute word.
    pub fn decode(attrs: u64) -> SlotAttrs {
        SlotAttrs {
            priority: ((attrs >> PRIORITY_SHIFT) & 0xf) as u8,
            tries: ((attrs >> TRIES_SHIFT) & 0xf) as u8,
            successful: (attrs >> SUCCESSFUL_BIT) & 1 == 1,
            refunds: ((attrs >> REFUNDS_SHIFT) & 0x3) as u8,
        }
    }

    /// `base` with bits 48-58 replaced by these values (other bits kept).
    pub fn encode(self, base: u64) -> u64 {
        (base & !OWNED_MASK)
            | (u64::from(self.priority.min(15)) << PRIORITY_SHIFT)
            | (u64::from(self.tries.min(15)) << TRIES_SHIFT)
            | (u64::from(self.successful) << SUCCESSFUL_BIT)
            | (u64::from(self.refunds.min(3)) << REFUNDS_SHIFT)
    }

    /// Bootable: priority above 0 and either good or with tries left.
    pub fn bootable(&self) -> bool {
        self.priority > 0 && (self.successful || self.tries > 0)
    }

    fn status(&self) -> SlotStatus {
        if self.priority == 0 {
            SlotStatus::Bad
        } else if self.successful {
            SlotStatus::Good
        } else if self.tries > 0 {
            SlotStatus::Trying
        } else {
            SlotStatus::Bad
        }
    }
}

/// The outcome of [`GptBackend::choose`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The slot to boot.
    pub slot: Slot,
    /// This boot is a trial: one try was used (`tries_left` remain after it).
    pub trial: bool,
    pub tries_left: u8,
    /// The other slot, when it is bootable: what to boot if `slot` cannot be mounted.
    pub fallback: Option<Slot>,
    /// No slot was bootable; `slot` is a best guess.
    pub rescue: bool,
    /// The GPT was damaged and has been rewritten.
    pub repaired: bool,
}

impl Choice {
    /// The slots to try in order: the chosen one, then the fallback.
    pub fn candidates(&self) -> Vec<Slot> {
        std::iter::once(self.slot).chain(self.fallback).collect()
    }
}

/// The `gpt` backend for one disk.
#[derive(Debug, Clone)]
pub struct GptBackend {
    disk: PathBuf,
    labels: Labels,
}

/// Both slots' attributes with their full attribute words.
struct Pair {
    disk: Disk,
    words: [u64; 2],
    attrs: [SlotAttrs; 2],
}

/// The slot that boots next and whether it is a rescue guess. Highest priority among bootable
/// slots; on a tie the good one, then A. Without a bootable slot: a good one, then the
/// highest priority, then A.
fn pick(attrs: &[SlotAttrs; 2]) -> (Slot, bool) {
    let rank = |s: Slot| {
        let a = attrs[s.index()];
        (a.bootable(), a.priority, a.successful, s == Slot::A)
    };
    let best = if rank(Slot::A) >= rank(Slot::B) {
        Slot::A
    } else {
        Slot::B
    };
    if attrs[best.index()].bootable() {
        return (best, false);
    }
    let rescue = |s: Slot| {
        let a = attrs[s.index()];
        (a.successful, a.priority, s == Slot::A)
    };
    let best = if rescue(Slot::A) >= rescue(Slot::B) {
        Slot::A
    } else {
        Slot::B
    };
    (best, true)
}

impl GptBackend {
    /// The backend for the disk (image or block device) at `disk`, default labels.
    pub fn new(disk: impl AsRef<Path>) -> GptBackend {
        GptBackend::with_labels(disk, Labels::default())
    }

    /// The backend with the root labels of `labels`.
    pub fn with_labels(disk: impl AsRef<Path>, labels: Labels) -> GptBackend {
        GptBackend {
            disk: disk.as_ref().to_path_buf(),
            labels,
        }
    }

    /// Both slots' attributes, from the disk opened read-only.
    fn read(&self) -> Result<Pair> {
        self.pair(Disk::open_read_only(&self.disk))
    }

    /// [`Self::read`], with the disk opened for [`Self::write`].
    fn read_for_write(&self) -> Result<Pair> {
        self.pair(Disk::open(&self.disk))
    }

    fn pair(&self, disk: Result<Disk>) -> Result<Pair> {
        let disk = disk.context("gpt boot backend")?;
        let (a, b) = disk.distinct_partitions(&self.labels.root_a, &self.labels.root_b)?;
        let words = [a.attrs, b.attrs];
        Ok(Pair {
            attrs: words.map(SlotAttrs::decode),
            words,
            disk,
        })
    }

    fn write(&self, mut pair: Pair, new: [SlotAttrs; 2]) -> Result<()> {
        let changes = [
            (self.labels.root_a.as_str(), new[0].encode(pair.words[0])),
            (self.labels.root_b.as_str(), new[1].encode(pair.words[1])),
        ];
        pair.disk.set_attributes(&changes)
    }

    /// The decoded bits of both slots (A, B).
    pub fn attrs(&self) -> Result<[SlotAttrs; 2]> {
        Ok(self.read()?.attrs)
    }

    /// Chooses the slot to boot now (the initramfs calls this once per boot). A slot on trial
    /// uses one try here, before it boots; a trial whose tries are used up is not chosen, so
    /// the other (good) slot boots. Also repairs a damaged GPT copy.
    pub fn choose(&self) -> Result<Choice> {
        let pair = self.read_for_write()?;
        let mut new = pair.attrs;
        let (slot, rescue) = pick(&pair.attrs);
        let chosen = &mut new[slot.index()];
        let trial = !rescue && !chosen.successful && chosen.tries > 0;
        if trial {
            chosen.tries -= 1;
        }
        let tries_left = chosen.tries;
        let other = new[slot.other().index()];
        let fallback = other.bootable().then_some(slot.other());
        let repaired = !pair.disk.health().is_clean();
        if rescue {
            log::error!(
                "gpt: no bootable slot (a: {:?}, b: {:?}); trying slot {slot}",
                pair.attrs[0],
                pair.attrs[1]
            );
        }
        if new != pair.attrs || repaired {
            self.write(pair, new)
                .with_context(|| format!("recording the boot of slot {slot}"))?;
        }
        log::info!("gpt: booting slot {slot} (trial: {trial}, tries left: {tries_left})");
        Ok(Choice {
            slot,
            trial,
            tries_left,
            fallback,
            rescue,
            repaired,
        })
    }
}

impl BootBackend for GptBackend {
    fn kind(&self) -> BootBackendKind {
        BootBackendKind::Gpt
    }

    fn active(&self) -> Result<Slot> {
        Ok(pick(&self.read()?.attrs).0)
    }

    fn set_try_next(&self, slot: Slot, tries: u8) -> Result<()> {
        check_tries(tries, MAX_TRIES)?;
        let pair = self.read_for_write()?;
        let mut new = pair.attrs;
        new[slot.index()] = SlotAttrs {
            priority: PRIO_FIRST,
            tries,
            successful: false,
            refunds: REFUND_BUDGET,
        };
        let other = &mut new[slot.other().index()];
        if other.priority > 0 {
            other.priority = PRIO_SECOND;
        }
        self.write(pair, new)
            .with_context(|| format!("setting slot {slot} to try next ({tries} tries)"))
    }

    fn mark_good(&self, slot: Slot) -> Result<()> {
        let pair = self.read_for_write()?;
        let mut new = pair.attrs;
        new[slot.index()] = SlotAttrs {
            priority: PRIO_FIRST,
            tries: 0,
            successful: true,
            refunds: 0,
        };
        let other = &mut new[slot.other().index()];
        if other.priority > 0 {
            other.priority = PRIO_SECOND;
        }
        if !other.successful {
            other.tries = 0;
            other.refunds = 0;
        }
        if new == pair.attrs && pair.disk.health().is_clean() {
            return Ok(());
        }
        self.write(pair, new)
            .with_context(|| format!("marking slot {slot} good"))
    }

    fn mark_bad(&self, slot: Slot) -> Result<()> {
        let pair = self.read_for_write()?;
        let mut new = pair.attrs;
        new[slot.index()] = SlotAttrs::default();
        if !new[slot.other().index()].bootable() {
            log::warn!("gpt: marking slot {slot} bad leaves no bootable slot");
        }
        self.write(pair, new)
            .with_context(|| format!("marking slot {slot} bad"))
    }

    fn state(&self) -> Result<BootState> {
        let attrs = self.read()?.attrs;
        let slots = Slot::ALL
            .iter()
            .map(|s| {
                let a = attrs[s.index()];
                SlotState {
                    slot: *s,
                    status: a.status(),
                    priority: Some(a.priority),
                    tries_left: Some(u32::from(a.tries)),
                    tries_done: None,
                    successful: a.successful,
                    refunds_left: Some(u32::from(a.refunds)),
                    entry: None,
                    version: None,
                    ok: None,
                }
            })
            .collect();
        Ok(BootState {
            order: None,
            backend: BootBackendKind::Gpt,
            next: Some(pick(&attrs).0),
            slots,
        })
    }

    fn refund_try(&self, slot: Slot) -> Result<bool> {
        let pair = self.read_for_write()?;
        let mut new = pair.attrs;
        let a = &mut new[slot.index()];
        if a.successful || a.priority == 0 || a.refunds == 0 || a.tries >= MAX_TRIES {
            return Ok(false);
        }
        a.tries += 1;
        a.refunds -= 1;
        self.write(pair, new)
            .with_context(|| format!("refunding a try of slot {slot}"))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_layout() {
        let a = SlotAttrs {
            priority: 2,
            tries: 3,
            successful: true,
            refunds: 1,
        };
        // priority 2 at 48, tries 3 at 52, successful at 56, refunds 1 at 57, bit 0 kept.
        let w = a.encode(1);
        assert_eq!(w, (2 << 48) | (3 << 52) | (1 << 56) | (1 << 57) | 1);
        assert_eq!(SlotAttrs::decode(w), a);
        // Bits outside 48..=58 survive (60 = read-only in the discoverable partitions spec).
        assert_eq!(SlotAttrs::default().encode(u64::MAX), !OWNED_MASK);
        assert_eq!(SlotAttrs::decode(0x0102_0000_0000_0000).priority, 2);
        assert!(SlotAttrs::decode(0x0102_0000_0000_0000).successful);
    }

    fn at(priority: u8, tries: u8, successful: bool) -> SlotAttrs {
        SlotAttrs {
            priority,
            tries,
            successful,
            refunds: 0,
        }
    }

    #[test]
    fn pick_rules() {
        assert_eq!(pick(&[at(2, 0, true), at(1, 0, true)]), (Slot::A, false));
        assert_eq!(pick(&[at(1, 0, true), at(2, 3, false)]), (Slot::B, false));
        // Trial exhausted: the good slot boots.
        assert_eq!(pick(&[at(1, 0, true), at(2, 0, false)]), (Slot::A, false));
        // Tie: the good one, then A.
        assert_eq!(pick(&[at(1, 2, false), at(1, 0, true)]), (Slot::B, false));
        assert_eq!(pick(&[at(1, 0, true), at(1, 0, true)]), (Slot::A, false));
        // Nothing bootable: rescue.
        assert_eq!(pick(&[at(0, 0, false), at(0, 0, false)]), (Slot::A, true));
        assert_eq!(pick(&[at(0, 0, false), at(0, 0, true)]), (Slot::B, true));
    }
}
