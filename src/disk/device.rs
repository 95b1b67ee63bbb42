//! A GPT disk (image file or block device) with its validated table, and its partitions by
//! label as byte ranges.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::part_io::PartIo;
use super::table::{self, TableHealth, TableReport};

/// PARTLABEL of the boot partition (vfat ESP).
pub const LABEL_BOOT: &str = "hup-boot";
/// PARTLABEL of root slot A.
pub const LABEL_ROOT_A: &str = "hup-root-a";
/// PARTLABEL of root slot B.
pub const LABEL_ROOT_B: &str = "hup-root-b";
/// PARTLABEL of the data partition.
pub const LABEL_DATA: &str = "hup-data";

/// Disk errors that callers match on.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("no partition labelled {label:?} on {disk}")]
    NotFound { label: String, disk: String },
    #[error("{count} partitions labelled {label:?} on {disk}: labels must be unique")]
    Ambiguous {
        label: String,
        disk: String,
        count: usize,
    },
    #[error(
        "partitions {active:?} and {target:?} on {disk} resolve to overlapping byte ranges \
         ({active_range} and {target_range}): refusing to write the active slot"
    )]
    SameRange {
        active: String,
        target: String,
        disk: String,
        active_range: String,
        target_range: String,
    },
    #[error(
        "the target partition {target:?} ({target_range}) on {disk} is or overlaps the {role} \
         {other:?} ({other_range}): refusing to write it"
    )]
    TargetOverlaps {
        target: String,
        role: String,
        other: String,
        disk: String,
        target_range: String,
        other_range: String,
    },
}

/// One partition: its GPT name, entry number (informational only), byte range and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// GPT partition name (PARTLABEL).
    pub label: String,
    /// GPT entry number (the kernel's partition number); never used to find a partition.
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Unique partition GUID (PARTUUID), upper-case hyphenated.
    pub guid: String,
    /// Partition type GUID, upper-case hyphenated.
    pub type_guid: String,
    /// The 64 attribute bits (bits 48-63 are type specific; see docs/boot-backends.md).
    pub attrs: u64,
}

impl Part {
    /// One past the last byte; `u64::MAX` when that overflows (such a range fits no disk, and
    /// overlaps every range it could be compared with).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// One past the last byte, `None` on overflow.
    pub fn checked_end(&self) -> Option<u64> {
        self.start.checked_add(self.len)
    }

    /// True when the two byte ranges share at least one byte.
    pub fn overlaps(&self, other: &Part) -> bool {
        self.start < other.end() && other.start < self.end()
    }

    fn range(&self) -> String {
        format!("bytes {}..{}", self.start, self.end())
    }
}

/// How to open a disk; the default is read-write with the sector size detected.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskOptions {
    /// Logical sector size. Default: BLKSSZGET for a block device; for an image file, where
    /// the GPT header is found (LBA 1 at 512 or 4096 bytes), else 512.
    pub sector_size: Option<u64>,
    /// Open without write access; writes then fail.
    pub read_only: bool,
}

/// An open GPT disk: image file or block device.
#[derive(Debug)]
pub struct Disk {
    path: PathBuf,
    file: File,
    read_only: bool,
    block_device: bool,
    sector_size: u64,
    size: u64,
    table: table::Table,
}

