//! The running OS's services: the device a command acts on (this file: its configuration,
//! hup's data directory, the disk, the booted slot and the running version), the locks of
//! `DATA/hup/` ([`lock`]), the OS's verdict on its slot ([`mark`]: mark-good, mark-bad,
//! refund-try), the staged bundle's place and `hup cancel` ([`staged`]), and `hup status`
//! ([`status`]). `crate::stage` builds on these; nothing here imports it.
//!
//! On a device everything is found from `/etc/hup/system.json`, `/run/hup/`, the kernel
//! command line and sysfs; tests and host use override the pieces (`--config`,
//! `--data-dir`, `--disk`, and the environment variable [`BOOTED_SLOT_ENV`]).

pub mod lock;
pub mod mark;
pub mod staged;
pub mod status;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::boot::{self, BootBackend};
use crate::bundle::sign::TrustedKeys;
use crate::fsutil::{DataDir, now};
use crate::model::config::{Labels, SYSTEM_JSON, SystemConfig};
use crate::model::slot::Slot;
use crate::model::state::State;

/// Test and debug override of the booted slot (`a` or `b`); read only in [`booted_slot`].
pub const BOOTED_SLOT_ENV: &str = "HUP_BOOTED_SLOT";
/// Files where the initramfs leaves the slot it booted, first match wins.
pub const BOOTED_SLOT_FILES: [&str; 2] = ["/run/hup/booted-slot", "/run/hup/slot"];

/// Where to find the device's pieces; `None` means "the device's own".
#[derive(Debug, Clone, Default)]
pub struct DeviceArgs {
    /// `system.json` (default `/etc/hup/system.json`).
    pub config: Option<PathBuf>,
    /// hup's own directory (`DATA/hup`; default `<config.data_mount>/hup`).
    pub data_dir: Option<PathBuf>,
    /// The whole disk holding the hup partitions (default: found through sysfs).
    pub disk: Option<PathBuf>,
}

/// A device: configuration, data directory and (lazily found) disk.
#[derive(Debug, Clone)]
pub struct Device {
    pub config: SystemConfig,
    pub config_path: PathBuf,
    pub data: DataDir,
    disk: Option<PathBuf>,
}

/// The booted slot and how it was found (for messages and `hup status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    pub slot: Slot,
    pub source: String,
}

impl Device {
    /// Reads the configuration and resolves the data directory.
    pub fn open(args: &DeviceArgs) -> Result<Device> {
        let config_path = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_JSON));
        let config = SystemConfig::load(&config_path)?;
        let data = match &args.data_dir {
            Some(d) => DataDir::new(
                std::path::absolute(d)
                    .with_context(|| format!("data directory {}", d.display()))?,
            ),
            None => DataDir::under_mount(Path::new(&config.data_mount)),
        };
        Ok(Device {
            config,
            config_path,
            data,
            disk: args.disk.clone(),
        })
    }

    /// The whole disk: `--disk`, else the disk holding the partition labelled `labels.root_a`.
    pub fn disk(&self) -> Result<PathBuf> {
        match &self.disk {
            Some(d) => Ok(d.clone()),
            None => find_disk(&self.config.labels),
        }
    }

    /// The configured boot backend on [`Device::disk`].
    pub fn backend(&self) -> Result<Box<dyn BootBackend>> {
        let disk = self.disk()?;
        Ok(boot::open_config(&self.config, &disk))
    }

    /// The trusted keys of `config.keys_dir`.
    pub fn keys(&self) -> Result<TrustedKeys> {
        let dir = PathBuf::from(&self.config.keys_dir);
        TrustedKeys::load(&[], std::slice::from_ref(&dir)).with_context(|| {
            format!(
                "loading the trusted keys (keys_dir in {})",
                self.config_path.display()
            )
        })
    }

    /// state.json, or a fresh state saying that the booted slot runs the version of
    /// `/etc/os-release` when there is no state file yet. Not written here.
    pub fn load_state_or_new(&self, booted: Slot) -> Result<State> {
        if self.data.state_path().exists() {
            return self.data.load_state();
        }
        let version = os_release_version(Path::new("/etc/os-release")).with_context(|| {
            format!(
                "no {} yet, and no version of the running system",
                self.data.state_path().display()
            )
        })?;
        Ok(State::new(booted, &version, now()))
    }
}

/// The running version: state.json's version of the booted slot, else `VERSION_ID` of
/// `/etc/os-release`.
pub fn running_version(state: &State, booted: Slot) -> Result<String> {
    if let Some(v) = &state.slot(booted).version {
        return Ok(v.clone());
    }
    os_release_version(Path::new("/etc/os-release")).with_context(|| {
        format!("the version of the booted slot {booted} is unknown (not in state.json)")
    })
}

