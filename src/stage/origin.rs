//! What the downloader reads a bundle from: an [`Origin`] opened at a byte offset, so that
//! an interrupted download resumes. `source` (a local file) and `http` (a URL) implement it;
//! `download` uses it. Both import this file, and it imports neither.

use std::io::Read;

/// What a resumed download must still match: an HTTP `ETag` or `Last-Modified` value.
pub type Validator = String;

/// An opened stream of the bundle.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    /// Offset of the first byte `reader` yields: the requested offset, or 0 when the origin
    /// restarted from the beginning.
    pub start: u64,
    /// Size of the whole bundle, when known.
    pub total: Option<u64>,
    /// Validator to send when resuming later.
    pub validator: Option<Validator>,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

/// Why opening failed: worth retrying or not.
#[derive(Debug)]
pub enum OpenError {
    /// Timeouts, resets, 5xx, 408, 429: retried with backoff.
    Transient(anyhow::Error),
    /// Everything else (404, connection refused, TLS, bad URL): fails at once.
    Permanent(anyhow::Error),
}

impl OpenError {
    pub fn into_inner(self) -> anyhow::Error {
        match self {
            OpenError::Transient(e) | OpenError::Permanent(e) => e,
        }
    }
}

/// A bundle origin that can be (re)opened at an offset.
pub trait Origin {
    /// For messages: the path or URL.
    fn describe(&self) -> String;
    /// Opens the bundle at `offset` (0 = from the start). `validator` is what the previous
    /// attempt recorded; an origin that changed since then restarts at 0.
    fn open(&mut self, offset: u64, validator: Option<&str>) -> Result<Opened, OpenError>;
}
