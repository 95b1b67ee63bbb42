//! Reading and writing both copies of the GPT, through the `gpt` crate's header and entry codecs.
//!
//! Reading checks each copy on its own (header CRC by the crate, entry-array CRC by
//! `file_read_partitions`) and uses the primary when it is whole, else the backup.
//!
//! Writing is ordered so that a power cut at any point leaves at least one whole copy, and the
//! table seen afterwards is either all old or all new:
//! 1. backup entry array, 2. backup header, fsync (primary still old and whole);
//! 3. primary entry array, 4. primary header, fsync.
//!
//! A torn write of an array or header makes that copy's CRC fail, so the other copy is used.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Cursor;

use anyhow::{Context, Result, anyhow, bail};
use gpt::disk::LogicalBlockSize;
use gpt::header::{Header, HeaderBuilder};
use gpt::partition::Partition;
use serde::Serialize;

use super::PartIo;

/// More entries than this in a header is treated as corruption.
const MAX_ENTRIES: u32 = 4096;
/// The only entry size the `gpt` crate reads.
const ENTRY_SIZE: u32 = 128;

/// Which copies of the GPT are whole, and whether they say the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableHealth {
    /// Primary header (LBA 1) and its entry array have valid CRCs.
    pub primary_ok: bool,
    /// Backup header (last LBA) and its entry array have valid CRCs.
    pub backup_ok: bool,
    /// Both are whole, describe the same partitions, and the backup is at the end of the disk.
    pub in_sync: bool,
}

impl TableHealth {
    /// Nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.primary_ok && self.backup_ok && self.in_sync
    }
}

/// The table in use: a valid header and its partition entries (keyed by entry number, from 1).
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub header: Header,
    pub parts: BTreeMap<u32, Partition>,
    pub health: TableHealth,
    /// Why the primary copy was rejected, for error messages and logs.
    pub primary_error: Option<String>,
    pub backup_error: Option<String>,
}

pub(crate) fn logical_block_size(sector_size: u64) -> Result<LogicalBlockSize> {
    LogicalBlockSize::try_from(sector_size)
        .map_err(|_| anyhow!("unsupported logical sector size {sector_size} (use 512 or 4096)"))
}

fn disk_io(file: &File, size: u64) -> Result<PartIo> {
    Ok(PartIo::new(
        file.try_clone()
            .context("duplicating the disk file handle")?,
        0,
        size,
        "disk",
    ))
}

/// Reads and checks one copy whose header is at `lba`.
fn read_copy(
    file: &File,
    size: u64,
    ss: u64,
    lba: u64,
) -> Result<(Header, BTreeMap<u32, Partition>)> {
    let lb = logical_block_size(ss)?;
    let last_lba = size / ss - 1;
    if lba == 0 || lba > last_lba {
        bail!("header LBA {lba} is outside the disk");
    }
    // The crate reads "the primary header" one sector into a device: give it a view that
    // starts one sector before `lba`.
    let mut view = PartIo::new(
        file.try_clone()
            .context("duplicating the disk file handle")?,
        (lba - 1) * ss,
        2 * ss,
        "GPT header",
    );
    let header = gpt::header::read_header_from_arbitrary_device(&mut view, lb)
        .map_err(|e| anyhow!("{e}"))?;
    if header.current_lba != lba {
        bail!(
            "header says it is at LBA {} but was read at LBA {lba}",
            header.current_lba
        );
    }
    if header.part_size != ENTRY_SIZE || header.num_parts == 0 || header.num_parts > MAX_ENTRIES {
        bail!(
            "unsupported entry array: {} entries of {} bytes",
            header.num_parts,
            header.part_size
        );
    }
    let array_sectors = (u64::from(header.num_parts) * u64::from(ENTRY_SIZE)).div_ceil(ss);
    if header.part_start == 0 || header.part_start + array_sectors > last_lba + 1 {
        bail!(
            "entry array at LBA {} is outside the disk",
            header.part_start
        );
    }
    if header.first_usable > header.last_usable || header.last_usable > last_lba {
        bail!(
            "usable range {}..={} does not fit the disk",
            header.first_usable,
            header.last_usable
        );
    }
    let mut io = disk_io(file, size)?;
    let parts = gpt::partition::file_read_partitions(&mut io, &header, lb)
        .with_context(|| format!("entry array at LBA {}", header.part_start))?;
    Ok((header, parts))
}