/// `VERSION_ID` of an os-release file.
pub fn os_release_version(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("no VERSION_ID in {}", path.display()))
}

/// The slot the running system booted from: [`BOOTED_SLOT_ENV`], then
/// [`BOOTED_SLOT_FILES`] (written by the initramfs), then `hup.slot=` on the kernel command
/// line, then the slot whose partition label matches the device of `/`.
pub fn booted_slot(labels: &Labels) -> Result<Booted> {
    let found = |slot, source: String| Ok(Booted { slot, source });
    if let Ok(v) = std::env::var(BOOTED_SLOT_ENV) {
        let slot = Slot::parse(v.trim())
            .with_context(|| format!("{BOOTED_SLOT_ENV}={v:?}: expected a or b"))?;
        return found(slot, format!("environment {BOOTED_SLOT_ENV}"));
    }
    for f in BOOTED_SLOT_FILES {
        if let Ok(text) = std::fs::read_to_string(f) {
            let slot = Slot::parse(text.trim())
                .with_context(|| format!("{f} holds {:?}, expected a or b", text.trim()))?;
            return found(slot, f.to_string());
        }
    }
    if let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline")
        && let Some(slot) = crate::boot::cmdline::parse(&cmdline).slot
    {
        return found(slot, "hup.slot= on /proc/cmdline".into());
    }
    let root_label = root_partition_label().context(
        "cannot tell which slot is booted: no /run/hup/slot, no hup.slot= on the kernel \
         command line, and the root filesystem's partition label is unknown",
    )?;
    for slot in Slot::ALL {
        if slot.label(labels) == root_label {
            return found(slot, format!("partition label {root_label} of /"));
        }
    }
    bail!(
        "cannot tell which slot is booted: / is on partition {root_label:?}, neither {:?} nor {:?}",
        labels.root_a,
        labels.root_b
    )
}

/// PARTNAME of the block device mounted at `/` (from mountinfo's major:minor and sysfs).
fn root_partition_label() -> Result<String> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let devno = root_devno(&info).context("no / in /proc/self/mountinfo")?;
    let uevent = format!("/sys/dev/block/{devno}/uevent");
    let text = std::fs::read_to_string(&uevent).with_context(|| format!("reading {uevent}"))?;
    uevent_value(&text, "PARTNAME").with_context(|| format!("no PARTNAME in {uevent}"))
}

/// The `major:minor` of the last mount of `/` in a mountinfo text.
pub fn root_devno(mountinfo: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"/")).then(|| f.get(2).map(|s| s.to_string()))?
        })
        .next_back()
}

fn uevent_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// The whole disk (`/dev/NAME`) holding the partition labelled `labels.root_a`, found in
/// `/sys/class/block/*/uevent`.
pub fn find_disk(labels: &Labels) -> Result<PathBuf> {
    let class = Path::new("/sys/class/block");
    let entries =
        std::fs::read_dir(class).with_context(|| format!("reading {}", class.display()))?;
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.join("partition").exists() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join("uevent")) else {
            continue;
        };
        if uevent_value(&text, "PARTNAME").as_deref() != Some(labels.root_a.as_str()) {
            continue;
        }
        let real =
            std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
        let parent = real
            .parent()
            .and_then(|p| p.file_name())
            .with_context(|| format!("no parent disk for {}", real.display()))?;
        return Ok(Path::new("/dev").join(parent));
    }
    bail!(
        "no disk has a partition labelled {:?} (looked in /sys/class/block; use --disk)",
        labels.root_a
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_uevent() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    25 1 254:3 / / ro,relatime - ext4 /dev/vda3 ro\n\
                    30 25 254:4 / /mnt/data rw - ext4 /dev/vda4 rw\n";
        assert_eq!(root_devno(info).as_deref(), Some("254:3"));
        assert_eq!(root_devno("22 1 0:21 / /proc rw - proc proc rw\n"), None);
        let ue =
            "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=hup-root-b\n";
        assert_eq!(uevent_value(ue, "PARTNAME").as_deref(), Some("hup-root-b"));
        assert_eq!(uevent_value(ue, "PARTN").as_deref(), Some("3"));
    }

    #[test]
    fn os_release() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("os-release");
        std::fs::write(&p, "NAME=\"x\"\nVERSION_ID=\"2.1.0\"\n").unwrap();
        assert_eq!(os_release_version(&p).unwrap(), "2.1.0");
        std::fs::write(&p, "NAME=x\n").unwrap();
        assert!(
            os_release_version(&p)
                .unwrap_err()
                .to_string()
                .contains("no VERSION_ID")
        );
    }
}
