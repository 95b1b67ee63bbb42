//! Extent lists and the extent tree that maps them, built bottom-up in memory.
//!
//! Files are written once and never grow afterwards, so the whole tree is known when the
//! inode is written: up to 4 extents live in `i_block`, more get leaf (and index) blocks, each
//! filled completely. Block checksums are set by the caller through libext2fs.

use anyhow::{Result, bail};

const MAGIC: u16 = 0xF30A;
const HEADER: usize = 12;
const ENTRY: usize = 12;
/// Entries in the root node inside `i_block` (60 bytes).
const ROOT_MAX: usize = 4;
/// Longest initialized extent.
pub const MAX_LEN: u32 = 32768;

/// One mapping of `len` logical blocks starting at `lblk` to physical blocks at `pblk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u32,
    pub pblk: u64,
    pub len: u32,
}

/// Appends a mapping, merging it with the previous extent when both are contiguous.
pub fn push(list: &mut Vec<Extent>, mut lblk: u32, mut pblk: u64, mut len: u32) {
    while len > 0 {
        if let Some(last) = list.last_mut()
            && last.lblk + last.len == lblk
            && last.pblk + u64::from(last.len) == pblk
            && last.len < MAX_LEN
        {
            let add = len.min(MAX_LEN - last.len);
            last.len += add;
            lblk += add;
            pblk += u64::from(add);
            len -= add;
            continue;
        }
        let take = len.min(MAX_LEN);
        list.push(Extent {
            lblk,
            pblk,
            len: take,
        });
        lblk += take;
        pblk += u64::from(take);
        len -= take;
    }
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
    buf[8..12].fill(0);
}

fn leaf_entry(buf: &mut [u8], e: &Extent) {
    buf[0..4].copy_from_slice(&e.lblk.to_le_bytes());
    buf[4..6].copy_from_slice(&(e.len as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&((e.pblk >> 32) as u16).to_le_bytes());
    buf[8..12].copy_from_slice(&(e.pblk as u32).to_le_bytes());
}

fn index_entry(buf: &mut [u8], lblk: u32, child: u64) {
    buf[0..4].copy_from_slice(&lblk.to_le_bytes());
    buf[4..8].copy_from_slice(&(child as u32).to_le_bytes());
    buf[8..10].copy_from_slice(&((child >> 32) as u16).to_le_bytes());
    buf[10..12].fill(0);
}

/// The `i_block` contents of an inode without any extent.
pub fn empty_root() -> [u8; 60] {
    let mut root = [0u8; 60];
    header(&mut root, 0, ROOT_MAX, 0);
    root
}

/// A tree ready to be written: the root for `i_block`, and the node blocks (physical block,
/// contents without checksum) that the caller checksums and writes.
pub struct Tree {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Number of tree blocks needed for `n` extents with `blocksize`-byte nodes.
pub fn blocks_needed(n: usize, blocksize: usize) -> usize {
    let per = (blocksize - HEADER) / ENTRY;
    let mut total = 0;
    let mut level = n;
    while level > ROOT_MAX {
        level = level.div_ceil(per);
        total += level;
    }
    total
}

/// Builds the tree for `extents` (sorted, non-overlapping), placing node blocks at `blocks`
/// (exactly [`blocks_needed`] of them, in order).
pub fn build(extents: &[Extent], blocks: &[u64], blocksize: usize) -> Result<Tree> {
    if blocks.len() != blocks_needed(extents.len(), blocksize) {
        bail!(
            "extent tree: {} node blocks given, {} needed",
            blocks.len(),
            blocks_needed(extents.len(), blocksize)
        );
    }
    let per = (blocksize - HEADER) / ENTRY;
    let mut root = [0u8; 60];
    if extents.len() <= ROOT_MAX {
        header(&mut root, extents.len(), ROOT_MAX, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf_entry(&mut root[HEADER + i * ENTRY..], e);
        }
        return Ok(Tree {
            root,
            blocks: Vec::new(),
        });
    }
    let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(blocks.len());
    let mut next_block = blocks.iter().copied();
    // Current level: (first logical block, physical block of the node).
    let mut level: Vec<(u32, u64)> = Vec::new();
    for chunk in extents.chunks(per) {
        let blk = next_block.next().unwrap_or_default();
        let mut buf = vec![0u8; blocksize];
        header(&mut buf, chunk.len(), per, 0);
        for (i, e) in chunk.iter().enumerate() {
            leaf_entry(&mut buf[HEADER + i * ENTRY..], e);
        }
        level.push((chunk[0].lblk, blk));
        out.push((blk, buf));
    }
    let mut depth = 1u16;
    while level.len() > ROOT_MAX {
        let mut upper = Vec::new();
        for chunk in level.chunks(per) {
            let blk = next_block.next().unwrap_or_default();
            let mut buf = vec![0u8; blocksize];
            header(&mut buf, chunk.len(), per, depth);
            for (i, &(lblk, child)) in chunk.iter().enumerate() {
                index_entry(&mut buf[HEADER + i * ENTRY..], lblk, child);
            }
            upper.push((chunk[0].0, blk));
            out.push((blk, buf));
        }
        level = upper;
        depth += 1;
    }
    if depth > 5 {
        bail!("extent tree would be {depth} levels deep");
    }
    header(&mut root, level.len(), ROOT_MAX, depth);
    for (i, &(lblk, child)) in level.iter().enumerate() {
        index_entry(&mut root[HEADER + i * ENTRY..], lblk, child);
    }
    Ok(Tree { root, blocks: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_merges_and_splits() {
        let mut l = Vec::new();
        push(&mut l, 0, 100, 10);
        push(&mut l, 10, 110, 5);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].len, 15);
        push(&mut l, 20, 200, 1); // hole before
        assert_eq!(l.len(), 2);
        let mut big = Vec::new();
        push(&mut big, 0, 1000, 70000);
        assert_eq!(big.len(), 3);
        assert_eq!(big[0].len, MAX_LEN);
        assert_eq!(big[2].lblk, 2 * MAX_LEN);
    }

    #[test]
    fn tree_shapes() {
        assert_eq!(blocks_needed(4, 4096), 0);
        assert_eq!(blocks_needed(5, 4096), 1);
        assert_eq!(blocks_needed(340 * 4, 4096), 4);
        assert_eq!(blocks_needed(340 * 4 + 1, 4096), 5 + 1);
        let ext: Vec<Extent> = (0..1000)
            .map(|i| Extent {
                lblk: i * 2,
                pblk: 5000 + u64::from(i) * 2,
                len: 1,
            })
            .collect();
        let n = blocks_needed(ext.len(), 4096);
        let blocks: Vec<u64> = (0..n as u64).map(|b| 100 + b).collect();
        let t = build(&ext, &blocks, 4096).unwrap();
        assert_eq!(t.blocks.len(), 3);
        assert_eq!(u16::from_le_bytes([t.root[2], t.root[3]]), 3); // entries
        assert_eq!(u16::from_le_bytes([t.root[6], t.root[7]]), 1); // depth
        assert!(build(&ext, &blocks[..1], 4096).is_err());
    }
}
