//! All tar work: writing a directory tree as a deterministic stream (`tree`), PAX records
//! (`pax`), one member's header as hup reads it from a root filesystem stream (`member`),
//! GNU sparse files (`sparse`: records and maps; `gnu_sparse`: old 'S' headers rewritten as
//! PAX), raw header fields for the readers that follow tar bytes themselves (`header`), and
//! the byte plumbing of tar streams (`io`). Used by the bundle writer, the ext4
//! writer, the fingerprint, the data backup and the download follower; it imports none of
//! them (docs/architecture.md).

pub mod gnu_sparse;
pub mod header;
pub mod io;
pub mod member;
pub mod pax;
pub mod sparse;
pub mod tree;
