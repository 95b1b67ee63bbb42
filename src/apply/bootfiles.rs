//! The boot payload into the slot's directory on the boot partition (`/hup/<slot>/`).

use std::io::Read;

use anyhow::{Context as _, Result, bail};

use std::path::Path;

use crate::boot::grub_script;
use crate::bundle::reader::Bundle;
use crate::bundle::stream::zstd_stream;
use crate::disk::{BootNames, Disk, Esp, ShortName};
use crate::model::config::{BootBackendKind, SystemConfig};
use crate::model::manifest::PayloadKind;
use crate::model::slot::Slot;

/// `hup/<slot>` on the boot partition.
pub fn slot_dir(slot: Slot) -> String {
    format!("hup/{slot}")
}

/// Makes `dir` an empty directory on the boot partition (its old files removed; boot
/// directories are flat, so a subdirectory is refused). Linear work: the files are first
/// gathered into one (`Esp::gather_dir`, which also repairs a bulk write cut short).
pub fn empty_slot_dir(esp: &Esp, dir: &str) -> Result<()> {
    if esp.exists(dir)? {
        esp.gather_dir(dir)?;
        for e in esp.list(dir)? {
            if e.is_dir {
                bail!("{dir}/{} is a directory: boot payloads are flat", e.name);
            }
            esp.remove(&format!("{dir}/{}", e.name))?;
        }
    }
    esp.create_dir_all(dir)
}

/// The file name of a boot payload entry and its FAT short name: `None` for the top
/// directory itself; an error for anything but a plain file at the top level under a name
/// FAT keeps (checked by `names`).
fn entry_name<R: Read>(
    entry: &tar::Entry<'_, R>,
    names: &mut BootNames,
) -> Result<Option<(String, ShortName)>> {
    let raw = entry.path_bytes();
    let name = std::str::from_utf8(&raw).map_err(|_| {
        anyhow::anyhow!(
            "boot payload entry {:?}: name is not UTF-8",
            String::from_utf8_lossy(&raw)
        )
    })?;
    let name = name.trim_start_matches("./").trim_end_matches('/');
    let ty = entry.header().entry_type();
    if (name.is_empty() || name == ".") && ty.is_dir() {
        return Ok(None);
    }
    if !ty.is_file() || name.contains('/') {
        bail!("boot payload entry {name:?}: only plain files at the top level are allowed");
    }
    let short = names
        .add(name)
        .with_context(|| "boot payload".to_string())?;
    Ok(Some((name.to_string(), short)))
}

/// Longest `cmdline` file of a boot payload the preflight reads (a kernel takes a few KiB).
const MAX_CMDLINE: u64 = 64 << 10;

/// Refuses, before anything is written, a boot payload the boot partition cannot hold as
/// given: names FAT forbids, alters or takes as one (`vmlinuz` and `VMLINUZ`), entries other
/// than plain top-level files, more than [`crate::disk::MAX_BOOT_FILES`] files, a `cmdline`
/// over 64 KiB or not UTF-8. Reads the payload's tar headers and its `cmdline` (the payload
/// was verified before); returns that `cmdline` (`None` without a boot payload, empty when
/// the payload has no `cmdline`).
pub fn check_payload(bundle: &Bundle) -> Result<Option<String>> {
    let Some(reader) = bundle.reader_for(PayloadKind::Boot)? else {
        return Ok(None);
    };
    let mut stream = zstd_stream(reader);
    let mut names = BootNames::new();
    let mut cmdline = String::new();
    {
        let mut archive = tar::Archive::new(&mut stream);
        for entry in archive.entries().context("reading the boot payload")? {
            let entry = entry.context("reading the boot payload")?;
            if let Some((name, _)) = entry_name(&entry, &mut names)?
                && name == "cmdline"
            {
                if entry.header().size()? > MAX_CMDLINE {
                    bail!("the boot payload's cmdline is over {MAX_CMDLINE} bytes");
                }
                let mut entry = entry;
                entry
                    .read_to_string(&mut cmdline)
                    .context("reading the boot payload's cmdline")?;
            }
        }
    }
    stream.finish().context("boot payload")?;
    Ok(Some(cmdline))
}

