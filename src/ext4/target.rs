//! Where the filesystem goes: a [`Dest`], a byte range of an image file or block device that
//! was checked before anything is written, and the [`Target`] the writer uses: every byte we
//! write ourselves goes through the destination's bounds-checked [`PartIo`] (libext2fs opens
//! the path separately for metadata, at the same offset, and writes only inside the
//! filesystem's blocks, which [`super::format::plan`] derives from the range's size).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{FallocateFlags, fallocate};

use super::format::BLOCK_SIZE;
use crate::disk::{Disk, PartIo};

/// A checked place for a filesystem. There are two ways to make one, and no other:
/// - [`Dest::partition`]: a partition of a [`Disk`], whose table was validated when read
///   (inside the disk, overlapping no other entry); the file is never extended;
/// - [`Dest::image`]: a standalone image file or a whole block device (`hup mkfs`), the only
///   case where a file may be sized to the filesystem.
#[derive(Debug)]
pub struct Dest {
    path: PathBuf,
    io: PartIo,
    is_block_device: bool,
}

impl Dest {
    /// The partition labelled `label` on `disk`, which must be open for writing.
    pub fn partition(disk: &Disk, label: &str) -> Result<Dest> {
        if disk.is_read_only() {
            bail!(
                "{} is open read-only: cannot write partition {label:?}",
                disk.path().display()
            );
        }
        let part = disk.partition(label)?;
        let io = disk.part_io(&part)?;
        Ok(Dest {
            path: disk.path().to_path_buf(),
            io,
            is_block_device: disk.is_block_device(),
        })
    }

    /// The first `size` bytes of `path`, a filesystem image of its own or a whole block
    /// device (opened exclusively: EBUSY while mounted). A regular file shorter than `size`
    /// is extended to it; a block device must hold `size` bytes.
    pub fn image(path: &Path, size: u64) -> Result<Dest> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.is_file() {
            bail!(
                "{} is neither a regular file nor a block device",
                path.display()
            );
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if is_block_device {
            opts.custom_flags(nix::fcntl::OFlag::O_EXCL.bits());
        }
        let mut file = opts
            .open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        let len = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("finding the size of {}", path.display()))?;
        if len < size {
            if is_block_device {
                bail!(
                    "{} has {len} bytes, the filesystem needs {size}",
                    path.display()
                );
            }
            file.set_len(size)
                .with_context(|| format!("extending {} to {size} bytes", path.display()))?;
        }
        let name = path.display().to_string();
        Ok(Dest {
            path: path.to_path_buf(),
            io: PartIo::new(file, 0, size, name),
            is_block_device,
        })
    }

    /// The file or device libext2fs opens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// First byte of the range.
    pub fn offset(&self) -> u64 {
        self.io.start()
    }

    /// Length of the range in bytes.
    pub fn size(&self) -> u64 {
        self.io.len()
    }
}

/// The range a run writes: the destination's own handle, and writeback bookkeeping.
pub struct Target {
    pub path: PathBuf,
    io: PartIo,
    pub offset: u64,
    pub size: u64,
    pub is_block_device: bool,
    /// Byte range (within the range) written since writeback was last started: (start, end).
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
    /// Checks the destination once more (alignment; the file still holds the whole range:
    /// nothing here extends a file) and takes a handle of its own.
    pub fn open(dest: &Dest) -> Result<Target> {
        let (offset, size) = (dest.offset(), dest.size());
        let path = dest.path.clone();
        if !offset.is_multiple_of(BLOCK_SIZE) {
            bail!(
                "offset {offset} of {} is not a multiple of 4096",
                path.display()
            );
        }
        let io = dest
            .io
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", path.display()))?;
        let end = offset
            .checked_add(size)
            .context("offset + size overflows")?;
        let len = device_size(&path)?;
        if len < end {
            bail!(
                "{} has {len} bytes, the filesystem needs bytes {offset}..{end}",
                path.display()
            );
        }
        Ok(Target {
            path,
            io,
            offset,
            size,
            is_block_device: dest.is_block_device,
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
            let (Ok(off), Ok(len)) = (i64::try_from(self.offset), i64::try_from(self.size)) else {
                bail!(
                    "{}: range {}+{} is too large",
                    self.path.display(),
                    self.offset,
                    self.size
                );
            };
            // the handle's own range, nothing outside it
            match fallocate(&self.io, flags, off, len) {
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
            let at = b
                .checked_mul(BLOCK_SIZE)
                .with_context(|| format!("backup superblock at block {b}"))?;
            self.zero(at, 1024)?;
        }
        self.sync()
    }

    /// Zeroes `len` bytes at `at` within the range (bounds-checked by the handle).
    fn zero(&self, at: u64, len: u64) -> Result<()> {
        let buf = vec![0u8; usize::try_from(len).context("zeroing length")?];
        self.io.write_all_at(&buf, at).with_context(|| {
            format!(
                "zeroing {len} bytes at {} of {}",
                self.offset.saturating_add(at),
                self.path.display()
            )
        })
    }

    pub fn sync(&self) -> Result<()> {
        self.io
            .sync()
            .with_context(|| format!("flushing {} to storage", self.path.display()))
    }

    /// Writes whole blocks at filesystem block `blk`, inside the range only. Writeback of
    /// what was written is started every few MiB, so that it overlaps with the rest of the
    /// work.
    pub fn write_blocks(&self, blk: u64, data: &[u8]) -> Result<()> {
        let at = blk
            .checked_mul(BLOCK_SIZE)
            .with_context(|| format!("block {blk} of {}", self.path.display()))?;
        self.io.write_all_at(data, at).with_context(|| {
            format!(
                "writing {} bytes at block {blk} of the filesystem on {}",
                data.len(),
                self.path.display()
            )
        })?;
        // no overflow: the handle checked at + len <= size
        let end = at + data.len() as u64;
        let (start, stop) = self.unsynced.get();
        let (start, stop) = if stop == 0 {
            (at, end)
        } else {
            (start.min(at), stop.max(end))
        };
        if stop - start >= WRITEBACK_EVERY {
            super::ffi::start_writeback(&self.io, self.offset + start, stop - start);
            self.unsynced.set((0, 0));
        } else {
            self.unsynced.set((start, stop));
        }
        Ok(())
    }
}
