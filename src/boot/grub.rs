//! `grub` backend: GRUB boots the slots' kernels from `/hup/<slot>/` on the ESP with hup's
//! script, which reads a GRUB environment block (`grub_env`, default `/EFI/hup/grubenv`) and
//! counts a slot's tries down with `save_env`. hup writes the block through `fatfs` (no
//! mount), replacing it atomically ([`crate::disk::Esp::replace_file`]).
//!
//! Variables (docs/boot-backends.md): `ORDER` (`A B` or `B A`), `A_OK`/`B_OK` (`1` = may
//! boot), `A_LEFT`/`B_LEFT` (empty = committed, `0`..`15` = tries left on trial), and hup's
//! own `A_TRIES`/`B_TRIES` (tries the trial started with) and `A_REFUNDS`/`B_REFUNDS` (the
//! clean-shutdown refunds left). GRUB's script only ever decrements one `<S>_LEFT`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::backend::{BootBackend, BootState, SlotState, check_tries};
use super::grubenv::EnvBlock;
use super::order::{self, kernel_path};
use crate::disk::{Disk, Esp};
use crate::model::config::{BootBackendKind, DEFAULT_GRUB_ENV, Labels};
use crate::model::slot::{Slot, SlotStatus};

/// Largest tries value the script counts down from.
pub const MAX_TRIES: u8 = 15;
/// Clean-shutdown refunds a trial gets.
pub const REFUND_BUDGET: u32 = 3;

/// A slot's variable name: `A_OK`, `B_LEFT`, ...
fn var(slot: Slot, what: &str) -> String {
    format!("{}_{what}", slot.upper())
}

/// `<S>_LEFT` as the script reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Absent or empty: committed, no countdown.
    Committed,
    /// `0`..`15`.
    Tries(u8),
    /// Anything else: the script skips the slot.
    Invalid,
}

/// What the block says about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotVars {
    /// `<S>_OK`: `None` when absent.
    ok: Option<bool>,
    left: Left,
    tries: Option<u8>,
    refunds: u32,
}

