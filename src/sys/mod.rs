//! sys: see docs/architecture.md.

pub mod blk;
pub mod kmod;
pub mod mount;
pub mod power;
pub mod signal;