impl Disk {
    /// Opens a disk read-write (sector size detected; see [`DiskOptions`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Disk> {
        Disk::open_with(path, DiskOptions::default())
    }

    /// Opens a disk read-only.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Disk> {
        let opts = DiskOptions {
            read_only: true,
            ..DiskOptions::default()
        };
        Disk::open_with(path, opts)
    }

    /// Opens a disk with explicit options.
    pub fn open_with(path: impl AsRef<Path>, opts: DiskOptions) -> Result<Disk> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(&path)
            .with_context(|| format!("opening disk {}", path.display()))?;
        let (block_device, size, detected) =
            probe(&file).with_context(|| format!("probing disk {}", path.display()))?;
        let sector_size = opts.sector_size.unwrap_or(detected);
        table::logical_block_size(sector_size)
            .with_context(|| format!("disk {}", path.display()))?;
        let table = table::read(&file, size, sector_size).with_context(|| {
            format!(
                "reading the GPT of {} ({sector_size}-byte sectors)",
                path.display()
            )
        })?;
        let disk = Disk {
            path,
            file,
            read_only: opts.read_only,
            block_device,
            sector_size,
            size,
            table,
        };
        disk.log_health();
        Ok(disk)
    }

    fn log_health(&self) {
        let t = &self.table;
        if let Some(e) = &t.primary_error {
            log::warn!(
                "{}: primary GPT is damaged ({e}); using the backup",
                self.name()
            );
        }
        if let Some(e) = &t.backup_error {
            log::warn!("{}: backup GPT is damaged ({e})", self.name());
        }
        if t.health.primary_ok && t.health.backup_ok && !t.health.in_sync {
            log::warn!(
                "{}: primary and backup GPT differ; using the primary",
                self.name()
            );
        }
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logical sector size in bytes (512 or 4096).
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    /// Size of the disk in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True for a block device, false for an image file.
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Disk GUID, upper-case hyphenated.
    pub fn disk_guid(&self) -> String {
        guid_string(&self.table.header.disk_guid)
    }

    /// State of the two GPT copies as found when opened (or after the last write).
    pub fn health(&self) -> TableHealth {
        self.table.health
    }

    /// True when opened without write access.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// All partitions, by start offset. The table was validated when read (no entry outside
    /// the usable range, none overlapping another; see `table.rs`).
    pub fn partitions(&self) -> Vec<Part> {
        let mut v: Vec<Part> = self
            .table
            .parts
            .iter()
            .filter(|(_, p)| p.is_used())
            // every used entry of a table that was read has its byte range
            .filter_map(|(n, p)| {
                let &(start, len) = self.table.ranges.get(n)?;
                Some(Part {
                    label: p.name.clone(),
                    number: *n,
                    start,
                    len,
                    guid: guid_string(&p.part_guid),
                    type_guid: guid_string(&p.part_type_guid.guid),
                    attrs: p.flags,
                })
            })
            .collect();
        v.sort_by_key(|p| p.start);
        v
    }

    /// The partition labelled `label`; [`DiskError::NotFound`] or [`DiskError::Ambiguous`].
    pub fn partition(&self, label: &str) -> Result<Part> {
        self.find_partition(label)?.ok_or_else(|| {
            DiskError::NotFound {
                label: label.to_string(),
                disk: self.name(),
            }
            .into()
        })
    }

    /// Like [`Disk::partition`], but `None` when absent (still an error when ambiguous).
    pub fn find_partition(&self, label: &str) -> Result<Option<Part>> {
        let mut found: Vec<Part> = self
            .partitions()
            .into_iter()
            .filter(|p| p.label == label)
            .collect();
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            count => Err(DiskError::Ambiguous {
                label: label.to_string(),
                disk: self.name(),
                count,
            }
            .into()),
        }
    }

    /// Resolves the active and the target partition and refuses ([`DiskError::SameRange`])
    /// when their byte ranges overlap, so the running slot can never be overwritten.
    pub fn distinct_partitions(&self, active: &str, target: &str) -> Result<(Part, Part)> {
        let a = self.partition(active)?;
        let t = self.partition(target)?;
        if a.overlaps(&t) || active == target {
            return Err(DiskError::SameRange {
                active: active.to_string(),
                target: target.to_string(),
                disk: self.name(),
                active_range: a.range(),
                target_range: t.range(),
            }
            .into());
        }
        Ok((a, t))
    }

    /// Resolves `target` and refuses ([`DiskError::TargetOverlaps`]) when its byte range is or
    /// overlaps that of any partition in `others` (role, label), so that writing the target
    /// can reach no other hup partition, whatever the labels in the configuration say.
    /// Labels of `others` that are not on the disk are skipped.
    pub fn target_apart(&self, target: &str, others: &[(&str, &str)]) -> Result<Part> {
        let t = self.partition(target)?;
        for (role, label) in others {
            let Some(o) = self.find_partition(label)? else {
                continue;
            };
            if o.overlaps(&t) || *label == target {
                return Err(DiskError::TargetOverlaps {
                    target: target.to_string(),
                    role: role.to_string(),
                    other: label.to_string(),
                    disk: self.name(),
                    target_range: t.range(),
                    other_range: o.range(),
                }
                .into());
            }
        }
        Ok(t)
    }

    /// A stream confined to `part`'s byte range, which must lie inside the disk.
    pub fn part_io(&self, part: &Part) -> Result<PartIo> {
        if part.checked_end().is_none_or(|end| end > self.size) {
            bail!(
                "partition {:?} ({}) extends past the end of {} ({} bytes)",
                part.label,
                part.range(),
                self.name(),
                self.size
            );
        }
        let file = self
            .file
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", self.name()))?;
        Ok(PartIo::new(file, part.start, part.len, part.label.clone()))
    }

    /// A stream over the partition labelled `label`.
    pub fn open_partition(&self, label: &str) -> Result<PartIo> {
        let part = self.partition(label)?;
        self.part_io(&part)
    }

    /// Sets the attribute bits of the named partitions in one table update (both copies,
    /// backup first). The table is re-read from the disk first, so concurrent edits of other
    /// fields are not lost.
    pub fn set_attributes(&mut self, changes: &[(&str, u64)]) -> Result<()> {
        self.reload()?;
        let mut parts = self.table.parts.clone();
        for (label, attrs) in changes {
            let part = self.partition(label)?;
            let entry = parts
                .get_mut(&part.number)
                .with_context(|| format!("partition entry {} vanished", part.number))?;
            entry.flags = *attrs;
        }
        self.write_table(&parts)
            .with_context(|| format!("updating partition attributes on {}", self.name()))
    }

    /// Replaces the partition table with `parts`: entry numbers from [`Part::number`], byte
    /// ranges on whole sectors inside the usable range, names, GUIDs, type GUIDs and
    /// attributes as given. Both copies, backup first (see `table.rs`); the disk GUID, entry
    /// count and usable range stay. On a block device the kernel is asked to re-read the
    /// table (a failure, e.g. EBUSY while a partition is mounted, is only logged). Used by
    /// the layout migration (docs/layout-migration.md).
    pub fn replace_partitions(&mut self, parts: &[Part]) -> Result<()> {
        self.reload()?;
        let ss = self.sector_size;
        let mut entries = BTreeMap::new();
        for p in parts {
            if p.number == 0 || entries.contains_key(&p.number) {
                bail!(
                    "partition {:?}: entry number {} is invalid or used twice",
                    p.label,
                    p.number
                );
            }
            if p.len == 0 || !p.start.is_multiple_of(ss) || !p.len.is_multiple_of(ss) {
                bail!(
                    "partition {:?}: {} bytes at byte {} are not whole {ss}-byte sectors",
                    p.label,
                    p.len,
                    p.start
                );
            }
            let guid = |s: &str, what: &str| {
                s.parse::<uuid::Uuid>()
                    .with_context(|| format!("{what} {s:?} of partition {:?}", p.label))
            };
            entries.insert(
                p.number,
                gpt::partition::Partition {
                    part_type_guid: gpt::partition_types::Type {
                        guid: guid(&p.type_guid, "type GUID")?,
                        os: gpt::partition_types::OperatingSystem::None,
                    },
                    part_guid: guid(&p.guid, "GUID")?,
                    first_lba: p.start / ss,
                    // len >= ss was checked above; the end is checked for overflow here and
                    // against the usable range by the table writer
                    last_lba: p
                        .checked_end()
                        .with_context(|| format!("partition {:?}: its end overflows", p.label))?
                        / ss
                        - 1,
                    flags: p.attrs,
                    name: p.label.clone(),
                },
            );
        }
        self.write_table(&entries)
            .with_context(|| format!("replacing the partition table of {}", self.name()))?;
        if self.block_device
            && let Err(e) = crate::sys::blk::reread_partitions(&self.file)
        {
            log::warn!(
                "{}: the kernel did not re-read the partition table: {e:#}",
                self.name()
            );
        }
        Ok(())
    }

    /// Rewrites both GPT copies from the one in use when they are not both whole and equal.
    /// Returns true when something was written.
    pub fn repair(&mut self) -> Result<bool> {
        self.reload()?;
        if self.table.health.is_clean() {
            return Ok(false);
        }
        log::info!(
            "{}: repairing the GPT ({:?})",
            self.name(),
            self.table.health
        );
        let parts = self.table.parts.clone();
        self.write_table(&parts)
            .with_context(|| format!("repairing the GPT of {}", self.name()))?;
        Ok(true)
    }

    /// Re-reads the GPT from the disk.
    pub fn reload(&mut self) -> Result<()> {
        self.table = table::read(&self.file, self.size, self.sector_size)
            .with_context(|| format!("re-reading the GPT of {}", self.name()))?;
        Ok(())
    }

    /// Flushes everything written to the disk (fsync; for a block device also BLKFLSBUF).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.name()))?;
        if self.block_device {
            crate::sys::blk::flush_buffers(&self.file)
                .with_context(|| format!("flushing the buffers of {}", self.name()))?;
        }
        Ok(())
    }

    fn write_table(&mut self, parts: &BTreeMap<u32, gpt::partition::Partition>) -> Result<()> {
        table::write(
            &self.file,
            self.size,
            self.sector_size,
            &self.table.header,
            parts,
        )?;
        self.reload()
    }
}

