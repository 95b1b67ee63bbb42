//! Content digests known before the data is read: a delta bundle's copied files, whose
//! bytes preflight read from the running slot and checked against the sha256 the delta
//! names (docs/delta.md, "The apply"). The expander records each one where its data starts
//! in the tar it gives; the fingerprint of that tar takes the digest instead of hashing
//! the bytes a second time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Offset of a member's data in the tar stream -> its size and sha256; and how many were
/// taken.
#[derive(Debug, Clone, Default)]
pub struct KnownDigests(Arc<Mutex<Known>>);

#[derive(Debug, Default)]
struct Known {
    by_offset: HashMap<u64, (u64, [u8; 32])>,
    taken: u64,
}

impl KnownDigests {
    /// The member whose data starts at `offset` holds `size` bytes with `sha256`.
    pub fn insert(&self, offset: u64, size: u64, sha256: [u8; 32]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_offset
            .insert(offset, (size, sha256));
    }

    /// How many digests the fingerprint took so far.
    pub fn taken(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).taken
    }

    /// The digest recorded for the data at `offset`, if it was recorded with `size`.
    pub(super) fn take(&self, offset: u64, size: u64) -> Option<[u8; 32]> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.by_offset.remove(&offset) {
            Some((s, sha)) if s == size => {
                m.taken += 1;
                Some(sha)
            }
            _ => None,
        }
    }
}
