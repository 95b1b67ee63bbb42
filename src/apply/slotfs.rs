//! Filesystems on partitions: format a slot, populate it from the rootfs payload, and the
//! data partition of a new device.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::boot::Slot;
use crate::bundle::reader::Bundle;
use crate::bundle::stream::zstd_stream;
use crate::data::fingerprint;
use crate::disk::Disk;
use crate::ext4;
use crate::model::manifest::PayloadKind;

/// Formats the partition labelled `label` as an empty ext4 filesystem named after it.
pub fn format(disk: &Path, label: &str, slot: Slot) -> Result<()> {
    let part = Disk::open_read_only(disk)?.partition(label)?;
    let opts = ext4::MkfsOptions {
        label: Some(label.to_string()),
        ..Default::default()
    };
    ext4::format(disk, part.start, part.len, &opts)
        .with_context(|| format!("formatting slot {slot} ({label})"))
}

/// Writes the bundle's rootfs into the (freshly formatted) partition labelled `label`.
pub fn populate(disk: &Path, label: &str, bundle: &Bundle) -> Result<ext4::Stats> {
    let part = Disk::open_read_only(disk)?.partition(label)?;
    let reader = bundle
        .reader_for(PayloadKind::Rootfs)?
        .context("bundle has no rootfs")?;
    let stream = zstd_stream(reader);
    // The slot records its own fingerprint (etc/hup/fingerprint.json), computed from the
    // same stream while it is written (docs/fingerprint.md).
    let (stream, recorded) = fingerprint::embed(stream)?;
    let stats = ext4::populate(disk, part.start, part.len, stream)
        .with_context(|| format!("writing the rootfs into {label}"))?;
    log::info!("populate: {stats}");
    if let Some(fp) = recorded.get() {
        log::info!(
            "populate: fingerprint of {} entries recorded in /{}",
            fp.entries.len(),
            fingerprint::EMBED_PATH
        );
    }
    Ok(stats)
}

/// Formats the partition labelled `label` and fills it from a tar stream held in memory.
pub fn format_with(disk: &Path, label: &str, tar: Vec<u8>) -> Result<()> {
    let part = Disk::open_read_only(disk)?.partition(label)?;
    let opts = ext4::MkfsOptions {
        label: Some(label.to_string()),
        ..Default::default()
    };
    ext4::format(disk, part.start, part.len, &opts)
        .with_context(|| format!("formatting {label}"))?;
    ext4::populate(disk, part.start, part.len, std::io::Cursor::new(tar))
        .with_context(|| format!("writing {label}"))?;
    Ok(())
}
