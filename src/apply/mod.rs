//! The offline apply: the journaled pipeline that writes a bundle into the spare slot
//! (docs/apply.md). The initramfs runs it at boot; `hup apply --disk`
//! runs the same code on an image file.
//!
//! Every step is recorded in the journal (state.json) before and after it runs. After a
//! power cut the next run skips completed steps, re-runs preflight, and redoes `format`
//! when `populate` had not completed (a half-written filesystem is started over).

pub(crate) mod bootfiles;
mod context;
mod delta;
pub mod layout;
mod pipeline;
mod preflight;
pub mod provision;
pub mod provision_uboot;
mod slotfs;
mod staged;

pub use staged::{give_up_slot, note_booted, run_staged};

pub use context::{BaseRoot, Context, MountedBase, Report, current_slot};
pub use pipeline::{apply, apply_known};
