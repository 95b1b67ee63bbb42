//! The boot payload into the slot's directory on the boot partition (`/hup/<slot>/`).

use std::io::Read;

use anyhow::{Context as _, Result, bail};

use std::path::Path;

use crate::boot::Slot;
use crate::bundle::reader::Bundle;
use crate::bundle::stream::zstd_stream;
use crate::disk::{Disk, Esp};
use crate::model::config::SystemConfig;
use crate::model::manifest::PayloadKind;

/// `hup/<slot>` on the boot partition.
pub fn slot_dir(slot: Slot) -> String {
    format!("hup/{slot}")
}

/// Makes `dir` an empty directory on the boot partition (its old files removed; boot
/// directories are flat, so a subdirectory is refused).
pub fn empty_slot_dir(esp: &Esp, dir: &str) -> Result<()> {
    if esp.exists(dir)? {
        for e in esp.list(dir)? {
            if e.is_dir {
                bail!("{dir}/{} is a directory: boot payloads are flat", e.name);
            }
            esp.remove(&format!("{dir}/{}", e.name))?;
        }
    }
    esp.create_dir_all(dir)
}

/// Replaces the slot's boot files with the bundle's: old files removed, new ones written
/// under temporary names and renamed. For systemd-boot, also writes the slot's entry (not
/// yet bootable: `switch-boot` makes it so). Returns the number of files written.
pub fn install(
    disk_path: &Path,
    config: &SystemConfig,
    bundle: &Bundle,
    slot: Slot,
) -> Result<u64> {
    let Some(reader) = bundle.reader_for(PayloadKind::Boot)? else {
        log::info!("bundle has no boot payload");
        return Ok(0);
    };
    let disk = Disk::open(disk_path)?;
    let esp = Esp::open(disk.open_partition(&config.labels.boot)?)?;
    let dir = slot_dir(slot);
    empty_slot_dir(&esp, &dir)?;
    let mut stream = zstd_stream(reader);
    let (files, cmdline) = write_payload(&esp, &dir, &mut stream)?;
    stream.finish().context("boot payload")?;
    esp.close().context("writing the boot partition")?;
    if config.boot_backend == "systemd-boot" {
        crate::boot::systemd_boot::SystemdBootBackend::with_labels(
            disk_path,
            config.labels.clone(),
        )
        .install_entry(slot, cmdline.trim())?;
    }
    log::info!("boot files: {files} files into {dir}");
    Ok(files)
}

/// Writes the files of a boot payload tar (plain, already decompressed) into `dir` on the
/// boot partition, each under a temporary name renamed into place. Returns the number of
/// files written and the content of `cmdline` (empty when there is none).
pub fn write_payload(esp: &Esp, dir: &str, tar: impl Read) -> Result<(u64, String)> {
    let mut cmdline = String::new();
    let mut files = 0;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("reading the boot payload")? {
        let mut entry = entry.context("reading the boot payload")?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_start_matches("./").trim_end_matches('/');
        let ty = entry.header().entry_type();
        if name.is_empty() && ty.is_dir() {
            continue;
        }
        if !ty.is_file() || name.contains('/') || name == ".." || name.is_empty() {
            bail!("boot payload entry {name:?}: only plain files at the top level are allowed");
        }
        let path = format!("{dir}/{name}");
        let tmp = format!("{path}.new");
        if name == "cmdline" {
            entry
                .read_to_string(&mut cmdline)
                .context("reading cmdline")?;
            esp.write_bytes(&tmp, cmdline.as_bytes())?;
        } else {
            let n = esp.write_file(&tmp, &mut entry)?;
            if n != entry.header().size()? {
                bail!("{path}: short write ({n} bytes)");
            }
        }
        esp.rename(&tmp, &path)?;
        files += 1;
    }
    Ok((files, cmdline))
}