/// Reads the GPT of a disk of `size` bytes with `ss`-byte sectors.
pub(crate) fn read(file: &File, size: u64, ss: u64) -> Result<Table> {
    if size < ss * 3 {
        bail!("{size} bytes is too small for a GPT");
    }
    let last_lba = size / ss - 1;
    let primary = read_copy(file, size, ss, 1);
    // The backup is where the primary says; without a primary, at the end of the disk.
    let backup_lba = match &primary {
        Ok((h, _)) => h.backup_lba,
        Err(_) => last_lba,
    };
    let mut backup = read_copy(file, size, ss, backup_lba);
    if backup.is_err() && backup_lba != last_lba {
        backup = read_copy(file, size, ss, last_lba);
    }
    let primary_error = primary.as_ref().err().map(|e| format!("{e:#}"));
    let backup_error = backup.as_ref().err().map(|e| format!("{e:#}"));
    let in_sync = match (&primary, &backup) {
        (Ok((h1, p1)), Ok((h2, p2))) => {
            h1.disk_guid == h2.disk_guid
                && h1.first_usable == h2.first_usable
                && h1.last_usable == h2.last_usable
                && h1.num_parts == h2.num_parts
                && h1.backup_lba == h2.current_lba
                && h2.current_lba == last_lba
                && used(p1) == used(p2)
        }
        _ => false,
    };
    let health = TableHealth {
        primary_ok: primary.is_ok(),
        backup_ok: backup.is_ok(),
        in_sync,
    };
    let (header, parts) = match (primary, backup) {
        (Ok(p), _) => p,
        (Err(_), Ok(b)) => b,
        (Err(_), Err(_)) => bail!(
            "no valid GPT (primary: {}; backup: {})",
            primary_error.unwrap_or_default(),
            backup_error.unwrap_or_default()
        ),
    };
    Ok(Table {
        header,
        parts,
        health,
        primary_error,
        backup_error,
    })
}

fn used(parts: &BTreeMap<u32, Partition>) -> Vec<(&u32, &Partition)> {
    parts.iter().filter(|(_, p)| p.is_used()).collect()
}

/// Writes both copies of the table for a disk of `size` bytes, backup first (see module doc).
/// `template` supplies the disk GUID, entry count and usable range; partitions keep their entry
/// numbers (the kernel's partition numbers).
pub(crate) fn write(
    file: &File,
    size: u64,
    ss: u64,
    template: &Header,
    parts: &BTreeMap<u32, Partition>,
) -> Result<()> {
    let lb = logical_block_size(ss)?;
    let last_lba = size / ss - 1;
    let mut primary = HeaderBuilder::from_header(template)
        .primary(true)
        .backup_lba(last_lba)
        .build(lb)
        .map_err(|e| anyhow!("building the primary GPT header: {e}"))?;
    let mut backup = HeaderBuilder::from_header(template)
        .primary(false)
        .backup_lba(last_lba)
        .build(lb)
        .map_err(|e| anyhow!("building the backup GPT header: {e}"))?;
    let array_sectors = (u64::from(primary.num_parts) * u64::from(primary.part_size)).div_ceil(ss);
    if backup.part_start + array_sectors > last_lba
        || primary.part_start + array_sectors > primary.first_usable
    {
        bail!("the GPT does not fit a disk of {size} bytes");
    }
    for (n, p) in parts.iter().filter(|(_, p)| p.is_used()) {
        if *n == 0 || *n > primary.num_parts {
            bail!("partition entry number {n} is outside the entry array");
        }
        if p.first_lba < primary.first_usable
            || p.last_lba > primary.last_usable
            || p.first_lba > p.last_lba
        {
            bail!(
                "partition {:?} (LBA {}..={}) is outside the usable range {}..={}",
                p.name,
                p.first_lba,
                p.last_lba,
                primary.first_usable,
                primary.last_usable
            );
        }
    }

    // The entry array, built in memory, entries at their own index, padded to whole sectors.
    let array_len = usize::try_from(array_sectors * ss).context("entry array size")?;
    let mut array = Cursor::new(vec![0u8; array_len]);
    for (n, p) in parts.iter().filter(|(_, p)| p.is_used()) {
        p.write_to_device(&mut array, u64::from(n - 1), 0, lb, primary.part_size)
            .with_context(|| format!("encoding partition entry {n}"))?;
    }
    let array = array.into_inner();

    let mut io = disk_io(file, size)?;
    io.write_all_at(&array, backup.part_start * ss)
        .context("writing the backup GPT entry array")?;
    backup
        .write_backup(&mut io, lb)
        .map_err(|e| anyhow!("writing the backup GPT header: {e}"))?;
    file.sync_data().context("syncing after the backup GPT")?;
    io.write_all_at(&array, primary.part_start * ss)
        .context("writing the primary GPT entry array")?;
    primary
        .write_primary(&mut io, lb)
        .map_err(|e| anyhow!("writing the primary GPT header: {e}"))?;
    file.sync_data().context("syncing after the primary GPT")?;
    Ok(())
}

/// A fresh header for an empty table on a disk of `size` bytes (128 entries).
pub(crate) fn new_header(size: u64, ss: u64) -> Result<Header> {
    let lb = logical_block_size(ss)?;
    HeaderBuilder::new()
        .backup_lba(size / ss - 1)
        .build(lb)
        .map_err(|e| anyhow!("building a GPT header for {size} bytes: {e}"))
}
