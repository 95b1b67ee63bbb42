//! Signal dispositions for the command-line tool.
#![allow(unsafe_code)]

use nix::sys::signal::{SigHandler, Signal, signal};

/// Restores the default SIGPIPE action (the Rust runtime ignores it), so that
/// `hup status | head -1` ends quietly instead of failing on a broken pipe.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no Rust handler, so no code runs in signal context; this is
    // called first thing in main, before any other thread exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
