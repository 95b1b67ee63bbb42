//! The disk is not in use while its partition table changes.

use anyhow::{Context, Result};

use crate::disk::Disk;

/// Fails when a partition of the block device `disk` is mounted or held (O_EXCL on the
/// whole disk then fails with EBUSY): the old data partition must be unmounted before its
/// range changes. Image files always pass.
pub(crate) fn check_not_in_use(disk: &Disk) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !disk.is_block_device() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(disk.path())
        .map(drop)
        .with_context(|| {
            format!(
                "{} is in use (a partition is mounted?): unmount the data partition before the partition table changes",
                disk.path().display()
            )
        })
}
