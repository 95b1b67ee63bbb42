//! `uboot` backend: U-Boot boots the slots' kernels from `/hup/<slot>/` on the boot partition
//! with hup's boot script ([`super::uboot_script`]), which walks `BOOT_ORDER` in U-Boot's
//! environment and counts a slot's tries down with `saveenv`. hup finds the environment
//! through a `fw_env.config` ([`super::fw_env_config`]) and writes it power-safely there.
//!
//! Variables (docs/boot-backends.md "U-Boot backend"): RAUC's `BOOT_ORDER` (`A B` or `B A`)
//! and `BOOT_A_LEFT`/`BOOT_B_LEFT` (boots left; `0` = do not boot), and hup's own
//! `HUP_TRIAL` (the slot on trial, absent when none), `HUP_TRIES` (tries the trial started
//! with) and `HUP_REFUNDS` (clean-shutdown refunds left). A slot is good when its
//! `BOOT_<S>_LEFT` is above 0 and it is not `HUP_TRIAL`; hup's script counts down only the
//! slot on trial, so a committed slot never runs out. Every other variable is kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::backend::{BootBackend, BootState, SlotState, check_tries};
use super::fw_env_config::{EnvStore, FwEnvConfig, Storage};
use super::order::{self, kernel_path};
use super::ubootenv::UbootEnv;
use crate::disk::{Disk, Esp};
use crate::model::config::{BootBackendKind, DEFAULT_BOOT_MOUNT, DEFAULT_FW_ENV_CONFIG, Labels};
use crate::model::slot::{Slot, SlotStatus};

/// Largest tries value: U-Boot's `setexpr` counts in hexadecimal and `test -gt` compares
/// decimals, which agree on one digit only.
pub const MAX_TRIES: u8 = 9;
/// Clean-shutdown refunds a trial gets.
pub const REFUND_BUDGET: u32 = 3;
/// `BOOT_<S>_LEFT` of a committed slot, as RAUC sets it (hup's script does not count it down;
/// RAUC's does, and hup's `mark-good` at every boot sets it back).
pub const GOOD_LEFT: u8 = 3;

/// The slot order, first preferred.
pub const BOOT_ORDER: &str = "BOOT_ORDER";
/// The slot on trial (`A` or `B`); absent when none.
pub const HUP_TRIAL: &str = "HUP_TRIAL";
/// The tries the trial started with.
pub const HUP_TRIES: &str = "HUP_TRIES";
/// The trial's clean-shutdown refunds left.
pub const HUP_REFUNDS: &str = "HUP_REFUNDS";

/// `BOOT_A_LEFT` or `BOOT_B_LEFT`.
pub fn left_var(slot: Slot) -> String {
    format!("BOOT_{}_LEFT", slot.upper())
}

/// What the environment says about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotVars {
    /// `BOOT_<S>_LEFT`: `None` when absent, `Some(None)` when not a decimal number.
    left: Option<Option<u32>>,
    trial: bool,
}

impl SlotVars {
    fn read(env: &UbootEnv, s: Slot) -> SlotVars {
        SlotVars {
            left: env.get(&left_var(s)).map(|v| v.parse().ok()),
            trial: trial(env) == Some(s),
        }
    }

    /// The script boots this slot when its turn in `BOOT_ORDER` comes.
    fn bootable(&self) -> bool {
        matches!(self.left, Some(Some(1..)))
    }

    fn status(&self) -> SlotStatus {
        match (self.left, self.trial) {
            (None, _) => SlotStatus::Missing,
            (Some(Some(1..)), false) => SlotStatus::Good,
            (Some(Some(1..)), true) => SlotStatus::Trying,
            _ => SlotStatus::Bad,
        }
    }
}

fn trial(env: &UbootEnv) -> Option<Slot> {
    env.get(HUP_TRIAL).and_then(Slot::parse_upper)
}

fn number(env: &UbootEnv, name: &str) -> Option<u32> {
    env.get(name).and_then(|v| v.parse().ok())
}

/// The slots of `BOOT_ORDER` the script walks.
fn order(env: &UbootEnv) -> Option<Vec<Slot>> {
    env.get(BOOT_ORDER).map(order::parse)
}

/// The slot the script boots (`order::next` over `BOOT_ORDER`: the first with boots left).
fn next(env: &UbootEnv) -> Slot {
    order::next(&order(env).unwrap_or_default(), |s| {
        SlotVars::read(env, s).bootable()
    })
}

fn set_order(env: &mut UbootEnv, first: Slot) -> Result<()> {
    Ok(env.set(BOOT_ORDER, &order::value(first))?)
}

