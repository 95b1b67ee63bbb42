//! Where the filesystem goes: a byte range of an image file or block device, opened once for
//! the file data we write ourselves (libext2fs opens it separately for metadata).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{FallocateFlags, fallocate};

use super::format::BLOCK_SIZE;

/// The byte range `[offset, offset + size)` of `path`.
pub struct Target {
    pub path: PathBuf,
    pub file: File,
    pub offset: u64,
    pub size: u64,
    pub is_block_device: bool,
    /// Byte range written since writeback was last started: (start, end).
    unsynced: Cell<(u64, u64)>,
}

/// Writeback is started every this many bytes of data.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Size of a regular file or block device.
pub fn device_size(path: &Path) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::End(0))
        .with_context(|| format!("finding the size of {}", path.display()))
}

impl Target {
    pub fn open(path: &Path, offset: u64, size: u64) -> Result<Target> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.is_file() {
            bail!(
                "{} is neither a regular file nor a block device",
                path.display()
            );
        }
        if !offset.is_multiple_of(BLOCK_SIZE) {
            bail!(
                "offset {offset} of {} is not a multiple of 4096",
                path.display()
            );
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if is_block_device && offset == 0 {
            // Fails with EBUSY while the device is mounted or claimed. Not for a range of a
            // whole disk (offset > 0): O_EXCL on the disk fails while any of its partitions
            // is mounted (the data partition always is, in the initramfs and on a device).
            opts.custom_flags(nix::fcntl::OFlag::O_EXCL.bits());
        }
        let mut file = opts
            .open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        let end = offset
            .checked_add(size)
            .context("offset + size overflows")?;
        let len = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("finding the size of {}", path.display()))?;
        if len < end {
            if is_block_device {
                bail!(
                    "{} has {len} bytes, the filesystem needs bytes {offset}..{end}",
                    path.display()
                );
            }
            file.set_len(end)
                .with_context(|| format!("extending {} to {end} bytes", path.display()))?;
        }
        Ok(Target {
            path: path.to_path_buf(),
            file,
            offset,
            size,
            is_block_device,
            unsynced: Cell::new((0, 0)),
        })
    }

    /// Destroys any previous filesystem in the range before the new one is written, and tells
    /// whether the range now reads as zeros. Image files: the range is hole-punched (zeroed).
    /// Block devices: bytes 1 KiB..64 KiB (old superblock) and the last 128 KiB are zeroed,
    /// like mke2fs does.
    pub fn wipe(&self) -> Result<bool> {
        let mut zeroed = false;
        if !self.is_block_device {
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            match fallocate(&self.file, flags, self.offset as i64, self.size as i64) {
                Ok(()) => zeroed = true,
                Err(e) => log::debug!(
                    "{}: cannot punch a hole ({e}); zeroing what matters",
                    self.path.display()
                ),
            }
        }
        if !zeroed {
            self.zero(1024, (64 << 10) - 1024)?;
            let tail = (128u64 << 10).min(self.size);
            self.zero(self.size - tail, tail)?;
        }
        self.sync()?;
        Ok(zeroed)
    }

    /// Zeroes the primary superblock, so that nothing takes the range for a filesystem.
    pub fn invalidate_superblock(&self) -> Result<()> {
        self.zero(1024, 1024)?;
        self.sync()
    }

    /// Zeroes the primary superblock and the backups in `blocks` (e2fsck would otherwise
    /// fall back to a backup), then flushes.
    pub fn invalidate_all_superblocks(&self, blocks: &[u64]) -> Result<()> {
        self.zero(1024, 1024)?;
        for &b in blocks {
            self.zero(b * BLOCK_SIZE, 1024)?;
        }
        self.sync()
    }

    fn zero(&self, at: u64, len: u64) -> Result<()> {
        let buf = vec![0u8; len as usize];
        self.file
            .write_all_at(&buf, self.offset + at)
            .with_context(|| {
                format!(
                    "zeroing {len} bytes at {} of {}",
                    self.offset + at,
                    self.path.display()
                )
            })
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("flushing {} to storage", self.path.display()))
    }

    /// Writes whole blocks at filesystem block `blk`. Writeback of what was written is
    /// started every few MiB, so that it overlaps with the rest of the work.
    pub fn write_blocks(&self, blk: u64, data: &[u8]) -> Result<()> {
        let at = self.offset + blk * BLOCK_SIZE;
        self.file.write_all_at(data, at).with_context(|| {
            format!(
                "writing {} bytes at offset {at} of {}",
                data.len(),
                self.path.display()
            )
        })?;
        let end = at + data.len() as u64;
        let (start, stop) = self.unsynced.get();
        let (start, stop) = if stop == 0 {
            (at, end)
        } else {
            (start.min(at), stop.max(end))
        };
        if stop - start >= WRITEBACK_EVERY {
            super::ffi::start_writeback(&self.file, start, stop - start);
            self.unsynced.set((0, 0));
        } else {
            self.unsynced.set((start, stop));
        }
        Ok(())
    }
}
