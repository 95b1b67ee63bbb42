//! Reading and writing both copies of the GPT, through the `gpt` crate's header and entry codecs.
//!
//! Reading checks each copy on its own (header CRC by the crate, entry-array CRC by
//! `file_read_partitions`) and uses the primary when it is whole, else the backup.
//!
//! Then the entries of every whole copy are validated ([`entry_problems`]): each used entry
//! lies inside the header's usable LBA range (which lies inside the disk), its first LBA is
//! not after its last, its byte range is computable without overflow, and no two entries
//! overlap. A whole copy whose entries fail is not a torn write that the other copy can
//! stand in for: something wrote it in full, and hup cannot know which copy tells where the
//! data is. So the disk is refused ([`read`] fails with one line naming the entries) and
//! nothing is written to it, not even a table repair. [`inspect`] reads the same without
//! refusing, for `hup status`.
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

use super::part_io::PartIo;

/// More entries than this in a header is treated as corruption.
const MAX_ENTRIES: u32 = 4096;
/// Problems named per copy in a message; the rest are counted.
const MAX_NAMED: usize = 6;
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

/// The table in use: a valid header and its partition entries (keyed by entry number, from 1),
/// validated (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub header: Header,
    pub parts: BTreeMap<u32, Partition>,
    /// Byte range (start, length) of every used entry, computed with checked arithmetic.
    pub ranges: BTreeMap<u32, (u64, u64)>,
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

/// One whole copy (valid CRCs): its header, entries, and what is wrong with its entries.
struct Copy {
    header: Header,
    parts: BTreeMap<u32, Partition>,
    /// Byte ranges of the used entries that have one.
    ranges: BTreeMap<u32, (u64, u64)>,
    /// Empty when every entry is valid.
    problems: Vec<String>,
}