fn end_trial(env: &mut UbootEnv) -> Result<()> {
    for v in [HUP_TRIAL, HUP_TRIES, HUP_REFUNDS] {
        env.unset(v)?;
    }
    Ok(())
}

/// [`BootBackend::set_try_next`] on the variables.
fn try_next(env: &mut UbootEnv, slot: Slot, tries: u8) -> Result<()> {
    env.set(&left_var(slot), &tries.to_string())?;
    env.set(HUP_TRIAL, slot.upper())?;
    env.set(HUP_TRIES, &tries.to_string())?;
    env.set(HUP_REFUNDS, &REFUND_BUDGET.to_string())?;
    set_order(env, slot)
}

/// [`BootBackend::mark_good`] on the variables.
fn good(env: &mut UbootEnv, slot: Slot) -> Result<()> {
    // A pending trial of the other slot is cancelled; a good other slot stays.
    let other = slot.other();
    if trial(env) == Some(other) {
        env.set(&left_var(other), "0")?;
    }
    env.set(&left_var(slot), &GOOD_LEFT.to_string())?;
    end_trial(env)?;
    set_order(env, slot)
}

/// [`BootBackend::mark_bad`] on the variables (a warning when no slot is left to boot, as
/// the gpt backend).
fn bad(env: &mut UbootEnv, slot: Slot) -> Result<()> {
    if !SlotVars::read(env, slot.other()).bootable() {
        log::warn!("uboot: marking slot {slot} bad leaves no bootable slot");
    }
    env.set(&left_var(slot), "0")?;
    if trial(env) == Some(slot) {
        end_trial(env)?;
    }
    set_order(env, slot.other())
}

/// [`BootBackend::refund_try`] on the variables.
fn refund(env: &mut UbootEnv, slot: Slot) -> Result<bool> {
    let Some(Some(left)) = SlotVars::read(env, slot).left else {
        return Ok(false);
    };
    let refunds = number(env, HUP_REFUNDS).unwrap_or(0);
    // A try was used when the counter is below what the trial started with.
    let used = number(env, HUP_TRIES).is_some_and(|t| left < t);
    if trial(env) != Some(slot) || refunds == 0 || !used {
        return Ok(false);
    }
    env.set(&left_var(slot), &(left + 1).to_string())?;
    env.set(HUP_REFUNDS, &(refunds - 1).to_string())?;
    Ok(true)
}

/// The environment hup provisions: slot A committed first, slot B not bootable.
pub fn initial_env() -> Result<UbootEnv> {
    let mut env = UbootEnv::new();
    set_order(&mut env, Slot::A)?;
    env.set(&left_var(Slot::A), &GOOD_LEFT.to_string())?;
    env.set(&left_var(Slot::B), "0")?;
    Ok(env)
}

/// True when `mount` is, in this process's mount table, a mount of a partition of the
/// block device `disk` (an image file never is).
fn boot_mounted_from(disk: &Path, mount: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::metadata(disk) else {
        return false;
    };
    if !meta.file_type().is_block_device() {
        return false;
    }
    let rdev = meta.rdev();
    let disk_dev = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(mount) = mount.to_str() else {
        return false;
    };
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[4] == mount).then(|| f[2].to_string())
        })
        .any(|part| {
            // /sys/dev/block/M:m of a partition is a directory beside its disk's.
            let parent = Path::new("/sys/dev/block").join(&part).join("../dev");
            std::fs::read_to_string(parent).is_ok_and(|d| d.trim() == disk_dev)
        })
}

/// The `uboot` backend for one disk.
#[derive(Debug, Clone)]
pub struct UbootBackend {
    disk: PathBuf,
    labels: Labels,
    fw_env_config: PathBuf,
    boot_mount: PathBuf,
}

impl UbootBackend {
    /// The backend for the disk at `disk` with default labels, `fw_env.config` and mount.
    pub fn new(disk: impl AsRef<Path>) -> UbootBackend {
        UbootBackend::with_labels(
            disk,
            Labels::default(),
            Path::new(DEFAULT_FW_ENV_CONFIG),
            Path::new(DEFAULT_BOOT_MOUNT),
        )
    }

    /// The backend with `labels`, the `fw_env.config` at `fw_env_config` and the boot
    /// partition's mount point `boot_mount` (environment files under it are on the boot
    /// partition of `disk`).
    pub fn with_labels(
        disk: impl AsRef<Path>,
        labels: Labels,
        fw_env_config: &Path,
        boot_mount: &Path,
    ) -> UbootBackend {
        UbootBackend {
            disk: disk.as_ref().to_path_buf(),
            labels,
            fw_env_config: fw_env_config.to_path_buf(),
            boot_mount: boot_mount.to_path_buf(),
        }
    }

