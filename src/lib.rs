//! hup: an offline host-OS updater for embedded Linux.
//!
//! The same library backs the command-line tool on the running OS and the
//! initramfs `/init` (see `docs/architecture.md` for the module map).
#![deny(unsafe_code)]

pub mod agent;
pub mod apply;
pub mod archive;
pub mod boot;
pub mod bundle;
pub mod cli;
pub mod data;
pub mod device;
pub mod disk;
pub mod error;
pub mod ext4;
pub mod failpoint;
pub mod fsutil;
pub mod init;
pub mod initramfs;
pub mod layout;
pub mod logging;
pub mod migrate;
pub mod model;
pub mod size;
pub mod stage;
pub mod sys;

/// Entry points the fuzz targets (fuzz/, docs/fuzzing.md) need that are not otherwise
/// public. Not a stable API.
#[doc(hidden)]
pub mod fuzz_api {
    pub use crate::apply::bootfiles::{empty_slot_dir, write_payload};
}
