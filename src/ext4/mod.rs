//! ext4: see docs/architecture.md.
