//! Block-device ioctls: logical sector size, size in bytes, buffer flush, partition re-read.
//!
//! Each function takes an open file of the block device (`/dev/vda`, `/dev/loop0`...). On a
//! regular file they fail with `ENOTTY`; callers decide with `is_block_device` first.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

use anyhow::{Context, Result};

// The request numbers from <linux/fs.h>. BLKGETSIZE64 is declared with `size_t` as its type
// (so its request code depends on the pointer width) although the kernel writes a u64.
nix::ioctl_read_bad!(
    blksszget,
    nix::request_code_none!(0x12, 104),
    nix::libc::c_int
);
nix::ioctl_read_bad!(
    blkgetsize64,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()),
    u64
);
nix::ioctl_none_bad!(blkflsbuf, nix::request_code_none!(0x12, 97));
nix::ioctl_none_bad!(blkrrpart, nix::request_code_none!(0x12, 95));

/// True when `file` is a block device.
pub fn is_block_device(file: &File) -> Result<bool> {
    let meta = file.metadata().context("reading file metadata")?;
    Ok(meta.file_type().is_block_device())
}

/// Logical sector size in bytes (BLKSSZGET).
pub fn logical_sector_size(file: &File) -> Result<u64> {
    let mut size: nix::libc::c_int = 0;
    // SAFETY: the fd is valid for the lifetime of `file`, and BLKSSZGET writes one c_int
    // into `size`, which lives across the call.
    unsafe { blksszget(file.as_raw_fd(), &mut size) }.context("ioctl BLKSSZGET")?;
    u64::try_from(size).context("ioctl BLKSSZGET returned a negative sector size")
}

/// Size of the device in bytes (BLKGETSIZE64).
pub fn size_bytes(file: &File) -> Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: the fd is valid for the lifetime of `file`, and BLKGETSIZE64 writes one u64
    // into `size`, which lives across the call.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.context("ioctl BLKGETSIZE64")?;
    Ok(size)
}

/// Writes back and drops the device's buffer cache (BLKFLSBUF), so that data written through
/// another node of the same disk (a partition node, or the whole disk) is read fresh.
pub fn flush_buffers(file: &File) -> Result<()> {
    // SAFETY: the fd is valid for the lifetime of `file`; BLKFLSBUF takes no argument.
    unsafe { blkflsbuf(file.as_raw_fd()) }.context("ioctl BLKFLSBUF")?;
    Ok(())
}

/// Asks the kernel to re-read the partition table (BLKRRPART). Fails with EBUSY while a
/// partition of the disk is in use (mounted): use BLKPG per partition then.
pub fn reread_partitions(file: &File) -> Result<()> {
    // SAFETY: the fd is valid for the lifetime of `file`; BLKRRPART takes no argument.
    unsafe { blkrrpart(file.as_raw_fd()) }.context("ioctl BLKRRPART")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_is_not_a_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert!(!is_block_device(&f).unwrap());
        let err = logical_sector_size(&f).unwrap_err();
        assert!(format!("{err:#}").contains("BLKSSZGET"), "{err:#}");
        assert!(size_bytes(&f).is_err());
    }
}