/// Reads and checks one copy whose header is at `lba`: an error when the copy is not whole
/// (header or entry-array CRC, header fields); entry problems are in [`Copy::problems`].
fn read_copy(file: &File, size: u64, ss: u64, lba: u64) -> Result<Copy> {
    let lb = logical_block_size(ss)?;
    let last_lba = size / ss - 1;
    if lba == 0 || lba > last_lba {
        bail!("header LBA {lba} is outside the disk");
    }
    // The crate reads "the primary header" one sector into a device: give it a view that
    // starts one sector before `lba` (no overflow: lba <= last_lba = size / ss - 1).
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
    if header.part_start == 0
        || header
            .part_start
            .checked_add(array_sectors)
            .is_none_or(|end| end > last_lba + 1)
    {
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
    let (ranges, problems) = entry_problems(&header, &parts, ss);
    Ok(Copy {
        header,
        parts,
        ranges,
        problems,
    })
}

fn entry_name(n: u32, p: &Partition) -> String {
    format!(
        "entry {n} {:?} (LBA {}..={})",
        p.name, p.first_lba, p.last_lba
    )
}

/// Validates the used entries of one copy against its header (whose usable range was checked
/// to lie inside the disk): first LBA not after the last, inside the usable range, a byte
/// range without overflow, no two entries overlapping. Returns the byte ranges of the valid
/// entries and one message per problem.
fn entry_problems(
    header: &Header,
    parts: &BTreeMap<u32, Partition>,
    ss: u64,
) -> (BTreeMap<u32, (u64, u64)>, Vec<String>) {
    let mut problems = Vec::new();
    let mut ranges = BTreeMap::new();
    let mut placed: Vec<(u32, &Partition)> = Vec::new();
    for (&n, p) in parts.iter().filter(|(_, p)| p.is_used()) {
        if p.first_lba > p.last_lba {
            problems.push(format!("{} starts after its last LBA", entry_name(n, p)));
            continue;
        }
        if p.first_lba < header.first_usable || p.last_lba > header.last_usable {
            problems.push(format!(
                "{} is outside the usable range {}..={}",
                entry_name(n, p),
                header.first_usable,
                header.last_usable
            ));
            continue;
        }
        let range = p.first_lba.checked_mul(ss).and_then(|start| {
            let len = (p.last_lba - p.first_lba).checked_add(1)?.checked_mul(ss)?;
            start.checked_add(len)?;
            Some((start, len))
        });
        let Some(range) = range else {
            problems.push(format!("{} overflows byte offsets", entry_name(n, p)));
            continue;
        };
        ranges.insert(n, range);
        placed.push((n, p));
    }
    // Sorted by start, an entry overlaps an earlier one exactly when it starts at or before
    // the furthest end seen so far.
    placed.sort_by_key(|(_, p)| (p.first_lba, p.last_lba));
    let mut furthest: Option<(u32, &Partition)> = None;
    for (n, p) in placed {
        if let Some((fn_, fp)) = furthest {
            if p.first_lba <= fp.last_lba {
                problems.push(format!(
                    "{} overlaps {}",
                    entry_name(fn_, fp),
                    entry_name(n, p)
                ));
            }
            if p.last_lba <= fp.last_lba {
                continue;
            }
        }
        furthest = Some((n, p));
    }
    (ranges, problems)
}

/// "a; b; c and 4 more".
fn summary(problems: &[String]) -> String {
    let mut s = problems
        .iter()
        .take(MAX_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > MAX_NAMED {
        s.push_str(&format!(" and {} more", problems.len() - MAX_NAMED));
    }
    s
}

/// Both copies as found: the backup where the primary says, else at the end of the disk.
fn read_copies(file: &File, size: u64, ss: u64) -> Result<(Result<Copy>, Result<Copy>)> {
    if size < ss * 3 {
        bail!("{size} bytes is too small for a GPT");
    }
    let last_lba = size / ss - 1;
    let primary = read_copy(file, size, ss, 1);
    let backup_lba = match &primary {
        Ok(c) => c.header.backup_lba,
        Err(_) => last_lba,
    };
    let mut backup = read_copy(file, size, ss, backup_lba);
    if backup.is_err() && backup_lba != last_lba {
        backup = read_copy(file, size, ss, last_lba);
    }
    Ok((primary, backup))
}

/// The entry problems of the whole copies, as one line ("primary GPT: ...; backup GPT: ..."),
/// `None` when there are none.
fn invalid_entries(primary: &Result<Copy>, backup: &Result<Copy>) -> Option<String> {
    let bad = |c: &Result<Copy>| {
        c.as_ref()
            .ok()
            .filter(|c| !c.problems.is_empty())
            .map(|c| c.problems.clone())
    };
    match (bad(primary), bad(backup)) {
        (None, None) => None,
        (Some(p), Some(b)) if p == b => Some(format!("primary and backup GPT: {}", summary(&p))),
        (p, b) => Some(
            [("primary", p), ("backup", b)]
                .into_iter()
                .filter_map(|(name, x)| x.map(|x| format!("{name} GPT: {}", summary(&x))))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// What `hup status` shows about a disk's GPT: which copies are whole and valid, and every
/// problem found (damaged copies and invalid entries), one message each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// The primary copy is whole and its entries are valid.
    pub primary_ok: bool,
    /// The backup copy is whole and its entries are valid.
    pub backup_ok: bool,
    /// Both are whole, valid and describe the same partitions.
    pub in_sync: bool,
    /// Empty for a clean table.
    pub problems: Vec<String>,
}

/// Reads both copies without refusing anything (see [`TableReport`]).
pub(crate) fn inspect(file: &File, size: u64, ss: u64) -> Result<TableReport> {
    let (primary, backup) = read_copies(file, size, ss)?;
    let mut problems = Vec::new();
    for (name, c) in [("primary", &primary), ("backup", &backup)] {
        match c {
            Err(e) => problems.push(format!("{name} GPT is damaged: {e:#}")),
            Ok(c) => problems.extend(c.problems.iter().map(|p| format!("{name} GPT: {p}"))),
        }
    }
    let valid = |c: &Result<Copy>| c.as_ref().is_ok_and(|c| c.problems.is_empty());
    let (primary_ok, backup_ok) = (valid(&primary), valid(&backup));
    let in_sync = primary_ok && backup_ok && same(&primary, &backup, size / ss - 1);
    if primary_ok && backup_ok && !in_sync {
        problems.push("the primary and backup GPT differ".to_string());
    }
    Ok(TableReport {
        primary_ok,
        backup_ok,
        in_sync,
        problems,
    })
}

/// Both copies whole and saying the same, with the backup at the end of the disk.
fn same(primary: &Result<Copy>, backup: &Result<Copy>, last_lba: u64) -> bool {
    match (primary, backup) {
        (Ok(c1), Ok(c2)) => {
            let (h1, h2) = (&c1.header, &c2.header);
            h1.disk_guid == h2.disk_guid
                && h1.first_usable == h2.first_usable
                && h1.last_usable == h2.last_usable
                && h1.num_parts == h2.num_parts
                && h1.backup_lba == h2.current_lba
                && h2.current_lba == last_lba
                && used(&c1.parts) == used(&c2.parts)
        }
        _ => false,
    }
}

/// Reads the GPT of a disk of `size` bytes with `ss`-byte sectors. Fails when neither copy
/// is whole, and when a whole copy has invalid entries (see the module doc).
pub(crate) fn read(file: &File, size: u64, ss: u64) -> Result<Table> {
    let (primary, backup) = read_copies(file, size, ss)?;
    if let Some(why) = invalid_entries(&primary, &backup) {
        bail!("invalid partition table, refusing the disk: {why}");
    }
    let primary_error = primary.as_ref().err().map(|e| format!("{e:#}"));
    let backup_error = backup.as_ref().err().map(|e| format!("{e:#}"));
    let health = TableHealth {
        primary_ok: primary.is_ok(),
        backup_ok: backup.is_ok(),
        in_sync: same(&primary, &backup, size / ss - 1),
    };
    let copy = match (primary, backup) {
        (Ok(p), _) => p,
        (Err(_), Ok(b)) => b,
        (Err(_), Err(_)) => bail!(
            "no valid GPT (primary: {}; backup: {})",
            primary_error.unwrap_or_default(),
            backup_error.unwrap_or_default()
        ),
    };
    Ok(Table {
        header: copy.header,
        parts: copy.parts,
        ranges: copy.ranges,
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
    let ends = |start: u64| start.checked_add(array_sectors);
    if ends(backup.part_start).is_none_or(|e| e > last_lba)
        || ends(primary.part_start).is_none_or(|e| e > primary.first_usable)
    {
        bail!("the GPT does not fit a disk of {size} bytes");
    }
    for n in parts.iter().filter(|(_, p)| p.is_used()).map(|(n, _)| *n) {
        if n == 0 || n > primary.num_parts {
            bail!("partition entry number {n} is outside the entry array");
        }
    }
    // A table hup writes must pass the checks of a table hup reads.
    let (_, problems) = entry_problems(&primary, parts, ss);
    if !problems.is_empty() {
        bail!("refusing to write an invalid GPT: {}", summary(&problems));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, first: u64, last: u64) -> Partition {
        Partition {
            part_type_guid: gpt::partition_types::LINUX_FS,
            part_guid: uuid::Uuid::nil(),
            first_lba: first,
            last_lba: last,
            flags: 0,
            name: name.into(),
        }
    }

    fn problems(entries: &[(&str, u64, u64)]) -> Vec<String> {
        let header = new_header(64 << 20, 512).unwrap();
        let parts: BTreeMap<u32, Partition> = entries
            .iter()
            .enumerate()
            .map(|(i, (n, f, l))| (i as u32 + 1, entry(n, *f, *l)))
            .collect();
        entry_problems(&header, &parts, 512).1
    }

    #[test]
    fn entries_are_checked_one_by_one_and_against_each_other() {
        // touching is fine; the usable range is 34..=131038 on 64 MiB
        assert!(problems(&[("a", 34, 2047), ("b", 2048, 131_038)]).is_empty());
        let p = problems(&[("a", 2048, 4095), ("b", 4095, 8191)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("\"a\"") && p[0].contains("overlaps entry 2 \"b\""));
        // contained in an earlier, longer entry, and after it ends
        let p = problems(&[
            ("big", 2048, 9999),
            ("in", 3000, 3001),
            ("tail", 5000, 12000),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|m| m.starts_with("entry 1 \"big\"")), "{p:?}");
        let p = problems(&[("back", 5000, 4000)]);
        assert!(p[0].contains("starts after its last LBA"), "{p:?}");
        for (f, l) in [(33, 100), (100, 131_039), (u64::MAX - 1, u64::MAX)] {
            let p = problems(&[("out", f, l)]);
            assert!(
                p[0].contains("outside the usable range 34..=131038"),
                "{p:?}"
            );
        }
        let many: Vec<(&str, u64, u64)> = (0..10).map(|_| ("same", 2048, 4095)).collect();
        let p = problems(&many);
        assert_eq!(p.len(), 9);
        assert!(summary(&p).ends_with(" and 3 more"), "{}", summary(&p));
    }
}
