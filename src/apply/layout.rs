//! The layout migration as the apply pipeline runs it (docs/layout-migration.md, "In the
//! pipeline"): before the normal steps, when the staged bundle names a partition layout the
//! disk does not have. `crate::layout` does the disk work; this module adds what is around
//! it: every check that can refuse before the first write, the boot switches around the
//! normalization and the backup, the data partition's mounts, and the record in state.json.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::context::Context;
use crate::boot;
use crate::bundle::reader::Bundle;
use crate::data::backup::Source;
use crate::disk::{Disk, Esp, Part};
use crate::fsutil::{DataDir, now};
use crate::layout::{self, Record, Resumed};
use crate::model::config::{BootBackendKind, SystemConfig};
use crate::model::slot::Slot;
use crate::model::state::{LayoutMigration, LayoutPhase, SlotInfo};

/// How the caller holds the data partition: the init mounts the partition's device node;
/// tests use loop devices.
pub trait DataMount {
    /// Where the data partition is mounted (the root of its filesystem).
    fn dir(&self) -> &Path;
    /// Stops the caller's own writes below [`DataMount::dir`] (the boot log) before the
    /// backup: nothing else writes there in the initramfs.
    fn quiesce(&mut self);
    /// Unmounts the data partition: its range changes with the new table.
    fn unmount(&mut self) -> Result<()>;
    /// Mounts the data partition `part` of `disk` read-write at [`DataMount::dir`].
    fn mount(&mut self, disk: &Path, part: &Part) -> Result<()>;
}

/// Runs the layout migration the staged bundle needs, if any; returns whether one ran
/// (not when nothing is staged, the manifest has no layout, or the disk has it already).
/// Every refusal (bundle, device, sizes, data that cannot fit) comes before the first
/// write. On success the data partition is mounted again at `mount.dir()` with the data and the staged bundle restored; the
/// caller continues with the normal apply.
pub fn migrate_staged(ctx: &Context, mount: &mut dyn DataMount) -> Result<bool> {
    let mut spare = None;
    let result = migrate_inner(ctx, mount, &mut spare);
    if let (Err(e), Some(slot)) = (&result, spare) {
        // Recorded when the data partition is there (always before the point of no return).
        if let Ok(mut state) = ctx.data.load_state() {
            let version = state
                .staged
                .as_ref()
                .map(|s| s.version.clone())
                .unwrap_or_default();
            let reason = format!("layout migration: {e:#}");
            state.record_failed(&version, slot, &reason, None, now());
            if let Some(m) = state
                .layout_migration
                .as_mut()
                .filter(|m| m.phase == LayoutPhase::Started)
            {
                m.phase = LayoutPhase::Failed;
            }
            if let Err(e) = ctx.data.save_state(&state) {
                log::warn!("recording the failed layout migration: {e:#}");
            }
        }
    }
    result
}

