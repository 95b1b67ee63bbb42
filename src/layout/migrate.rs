//! The migration steps of docs/layout-migration.md. Each one checks where the disk is, does its
//! work again from the start when it was interrupted, and records its phase in the backup
//! header when it completes; [`resume`] continues from that header after a power cut.

use std::fs::{self, File};
use std::io::{BufWriter, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::plan::{Estimate, Plan, current_attrs, restore_inodes, same_layout};
use super::region::{self, ALIGN, FORMAT, PAYLOAD_START, Phase, Record, RegionWriter};
use super::table;
use crate::data::backup::{ExtraFile, Source, restore_stream};
use crate::disk::{Disk, Part};
use crate::ext4;
use crate::failpoint;
use crate::model::config::Labels;
use crate::size::mib;

const CHUNK: usize = 4 << 20;

/// What [`resume`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// No migration in progress: no valid backup header on the disk.
    Nothing,
    /// A backup exists but the old table is still in place: nothing irreversible happened,
    /// the old data partition is intact (and may be newer than the backup). Start over with
    /// `plan` and `backup`.
    StartOver(Record),
    /// The new table is written and the data restored (now, or before the interruption).
    Restored(Record),
}

fn check_table(disk: &Disk, expected: &[Part], what: &str) -> Result<()> {
    if !same_layout(&disk.partitions(), expected) {
        bail!(
            "the partition table of {} is not the one {what}",
            disk.path().display()
        );
    }
    Ok(())
}

fn check_disk(disk: &Disk, rec: &Record) -> Result<()> {
    if rec.disk_guid != disk.disk_guid() || rec.sector_size != disk.sector_size() {
        bail!(
            "the backup header is for disk {} with {}-byte sectors, not {} ({}, {}-byte sectors)",
            rec.disk_guid,
            rec.sector_size,
            disk.path().display(),
            disk.disk_guid(),
            disk.sector_size()
        );
    }
    Ok(())
}

/// Step 1: when the active slot is not the one that keeps its start, copies it there (the
/// whole partition, raw) and checks the copy by sha256. Returns false when there was nothing
/// to copy. The caller marks the destination bad before (it is overwritten), and switches
/// boot to it after (for systemd-boot: with the source slot's kernel and initramfs), then
/// plans again from the new active slot. Running it again redoes the copy.
pub fn normalize(disk: &Disk, plan: &Plan) -> Result<bool> {
    let Some(n) = &plan.normalize else {
        return Ok(false);
    };
    check_table(disk, &plan.current, "the migration was planned for")?;
    let (src, dst) = disk.distinct_partitions(&n.from_label, &n.to_label)?;
    if src.len < n.len || dst.len < n.len {
        bail!(
            "slots {} and {} are smaller than the {} copy",
            src.label,
            dst.label,
            mib(n.len)
        );
    }
    log::info!(
        "layout: copying slot {} ({}, {}) into slot {} ({})",
        n.from,
        src.label,
        mib(n.len),
        n.to,
        dst.label
    );
    let (src_io, dst_io) = (disk.part_io(&src)?, disk.part_io(&dst)?);
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut off = 0;
    while off < n.len {
        let k = CHUNK.min((n.len - off) as usize);
        src_io
            .read_exact_at(&mut buf[..k], off)
            .with_context(|| format!("reading slot {} at byte {off}", src.label))?;
        dst_io
            .write_all_at(&buf[..k], off)
            .with_context(|| format!("writing slot {} at byte {off}", dst.label))?;
        hash.update(&buf[..k]);
        off += k as u64;
    }
    disk.sync()?; // a block device also drops its cache: the check reads the media
    let want = hex::encode(hash.finalize());
    let (got, _) = crate::bundle::verified::sha256_of(dst_io.take(n.len))
        .with_context(|| format!("reading slot {} back", dst.label))?;
    if got != want {
        bail!(
            "slot {} does not read back as the copy of slot {} (sha256 {got}, expected {want})",
            dst.label,
            src.label
        );
    }
    failpoint::hit("layout-normalize");
    Ok(true)
}

/// UUID and label of the ext4 filesystem on `part`, if it has one.
fn ext4_identity(disk: &Disk, part: &Part) -> Result<(Option<String>, Option<String>)> {
    let mut sb = [0u8; 1024];
    disk.part_io(part)?
        .read_exact_at(&mut sb, 1024)
        .with_context(|| format!("reading the superblock of {}", part.label))?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Ok((None, None));
    }
    let uuid = uuid::Uuid::from_slice(&sb[0x68..0x78]).context("filesystem UUID")?;
    let label: Vec<u8> = sb[0x78..0x88]
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .collect();
    let label = String::from_utf8(label).ok().filter(|l| !l.is_empty());
    Ok((Some(uuid.hyphenated().to_string()), label))
}