/// Replaces the slot's boot files with the bundle's: old files removed, new ones written
/// under their names (the slot is marked bad while this runs, and its boot entry is
/// written last). For systemd-boot, also writes the slot's entry (not yet bootable:
/// `switch-boot` makes it so); for grub, removes the slot's GRUB snippet first and writes
/// it last ([`install_grub_entry`]). Returns the number of files written.
///
/// The files are written in work linear in their number (`Esp::bulk_writer`), each under its
/// own name: fatfs would scan the whole directory for every create.
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
    if config.boot_backend == BootBackendKind::Grub {
        // Not even GRUB's rescue path may load a slot while its files are being written.
        esp.remove_if_exists(&grub_script::slot_cfg_path(slot))?;
    }
    empty_slot_dir(&esp, &dir)?;
    let mut stream = zstd_stream(reader);
    let (files, cmdline) = write_payload(&esp, &dir, &mut stream)?;
    stream.finish().context("boot payload")?;
    esp.close().context("writing the boot partition")?;
    match config.boot_backend {
        BootBackendKind::SystemdBoot => {
            crate::boot::systemd_boot::SystemdBootBackend::with_labels(
                disk_path,
                config.labels.clone(),
            )
            .install_entry(slot, cmdline.trim())?;
        }
        BootBackendKind::Grub => install_grub_entry(disk_path, config, slot, &cmdline)?,
        BootBackendKind::Uboot => install_uboot_cmdline(disk_path, config, slot, &cmdline)?,
        BootBackendKind::Gpt => {}
    }
    log::info!("boot files: {files} files into {dir}");
    Ok(files)
}

/// Writes `slot`'s extra kernel command line for hup's U-Boot script
/// (`/hup/<slot>/cmdline.env`, `hup_cmdline=<cmdline>`, imported with `env import -t`).
pub fn install_uboot_cmdline(
    disk_path: &Path,
    config: &SystemConfig,
    slot: Slot,
    cmdline: &str,
) -> Result<()> {
    let cmdline = cmdline.split_whitespace().collect::<Vec<_>>().join(" ");
    let disk = Disk::open(disk_path)?;
    let esp = Esp::open(disk.open_partition(&config.labels.boot)?)?;
    esp.write_bytes(
        &crate::boot::uboot_script::cmdline_env_path(slot),
        format!("hup_cmdline={cmdline}\n").as_bytes(),
    )?;
    esp.close().context("writing the boot partition")
}

/// Writes `slot`'s GRUB snippet (`/EFI/hup/slot-<s>.cfg`, sourced by hup's GRUB script) for
/// boot files already in `/hup/<slot>/`: `vmlinuz`, and `initrd` when present, with
/// `root=PARTLABEL=<root label> hup.slot=<slot>` and `cmdline` on the kernel command line.
/// Written under a temporary name and renamed, after the boot files: the grub backend's
/// equivalent of systemd-boot's entry.
pub fn install_grub_entry(
    disk_path: &Path,
    config: &SystemConfig,
    slot: Slot,
    cmdline: &str,
) -> Result<()> {
    let label = slot.label(&config.labels);
    // A command line GRUB cannot pass on fails here, before the boot partition is opened.
    grub_script::kernel_args(label, slot, cmdline)?;
    let disk = Disk::open(disk_path)?;
    let esp = Esp::open(disk.open_partition(&config.labels.boot)?)?;
    let dir = slot_dir(slot);
    if !esp.exists(&format!("{dir}/vmlinuz"))? {
        bail!("slot {slot} has no kernel {dir}/vmlinuz on the boot partition");
    }
    let initrd = esp.exists(&format!("{dir}/initrd"))?;
    let text = grub_script::slot_cfg(slot, label, cmdline, initrd)?;
    let path = grub_script::slot_cfg_path(slot);
    let tmp = format!("{path}.new");
    esp.write_bytes(&tmp, text.as_bytes())?;
    esp.rename(&tmp, &path)?;
    esp.close()
        .with_context(|| format!("writing the GRUB snippet of slot {slot}"))
}

/// Writes the files of a boot payload tar (plain, already decompressed) into the empty
/// directory `dir` on the boot partition in linear work (`Esp::bulk_writer`; names checked
/// as the preflight checks them). Returns the number of files written and the content of
/// `cmdline` (empty when there is none).
pub fn write_payload(esp: &Esp, dir: &str, tar: impl Read) -> Result<(u64, String)> {
    let mut cmdline = String::new();
    let mut names = BootNames::new();
    let mut files = 0;
    let mut writer = esp.bulk_writer(dir)?;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("reading the boot payload")? {
        let mut entry = entry.context("reading the boot payload")?;
        let Some((name, short)) = entry_name(&entry, &mut names)? else {
            continue;
        };
        let path = format!("{dir}/{name}");
        if name == "cmdline" {
            entry
                .read_to_string(&mut cmdline)
                .context("reading cmdline")?;
            writer.add(&name, short, &mut cmdline.as_bytes())?;
        } else {
            let n = writer.add(&name, short, &mut entry)?;
            if n != entry.header().size()? {
                bail!("{path}: short write ({n} bytes)");
            }
        }
        files += 1;
    }
    writer
        .finish()
        .with_context(|| format!("writing the boot files into {dir}"))?;
    Ok((files, cmdline))
}