fn migrate_inner(
    ctx: &Context,
    mount: &mut dyn DataMount,
    spare: &mut Option<Slot>,
) -> Result<bool> {
    let mut state = ctx.data.load_state()?;
    let Some(staged) = state.staged.clone() else {
        return Ok(false);
    };
    let bundle_path = ctx.data.staged_dir().join(&staged.file);
    let target = Bundle::open(&bundle_path, ctx.keys)?.manifest.layout;
    let Some(target) = target else {
        return Ok(false);
    };
    let labels = &ctx.config.labels;
    let backend = boot::open_config(ctx.config, ctx.disk);
    let mut current = super::context::current_slot(backend.as_ref())?;
    *spare = Some(current.other());
    let disk = Disk::open(ctx.disk)?;
    let Some(mut plan) = layout::plan_bundle(&disk, &target, labels, current)? else {
        return Ok(false);
    };
    log::info!(
        "layout: {} {} needs partition layout version {}\n{plan}",
        ctx.config.compatible,
        staged.version,
        target.version
    );
    // Everything that can refuse, before the first write: the whole bundle, the device,
    // the migrations, the base system, and whether the data fits.
    let bundle = super::preflight::check(ctx, &state, &bundle_path, current, current.other())?;
    let mut src = Source::new(mount.dir())?;
    src.exclude(&bundle_path)?;
    let est = plan.check_fit(&src, staged.size)??;
    log::info!(
        "layout: the backup needs {} {} of the {} region",
        if est.exact { "exactly" } else { "at most" },
        crate::size::human(est.needed),
        crate::size::human(plan.region.len)
    );
    // A run that a power cut interrupted before the point of no return left its record
    // (with the normalization it did): keep it.
    let resumed = state.layout_migration.as_ref().is_some_and(|m| {
        m.phase == LayoutPhase::Started
            && m.layout_version == target.version
            && m.bundle_version == bundle.manifest.version
    });
    if !resumed {
        state.layout_migration = Some(LayoutMigration::started(
            target.version,
            &bundle.manifest.version,
            now(),
        ));
        ctx.data.save_state(&state)?;
    }
    drop(bundle);

    let mut timings = Vec::new();
    if let Some(n) = plan.normalize.clone() {
        let t = Instant::now();
        backend.mark_bad(n.to)?;
        layout::normalize(&disk, &plan)?;
        copy_boot_files(ctx.disk, ctx.config, n.from, n.to)?;
        // state.json first: a power cut before the boot switch only redoes the copy.
        let info = state.slot(n.from).clone();
        *state.slot_mut(n.to) = info;
        let m = state.layout_migration.as_mut().expect("set above");
        m.normalized = true;
        m.timings_ms.retain(|(k, _)| k != "normalize");
        m.timings_ms.push(("normalize".into(), millis(t)));
        ctx.data.save_state(&state)?;
        backend.mark_good(n.to)?;
        log::info!(
            "layout: slot {} now runs the system of slot {}; slot {} is the spare",
            n.to,
            n.from,
            n.from
        );
        current = n.to;
        *spare = Some(current.other());
        plan = layout::plan(&disk, &target, labels, current)?
            .context("after the normalization the disk needs no migration: unexpected")?;
    }

    // The spare slot becomes the backup region.
    backend.mark_bad(current.other())?;
    *state.slot_mut(current.other()) = SlotInfo::EMPTY;
    ctx.data.save_state(&state)?;
    mount.quiesce();
    let t = Instant::now();
    let mut rec = layout::backup_checked(&disk, &plan, mount.dir(), Some(&bundle_path), est)?;
    timings.push(("backup".into(), t.elapsed().as_secs_f64()));
    drop(disk);

    mount.unmount()?;
    let mut disk = Disk::open(ctx.disk)?;
    let t = Instant::now();
    layout::write_table(&mut disk, &mut rec)?;
    timings.push(("table".into(), t.elapsed().as_secs_f64()));
    let t = Instant::now();
    layout::restore(&mut disk, &mut rec)?;
    timings.push(("restore".into(), t.elapsed().as_secs_f64()));
    let data_part = disk.partition(&labels.data)?;
    drop(disk);
    mount.mount(ctx.disk, &data_part)?;
    complete(ctx.disk, ctx.data, &rec, &timings)?;
    Ok(true)
}

/// At boot, before the data partition is mounted: continues a migration that a power cut
/// interrupted past its backup (see [`layout::resume`]). Returns the restored record, which
/// the caller passes to [`complete`] once the data partition is mounted. A backup that was
/// never used (old table still in place) is discarded: the data partition is the truth.
pub fn resume_at_boot(
    disk_path: &Path,
    labels: &crate::model::config::Labels,
) -> Result<Option<(Record, f64)>> {
    let t = Instant::now();
    let mut disk = Disk::open(disk_path)?;
    match layout::resume(&mut disk, labels)? {
        Resumed::Nothing => Ok(None),
        Resumed::StartOver(rec) => {
            log::warn!(
                "layout: the backup of migration {} was made but the table not written: the data partition is intact; the migration starts over",
                rec.id
            );
            layout::discard(&disk, &rec)?;
            Ok(None)
        }
        Resumed::Restored(rec) => Ok(Some((rec, t.elapsed().as_secs_f64()))),
    }
}

