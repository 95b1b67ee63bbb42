//! The two root slots, and what a slot is to the boot loader.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::Labels;

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

    /// `A` or `B`: the slot's name in boot loader environments (GRUB's `ORDER`, U-Boot's
    /// `BOOT_ORDER`, the variables named after a slot).
    pub fn upper(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// Exactly `A` or `B` (what the boot scripts match; lower case is not a slot there).
    pub fn parse_upper(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
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

    /// 0 for A, 1 for B: the position of the slot in [`Slot::ALL`] and in per-slot lists.
    pub fn index(self) -> usize {
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

impl SlotStatus {
    /// The name in status: `good`, `trying`, `bad`, `missing`.
    pub fn name(self) -> &'static str {
        match self {
            SlotStatus::Good => "good",
            SlotStatus::Trying => "trying",
            SlotStatus::Bad => "bad",
            SlotStatus::Missing => "missing",
        }
    }
}

impl fmt::Display for SlotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
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
    fn statuses_print_as_their_json_names() {
        for st in [
            SlotStatus::Good,
            SlotStatus::Trying,
            SlotStatus::Bad,
            SlotStatus::Missing,
        ] {
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
    }
}