/// Where the bundle goes back: its path relative to the data directory when it is inside,
/// else `hup/staged/NAME`.
fn bundle_path(data_dir: &Path, bundle: &Path) -> Result<String> {
    let canon =
        |p: &Path| fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()));
    let b = canon(bundle)?;
    let rel = match b.strip_prefix(canon(data_dir)?) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => Path::new("hup/staged").join(b.file_name().context("bundle file name")?),
    };
    rel.to_str()
        .map(str::to_string)
        .with_context(|| format!("bundle path {} is not UTF-8", rel.display()))
}

/// Step 2: backs up the data partition mounted at `data_dir` (everything: owners, modes,
/// xattrs, links, device nodes) and the staged `bundle` into the backup region, then writes
/// the header (phase `backed-up`). What does not fit (the region, or the new data partition)
/// is refused with a [`super::PlanError`] before anything is written. Writes only the old
/// spare slot, which the caller has marked bad. Running it again makes a fresh backup.
pub fn backup(disk: &Disk, plan: &Plan, data_dir: &Path, bundle: Option<&Path>) -> Result<Record> {
    backup_with(disk, plan, data_dir, bundle, None)
}

/// [`backup`] when the caller has just checked the fit of the same data with
/// [`Plan::check_fit`] (to refuse before its own first write): `checked` is that estimate,
/// so the data is not measured again (which may mean compressing it to nowhere). What was
/// really written is still checked against the plan.
pub fn backup_checked(
    disk: &Disk,
    plan: &Plan,
    data_dir: &Path,
    bundle: Option<&Path>,
    checked: Estimate,
) -> Result<Record> {
    backup_with(disk, plan, data_dir, bundle, Some(checked))
}

