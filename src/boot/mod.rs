//! boot: see docs/architecture.md.
