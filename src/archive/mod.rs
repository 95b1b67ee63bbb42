//! Tar work shared by the bundle writer, the ext4 writer, the fingerprint, the data backup
//! and the download follower.

pub mod gnu_sparse;
pub mod member;
pub mod sparse;
pub mod tree;
