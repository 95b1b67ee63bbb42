//! Block allocation and file data: data is written straight to the target (not through
//! libext2fs' block cache), in runs as long as the free space allows, skipping all-zero blocks
//! (holes), like mke2fs -d does.

use std::io::Read;

use anyhow::{Result, bail};

use super::extents::{self, Extent};
use super::ffi::{Ext2Error, Fs, is_no_space};
use super::format::BLOCK_SIZE;
use super::target::Target;
use crate::archive::member::MAX_FILE_SIZE;

const BS: usize = BLOCK_SIZE as usize;
/// Bytes read from the archive at once.
pub const BUF_SIZE: usize = 1 << 20;
// The largest file the archive reader lets through is the largest this writer stores.
const _: () = assert!(MAX_FILE_SIZE == (1u64 << 32) * BLOCK_SIZE - 1);

/// Why writing a file's data failed, for the caller's message.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("the tar stream ends {missing} bytes before the end of the member")]
    Truncated { missing: u64 },
    #[error("the filesystem is full ({free} blocks free)")]
    Full { free: u64 },
}

/// The blocks of one inode: its extents and how many blocks they map.
#[derive(Default)]
pub struct Blocks {
    pub extents: Vec<Extent>,
    pub count: u64,
}

/// Allocation state shared by all files: the next block to try.
pub struct Allocator {
    pub goal: u64,
}

impl Allocator {
    /// Allocates `n` blocks for logical blocks `lblk..`, calling `put(fs, pblk, index, len)`
    /// for each physical run (index: position of the run's first block within the `n`).
    pub fn alloc(
        &mut self,
        fs: &mut Fs,
        lblk: u64,
        n: u64,
        blocks: &mut Blocks,
        mut put: impl FnMut(&mut Fs, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0;
        while done < n {
            let (p, got) = fs
                .alloc_range(self.goal, n - done)
                .map_err(|e| full(fs, e))?;
            put(fs, p, done, got)?;
            let l = u32::try_from(lblk + done).map_err(|_| {
                anyhow::anyhow!("file is too large for 4 KiB-block extents (16 TiB)")
            })?;
            extents::push(&mut blocks.extents, l, p, got as u32);
            blocks.count += got;
            done += got;
            self.goal = p + got;
        }
        Ok(())
    }

    /// Allocates and builds the extent tree nodes for `blocks` (none for up to 4 extents).
    pub fn tree(&mut self, fs: &mut Fs, blocks: &Blocks) -> Result<extents::Tree> {
        let need = extents::blocks_needed(blocks.extents.len(), BS) as u64;
        let mut nodes = Vec::new();
        let mut scratch = Blocks::default();
        self.alloc(fs, 0, need, &mut scratch, |_, p, _, len| {
            nodes.extend(p..p + len);
            Ok(())
        })?;
        extents::build(&blocks.extents, &nodes, BS)
    }
}

fn full(fs: &Fs, e: Ext2Error) -> anyhow::Error {
    if is_no_space(&e) {
        DataError::Full {
            free: fs.free_blocks(),
        }
        .into()
    } else {
        e.into()
    }
}

/// Writes the extent tree nodes of inode `ino` (after the inode itself: the checksums use it).
pub fn write_tree(fs: &mut Fs, tree: &mut extents::Tree, ino: u32) -> Result<()> {
    for (blk, buf) in &mut tree.blocks {
        fs.write_extent_block(*blk, buf, ino)?;
    }
    Ok(())
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Reads exactly `buf.len()` bytes, or fails with [`DataError::Truncated`].
pub fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => {
                return Err(DataError::Truncated {
                    missing: (buf.len() - n) as u64,
                }
                .into());
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow::Error::new(e).context("reading the tar stream")),
        }
    }
    Ok(())
}

