//! PID 1 of the initramfs (see docs/initramfs.md).
//!
//! Early mounts, kernel command line, modules, partitions by label, the data
//! partition, a pending update (apply pipeline), then the slot choice and the
//! switch into the chosen root. PID 1 never panics and never exits: a fatal error
//! is logged, the other slot is tried, and if nothing boots the machine reboots
//! after a bounded wait.

pub mod bootlog;
pub mod devices;
pub mod modules;
pub mod pending;
pub mod premount;
pub mod slot;
pub mod switch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::mount::MsFlags;

use crate::boot::cmdline::{self, Cmdline};
use crate::model::config::{SYSTEM_JSON, SystemConfig};
use crate::model::initramfs::{MODULES_DIR, MODULES_LIST};
use crate::model::slot::Slot;
use crate::sys::mount::{mount, umount};
use devices::Devices;
use pending::DATA_MNT;

/// Where the init mounts the chosen root before switching to it.
pub const ROOT_MNT: &str = "/hup/root";
/// What the init leaves for the OS: `/run/hup/slot` holds `a` or `b`.
pub const RUN_DIR: &str = "/run/hup";

/// Entry point when hup runs as `/init`. Never returns.
pub fn run() -> ! {
    // With panic=abort a panic in PID 1 would panic the kernel: reboot instead.
    std::panic::set_hook(Box::new(|info| {
        log::error!("init panicked: {info}");
        bootlog::detach_file();
        std::thread::sleep(Duration::from_secs(10));
        crate::sys::power::reboot();
    }));
    crate::logging::init(log::LevelFilter::Info);
    early_mounts();
    bootlog::install(Path::new("/dev/console"), Path::new("/dev/kmsg"));
    log::info!("init {} starting", env!("CARGO_PKG_VERSION"));

    let mut init = Init::new();
    let err = match init.boot() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    log::error!("{err:#}");
    init.give_up()
}

/// Mounts /proc, /sys, /dev (devtmpfs) and /run; failures are logged, not fatal.
fn early_mounts() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: [(&str, &str, &str, MsFlags, Option<&str>); 4] = [
        ("proc", "/proc", "proc", nosuid, None),
        ("sysfs", "/sys", "sysfs", nosuid, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ];
    for (src, target, fstype, flags, data) in mounts {
        let t = Path::new(target);
        let _ = std::fs::create_dir_all(t);
        if let Err(e) = mount(src, t, fstype, flags, data) {
            // No logger sink yet: the kernel console is our stderr.
            eprintln!("hup: error: {e:#}");
        }
    }
}

/// Mounts efivarfs on UEFI machines (after the module list, which may hold efivarfs).
fn mount_efivars() {
    let dir = Path::new(slot::EFIVARS);
    if !Path::new("/sys/firmware/efi").is_dir() {
        return;
    }
    if let Err(e) = mount(
        "efivarfs",
        dir,
        "efivarfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    ) {
        log::warn!("{e:#}");
    }
}

struct Init {
    cmdline: Cmdline,
    config: SystemConfig,
    devices: Devices,
    data_mounted: bool,
}

