//! layout: partition layout migration (docs/layout-migration.md); in progress.
