//! The fingerprint of a root filesystem: one record per entry (path, type, permission bits,
//! owner, and the size and SHA-256 of regular files, symlink targets, device numbers), so
//! that a slot can be compared with what was installed (docs/fingerprint.md).
//!
//! It is computed from the rootfs tar stream ([`fingerprint_of_tar`], which is how `hup pack`
//! and the apply pipeline get it without a second pass, see [`embed`]) or from a mounted
//! tree ([`fingerprint_of_dir`]), and compared with [`compare`].

mod check;
mod compare;
mod embed;
mod known;
mod record;
mod scan;
mod sparse;
mod tap;

pub use check::{MissingFingerprint, TreeCheck, check_base, check_root, check_tree};
pub use compare::{Change, DEFAULT_IGNORE, Diff, IgnoreSet, compare};
pub use embed::{EMBED_PATH, EmbedReader, Embedded, ExtraFile, embed, embed_known, embed_with};
pub use known::KnownDigests;
pub use record::{
    Entry, FORMAT, FORMAT_SPARSE, Fingerprint, Kind, ROOT, escape_path, normalize, parent,
    unescape_path,
};
pub use scan::{
    DirScan, fingerprint_of_dir, fingerprint_of_tar, fingerprint_of_tar_with, scan_dir,
    scan_dir_for,
};
pub use sparse::SparseHasher;
pub use tap::TarTap;
