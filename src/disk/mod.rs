//! disk: see docs/architecture.md.