fn backup_with(
    disk: &Disk,
    plan: &Plan,
    data_dir: &Path,
    bundle: Option<&Path>,
    checked: Option<Estimate>,
) -> Result<Record> {
    if let Some(n) = &plan.normalize {
        bail!(
            "slot {} is running: copy it into slot {} (normalize), boot slot {} and plan again before the backup",
            n.from,
            n.to,
            n.to
        );
    }
    check_table(disk, &plan.current, "the migration was planned for")?;
    // The backup writes only into the old spare slot.
    let spare = disk.partition(plan.keeper.other().label(&plan.labels))?;
    let r = plan.region;
    if r.start < spare.start
        || r.start
            .checked_add(r.len)
            .is_none_or(|end| end > spare.end())
    {
        bail!(
            "the backup region (bytes {}+{}) is not inside the spare slot {:?} (bytes {}..{})",
            r.start,
            r.len,
            spare.label,
            spare.start,
            spare.end()
        );
    }
    let mut src = Source::new(data_dir)?;
    let bundle_meta = match bundle {
        Some(b) => {
            src.exclude(b)?;
            Some(fs::metadata(b).with_context(|| format!("reading {}", b.display()))?)
        }
        None => None,
    };
    let bundle_len = bundle_meta.as_ref().map_or(0, |m| m.len());
    let est = match checked {
        Some(est) => est,
        None => plan.check_fit(&src, bundle_len)??,
    };
    log::info!(
        "layout: backing up {} ({} files, {} of tar, needs {} {}) into {}",
        data_dir.display(),
        est.scan.entries,
        mib(est.scan.tar_bytes),
        if est.exact { "exactly" } else { "at most" },
        mib(est.needed),
        mib(plan.region.len)
    );
    let old_data = disk.partition(&plan.labels.data)?;
    let (fs_uuid, fs_label) = ext4_identity(disk, &old_data)?;

    let r = plan.region;
    region::clear(disk, r.start)?;
    let io = region::disk_range(disk, r.start, r.len, "backup region")?;
    let mut offset = PAYLOAD_START;
    let (bundle_payload, bundle_file) = match (bundle, &bundle_meta) {
        (Some(b), Some(m)) => {
            let f = File::open(b).with_context(|| format!("opening {}", b.display()))?;
            let p = region::copy_in(io.try_clone()?, offset, f.take(m.len()), "staged bundle")?;
            if p.len != m.len() {
                bail!("{} shrank while it was backed up", b.display());
            }
            offset = offset
                .checked_add(p.len)
                .and_then(|end| end.div_ceil(ALIGN).checked_mul(ALIGN))
                .context("the staged bundle does not fit the backup region")?;
            let file = ExtraFile {
                path: bundle_path(data_dir, b)?,
                size: m.len(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime().max(0) as u64,
                mtime_nsec: u32::try_from(m.mtime_nsec()).unwrap_or(0),
            };
            (Some(p), Some(file))
        }
        _ => (None, None),
    };
    failpoint::hit("layout-backup-middle");
    let mut w = BufWriter::with_capacity(1 << 20, RegionWriter::new(io, offset, "data backup"));
    let (scan, _) = src.write_zstd(&mut w)?;
    let data = w
        .into_inner()
        .map_err(|e| e.into_error())
        .context("writing the data backup")?
        .finish()?;
    // The data could have changed since the estimate: check what was really written.
    plan.check(&Estimate::exact(scan.clone(), bundle_len, data.len))?;
    disk.sync()?;

    let mut rec = Record {
        format: FORMAT,
        phase: Phase::BackedUp,
        seq: 0,
        id: uuid::Uuid::new_v4().simple().to_string(),
        created_at: crate::fsutil::now(),
        disk_guid: disk.disk_guid(),
        sector_size: disk.sector_size(),
        layout_version: plan.layout_version,
        region_start: r.start,
        region_len: r.len,
        data,
        tar_bytes: scan.tar_bytes,
        entries: scan.entries,
        fs_bytes: scan.fs_bytes,
        bundle: bundle_payload,
        bundle_file,
        data_label: plan.labels.data.clone(),
        fs_uuid,
        fs_label,
        spare_label: plan.keeper.other().label(&plan.labels).to_string(),
        previous: plan.current.clone(),
        table: plan.table.clone(),
    };
    region::write(disk, &mut rec)?;
    log::info!(
        "layout: backup complete: {} of data, {} bundle",
        mib(rec.data.len),
        mib(bundle_len)
    );
    failpoint::hit("layout-backup");
    Ok(rec)
}

fn verify_payloads(disk: &Disk, rec: &Record) -> Result<()> {
    region::verify(disk, rec.region_start, &rec.data, "data backup")?;
    if let Some(b) = &rec.bundle {
        region::verify(disk, rec.region_start, b, "staged bundle")?;
    }
    Ok(())
}

/// Step 3, the point of no return: checks the backup once more (sha256), then writes the
/// new partition table (both copies) and records phase `table-written`. The active slot's
/// start and bytes do not change. Does nothing but record the phase when the table is
/// already the new one.
pub fn write_table(disk: &mut Disk, rec: &mut Record) -> Result<()> {
    check_disk(disk, rec)?;
    let parts = disk.partitions();
    if !same_layout(&parts, &rec.table) {
        if rec.phase > Phase::BackedUp || !same_layout(&parts, &rec.previous) {
            bail!(
                "the partition table of {} is neither the one backed up nor the new one",
                disk.path().display()
            );
        }
        table::check_not_in_use(disk)?;
        verify_payloads(disk, rec)?;
        log::info!("layout: writing the new partition table");
        let new = current_attrs(&rec.table, &parts, &rec.spare_label);
        disk.replace_partitions(&new)?;
        check_table(disk, &rec.table, "just written")?;
        if !disk.health().is_clean() {
            bail!(
                "the new partition table of {} does not read back whole",
                disk.path().display()
            );
        }
    }
    if rec.phase < Phase::TableWritten {
        rec.phase = Phase::TableWritten;
        region::write(disk, rec)?;
    }
    failpoint::hit("layout-table");
    Ok(())
}

/// Step 4: formats the new data partition (keeping the old filesystem's UUID and label)
/// and fills it from the backup, checked by sha256 first, with the staged bundle back in
/// its place; records phase `restored`. Returns `None` when that was done already. After an
/// interruption it formats and restores again.
pub fn restore(disk: &mut Disk, rec: &mut Record) -> Result<Option<ext4::Stats>> {
    check_disk(disk, rec)?;
    check_table(
        disk,
        &rec.table,
        "the migration writes (write the table first)",
    )?;
    if rec.phase >= Phase::Restored {
        return Ok(None);
    }
    table::check_not_in_use(disk)?;
    verify_payloads(disk, rec)?;
    let data = rec.data_part()?.clone();
    let inodes = restore_inodes(rec.entries, data.len);
    let opts = ext4::MkfsOptions {
        label: rec
            .fs_label
            .clone()
            .or_else(|| (data.label.len() <= 16).then(|| data.label.clone())),
        uuid: rec.fs_uuid.as_deref().map(ext4::parse_uuid).transpose()?,
        inodes: (inodes > data.len / ext4::inode_ratio(data.len)).then_some(inodes),
    };
    log::info!("layout: formatting {} and restoring the backup", data.label);
    // The range comes from the disk's validated table, and must be the one recorded.
    let dest = ext4::Dest::partition(disk, &data.label)?;
    if (dest.offset(), dest.size()) != (data.start, data.len) {
        bail!(
            "partition {:?} is at bytes {}+{} on the disk, the backup header says {}+{}",
            data.label,
            dest.offset(),
            dest.size(),
            data.start,
            data.len
        );
    }
    ext4::format(&dest, &opts)
        .with_context(|| format!("formatting the new data partition {}", data.label))?;
    failpoint::hit("layout-restore-format");
    let compressed = region::payload_reader(disk, rec.region_start, &rec.data, "data backup")?;
    let extra = match (&rec.bundle, &rec.bundle_file) {
        (Some(p), Some(f)) => {
            let r = region::payload_reader(disk, rec.region_start, p, "staged bundle")?;
            Some((f.clone(), Box::new(r) as Box<dyn Read + Send>))
        }
        _ => None,
    };
    let stream = restore_stream(compressed, rec.tar_bytes, extra)?;
    let stats = ext4::populate(&dest, stream)
        .with_context(|| format!("restoring the data backup into {}", data.label))?;
    disk.sync()?;
    rec.phase = Phase::Restored;
    region::write(disk, rec)?;
    log::info!("layout: restored {stats}");
    failpoint::hit("layout-restore");
    Ok(Some(stats))
}

/// The header of an interrupted migration, if any: the newest valid one of this disk, found
/// at a MiB boundary outside the boot and data partitions. Call it when the data partition
/// is new or empty (not a filesystem, or no `hup/state.json`).
pub fn resume_phase(disk: &Disk, labels: &Labels) -> Result<Option<Record>> {
    let mut skip = Vec::new();
    for label in [&labels.boot, &labels.data] {
        if let Some(p) = disk.find_partition(label)? {
            skip.push((p.start, p.end()));
        }
    }
    let guid = disk.disk_guid();
    let found = region::scan(disk, &skip)?;
    Ok(found
        .into_iter()
        .filter(|r| r.disk_guid == guid && r.sector_size == disk.sector_size())
        .max_by_key(|r| (r.created_at, r.seq)))
}

/// Continues an interrupted migration from its header: writes the table if that is where it
/// stopped, then restores. See [`Resumed`].
pub fn resume(disk: &mut Disk, labels: &Labels) -> Result<Resumed> {
    let Some(mut rec) = resume_phase(disk, labels)? else {
        return Ok(Resumed::Nothing);
    };
    log::info!(
        "layout: resuming the migration {} (phase {})",
        rec.id,
        rec.phase
    );
    let parts = disk.partitions();
    if !same_layout(&parts, &rec.table) {
        if rec.phase == Phase::BackedUp && same_layout(&parts, &rec.previous) {
            return Ok(Resumed::StartOver(rec));
        }
        bail!(
            "an interrupted layout migration ({}) was found, but the partition table of {} is neither the old nor the new one",
            rec.phase,
            disk.path().display()
        );
    }
    write_table(disk, &mut rec)?;
    restore(disk, &mut rec)?;
    Ok(Resumed::Restored(rec))
}

/// Drops the header of a backup that was never used: the old table is still in place, so
/// the data partition is intact and is the truth ([`Resumed::StartOver`]).
pub fn discard(disk: &Disk, rec: &Record) -> Result<()> {
    if rec.phase != Phase::BackedUp || !same_layout(&disk.partitions(), &rec.previous) {
        bail!(
            "the migration {} is past its backup ({}): it must be resumed, not discarded",
            rec.id,
            rec.phase
        );
    }
    region::clear(disk, rec.region_start)
}

/// Ends a restored migration (once the caller has recorded it in state.json): clears the
/// backup header, so nothing resumes it again.
pub fn finish(disk: &Disk, rec: &Record) -> Result<()> {
    if rec.phase != Phase::Restored {
        bail!(
            "the migration {} is not restored yet ({})",
            rec.id,
            rec.phase
        );
    }
    region::clear(disk, rec.region_start)
}
