//! `hup apply-pending`: the pending apply, run from a distribution's own initramfs
//! (initramfs-tools `local-premount`, dracut `pre-mount`; docs/initramfs-integration.md).
//!
//! That initramfs has mounted /proc, /sys and /dev and run udev; its boot loader chose the
//! root (`root=PARTLABEL=…`, `hup.slot=`). The data partition is looked at read-only first:
//! with nothing pending it is unmounted again and nothing is written. Otherwise the same
//! pipeline as hup's own /init runs (layout resume, journaled apply, reboot after success).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::MsFlags;

use super::bootlog;
use super::devices::{self, Devices};
use super::pending::{self, DATA_MNT, Pending, PendingContext};
use crate::boot::cmdline::{self, Cmdline};
use crate::disk::Disk;
use crate::fsutil::DataDir;
use crate::model::config::{Labels, SystemConfig};
use crate::model::slot::Slot;
use crate::model::state::{Outcome, State};
use crate::sys::mount::{mount, umount};

/// Why the data partition must be mounted read-write at this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A bundle is staged; `resume` when a power cut interrupted its apply (journal).
    Staged { version: String, resume: bool },
    /// A journal whose bundle is no longer staged: the pipeline drops it.
    StaleJournal { version: String },
    /// A layout migration's backup header is on the disk: it is resumed or discarded.
    Layout,
    /// The last update was applied to `applied_to` but `booted` boots: if its trial is over
    /// the rollback is recorded in state.json.
    Rollback { applied_to: Slot, booted: Slot },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Staged {
                version,
                resume: false,
            } => write!(f, "{version} is staged"),
            Reason::Staged {
                version,
                resume: true,
            } => write!(f, "the apply of {version} was interrupted"),
            Reason::StaleJournal { version } => {
                write!(f, "a journal of {version} is left without its bundle")
            }
            Reason::Layout => write!(f, "a layout migration was interrupted"),
            Reason::Rollback { applied_to, booted } => write!(
                f,
                "the update applied to slot {applied_to} was not committed and slot {booted} boots"
            ),
        }
    }
}

/// What must be done at this boot, given state.json (None when the data partition holds
/// none), whether a layout migration's backup header was found, and the booted slot.
/// Empty: nothing pending, the boot goes on unchanged.
pub fn pending_work(
    state: Option<&State>,
    layout_header: bool,
    booted: Option<Slot>,
) -> Vec<Reason> {
    let mut out = Vec::new();
    if layout_header {
        out.push(Reason::Layout);
    }
    let Some(state) = state else {
        return out;
    };
    match (&state.staged, &state.journal) {
        (Some(s), j) => out.push(Reason::Staged {
            version: s.version.clone(),
            resume: j.as_ref().is_some_and(|j| j.bundle_sha256 == s.sha256),
        }),
        (None, Some(j)) => out.push(Reason::StaleJournal {
            version: j.version.clone(),
        }),
        (None, None) => {}
    }
    if let (Some(last), Some(booted)) = (&state.last_result, booted)
        && last.outcome == Outcome::Applied
        && last.slot != booted
    {
        out.push(Reason::Rollback {
            applied_to: last.slot,
            booted,
        });
    }
    out
}

/// The slot this boot's loader chose: `hup.slot=`, else `root=PARTLABEL=<root label>`.
pub fn booted_slot(cmdline_text: &str, cmdline: &Cmdline, labels: &Labels) -> Option<Slot> {
    if cmdline.slot.is_some() {
        return cmdline.slot;
    }
    let root = cmdline::split(cmdline_text)
        .into_iter()
        .filter_map(|w| w.strip_prefix("root=PARTLABEL=").map(str::to_string))
        .next_back()?;
    Slot::ALL.into_iter().find(|s| s.label(labels) == root)
}

/// Where things are; the defaults are the initramfs's (tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub cmdline: PathBuf,
    pub sys_block: PathBuf,
    pub dev: PathBuf,
}

impl Paths {
    pub fn new(config: PathBuf) -> Paths {
        Paths {
            config,
            cmdline: "/proc/cmdline".into(),
            sys_block: "/sys/class/block".into(),
            dev: "/dev".into(),
        }
    }
}

/// How a run ended (a successful apply does not end: it reboots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// Nothing pending: nothing was written.
    NothingPending,
    /// Pending work ran and the boot continues (nothing to reboot into, or it failed and
    /// the failure is in state.json and the boot log).
    Continue,
}

/// Sends log lines to the console and the kernel log (and keeps them for the boot log file
/// on the data partition), as hup's /init does.
pub fn install_log() {
    bootlog::install(Path::new("/dev/console"), Path::new("/dev/kmsg"));
}

/// Runs `hup apply-pending`. Errors mean the boot continues unchanged (the caller logs them).
pub fn run(paths: &Paths) -> Result<Ran> {
    let text = std::fs::read_to_string(&paths.cmdline)
        .with_context(|| format!("reading {}", paths.cmdline.display()))?;
    let cmdline = cmdline::parse(&text);
    if cmdline.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    arm_failpoint(&cmdline);
    let config = SystemConfig::load(&paths.config)
        .with_context(|| format!("device configuration {}", paths.config.display()))?;
    let labels = config.labels.clone();
    let devices = devices::wait_for_labels(
        &paths.sys_block,
        &paths.dev,
        &[&labels.root_a, &labels.root_b, &labels.data],
        &[&labels.boot],
        cmdline.rootwait,
    )?;
    let booted = booted_slot(&text, &cmdline, &labels);
    let work = probe(&config, &devices, booted)?;
    if work.is_empty() {
        log::info!("nothing pending");
        return Ok(Ran::NothingPending);
    }
    let why: Vec<String> = work.iter().map(ToString::to_string).collect();
    log::info!(
        "apply-pending {}: {}",
        env!("CARGO_PKG_VERSION"),
        why.join("; ")
    );
    let mut premount = Premount {
        config: &config,
        cmdline: &cmdline,
        devices: &devices,
        data_mounted: false,
    };
    let r = premount.run_work(booted, &work);
    premount.release_data();
    r.map(|()| Ran::Continue)
}