/// Records a restored migration in state.json (on the restored data partition) and clears
/// the backup header.
pub fn complete(
    disk_path: &Path,
    data: &DataDir,
    rec: &Record,
    timings: &[(String, f64)],
) -> Result<()> {
    let mut state = data.load_state()?;
    let m = state
        .layout_migration
        // The record went missing (a state.json restored from an older backup): the
        // header still tells what the migration was.
        .get_or_insert_with(|| LayoutMigration::started(rec.layout_version, "", rec.created_at));
    m.phase = LayoutPhase::Completed;
    m.completed_at = Some(now());
    m.backup_bytes = rec.data.len;
    m.tar_bytes = rec.tar_bytes;
    m.entries = rec.entries;
    // The normalization recorded its time before the backup; these are the later phases.
    m.timings_ms.extend(
        timings
            .iter()
            .map(|(k, s)| (k.clone(), (s * 1000.0).round() as u64)),
    );
    let summary = m
        .timings_ms
        .iter()
        .map(|(k, ms)| format!("{k} {:.2} s", *ms as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(", ");
    data.save_state(&state)?;
    layout::finish(&Disk::open(disk_path)?, rec)?;
    log::info!(
        "layout migration to version {} complete: {} of data ({} entries, {} of tar) backed up and restored; {summary}",
        rec.layout_version,
        crate::size::human(rec.data.len),
        rec.entries,
        crate::size::human(rec.tar_bytes)
    );
    Ok(())
}

/// Makes `to` boot the system just copied from `from`: its directory on the boot partition
/// becomes a copy of `from`'s, and with systemd-boot it gets `from`'s entry (with grub, its
/// snippet).
fn copy_boot_files(disk_path: &Path, config: &SystemConfig, from: Slot, to: Slot) -> Result<()> {
    let disk = Disk::open(disk_path)?;
    let esp = Esp::open(disk.open_partition(&config.labels.boot)?)?;
    let (src, dst) = (
        super::bootfiles::slot_dir(from),
        super::bootfiles::slot_dir(to),
    );
    let mut cmdline = String::new();
    if esp.exists(&src)? {
        super::bootfiles::empty_slot_dir(&esp, &dst)?;
        for e in esp.list(&src)? {
            if e.is_dir {
                bail!("{src}/{} is a directory: boot files are flat", e.name);
            }
            let bytes = esp.read_file(&format!("{src}/{}", e.name))?;
            if e.name == "cmdline" {
                cmdline = String::from_utf8_lossy(&bytes).trim().to_string();
            }
            let tmp = format!("{dst}/{}.new", e.name);
            esp.write_bytes(&tmp, &bytes)?;
            esp.rename(&tmp, &format!("{dst}/{}", e.name))?;
        }
    }
    esp.close().context("writing the boot partition")?;
    match config.boot_backend {
        BootBackendKind::SystemdBoot => {
            crate::boot::systemd_boot::SystemdBootBackend::with_labels(
                disk_path,
                config.labels.clone(),
            )
            .install_entry(to, &cmdline)?;
        }
        // grub: the slot's snippet names its own directory and hup.slot=.
        BootBackendKind::Grub => {
            super::bootfiles::install_grub_entry(disk_path, config, to, &cmdline)?;
        }
        BootBackendKind::Uboot => {
            super::bootfiles::install_uboot_cmdline(disk_path, config, to, &cmdline)?;
        }
        BootBackendKind::Gpt => {}
    }
    Ok(())
}

fn millis(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