impl Init {
    fn new() -> Self {
        let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_else(|e| {
            log::error!("reading /proc/cmdline: {e}");
            String::new()
        });
        let cmdline = cmdline::parse(&text);
        if cmdline.debug {
            log::set_max_level(log::LevelFilter::Debug);
        }
        for w in &cmdline.unknown {
            log::warn!("ignoring unknown kernel command line option {w}");
        }
        let config = match SystemConfig::load(Path::new(SYSTEM_JSON)) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e:#}; using the default configuration");
                default_config()
            }
        };
        Init {
            cmdline,
            config,
            devices: Devices::default(),
            data_mounted: false,
        }
    }

    /// Everything up to the exec of the OS's init; returns only with an error.
    fn boot(&mut self) -> Result<std::convert::Infallible> {
        self.arm_failpoint();
        modules::load_all(Path::new(MODULES_LIST), Path::new(MODULES_DIR));
        mount_efivars();
        if self.cmdline.shell {
            run_shell("hup.shell");
        }
        let labels = self.config.labels.clone();
        self.devices = devices::wait_for_labels(
            Path::new("/sys/class/block"),
            Path::new("/dev"),
            &[&labels.root_a, &labels.root_b, &labels.data],
            &[&labels.boot],
            self.cmdline.rootwait,
        )
        .or_else(|e| {
            // Booting needs one root; keep going with what is there.
            log::error!("{e:#}");
            devices::wait_for_labels(
                Path::new("/sys/class/block"),
                Path::new("/dev"),
                &[],
                &[&labels.root_a, &labels.root_b, &labels.data, &labels.boot],
                Duration::ZERO,
            )
        })?;
        // A layout migration interrupted past its backup is finished before the data
        // partition is mounted (it may be new and still empty).
        let resumed = match pending::resume_layout(&self.config, &self.devices) {
            Ok(r) => r,
            Err(e) => {
                log::error!("resuming the layout migration: {e:#}");
                None
            }
        };
        self.mount_data();
        if let (Some((rec, secs)), true) = (&resumed, self.data_mounted)
            && let Err(e) = pending::complete_layout(
                &self.config,
                &self.devices,
                Path::new(DATA_MNT),
                rec,
                *secs,
            )
        {
            log::error!("recording the layout migration: {e:#}");
        }
        if self.data_mounted {
            self.check_pending();
        }
        let ctx = slot::ChooseContext {
            config: &self.config,
            cmdline: &self.cmdline,
            devices: &self.devices,
        };
        let mut candidates = slot::chooser_for(&self.config)
            .candidates(&ctx)
            .unwrap_or_else(|e| {
                log::error!("choosing a slot: {e:#}; trying a, then b");
                vec![Slot::A, Slot::B]
            });
        // Last resort: a slot the backend did not offer is still better than no boot.
        for s in Slot::ALL {
            if !candidates.contains(&s) {
                candidates.push(s);
            }
        }
        for (i, s) in candidates.into_iter().enumerate() {
            if i > 0 {
                log::warn!("falling back to slot {s}");
            }
            match self.try_slot(s) {
                Ok(never) => match never {},
                Err(e) => {
                    log::error!("slot {s}: {e:#}");
                    let data = self.data_mounted.then(|| Path::new(DATA_MNT));
                    let why = format!("{e:#}");
                    if let Err(e) =
                        pending::give_up_slot(&self.config, &self.devices, data, s, &why)
                    {
                        log::warn!("{e:#}");
                    }
                }
            }
        }
        anyhow::bail!("no slot could be booted")
    }

    fn arm_failpoint(&self) {
        let Some(fp) = &self.cmdline.failpoint else {
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

    fn mount_data(&mut self) {
        let Some(part) = self.devices.get(&self.config.labels.data) else {
            log::error!(
                "no data partition {}: booting without it",
                self.config.labels.data
            );
            return;
        };
        let dir = Path::new(DATA_MNT);
        let node = part.node.display().to_string();
        let r = std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {DATA_MNT}"))
            .and_then(|()| mount(&node, dir, "ext4", MsFlags::MS_NODEV, None));
        match r {
            Ok(()) => {
                self.data_mounted = true;
                match bootlog::attach_file(&dir.join("hup/log")) {
                    Ok(p) => log::info!("data partition {node} mounted; log in {}", p.display()),
                    Err(e) => log::warn!("no boot log on the data partition: {e:#}"),
                }
            }
            Err(e) => log::error!("{e:#}; booting without the data partition"),
        }
    }

    fn check_pending(&mut self) {
        let ctx = pending::PendingContext {
            config: &self.config,
            cmdline: &self.cmdline,
            devices: &self.devices,
            data_dir: Path::new(DATA_MNT),
        };
        let (result, mounted) = pending::run_mounted(&ctx);
        self.data_mounted = mounted;
        match result {
            Ok(pending::Pending::None) => {}
            Ok(pending::Pending::Reboot { reason }) => {
                log::info!("rebooting: {reason}");
                self.release_data();
                crate::sys::power::reboot();
            }
            Err(e) => log::error!("applying the pending update failed: {e:#}; booting normally"),
        }
    }

    /// Mounts slot `s`, checks it and switches into it. Returns only on failure;
    /// a failure before the point of no return leaves the initramfs as it was.
    fn try_slot(&mut self, s: Slot) -> Result<std::convert::Infallible> {
        let label = s.label(&self.config.labels).to_string();
        let part = self
            .devices
            .get(&label)
            .with_context(|| format!("no partition labelled {label}"))?;
        let node = part.node.display().to_string();
        let root = PathBuf::from(ROOT_MNT);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {ROOT_MNT}"))?;
        mount(&node, &root, "ext4", MsFlags::MS_RDONLY, None)?;
        if let Err(e) = switch::check_init(&root) {
            let _ = umount(&root);
            return Err(e.context(format!("root {node} ({label})")));
        }
        if let Err(e) = write_run_info(s, &node) {
            log::warn!("{e:#}");
        }
        if self.data_mounted {
            let ctx = pending::PendingContext {
                config: &self.config,
                cmdline: &self.cmdline,
                devices: &self.devices,
                data_dir: Path::new(DATA_MNT),
            };
            if let Err(e) = pending::note_booted(&ctx, s) {
                log::warn!("recording the booted slot: {e:#}");
            }
        }
        log::info!("booting slot {s} from {node} ({label})");
        let data_to = self.config.data_mount.clone();
        let mut carry = Vec::new();
        if self.data_mounted {
            carry.push(switch::Carry {
                from: Path::new(DATA_MNT),
                to: &data_to,
            });
        }
        for d in ["/dev", "/proc", "/sys", "/run"] {
            carry.push(switch::Carry {
                from: Path::new(d),
                to: d,
            });
        }
        let err = switch::enter(&root, &carry, &[("HUP_SLOT", s.name())]);
        // Past the point of no return: nothing else can be tried from here.
        log::error!("switching to slot {s}: {err:#}");
        self.data_mounted = false;
        self.give_up()
    }

    /// Flushes the log and unmounts the data partition (before a reboot).
    fn release_data(&mut self) {
        bootlog::detach_file();
        if self.data_mounted {
            if let Err(e) = umount(Path::new(DATA_MNT)) {
                log::warn!("{e:#}");
            }
            self.data_mounted = false;
        }
    }

    /// Nothing bootable: optional rescue shell, bounded wait, reboot.
    fn give_up(&mut self) -> ! {
        if self.cmdline.shell {
            run_shell("boot failed");
        }
        let delay = self.cmdline.reboot_delay;
        log::error!("nothing bootable; rebooting in {} s", delay.as_secs());
        self.release_data();
        std::thread::sleep(delay);
        crate::sys::power::reboot()
    }
}

/// The configuration used when /etc/hup/system.json is missing or broken.
fn default_config() -> SystemConfig {
    SystemConfig {
        compatible: "unknown".into(),
        boot_backend: crate::model::config::BootBackendKind::Gpt,
        grub_env: crate::model::config::DEFAULT_GRUB_ENV.into(),
        fw_env_config: crate::model::config::DEFAULT_FW_ENV_CONFIG.into(),
        boot_mount: crate::model::config::DEFAULT_BOOT_MOUNT.into(),
        max_tries: 3,
        labels: crate::model::config::Labels::default(),
        data_mount: "/mnt/data".into(),
        keys_dir: "/etc/hup/keys".into(),
        download: Default::default(),
    }
}

/// Writes `/run/hup/slot` (and `/run/hup/root`) for the OS.
fn write_run_info(s: Slot, node: &str) -> Result<()> {
    let dir = Path::new(RUN_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {RUN_DIR}"))?;
    std::fs::write(dir.join("slot"), format!("{s}\n"))
        .with_context(|| format!("writing {RUN_DIR}/slot"))?;
    std::fs::write(dir.join("root"), format!("{node}\n"))
        .with_context(|| format!("writing {RUN_DIR}/root"))
}

/// Runs /bin/sh on the console and waits for it, if the initramfs has one.
fn run_shell(why: &str) {
    let sh = Path::new("/bin/sh");
    if !sh.exists() {
        log::warn!("{why}: no /bin/sh in the initramfs, no shell");
        return;
    }
    log::info!("{why}: starting /bin/sh; exit it to continue");
    match std::process::Command::new(sh).status() {
        Ok(st) => log::info!("shell exited ({st})"),
        Err(e) => log::error!("starting /bin/sh: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_matches_the_serde_defaults() {
        let parsed = SystemConfig::from_json(br#"{"compatible":"unknown"}"#).unwrap();
        assert_eq!(default_config(), parsed);
    }
}
