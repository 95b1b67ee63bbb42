//! Pure types, no I/O: manifest, versions, device configuration, state.

pub mod config;
pub mod initramfs;
pub mod json;
pub mod manifest;
pub mod state;
pub mod version;
