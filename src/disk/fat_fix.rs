//! A repair for directories created by `fatfs` 0.3.6 (rust-fatfs issue #117, fixed upstream
//! after 0.3.6): it writes a long-name entry before "." and before "..", so they are not the
//! first two slots of the directory as FAT requires (fsck.fat "moves" them and renames them to
//! FSCK0000.000), and on FAT32 it gives ".." of a first-level directory the root's cluster
//! number where FAT wants 0. [`fix_new_dir`] rewrites the first slots of a directory just
//! created: ".", "..", then the end marker. It finds the directory with the raw FAT access of
//! `fat_raw`, because fatfs does not expose cluster numbers.

use anyhow::{Result, bail};

use super::fat_io::FatIo;
use super::fat_raw::{ATTR_LFN, ENTRY, geometry};

const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// Puts "." and ".." of the directory at `path` (just created by fatfs) into the first two
/// slots and gives ".." the cluster FAT expects. Does nothing when they are already right.
pub(crate) fn fix_new_dir(io: &FatIo, path: &str) -> Result<()> {
    let g = geometry(io)?;
    let (cluster, parent) = g.dir_at(io, path)?;
    let Some(c) = cluster else { return Ok(()) };
    let off = g.cluster_offset(c);
    let mut slots = [0u8; 4 * ENTRY];
    io.read_exact_at(&mut slots, off)?;
    let name = |i: usize| &slots[i * ENTRY..i * ENTRY + 11];
    let attr = |i: usize| slots[i * ENTRY + 11];
    let mut fixed = slots;
    if attr(0) == ATTR_LFN && name(1) == DOT && attr(2) == ATTR_LFN && name(3) == DOTDOT {
        fixed = [0u8; 4 * ENTRY];
        fixed[..ENTRY].copy_from_slice(&slots[ENTRY..2 * ENTRY]);
        fixed[ENTRY..2 * ENTRY].copy_from_slice(&slots[3 * ENTRY..]);
    } else if !(name(0) == DOT && name(1) == DOTDOT) {
        bail!("directory {path:?} does not start with \".\" and \"..\"");
    }
    // ".." of a directory in the root holds cluster 0 (FAT32 included).
    let parent_cluster = parent.unwrap_or(0);
    let dd = &mut fixed[ENTRY..2 * ENTRY];
    dd[20..22].copy_from_slice(&((parent_cluster >> 16) as u16).to_le_bytes());
    dd[26..28].copy_from_slice(&(parent_cluster as u16).to_le_bytes());
    if fixed != slots {
        use anyhow::Context as _;
        io.write_all_at(&fixed, off)
            .with_context(|| format!("rewriting \".\" and \"..\" of {path:?}"))?;
    }
    Ok(())
}
