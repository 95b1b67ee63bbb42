//! `hup status`: what runs, what is staged, what the last update did, what the boot loader
//! will do (docs/status.md).
//!
//! - [`report`]: the document, whose JSON form is stable;
//! - [`gather`](mod@gather): reads the device (state.json, the disk, the boot backend) into
//!   a report;
//! - [`render`](mod@render): the text form, one function per section.

pub mod gather;
pub mod render;
pub mod report;

pub use gather::{Inputs, gather};
pub use render::{render, utc};
pub use report::{
    AgentActionReport, AgentReport, ApplyingReport, BootReport, BootSlotReport, LastResultReport,
    LayoutMigrationReport, PartitionTableReport, PhaseTime, STATUS_VERSION, SlotReport,
    StagedReport, Status,
};

/// The text form as a string, for the tests.
#[cfg(test)]
fn text(st: &Status) -> String {
    let mut out = Vec::new();
    render(st, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;
