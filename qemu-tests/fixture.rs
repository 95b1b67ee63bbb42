//! Values built once per test run, on first use, and shared by every test that needs them
//! (the artifacts, a device updated to v2, a device with a bundle staged): one VM
//! sequence instead of one per test. A build that failed fails each test that asks for
//! it, with the build's error.

use std::sync::OnceLock;

use anyhow::Result;

/// A value built by the first caller of [`Cached::get`].
pub struct Cached<T> {
    /// What the build does, for the panic message (`"<what>: <error>"`).
    what: &'static str,
    cell: OnceLock<std::result::Result<T, String>>,
}

impl<T> Cached<T> {
    pub const fn new(what: &'static str) -> Cached<T> {
        Cached {
            what,
            cell: OnceLock::new(),
        }
    }

    /// The value, built with `build` on first use; panics (failing the test) if that build
    /// failed, now or in an earlier test.
    pub fn get(&'static self, build: impl FnOnce() -> Result<T>) -> &'static T {
        match self
            .cell
            .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        {
            Ok(v) => v,
            Err(e) => panic!("{}: {e}", self.what),
        }
    }
}
