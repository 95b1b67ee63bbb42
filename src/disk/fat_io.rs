//! `FatIo`: the stream `fatfs` reads and writes the boot partition through, with a
//! write-through cache of small blocks shared by all its clones.
//!
//! fatfs 0.3.6 reads a directory entry field by field (about a dozen `read` calls of 1 to 11
//! bytes per 32-byte entry, each after a `seek`), and it scans the whole directory on every
//! lookup, create and rename. Straight onto a [`PartIo`] every one of those reads is a
//! `pread`: writing 1,000 boot files into one directory made some 10^8 system calls. Here the
//! small reads are served from cached 4 KiB blocks (directories, FAT sectors), so a scan costs
//! memory reads only.
//!
//! The cache never holds anything the partition does not: every write goes to the partition
//! first and then updates the cached copies of the blocks it touches (it does not add
//! blocks), and a read larger than [`BYPASS`] goes to the partition directly (file data).
//! Clones share the cache, so the directory repair (`fat_fix`) and fatfs see the same
//! bytes. The cache is direct-mapped, [`SLOTS`] blocks at most.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use super::part_io::PartIo;

/// Cache block size in bytes.
const BLOCK: u64 = 4096;
/// Reads of at least this many bytes bypass the cache.
const BYPASS: usize = 2 * BLOCK as usize;
/// Cache slots: at most 16 MiB of cached blocks.
const SLOTS: usize = 4096;

struct Shared {
    io: PartIo,
    /// Direct-mapped: block `i` lives in slot `i % SLOTS`, tagged with `i`.
    slots: Vec<Option<(u64, Box<[u8]>)>>,
    /// Bytes asked for through reads and writes (cached or not): the tests' measure of work.
    counts: IoCounts,
    /// Tests: writes left before a simulated power cut (every later write fails), and a
    /// budget that [`FatIo::arm_cut`] makes the current one.
    #[cfg(test)]
    cut: (Option<u64>, Option<u64>),
}

/// Bytes read and written through a [`FatIo`] and its clones since it was made, cache hits
/// included: a deterministic measure of the work fatfs and the raw FAT code do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub read: u64,
    pub written: u64,
}

impl Shared {
    /// The cached block `index`, read from the partition when not cached.
    fn block(&mut self, index: u64) -> io::Result<&[u8]> {
        let slot = (index % SLOTS as u64) as usize;
        if !matches!(&self.slots[slot], Some((tag, _)) if *tag == index) {
            let off = index * BLOCK;
            let n = BLOCK.min(self.io.len().saturating_sub(off));
            let mut buf = vec![0u8; n as usize].into_boxed_slice();
            self.io.read_exact_at(&mut buf, off)?;
            self.slots[slot] = Some((index, buf));
        }
        match &self.slots[slot] {
            Some((_, b)) => Ok(b),
            None => unreachable!("filled above"),
        }
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.counts.read += buf.len() as u64;
        if buf.len() >= BYPASS {
            return self.io.read_exact_at(buf, offset);
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.io.len())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read past the end of {}", self.io.name()),
                )
            })?;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK - at % BLOCK).min(end - at) as usize;
            let done = (at - offset) as usize;
            let block = self.block(index)?;
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(left) = &mut self.cut.0 {
            if *left == 0 {
                return Err(io::Error::other("simulated power cut"));
            }
            *left -= 1;
        }
        self.counts.written += buf.len() as u64;
        self.io.write_all_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK - at % BLOCK).min(end - at) as usize;
            let slot = (index % SLOTS as u64) as usize;
            if let Some((tag, block)) = &mut self.slots[slot]
                && *tag == index
            {
                let done = (at - offset) as usize;
                block[within..within + n].copy_from_slice(&buf[done..done + n]);
            }
            at += n as u64;
        }
        Ok(())
    }
}

/// A cached stream over a partition; clones share the cache and have their own position.
#[derive(Clone)]
pub(crate) struct FatIo {
    shared: Rc<RefCell<Shared>>,
    len: u64,
    pos: u64,
}

impl FatIo {
    pub(crate) fn new(io: PartIo) -> FatIo {
        let len = io.len();
        FatIo {
            shared: Rc::new(RefCell::new(Shared {
                io,
                slots: vec![None; SLOTS],
                counts: IoCounts::default(),
                #[cfg(test)]
                cut: (None, None),
            })),
            len,
            pos: 0,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.shared.borrow_mut().read_at(buf, offset)
    }

    /// Writes all of `buf` at `offset` (to the partition, then to the cached copy).
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.shared.borrow_mut().write_at(buf, offset)
    }

    /// Bytes read and written so far through this stream and its clones.
    pub(crate) fn counts(&self) -> IoCounts {
        self.shared.borrow().counts
    }

    /// Tests: a power cut after `writes` more writes once [`FatIo::arm_cut`] is called.
    #[cfg(test)]
    pub(crate) fn cut_after(&self, writes: u64) {
        self.shared.borrow_mut().cut.1 = Some(writes);
    }

    /// Tests: starts the countdown set by [`FatIo::cut_after`].
    #[cfg(test)]
    pub(crate) fn arm_cut(&self) {
        let mut s = self.shared.borrow_mut();
        s.cut.0 = s.cut.1.take();
    }

    /// Tests: true once the simulated power cut has happened (or is due).
    #[cfg(test)]
    pub(crate) fn cut_reached(&self) -> bool {
        self.shared.borrow().cut.0 == Some(0)
    }

    /// Flushes written data to the device.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.shared.borrow().io.sync()
    }
}

impl Read for FatIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FatIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            let name = self.shared.borrow().io.name().to_string();
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write past the end of {name} ({} bytes)", self.len),
            ));
        }
        self.write_all_at(&buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for FatIo {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::End(d) => (self.len, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .checked_add_signed(delta)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn cache_follows_writes_and_clones() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(3 * BLOCK + 100).unwrap();
        let part = PartIo::new(tmp.reopen().unwrap(), 0, 3 * BLOCK + 100, "p");
        let mut a = FatIo::new(part);
        let b = a.clone();
        let mut byte = [0u8; 1];
        b.read_exact_at(&mut byte, 10).unwrap(); // caches block 0
        a.seek(SeekFrom::Start(BLOCK - 2)).unwrap();
        a.write_all(b"abcd").unwrap(); // spans blocks 0 and 1
        let mut four = [0u8; 4];
        b.read_exact_at(&mut four, BLOCK - 2).unwrap();
        assert_eq!(&four, b"abcd");
        let mut disk = [0u8; 4];
        tmp.as_file().read_exact_at(&mut disk, BLOCK - 2).unwrap();
        assert_eq!(&disk, b"abcd", "writes go through to the partition");
        // The short last block and reads past the end.
        let mut tail = [0u8; 100];
        b.read_exact_at(&mut tail, 3 * BLOCK).unwrap();
        assert!(b.read_exact_at(&mut tail, 3 * BLOCK + 1).is_err());
        a.seek(SeekFrom::End(0)).unwrap();
        assert_eq!(a.read(&mut four).unwrap(), 0);
        assert!(a.write(b"x").is_err());
        // Large reads bypass the cache and see the same bytes.
        let mut big = vec![0u8; BYPASS];
        b.read_exact_at(&mut big, 0).unwrap();
        assert_eq!(&big[BLOCK as usize - 2..BLOCK as usize + 2], b"abcd");
    }
}
