//! boot: which root slot boots, and how a new slot is tried, committed or given up.
//!
//! [`BootBackend`] is the contract (docs/boot-backends.md); [`gpt::GptBackend`] keeps the state
//! in GPT attribute bits of the root partitions, [`systemd_boot::SystemdBootBackend`] in Boot
//! Loader Specification entries on the ESP, [`grub::GrubBackend`] in a GRUB environment block
//! on the ESP ([`grubenv`]). [`ubootenv`] is U-Boot's environment format and
//! [`fw_env_config`] the `fw_env.config` that says where it is, with its power-safe storage.
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
pub mod systemd_boot;
pub mod ubootenv;

use std::path::Path;

use crate::model::config::{BootBackendKind, DEFAULT_GRUB_ENV, Labels, SystemConfig};

pub use backend::{BootBackend, BootState, SlotState};

/// The backend `config` names for the disk at `disk`, with its labels and `grub_env`.
pub fn open_config(config: &SystemConfig, disk: &Path) -> Box<dyn BootBackend> {
    open_with(config.boot_backend, disk, &config.labels, &config.grub_env)
}

/// The backend of `kind` for the disk at `disk` (the `grub` backend with the default
/// `grub_env`; use [`open_config`] when a configuration is at hand).
pub fn open(kind: BootBackendKind, disk: &Path, labels: &Labels) -> Box<dyn BootBackend> {
    open_with(kind, disk, labels, DEFAULT_GRUB_ENV)
}

/// The backend of `kind` for the disk at `disk`; `grub_env` is the `grub` backend's block.
pub fn open_with(
    kind: BootBackendKind,
    disk: &Path,
    labels: &Labels,
    grub_env: &str,
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
            grub_env,
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
