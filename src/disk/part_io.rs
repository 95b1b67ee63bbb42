//! `PartIo`: Read + Write + Seek confined to one byte range of a disk (a partition).
//!
//! It uses positional I/O (pread/pwrite) on its own file handle, so several `PartIo` on the
//! same disk never disturb each other's position. Reads stop at the end of the range; a write
//! past the end fails instead of spilling into the next partition.
//!
//! Only the disk layer makes one for a partition ([`super::Disk::part_io`], over a validated
//! table); the ext4 writer gets its range from one too (`ext4::Dest`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

/// A byte range of a file or block device, usable as a stream (fatfs, hashing, raw copies).
#[derive(Debug)]
pub struct PartIo {
    file: File,
    name: String,
    start: u64,
    len: u64,
    pos: u64,
}

impl PartIo {
    /// A stream over `len` bytes of `file` starting at byte `start`; `name` appears in errors.
    /// Crate-internal: partitions come from [`super::Disk::part_io`].
    pub(crate) fn new(file: File, start: u64, len: u64, name: impl Into<String>) -> PartIo {
        PartIo {
            file,
            name: name.into(),
            start,
            len,
            pos: 0,
        }
    }

    /// Offset of the range on the disk, in bytes.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Length of the range in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name given at creation (the partition label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A second, independent stream over the same range, positioned at 0.
    pub fn try_clone(&self) -> io::Result<PartIo> {
        Ok(PartIo::new(
            self.file.try_clone()?,
            self.start,
            self.len,
            self.name.clone(),
        ))
    }

    /// Flushes written data to the device (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Reads exactly `buf.len()` bytes at `offset` within the range.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let at = self.check_range(offset, buf.len())?;
        self.file.read_exact_at(buf, at)
    }

    /// Writes all of `buf` at `offset` within the range.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let at = self.check_range(offset, buf.len())?;
        self.file.write_all_at(buf, at)
    }

    /// The disk offset of `offset` when `n` bytes there lie inside the range.
    fn check_range(&self, offset: u64, n: usize) -> io::Result<u64> {
        match (offset.checked_add(n as u64), self.start.checked_add(offset)) {
            (Some(end), Some(at)) if end <= self.len => Ok(at),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{n} bytes at offset {offset} are outside {} ({} bytes)",
                    self.name, self.len
                ),
            )),
        }
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

/// For hints and range operations that take a descriptor (writeback, hole punching); they
/// must stay inside [`PartIo::start`]..+[`PartIo::len`].
impl AsFd for PartIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Read for PartIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 {
            return Ok(0);
        }
        let at = self.check_range(self.pos, n)?;
        let got = self.file.read_at(&mut buf[..n], at)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for PartIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write past the end of {} ({} bytes)", self.name, self.len),
            ));
        }
        let at = self.check_range(self.pos, n)?;
        let put = self.file.write_at(&buf[..n], at)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        // pwrite goes straight to the kernel; durability is `sync`.
        Ok(())
    }
}

impl Seek for PartIo {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::End(d) => (self.len, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        let new = base.0.checked_add_signed(base.1).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seek before the start of {}", self.name),
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::NamedTempFile, PartIo) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().write_all_at(&[0xAA; 64], 0).unwrap();
        let io = PartIo::new(tmp.reopen().unwrap(), 16, 32, "test-part");
        (tmp, io)
    }

    #[test]
    fn confined_to_range() {
        let (tmp, mut io) = setup();
        io.write_all(&[1; 32]).unwrap();
        let err = io.write_all(&[2]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert!(err.to_string().contains("test-part"));
        let mut all = vec![0; 64];
        tmp.as_file().read_exact_at(&mut all, 0).unwrap();
        assert_eq!(&all[..16], &[0xAA; 16]);
        assert_eq!(&all[16..48], &[1; 32]);
        assert_eq!(&all[48..], &[0xAA; 16]);

        io.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        io.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![1; 32]);
        assert_eq!(io.seek(SeekFrom::End(-4)).unwrap(), 28);
        assert!(io.seek(SeekFrom::Current(-100)).is_err());
    }

    #[test]
    fn positional_helpers_and_clones_are_independent() {
        let (_tmp, mut io) = setup();
        let mut other = io.try_clone().unwrap();
        io.write_all(&[7; 8]).unwrap();
        let mut buf = [0; 8];
        other.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [7; 8]);
        io.write_all_at(&[9; 4], 28).unwrap();
        assert!(io.write_all_at(&[9; 5], 28).is_err());
        let mut tail = [0; 4];
        io.read_exact_at(&mut tail, 28).unwrap();
        assert_eq!(tail, [9; 4]);
    }
}
