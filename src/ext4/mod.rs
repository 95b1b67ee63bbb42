//! ext4: format a filesystem and fill it from a tar stream through libext2fs (the library of
//! e2fsprogs), without mounting anything. See docs/ext4.md.
//!
//! The target is a [`Dest`]: a partition of a disk whose table was validated
//! ([`Dest::partition`], never growing the file), or a standalone image file or whole block
//! device ([`Dest::image`], `hup mkfs`). Every byte hup writes itself goes through the
//! destination's bounds-checked handle.
//!
//! Validity is unambiguous: the primary superblock is written last, after every other block
//! and an fsync, and only when everything succeeded. Before the work starts, the old primary
//! and backup superblocks are destroyed, and on any error the primary is zeroed again; so a
//! failed or interrupted run leaves a range that `mount` and `blkid` do not recognize and
//! `e2fsck` cannot open.

mod data;
mod dir;
mod extents;
mod ffi;
mod ffi_format;
mod ffi_read;
mod format;
mod inode;
mod path;
mod populate;
mod source;
mod stats;
mod target;

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use ffi::Fs;
pub use ffi_read::{FileRef, ReadFs};
pub use format::{MIN_SIZE, MkfsOptions, inode_ratio, parse_uuid};
pub use source::maybe_decompress;
pub use stats::Stats;
pub use target::Dest;
use target::Target;

/// Runs `work`; on failure zeroes the primary superblock so nothing takes the range for a
/// filesystem. `work` must have dropped its `Fs` (closing libext2fs' channel) when it returns.
fn guarded<T>(t: &Target, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let r = work();
    if r.is_err()
        && let Err(e) = t.invalidate_superblock()
    {
        log::error!("{e:#}");
    }
    r
}

/// Formats `dest` as an empty ext4 filesystem (root directory and lost+found). On success
/// the filesystem is complete and clean.
pub fn format(dest: &Dest, opts: &MkfsOptions) -> Result<()> {
    let plan = format::plan(dest.size(), opts)?;
    let t = Target::open(dest)?;
    let zeroed = t.wipe()?;
    let plan = format::Plan { zeroed, ..plan };
    guarded(&t, || {
        Fs::create(dest.path(), dest.offset(), &plan)?.close()
    })
    .with_context(|| format!("formatting {}", dest.path().display()))
}

/// Fills the freshly formatted filesystem on `dest` from a plain tar stream. The primary
/// superblock is invalid from the start until the final write: after an error or an
/// interruption, format again.
pub fn populate(dest: &Dest, tar: impl Read + Send + 'static) -> Result<Stats> {
    let start = Instant::now();
    let t = Target::open(dest)?;
    let (path, size) = (dest.path(), dest.size());
    let mut stats = guarded(&t, || {
        let mut fs = Fs::open(path, dest.offset())?;
        // A filesystem larger than its range (a foreign one, or a damaged superblock) is
        // refused before the first write.
        if fs
            .blocks_count()
            .checked_mul(format::BLOCK_SIZE)
            .is_none_or(|bytes| bytes > size)
        {
            bail!(
                "the filesystem on {} has {} blocks, more than the {size} bytes given",
                path.display(),
                fs.blocks_count()
            );
        }
        fs.rewrite_all_superblocks();
        t.invalidate_all_superblocks(&fs.backup_superblocks())?;
        let stats = fill(&mut fs, &t, tar)?;
        fs.close()?;
        Ok(stats)
    })
    .with_context(|| format!("populating {}", path.display()))?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Formats `dest` and fills it from a plain tar stream (pass the stream through
/// [`maybe_decompress`] for tar.zst), in one pass: nothing is written to the superblock
/// location until everything else is on disk.
pub fn mkfs_from_tar(
    dest: &Dest,
    opts: &MkfsOptions,
    tar: impl Read + Send + 'static,
) -> Result<Stats> {
    let start = Instant::now();
    let plan = format::plan(dest.size(), opts)?;
    let t = Target::open(dest)?;
    let zeroed = t.wipe()?;
    let plan = format::Plan { zeroed, ..plan };
    let mut stats = guarded(&t, || {
        let mut fs = Fs::create(dest.path(), dest.offset(), &plan)?;
        if !zeroed {
            // a previous filesystem's backups sit where ours will be
            t.invalidate_all_superblocks(&fs.backup_superblocks())?;
        }
        let stats = fill(&mut fs, &t, tar)?;
        fs.close()?;
        Ok(stats)
    })
    .with_context(|| format!("creating the filesystem on {}", dest.path().display()))?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

fn fill(fs: &mut Fs, t: &Target, tar: impl Read + Send + 'static) -> Result<Stats> {
    let reader = source::ReadAhead::spawn(tar)?;
    let mut p = populate::Populator::new(fs, t)?;
    p.run(reader)?;
    Ok(p.stats.clone())
}

/// What `hup mkfs` does: TARGET is an image file (created, or truncated to `size`) or a block
/// device (its size, or `size` if smaller); `from` is a tar or tar.zst file, `-` for stdin.
/// Arguments and input are checked before the target is touched.
pub fn mkfs_image(
    target: &Path,
    size: Option<u64>,
    opts: &MkfsOptions,
    from: &Path,
) -> Result<Stats> {
    let (size, create) = image_size(target, size)?;
    format::plan(size, opts)?;
    let input: Box<dyn Read + Send> = if from.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?)
    };
    let tar = maybe_decompress(input).with_context(|| format!("reading {}", from.display()))?;
    if create {
        std::fs::File::create(target).with_context(|| format!("creating {}", target.display()))?;
    }
    // The one place a file is sized to a filesystem: a standalone image.
    mkfs_from_tar(&Dest::image(target, size)?, opts, tar)
}

/// The filesystem size for `target`, and whether it is an image file to create or truncate.
fn image_size(target: &Path, size: Option<u64>) -> Result<(u64, bool)> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(target) {
        Ok(m) if m.file_type().is_block_device() => {
            let dev = target::device_size(target)?;
            match size {
                Some(s) if s > dev => {
                    bail!("{} has {dev} bytes, less than --size {s}", target.display())
                }
                Some(s) => Ok((s, false)),
                None => Ok((dev, false)),
            }
        }
        Ok(m) if !m.is_file() => bail!(
            "{} is neither a regular file nor a block device",
            target.display()
        ),
        Ok(m) if size.is_none() => Ok((m.len(), false)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("inspecting {}", target.display()))
        }
        _ => match size {
            Some(s) => Ok((s, true)),
            None => bail!(
                "{} does not exist: give its size with --size",
                target.display()
            ),
        },
    }
}
