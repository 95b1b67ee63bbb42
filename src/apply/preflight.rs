//! Preflight: every check that can refuse an update runs here, before the first write.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::context::Context;
use crate::boot::grub_script;
use crate::bundle::reader::Bundle;
use crate::disk::{Disk, Esp};
use crate::model::config::BootBackendKind;
use crate::model::manifest::PayloadKind;
use crate::model::slot::Slot;
use crate::model::state::State;
use crate::model::version::Version;

/// Verifies the bundle (signature and every payload hash) and checks that it fits this
/// device: compatible, `min_from_version`, known migrations, a target slot that is none of
/// and overlaps none of the other hup partitions, slot size and room on the boot partition.
pub fn check(
    ctx: &Context,
    state: &State,
    bundle_path: &Path,
    current: Slot,
    target: Slot,
) -> Result<Bundle> {
    let bundle = Bundle::open(bundle_path, ctx.keys)?;
    bundle.verify_payloads()?;
    let m = &bundle.manifest;
    if m.compatible != ctx.config.compatible {
        bail!(
            "bundle is for device type {:?}, this device is {:?}",
            m.compatible,
            ctx.config.compatible
        );
    }
    if let Some(min) = m.min_from_version() {
        let running = state.slot(current).version.as_deref().with_context(|| {
            format!("bundle requires at least version {min}, and the version of slot {current} is unknown")
        })?;
        let running =
            Version::parse(running).with_context(|| format!("version of slot {current}"))?;
        if running < min {
            bail!(
                "bundle requires at least version {min} to update from; slot {current} runs {running}"
            );
        }
    }
    for id in &m.migrations {
        if !crate::migrate::is_known(id) {
            bail!("bundle needs migration {id:?}, which this hup does not have");
        }
    }
    if !m.migrations.is_empty() {
        // A configuration a migration cannot convert refuses the update before any write.
        let (mctx, _old_boot) = super::context::migration_context(ctx)?;
        crate::migrate::check_all(&m.migrations, &mctx).context("migrations")?;
    }

    let labels = &ctx.config.labels;
    if m.requires_unmodified_base {
        check_base(ctx, current)?;
    }
    let disk = Disk::open_read_only(ctx.disk)?;
    disk.distinct_partitions(current.label(labels), target.label(labels))?;
    let running = format!("running slot {current}");
    // The target is written in full: it must be none of, and overlap none of, the other hup
    // partitions, whatever the labels in system.json say.
    let target_part = disk.target_apart(
        target.label(labels),
        &[
            ("boot partition", labels.boot.as_str()),
            (running.as_str(), current.label(labels)),
            ("data partition", labels.data.as_str()),
        ],
    )?;
    let rootfs = m
        .payload(PayloadKind::Rootfs)
        .expect("validated manifest has a rootfs");
    // With a layout, the slot has the layout's size once the migration ran.
    let slot_len = m
        .layout
        .as_ref()
        .and_then(|l| l.partition(target.label(labels)))
        .and_then(|p| p.size)
        .map_or(Some(target_part.len), |size| {
            size.div_ceil(1 << 20).checked_mul(1 << 20)
        })
        .unwrap_or(u64::MAX);
    // A delta's stream is smaller than the tar it expands to.
    let rootfs_tar = m
        .delta
        .as_ref()
        .map_or(rootfs.unpacked_size, |d| d.tar_size);
    if rootfs_tar > slot_len {
        bail!(
            "rootfs needs {} bytes, more than slot {target}'s partition {} ({slot_len} bytes)",
            rootfs_tar,
            target.label(labels),
        );
    }
    let cmdline = super::bootfiles::check_payload(&bundle)?;
    if let (BootBackendKind::Grub, Some(cmdline)) = (ctx.config.boot_backend, &cmdline) {
        // The slot's GRUB snippet is written after its files: refuse now what it cannot hold.
        grub_script::kernel_args(target.label(labels), target, cmdline)
            .context("the boot payload's cmdline")?;
    }
    if let Some(boot) = m.payload(PayloadKind::Boot) {
        let esp = Esp::open(disk.open_partition(&labels.boot)?)?;
        let dir = super::bootfiles::slot_dir(target);
        let mut reusable = 0;
        if esp.exists(&dir)? {
            for e in esp.list(&dir)? {
                reusable += esp.allocation(e.len);
            }
        }
        let free = esp.free_bytes()? + reusable;
        // The tar size bounds the files' sizes; add a cluster per file for rounding.
        let needed = boot.unpacked_size + 64 * esp.cluster_size();
        if needed > free {
            bail!(
                "boot partition {} has {free} bytes free for slot {target}, the boot files need {needed}",
                labels.boot
            );
        }
    }
    // Last, as it reads the most: a delta's base, every base file it names checked.
    super::delta::preflight(
        ctx.disk,
        current.label(labels),
        state.slot(current).version.as_deref(),
        Some(&ctx.data.root),
        &bundle,
    )
    .context("delta bundle")?;
    log::info!(
        "preflight: {} {} for {} into slot {target} (running slot {current}), signed by key {}",
        m.compatible,
        m.version,
        ctx.config.compatible,
        bundle.signed_by.as_deref().unwrap_or("?")
    );
    Ok(bundle)
}

/// Refuses a bundle whose partition layout the disk does not have yet: the layout migration
/// (`super::layout::migrate_staged`) runs first, in the initramfs.
pub fn check_layout(ctx: &Context, bundle: &Bundle, current: Slot) -> Result<()> {
    let Some(target) = &bundle.manifest.layout else {
        return Ok(());
    };
    let disk = Disk::open_read_only(ctx.disk)?;
    if crate::layout::plan_bundle(&disk, target, &ctx.config.labels, current)?.is_some() {
        bail!(
            "the bundle needs partition layout version {} and this disk has another one: the layout migration must run first (the initramfs runs it at boot)",
            target.version
        );
    }
    Ok(())
}

/// For a bundle with `requires_unmodified_base`: the running slot must match the
/// fingerprint recorded in it when it was written (docs/fingerprint.md), as `hup stage`
/// checked it.
fn check_base(ctx: &Context, current: Slot) -> Result<()> {
    let base = ctx.base.with_context(|| {
        format!("the bundle requires an unmodified base system, and slot {current}'s files are not available to check")
    })?;
    let label = current.label(&ctx.config.labels);
    base.with_root(label, &mut |root| {
        crate::data::fingerprint::check_base(root, current)
    })
}
