//! Data about root filesystems and the data partition: the fingerprint of a root tree
//! (docs/fingerprint.md).

pub mod backup;
pub mod fingerprint;