/// The state of both GPT copies of the disk at `path`, without refusing a table with invalid
/// entries (which [`Disk::open`] does): for `hup status`. Only reads.
pub fn inspect(path: impl AsRef<Path>) -> Result<TableReport> {
    let path = path.as_ref();
    let file = File::open(path).with_context(|| format!("opening disk {}", path.display()))?;
    let (_, size, ss) = probe(&file).with_context(|| format!("probing disk {}", path.display()))?;
    table::inspect(&file, size, ss)
        .with_context(|| format!("reading the GPT of {} ({ss}-byte sectors)", path.display()))
}

/// (is a block device, size in bytes, detected logical sector size).
fn probe(file: &File) -> Result<(bool, u64, u64)> {
    if crate::sys::blk::is_block_device(file)? {
        let size = crate::sys::blk::size_bytes(file)?;
        let ss = crate::sys::blk::logical_sector_size(file)?;
        return Ok((true, size, ss));
    }
    let size = file.metadata().context("reading the file size")?.len();
    Ok((false, size, detect_sector_size(file, size)))
}

/// For an image file: where a GPT header signature is found, primary (LBA 1) first, then
/// backup (last LBA); 512 when none is found.
fn detect_sector_size(file: &File, size: u64) -> u64 {
    let sig_at = |off: u64| {
        let mut buf = [0u8; 8];
        off + 8 <= size && file.read_exact_at(&mut buf, off).is_ok() && &buf == b"EFI PART"
    };
    let candidates = [
        (512, 512),
        (4096, 4096),
        (size.saturating_sub(512), 512),
        (size.saturating_sub(4096), 4096),
    ];
    candidates
        .iter()
        .find(|(off, ss)| *off >= *ss && size.is_multiple_of(*ss) && sig_at(*off))
        .map_or(512, |(_, ss)| *ss)
}

fn guid_string(u: &uuid::Uuid) -> String {
    u.hyphenated().to_string().to_uppercase()
}
