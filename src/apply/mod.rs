//! apply: see docs/architecture.md.
