//! stage: see docs/architecture.md.