impl SlotVars {
    fn read(env: &EnvBlock, s: Slot) -> SlotVars {
        let left = match env.get(&var(s, "LEFT")) {
            None | Some("") => Left::Committed,
            Some(v) => tries_value(v).map_or(Left::Invalid, Left::Tries),
        };
        SlotVars {
            ok: env.get(&var(s, "OK")).map(|v| v == "1"),
            left,
            tries: env.get(&var(s, "TRIES")).and_then(tries_value),
            refunds: env
                .get(&var(s, "REFUNDS"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }

    /// The script boots this slot when its turn in `ORDER` comes.
    fn bootable(&self) -> bool {
        self.ok == Some(true) && matches!(self.left, Left::Committed | Left::Tries(1..))
    }

    fn status(&self) -> SlotStatus {
        match (self.ok, self.left) {
            (None, Left::Committed) => SlotStatus::Missing,
            (Some(true), Left::Committed) => SlotStatus::Good,
            (Some(true), Left::Tries(1..)) => SlotStatus::Trying,
            _ => SlotStatus::Bad,
        }
    }
}

/// `0`..`15` written the way the script matches it (no sign, no leading zero).
fn tries_value(v: &str) -> Option<u8> {
    let n: u8 = v.parse().ok()?;
    (n <= MAX_TRIES && n.to_string() == v).then_some(n)
}

/// The slots of `ORDER` the script walks.
fn order(env: &EnvBlock) -> Option<Vec<Slot>> {
    env.get("ORDER").map(order::parse)
}

/// The slot the script boots (`order::next` over `ORDER`).
fn next(env: &EnvBlock) -> Slot {
    order::next(&order(env).unwrap_or_default(), |s| {
        SlotVars::read(env, s).bootable()
    })
}

fn set_order(env: &mut EnvBlock, first: Slot) -> Result<()> {
    Ok(env.set("ORDER", &order::value(first))?)
}

/// The `grub` backend for one disk.
#[derive(Debug, Clone)]
pub struct GrubBackend {
    disk: PathBuf,
    labels: Labels,
    env_path: String,
}

impl GrubBackend {
    /// The backend for the disk (image or block device) at `disk`, default labels and block.
    pub fn new(disk: impl AsRef<Path>) -> GrubBackend {
        GrubBackend::with_labels(disk, Labels::default(), DEFAULT_GRUB_ENV)
    }

    /// The backend with `labels` and the block at `env_path` on the boot partition.
    pub fn with_labels(disk: impl AsRef<Path>, labels: Labels, env_path: &str) -> GrubBackend {
        GrubBackend {
            disk: disk.as_ref().to_path_buf(),
            labels,
            env_path: env_path.to_string(),
        }
    }

    /// The block's path on the boot partition.
    pub fn env_path(&self) -> &str {
        &self.env_path
    }

    fn esp(&self, disk: Result<Disk>) -> Result<Esp> {
        let disk = disk.context("grub backend")?;
        Esp::open(disk.open_partition(&self.labels.boot)?)
    }

    /// The block, `None` when the file is absent; an error when it is not a valid block.
    fn read(&self, esp: &Esp) -> Result<Option<EnvBlock>> {
        if !esp.exists(&self.env_path)? {
            return Ok(None);
        }
        let raw = esp.read_file(&self.env_path)?;
        let env = EnvBlock::parse(&raw)
            .with_context(|| format!("{} on {}", self.env_path, self.labels.boot))?;
        Ok(Some(env))
    }

    /// Reads the block (as `grub-editenv create` makes it when absent), lets `change` edit
    /// it and writes it back atomically when it changed; returns what `change` returned.
    fn update<T>(&self, what: &str, change: impl FnOnce(&mut EnvBlock) -> Result<T>) -> Result<T> {
        let esp = self.esp(Disk::open(&self.disk))?;
        let old = self.read(&esp)?;
        let mut env = old.clone().unwrap_or_default();
        let out = change(&mut env).with_context(|| what.to_string())?;
        if old.as_ref() != Some(&env) {
            let bytes = env.render().with_context(|| what.to_string())?;
            esp.replace_file(&self.env_path, &bytes)
                .with_context(|| what.to_string())?;
        }
        esp.close().with_context(|| what.to_string())?;
        Ok(out)
    }

    /// The block as it is on the disk (`None`: no block yet).
    pub fn env(&self) -> Result<Option<EnvBlock>> {
        let esp = self.esp(Disk::open_read_only(&self.disk))?;
        self.read(&esp)
    }

    /// Writes `env` as the block (provisioning, tests), atomically.
    pub fn write_env(&self, env: &EnvBlock) -> Result<()> {
        self.update("writing the GRUB environment block", |e| {
            *e = env.clone();
            Ok(())
        })
    }
}

impl BootBackend for GrubBackend {
    fn kind(&self) -> BootBackendKind {
        BootBackendKind::Grub
    }

    fn active(&self) -> Result<Slot> {
        let env = self.env()?.with_context(|| {
            format!(
                "no GRUB environment block {} on {}",
                self.env_path, self.labels.boot
            )
        })?;
        Ok(next(&env))
    }

    fn set_try_next(&self, slot: Slot, tries: u8) -> Result<()> {
        check_tries(tries, MAX_TRIES)?;
        let kernel = kernel_path(slot);
        let esp = self.esp(Disk::open_read_only(&self.disk))?;
        if !esp.exists(&kernel)? {
            bail!(
                "slot {slot} has no kernel {kernel} on {}: install its boot files first",
                self.labels.boot
            );
        }
        drop(esp);
        self.update(
            &format!("setting slot {slot} to try next ({tries} tries)"),
            |env| {
                env.set(&var(slot, "OK"), "1")?;
                env.set(&var(slot, "LEFT"), &tries.to_string())?;
                env.set(&var(slot, "TRIES"), &tries.to_string())?;
                env.set(&var(slot, "REFUNDS"), &REFUND_BUDGET.to_string())?;
                set_order(env, slot)
            },
        )
    }

    fn mark_good(&self, slot: Slot) -> Result<()> {
        self.update(&format!("marking slot {slot} good"), |env| {
            env.set(&var(slot, "OK"), "1")?;
            env.set(&var(slot, "LEFT"), "")?;
            env.set(&var(slot, "TRIES"), "")?;
            env.set(&var(slot, "REFUNDS"), "0")?;
            // A pending trial of the other slot is cancelled; a good other slot stays.
            let other = slot.other();
            if let Left::Tries(1..) | Left::Invalid = SlotVars::read(env, other).left {
                env.set(&var(other, "LEFT"), "0")?;
                env.set(&var(other, "REFUNDS"), "0")?;
            }
            set_order(env, slot)
        })
    }

    fn mark_bad(&self, slot: Slot) -> Result<()> {
        self.update(&format!("marking slot {slot} bad"), |env| {
            env.set(&var(slot, "OK"), "0")?;
            env.set(&var(slot, "LEFT"), "0")?;
            env.set(&var(slot, "REFUNDS"), "0")?;
            set_order(env, slot.other())
        })
    }

    fn state(&self) -> Result<BootState> {
        let env = self.env()?;
        let slots = Slot::ALL
            .iter()
            .map(|&s| {
                let v = env.as_ref().map(|e| SlotVars::read(e, s));
                let status = v.map_or(SlotStatus::Missing, |v| v.status());
                let on_trial = v.is_some_and(|v| v.ok == Some(true))
                    && matches!(v.map(|v| v.left), Some(Left::Tries(_)));
                let left = match v.map(|v| v.left) {
                    Some(Left::Tries(n)) if on_trial => Some(u32::from(n)),
                    _ => None,
                };
                SlotState {
                    slot: s,
                    status,
                    priority: None,
                    tries_left: left,
                    tries_done: match (v.and_then(|v| v.tries), left) {
                        (Some(t), Some(l)) => Some(u32::from(t).saturating_sub(l)),
                        _ => None,
                    },
                    successful: status == SlotStatus::Good,
                    refunds_left: if on_trial { v.map(|v| v.refunds) } else { None },
                    entry: None,
                    version: None,
                    ok: v.and_then(|v| v.ok),
                }
            })
            .collect();
        Ok(BootState {
            backend: BootBackendKind::Grub,
            next: env.as_ref().map(next),
            order: env.as_ref().map(|e| order(e).unwrap_or_default()),
            slots,
        })
    }

    fn refund_try(&self, slot: Slot) -> Result<bool> {
        self.update(&format!("refunding a try of slot {slot}"), |env| {
            let v = SlotVars::read(env, slot);
            let Left::Tries(left) = v.left else {
                return Ok(false);
            };
            // A try was used when the counter is below what the trial started with.
            let used = v.tries.is_some_and(|t| left < t);
            if v.ok != Some(true) || v.refunds == 0 || !used || left >= MAX_TRIES {
                return Ok(false);
            }
            env.set(&var(slot, "LEFT"), &(left + 1).to_string())?;
            env.set(&var(slot, "REFUNDS"), &(v.refunds - 1).to_string())?;
            Ok(true)
        })
    }
}

#[cfg(test)]
#[path = "grub_tests.rs"]
mod tests;
