//! boot: which root slot boots, and how a new slot is tried, committed or given up.
//!
//! [`BootBackend`] is the contract (docs/boot-backends.md); [`gpt::GptBackend`] keeps the state
//! in GPT attribute bits of the root partitions, [`systemd_boot::SystemdBootBackend`] in Boot
//! Loader Specification entries on the ESP, [`grub::GrubBackend`] in a GRUB environment block
//! on the ESP ([`grubenv`]), [`uboot::UbootBackend`] in U-Boot's environment
//! ([`ubootenv`] is its format and [`fw_env_config`] the `fw_env.config` that says where it
//! is, with its power-safe storage; [`uboot_script`] the boot script that reads it).
//! The on-disk formats are in docs/boot-backends.md.
//!
//! Every backend call opens the disk, reads the current state, writes and closes: nothing is
//! cached between calls, so several processes (or a reboot in between) see the same truth.

mod backend;
mod bls;
pub mod cmdline;
pub mod fw_env_config;
pub mod gpt;
pub mod grub;
pub mod grub_script;
pub mod grubenv;
pub mod order;
pub mod systemd_boot;
pub mod uboot;
pub mod uboot_script;
pub mod ubootenv;

use std::path::Path;

use crate::model::config::{
    BootBackendKind, DEFAULT_BOOT_MOUNT, DEFAULT_FW_ENV_CONFIG, DEFAULT_GRUB_ENV, Labels,
    SystemConfig,
};

pub use backend::{BootBackend, BootState, SlotState};

/// Where the backends that keep their state in a file find it (system.json's fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFiles<'a> {
    /// `grub`: the environment block on the boot partition.
    pub grub_env: &'a str,
    /// `uboot`: the `fw_env.config`.
    pub fw_env_config: &'a str,
    /// `uboot`: the boot partition's mount point on the running OS.
    pub boot_mount: &'a str,
}

impl StateFiles<'static> {
    /// system.json's defaults.
    pub const DEFAULT: StateFiles<'static> = StateFiles {
        grub_env: DEFAULT_GRUB_ENV,
        fw_env_config: DEFAULT_FW_ENV_CONFIG,
        boot_mount: DEFAULT_BOOT_MOUNT,
    };
}

impl<'a> StateFiles<'a> {
    /// The files `config` names.
    pub fn of(config: &'a SystemConfig) -> StateFiles<'a> {
        StateFiles {
            grub_env: &config.grub_env,
            fw_env_config: &config.fw_env_config,
            boot_mount: &config.boot_mount,
        }
    }
}

/// The backend `config` names for the disk at `disk`, with its labels and state files.
pub fn open_config(config: &SystemConfig, disk: &Path) -> Box<dyn BootBackend> {
    open_with(
        config.boot_backend,
        disk,
        &config.labels,
        StateFiles::of(config),
    )
}

/// The backend of `kind` for the disk at `disk`, with the default state files (use
/// [`open_config`] when a configuration is at hand).
pub fn open(kind: BootBackendKind, disk: &Path, labels: &Labels) -> Box<dyn BootBackend> {
    open_with(kind, disk, labels, StateFiles::DEFAULT)
}

/// The backend of `kind` for the disk at `disk`, with its state in `files`.
pub fn open_with(
    kind: BootBackendKind,
    disk: &Path,
    labels: &Labels,
    files: StateFiles<'_>,
) -> Box<dyn BootBackend> {
    match kind {
        BootBackendKind::Gpt => Box::new(gpt::GptBackend::with_labels(disk, labels.clone())),
        BootBackendKind::SystemdBoot => Box::new(systemd_boot::SystemdBootBackend::with_labels(
            disk,
            labels.clone(),
        )),
        BootBackendKind::Grub => Box::new(grub::GrubBackend::with_labels(
            disk,
            labels.clone(),
            files.grub_env,
        )),
        BootBackendKind::Uboot => Box::new(uboot::UbootBackend::with_labels(
            disk,
            labels.clone(),
            Path::new(files.fw_env_config),
            Path::new(files.boot_mount),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::backend::check_tries;
    use super::*;

    #[test]
    fn open_by_kind() {
        let l = Labels::default();
        let p = Path::new("/nonexistent.img");
        for kind in BootBackendKind::ALL {
            assert_eq!(open(kind, p, &l).kind(), kind);
        }
        assert!(check_tries(0, 15).is_err());
        assert!(check_tries(16, 15).is_err());
        assert!(check_tries(3, 15).is_ok());
    }
}
