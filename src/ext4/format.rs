//! The parameters of a new filesystem, chosen like `mke2fs -t ext4 -b 4096` with Debian's
//! mke2fs.conf (see docs/ext4.md).

use anyhow::{Context, Result, bail};

/// Choices for a new filesystem; everything else follows `mke2fs -t ext4` (docs/ext4.md).
#[derive(Debug, Clone, Default)]
pub struct MkfsOptions {
    /// Volume label, at most 16 bytes.
    pub label: Option<String>,
    /// Filesystem UUID; random when absent.
    pub uuid: Option<[u8; 16]>,
    /// Number of inodes; default one per 16 KiB (one per 4 KiB below 512 MiB).
    pub inodes: Option<u64>,
}

pub const BLOCK_SIZE: u64 = 4096;
/// Smallest filesystem we create.
pub const MIN_SIZE: u64 = 16 << 20;
/// Largest: 2^32 blocks (beyond it mke2fs drops resize_inode; not needed for root slots).
pub const MAX_SIZE: u64 = ((1u64 << 32) - 1) * BLOCK_SIZE;

/// Everything `Fs::create` needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub blocks: u64,
    pub inodes: u32,
    pub reserved_blocks: u64,
    pub label: [u8; 16],
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    /// The storage is known to read back as zeros (a new or hole-punched image file): the
    /// inode tables are flagged zeroed and the journal is not written out, like mke2fs after a
    /// discard that zeroes.
    pub zeroed: bool,
}

/// Bytes of filesystem per inode by default (mke2fs.conf: "small" below 512 MiB, else default).
pub fn inode_ratio(size: u64) -> u64 {
    if size < 512 << 20 { 4096 } else { 16384 }
}

/// The filesystem `opts` describe on `size` bytes; `zeroed` is false until the caller has
/// wiped the target and knows better.
pub fn plan(size: u64, opts: &MkfsOptions) -> Result<Plan> {
    if size < MIN_SIZE {
        bail!(
            "filesystem size {size} bytes is too small (at least {} MiB)",
            MIN_SIZE >> 20
        );
    }
    if size > MAX_SIZE {
        bail!("filesystem size {size} bytes is too large (at most 16 TiB with 4 KiB blocks)");
    }
    let blocks = size / BLOCK_SIZE;
    let bytes = blocks * BLOCK_SIZE;
    let inodes = match opts.inodes {
        Some(n) => n,
        None => bytes / inode_ratio(bytes),
    };
    if inodes < 16 {
        bail!("{inodes} inodes is too few (at least 16)");
    }
    // Inode tables must leave room for data: at most half of the space.
    if inodes.saturating_mul(256) > bytes / 2 {
        bail!("{inodes} inodes of 256 bytes do not fit in a {bytes}-byte filesystem");
    }
    let inodes = u32::try_from(inodes).context("inode count must be below 2^32")?;
    let mut label = [0u8; 16];
    if let Some(l) = &opts.label {
        if l.len() > 16 {
            bail!("label {l:?} is {} bytes long (at most 16)", l.len());
        }
        label[..l.len()].copy_from_slice(l.as_bytes());
    }
    let uuid = opts
        .uuid
        .unwrap_or_else(|| *uuid::Uuid::new_v4().as_bytes());
    Ok(Plan {
        blocks,
        inodes,
        reserved_blocks: blocks * 5 / 100,
        label,
        uuid,
        hash_seed: *uuid::Uuid::new_v4().as_bytes(),
        zeroed: false,
    })
}

/// Parses a UUID in its usual text form.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let u = uuid::Uuid::parse_str(s).with_context(|| format!("invalid UUID {s:?}"))?;
    Ok(*u.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_mke2fs() {
        let o = MkfsOptions::default();
        let p = plan(1 << 30, &o).unwrap();
        assert_eq!(p.blocks, 262144);
        assert_eq!(p.inodes, 65536);
        assert_eq!(p.reserved_blocks, 13107);
        let small = plan(64 << 20, &o).unwrap();
        assert_eq!(small.inodes, 16384);
        assert!(plan(8 << 20, &o).is_err());
        let long = MkfsOptions {
            label: Some("x".repeat(17)),
            ..Default::default()
        };
        assert!(plan(1 << 30, &long).is_err());
        assert_eq!(
            parse_uuid("01234567-89ab-cdef-0123-456789abcdef").unwrap()[..2],
            [0x01, 0x23]
        );
        assert!(parse_uuid("nope").is_err());
    }
}
