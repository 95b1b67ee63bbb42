//! Filesystems on partitions: format a slot, populate it from the rootfs payload, and the
//! data partition of a new device.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::bundle::reader::Bundle;
use crate::bundle::stream::zstd_stream;
use crate::data::fingerprint;
use crate::disk::Disk;
use crate::ext4;
use crate::model::manifest::PayloadKind;
use crate::model::slot::Slot;

/// The partition labelled `label`, as the ext4 writer's destination: resolved on a table
/// validated when read, and bounds-checked for every write (see `ext4::Dest`).
fn dest(disk: &Path, label: &str) -> Result<ext4::Dest> {
    ext4::Dest::partition(&Disk::open(disk)?, label)
}

/// Formats the partition labelled `label` as an empty ext4 filesystem named after it.
pub fn format(disk: &Path, label: &str, slot: Slot) -> Result<()> {
    let dest = dest(disk, label)?;
    let opts = ext4::MkfsOptions {
        label: Some(label.to_string()),
        ..Default::default()
    };
    ext4::format(&dest, &opts).with_context(|| format!("formatting slot {slot} ({label})"))
}

/// Where the new slot gets the migrated NetworkManager keyfiles.
pub const SLOT_CONNECTIONS_DIR: &str = "etc/NetworkManager/system-connections";

/// The migrated NetworkManager keyfiles kept on the data partition
/// (`DATA/hup/migrated/system-connections/`, see docs/migrations.md), as files for the new
/// slot's `/etc/NetworkManager/system-connections/` (mode 0600). Every update carries them
/// into its slot, so they survive later updates too.
pub fn migrated_files(hup_dir: &Path) -> Result<Vec<fingerprint::ExtraFile>> {
    let dir = hup_dir.join(
        crate::migrate::CONNECTIONS_DIR
            .strip_prefix("hup/")
            .expect("CONNECTIONS_DIR is under hup/"),
    );
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Temporary files of an interrupted migration run are not connections.
        if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let data =
            std::fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
        out.push(fingerprint::ExtraFile {
            path: format!("{SLOT_CONNECTIONS_DIR}/{name}"),
            data,
            mode: 0o600,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Writes the bundle's rootfs into the (freshly formatted) partition labelled `label`, with
/// `extra` files added (the migrated configuration). A delta bundle's stream is expanded
/// over the running slot, `base_label` (read-only), into the same tar a full bundle has.
pub fn populate(
    disk: &Path,
    label: &str,
    base_label: &str,
    bundle: &Bundle,
    extra: Vec<fingerprint::ExtraFile>,
) -> Result<ext4::Stats> {
    let dest = dest(disk, label)?;
    let reader = bundle
        .reader_for(PayloadKind::Rootfs)?
        .context("bundle has no rootfs")?;
    let (stream, known) = super::delta::rootfs_tar(disk, base_label, bundle, zstd_stream(reader))?;
    // The slot records its own fingerprint (etc/hup/fingerprint.json), computed from the
    // same stream while it is written (docs/fingerprint.md).
    for f in &extra {
        log::info!("populate: adding /{} (migrated)", f.path);
    }
    let (stream, recorded) = fingerprint::embed_known(stream, extra, known.clone())?;
    let stats = ext4::populate(&dest, stream)
        .with_context(|| format!("writing the rootfs into {label}"))?;
    log::info!("populate: {stats}");
    if let Some(k) = &known {
        log::info!(
            "populate: the digests of {} copied files are the ones preflight checked",
            k.taken()
        );
    }
    if let Some(d) = &bundle.manifest.delta {
        let fp = recorded
            .of_stream()
            .context("populate read the rootfs stream to its end without a fingerprint")?;
        super::delta::check_written(&fp, &d.fingerprint)
            .with_context(|| format!("slot {label}"))?;
    }
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
    let dest = dest(disk, label)?;
    let opts = ext4::MkfsOptions {
        label: Some(label.to_string()),
        ..Default::default()
    };
    ext4::format(&dest, &opts).with_context(|| format!("formatting {label}"))?;
    ext4::populate(&dest, std::io::Cursor::new(tar)).with_context(|| format!("writing {label}"))?;
    Ok(())
}
