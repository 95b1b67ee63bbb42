//! The bundle payloads as tar streams: a root filesystem tree (anything it holds) or a boot
//! tree (regular files and directories only), written by the walker of [`crate::archive::tree`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::archive::tree::{Archived, Policy, walk};

/// What a tree may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// Anything a root filesystem holds.
    Rootfs,
    /// Regular files and directories only (the boot partition is FAT).
    Boot,
}

/// Counts of what was archived.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeStats {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Writes `root` as a tar stream to `out` and returns what it wrote. Sockets are skipped
/// (tar cannot hold them) with a warning.
pub fn write_tar<W: Write>(root: &Path, kind: TreeKind, out: W) -> Result<TreeStats> {
    let mut builder = tar::Builder::new(out);
    let mut policy = PayloadPolicy {
        kind,
        stats: TreeStats::default(),
    };
    walk(root, &mut builder, &mut policy)?;
    builder.finish().context("finishing the tar stream")?;
    Ok(policy.stats)
}

/// The bundle payloads' policy: everything (boot: files and directories only).
struct PayloadPolicy {
    kind: TreeKind,
    stats: TreeStats,
}

impl Policy for PayloadPolicy {
    fn accept(&mut self, path: &Path, meta: &fs::Metadata) -> Result<bool> {
        let ft = meta.file_type();
        if self.kind == TreeKind::Boot && !(ft.is_dir() || ft.is_file()) {
            bail!(
                "{}: only regular files and directories can go to the boot partition",
                path.display()
            );
        }
        if ft.is_socket() {
            log::warn!("skipping socket {}", path.display());
            return Ok(false);
        }
        Ok(true)
    }

    fn xattrs(&self) -> bool {
        self.kind == TreeKind::Rootfs
    }

    fn archived(&mut self, e: &Archived) {
        self.stats.entries += 1;
        if e.meta.is_file() && !e.hard_link {
            self.stats.file_bytes += e.meta.len();
        }
    }
}