/// Writes one file's data, given as regions (logical offset, bytes from the stream) in
/// increasing order; blocks shared by two regions are assembled before they are written.
pub struct FileWriter<'a> {
    fs: &'a mut Fs,
    target: &'a Target,
    alloc: &'a mut Allocator,
    buf: &'a mut [u8],
    pub blocks: Blocks,
    /// A block partly filled by the previous region: (logical block, contents).
    pending: Option<(u64, Box<[u8; BS]>)>,
    /// End of the previous region (regions must not go backwards).
    end: u64,
}

impl<'a> FileWriter<'a> {
    pub fn new(
        fs: &'a mut Fs,
        target: &'a Target,
        alloc: &'a mut Allocator,
        buf: &'a mut [u8],
    ) -> Self {
        FileWriter {
            fs,
            target,
            alloc,
            buf,
            blocks: Blocks::default(),
            pending: None,
            end: 0,
        }
    }

    /// Writes non-zero blocks of `data` (whole blocks) at logical block `lblk`.
    fn emit(&mut self, lblk: u64, nblocks: usize, from_pending: bool) -> Result<()> {
        let target = self.target;
        let pending = &self.pending;
        let data: &[u8] = if from_pending {
            match pending {
                Some((_, b)) => &b[..],
                None => return Ok(()),
            }
        } else {
            &self.buf[..nblocks * BS]
        };
        let mut b = 0;
        while b < nblocks {
            if is_zero(&data[b * BS..(b + 1) * BS]) {
                b += 1;
                continue;
            }
            let start = b;
            while b < nblocks && !is_zero(&data[b * BS..(b + 1) * BS]) {
                b += 1;
            }
            let run = &data[start * BS..b * BS];
            self.alloc.alloc(
                self.fs,
                lblk + start as u64,
                (b - start) as u64,
                &mut self.blocks,
                |_, p, i, len| {
                    let i = i as usize * BS;
                    target.write_blocks(p, &run[i..i + len as usize * BS])
                },
            )?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        if let Some((lblk, _)) = self.pending {
            self.emit(lblk, 1, true)?;
            self.pending = None;
        }
        Ok(())
    }

    /// Copies `len` bytes of `r` to byte offset `off` of the file.
    pub fn region(&mut self, r: &mut dyn Read, off: u64, len: u64) -> Result<()> {
        let end = off.checked_add(len).filter(|&e| e <= MAX_FILE_SIZE);
        let Some(end) = end else {
            bail!("data region at {off}+{len} is beyond the 16 TiB file size limit");
        };
        if off < self.end {
            bail!("sparse map regions overlap or go backwards at offset {off}");
        }
        self.end = end;
        let mut pos = off;
        while pos < end {
            let blk = pos / BLOCK_SIZE;
            let within = (pos % BLOCK_SIZE) as usize;
            if within != 0 || end - pos < BLOCK_SIZE {
                // partial block: assemble it in `pending`
                if self.pending.as_ref().is_some_and(|(b, _)| *b != blk) {
                    self.flush_pending()?;
                }
                let n = ((BLOCK_SIZE - within as u64).min(end - pos)) as usize;
                let (_, block) = self
                    .pending
                    .get_or_insert_with(|| (blk, Box::new([0u8; BS])));
                read_exact(r, &mut block[within..within + n])?;
                pos += n as u64;
                continue;
            }
            self.flush_pending()?;
            let whole = ((end - pos) / BLOCK_SIZE).min((self.buf.len() / BS) as u64) as usize;
            read_exact(r, &mut self.buf[..whole * BS])?;
            self.emit(blk, whole, false)?;
            pos += (whole * BS) as u64;
        }
        Ok(())
    }

    /// Writes the last partial block; returns the blocks of the file.
    pub fn finish(mut self) -> Result<Blocks> {
        self.flush_pending()?;
        Ok(self.blocks)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 4096];
        assert!(super::is_zero(&b));
        b[4095] = 1;
        assert!(!super::is_zero(&b));
        b[4095] = 0;
        b[0] = 1;
        assert!(!super::is_zero(&b));
    }
}