fn arm_failpoint(cmdline: &Cmdline) {
    let Some(fp) = &cmdline.failpoint else {
        return;
    };
    match crate::failpoint::arm(fp) {
        Ok(()) => log::info!("failpoint {fp} armed"),
        Err(e @ crate::failpoint::ArmError::Disabled) => {
            log::warn!("hup.failpoint={fp} ignored: {e}")
        }
        Err(e) => log::error!("{e}"),
    }
}

/// Looks without writing: the disk for a layout migration's backup header, the data
/// partition (mounted read-only, then unmounted) for state.json.
fn probe(config: &SystemConfig, devices: &Devices, booted: Option<Slot>) -> Result<Vec<Reason>> {
    let disk_path = pending::disk_of(config, devices)?;
    let disk = Disk::open_read_only(&disk_path)?;
    let header = crate::layout::resume_phase(&disk, &config.labels)?.is_some();
    drop(disk);
    let part = devices
        .get(&config.labels.data)
        .with_context(|| format!("no partition labelled {}", config.labels.data))?;
    let state = match read_state_ro(&part.node) {
        Ok(s) => s,
        // A layout migration may have left a new, still empty data partition.
        Err(e) if header => {
            log::debug!("{e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    Ok(pending_work(state.as_ref(), header, booted))
}

/// Mounts the data partition read-only at [`DATA_MNT`], reads state.json (None when it has
/// none) and unmounts it again.
fn read_state_ro(node: &Path) -> Result<Option<State>> {
    let dir = Path::new(DATA_MNT);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {DATA_MNT}"))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(&node.display().to_string(), dir, "ext4", flags, None)?;
    let data = DataDir::under_mount(dir);
    let state = if data.state_path().exists() {
        data.load_state().map(Some)
    } else {
        log::debug!("no {}", data.state_path().display());
        Ok(None)
    };
    umount(dir)?;
    state
}

/// The pipeline of hup's /init (docs/initramfs.md steps 6 to 8) without the slot choice.
struct Premount<'a> {
    config: &'a SystemConfig,
    cmdline: &'a Cmdline,
    devices: &'a Devices,
    data_mounted: bool,
}

impl Premount<'_> {
    fn run_work(&mut self, booted: Option<Slot>, work: &[Reason]) -> Result<()> {
        let resumed = if work.contains(&Reason::Layout) {
            pending::resume_layout(self.config, self.devices)
                .map_err(|e| log::error!("resuming the layout migration: {e:#}"))
                .ok()
                .flatten()
        } else {
            None
        };
        self.mount_data()?;
        // The distribution's initramfs resolved root= before the table changed: once the
        // migration is recorded (its header cleared), a reboot starts the boot afresh.
        let mut table_changed = false;
        if let Some((rec, secs)) = &resumed {
            match pending::complete_layout(
                self.config,
                self.devices,
                Path::new(DATA_MNT),
                rec,
                *secs,
            ) {
                Ok(()) => table_changed = true,
                Err(e) => log::error!("recording the layout migration: {e:#}"),
            }
        }
        let ctx = PendingContext {
            config: self.config,
            cmdline: self.cmdline,
            devices: self.devices,
            data_dir: Path::new(DATA_MNT),
        };
        let (result, mounted) = pending::run_mounted(&ctx);
        self.data_mounted = mounted;
        match result {
            Ok(Pending::Reboot { reason }) => {
                log::info!("rebooting: {reason}");
                self.release_data();
                crate::sys::power::reboot();
            }
            Ok(Pending::None) => {}
            Err(e) => {
                log::error!("applying the pending update failed: {e:#}; booting the current root");
            }
        }
        if table_changed {
            log::info!("rebooting: the partition table changed under this initramfs");
            self.release_data();
            crate::sys::power::reboot();
        }
        if let (Some(b), true) = (booted, self.data_mounted)
            && let Err(e) = pending::note_booted(&ctx, b)
        {
            log::warn!("recording the booted slot: {e:#}");
        }
        Ok(())
    }

    fn mount_data(&mut self) -> Result<()> {
        let part = self
            .devices
            .get(&self.config.labels.data)
            .with_context(|| format!("no partition labelled {}", self.config.labels.data))?;
        let dir = Path::new(DATA_MNT);
        let node = part.node.display().to_string();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {DATA_MNT}"))?;
        mount(&node, dir, "ext4", MsFlags::MS_NODEV, None)?;
        self.data_mounted = true;
        match bootlog::attach_file(&dir.join("hup/log")) {
            Ok(p) => log::info!("data partition {node} mounted; log in {}", p.display()),
            Err(e) => log::warn!("no boot log on the data partition: {e:#}"),
        }
        Ok(())
    }

    /// Flushes the boot log and unmounts the data partition.
    fn release_data(&mut self) {
        bootlog::detach_file();
        if self.data_mounted {
            nix::unistd::sync();
            if let Err(e) = umount(Path::new(DATA_MNT)) {
                log::warn!("{e:#}");
            }
            self.data_mounted = false;
        }
    }
}

#[cfg(test)]
#[path = "premount_tests.rs"]
mod tests;
