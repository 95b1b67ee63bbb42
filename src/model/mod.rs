//! Pure types, no I/O: manifest, versions, device configuration, state.

pub mod agent;
pub mod config;
pub mod initramfs;
pub mod journal;
pub mod json;
pub mod layout;
pub mod manifest;
pub mod slot;
pub mod state;
pub mod version;

#[cfg(test)]
mod state_fixtures;