    /// Where the environment's copies are: files under `boot_mount` are on the boot partition
    /// of the disk, unless that partition is mounted there now (the running OS), where they
    /// are written through the mount as `fw_setenv` does, never by hup's FAT code under the
    /// kernel's feet.
    pub fn store(&self) -> Result<EnvStore> {
        let config = FwEnvConfig::load(&self.fw_env_config)?;
        let mounted = boot_mounted_from(&self.disk, &self.boot_mount);
        let mount = (!mounted).then_some(self.boot_mount.as_path());
        EnvStore::new(&config, mount).with_context(|| format!("{}", self.fw_env_config.display()))
    }

    fn esp(&self, write: bool) -> Result<Esp> {
        let disk = if write {
            Disk::open(&self.disk)
        } else {
            Disk::open_read_only(&self.disk)
        };
        let disk = disk.context("uboot backend")?;
        Esp::open(disk.open_partition(&self.labels.boot)?)
    }

    /// Runs `f` with the store and the boot partition open when a copy is on it.
    fn with_store<T>(
        &self,
        write: bool,
        f: impl FnOnce(&EnvStore, Option<&Esp>) -> Result<T>,
    ) -> Result<T> {
        let store = self.store()?;
        let on_fat = store
            .copies()
            .iter()
            .any(|c| matches!(c, Storage::Fat { .. }));
        if !on_fat {
            return f(&store, None);
        }
        let esp = self.esp(write)?;
        let out = f(&store, Some(&esp))?;
        if write {
            esp.close()?;
        }
        Ok(out)
    }

    /// The environment as it is now.
    pub fn env(&self) -> Result<UbootEnv> {
        self.with_store(false, |s, esp| Ok(s.read(esp)?.env))
    }

    /// Writes `env` as a new environment over every copy (provisioning).
    pub fn create_env(&self, env: &UbootEnv) -> Result<()> {
        self.with_store(true, |s, esp| s.create(esp, env))
            .context("writing the initial U-Boot environment")
    }

    fn update<T>(&self, what: &str, change: impl FnOnce(&mut UbootEnv) -> Result<T>) -> Result<T> {
        self.with_store(true, |s, esp| s.update(esp, change))
            .with_context(|| what.to_string())
    }
}

impl BootBackend for UbootBackend {
    fn kind(&self) -> BootBackendKind {
        BootBackendKind::Uboot
    }

    fn active(&self) -> Result<Slot> {
        Ok(next(&self.env()?))
    }

    fn set_try_next(&self, slot: Slot, tries: u8) -> Result<()> {
        check_tries(tries, MAX_TRIES)?;
        let kernel = kernel_path(slot);
        if !self.esp(false)?.exists(&kernel)? {
            bail!(
                "slot {slot} has no kernel {kernel} on {}: install its boot files first",
                self.labels.boot
            );
        }
        self.update(
            &format!("setting slot {slot} to try next ({tries} tries)"),
            |env| try_next(env, slot, tries),
        )
    }

    fn mark_good(&self, slot: Slot) -> Result<()> {
        self.update(&format!("marking slot {slot} good"), |env| good(env, slot))
    }

    fn mark_bad(&self, slot: Slot) -> Result<()> {
        self.update(&format!("marking slot {slot} bad"), |env| bad(env, slot))
    }

    fn state(&self) -> Result<BootState> {
        let env = self.env()?;
        let slots = Slot::ALL
            .iter()
            .map(|&s| {
                let v = SlotVars::read(&env, s);
                let status = v.status();
                let left = v.left.flatten();
                let on_trial = v.trial;
                SlotState {
                    slot: s,
                    status,
                    priority: None,
                    tries_left: left,
                    tries_done: match (on_trial, number(&env, HUP_TRIES), left) {
                        (true, Some(t), Some(l)) => Some(t.saturating_sub(l)),
                        _ => None,
                    },
                    successful: status == SlotStatus::Good,
                    refunds_left: on_trial.then(|| number(&env, HUP_REFUNDS).unwrap_or(0)),
                    entry: None,
                    version: None,
                    ok: None,
                }
            })
            .collect();
        Ok(BootState {
            backend: BootBackendKind::Uboot,
            next: Some(next(&env)),
            order: Some(order(&env).unwrap_or_default()),
            slots,
        })
    }

    fn refund_try(&self, slot: Slot) -> Result<bool> {
        self.update(&format!("refunding a try of slot {slot}"), |env| {
            refund(env, slot)
        })
    }
}

#[cfg(test)]
#[path = "uboot_tests.rs"]
mod tests;
