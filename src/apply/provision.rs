//! `hup provision`: a factory image made from a bundle. GPT with the four partitions, the
//! boot partition (and systemd-boot when asked), slot A installed and marked good, slot B
//! empty, the data partition with `hup/` and a state.json that records slot A's version.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::{bootfiles, slotfs};
use crate::boot;
use crate::bundle::reader::Bundle;
use crate::bundle::sign::TrustedKeys;
use crate::disk::{self, Disk};
use crate::fsutil::{DataDir, now};
use crate::model::config::{BootBackendKind, SystemConfig};
use crate::model::manifest::PayloadKind;
use crate::model::slot::Slot;
use crate::model::state::State;

const MIB: u64 = 1 << 20;
/// Default boot partition size.
pub const DEFAULT_BOOT_SIZE: u64 = 64 * MIB;
/// Default EFI loader for `--boot-backend systemd-boot` (Debian's systemd-boot-efi).
pub const DEFAULT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

#[derive(Debug)]
pub struct ProvisionOptions {
    pub bundle: PathBuf,
    pub keys: TrustedKeys,
    pub disk: PathBuf,
    pub size: u64,
    pub slot_size: Option<u64>,
    pub boot_size: Option<u64>,
    pub boot_backend: BootBackendKind,
    pub efi: Option<PathBuf>,
    /// Also write hup's state here (host use: stands for the data partition).
    pub data_dir: Option<PathBuf>,
    /// Logical sector size of the image (512 or 4096).
    pub sector_size: u64,
}

/// What provision laid out.
#[derive(Debug)]
pub struct Provisioned {
    pub version: String,
    pub boot_size: u64,
    pub slot_size: u64,
    pub data_size: u64,
}

pub fn provision(o: &ProvisionOptions) -> Result<Provisioned> {
    let bundle = Bundle::open(&o.bundle, &o.keys)?;
    bundle.verify_payloads()?;
    let m = &bundle.manifest;
    let rootfs = m.payload(PayloadKind::Rootfs).expect("validated");
    let boot_size = o.boot_size.unwrap_or(DEFAULT_BOOT_SIZE);
    // Without --slot-size the disk is split in three: slot A, slot B, data.
    let reserve = 4 * MIB; // GPT copies and alignment
    let overflow = || anyhow::anyhow!("--size, --slot-size and --boot-size add up past 2^64 bytes");
    // The smallest slot the rootfs fits in, whole MiB.
    let min_slot = rootfs
        .unpacked_size
        .div_ceil(MIB)
        .max(1)
        .checked_mul(MIB)
        .ok_or_else(overflow)?;
    let fixed = boot_size
        .checked_add(16 * MIB + reserve)
        .ok_or_else(overflow)?;
    let slot_size = match o.slot_size {
        Some(s) => s,
        None => {
            let mut derived = (o.size.saturating_sub(boot_size + reserve) / 3) / MIB * MIB;
            if derived.saturating_mul(2).saturating_add(fixed) > o.size {
                // Thirds leave the data partition under 16 MiB: give it just that.
                derived = (o.size.saturating_sub(fixed) / 2) / MIB * MIB;
            }
            if derived < min_slot {
                let needed = min_slot
                    .checked_mul(2)
                    .and_then(|s| s.checked_add(fixed))
                    .ok_or_else(overflow)?;
                bail!(
                    "--size {} is too small for this bundle: boot {boot_size} + 2 slots of at least {min_slot} (the rootfs's size) + at least 16 MiB of data + {reserve} for the partition table need {needed} bytes",
                    o.size
                );
            }
            derived
        }
    };
    let needed = slot_size
        .checked_mul(2)
        .and_then(|s| s.checked_add(fixed))
        .ok_or_else(overflow)?;
    if o.size < needed {
        bail!(
            "--size {} is too small: boot {boot_size} + 2 slots of {slot_size} + at least 16 MiB of data + {reserve} for the partition table need {needed} bytes",
            o.size
        );
    }
    if rootfs.unpacked_size > slot_size {
        bail!(
            "rootfs needs {} bytes, more than a slot of {slot_size} bytes",
            rootfs.unpacked_size
        );
    }
    let config = SystemConfig::from_json(
        serde_json::json!({ "compatible": m.compatible, "boot_backend": o.boot_backend })
            .to_string()
            .as_bytes(),
    )
    .context("--boot-backend")?;
    let labels = &config.labels;

    log::info!("partitioning {}", o.disk.display());
    let specs = disk::hup_layout(boot_size, slot_size, None);
    let d = disk::create_layout(&o.disk, o.sector_size, o.size, &specs)?;
    let data_size = d.partition(&labels.data)?.len;
    disk::format_esp(d.open_partition(&labels.boot)?, "HUP-BOOT", d.sector_size())?;
    drop(d);
    match o.boot_backend {
        BootBackendKind::SystemdBoot => {
            let efi = o.efi.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_EFI));
            boot::systemd_boot::SystemdBootBackend::with_labels(&o.disk, labels.clone())
                .install_loader(&efi)?;
        }
        // MINIMAL ARM (g-backend): the GRUB boot helper installs GRUB, its script and the
        // environment block here (owned by that helper).
        BootBackendKind::Grub => {}
        BootBackendKind::Gpt => {}
    }

    log::info!("installing {} {} into slot a", m.compatible, m.version);
    slotfs::format(&o.disk, &labels.root_a, Slot::A)?;
    slotfs::populate(&o.disk, &labels.root_a, &bundle, Vec::new())?;
    bootfiles::install(&o.disk, &config, &bundle, Slot::A)?;
    let backend = boot::open_config(&config, &o.disk);
    backend.mark_good(Slot::A)?;
    backend.mark_bad(Slot::B)?;

    log::info!("formatting the data partition");
    let state = State::new(Slot::A, &m.version, now());
    slotfs::format_with(&o.disk, &labels.data, data_tar(&state)?)?;
    if let Some(dir) = &o.data_dir {
        let dd = DataDir::new(dir);
        dd.create()?;
        dd.save_state(&state)?;
        // The device configuration, for `hup apply --disk` and `hup status --disk` on the host.
        crate::fsutil::write_atomic(
            &dd.root.join("system.json"),
            &serde_json::to_vec_pretty(&config)?,
            0o644,
        )?;
    }
    Disk::open(&o.disk)?.sync()?;
    Ok(Provisioned {
        version: m.version.clone(),
        boot_size,
        slot_size,
        data_size,
    })
}

/// The initial content of the data partition: `hup/` with its directories and state.json.
fn data_tar(state: &State) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let t = now();
    for dir in ["hup/", "hup/staged/", "hup/staging/", "hup/log/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(t);
        h.set_size(0);
        b.append_data(&mut h, dir, std::io::empty())?;
    }
    let json = state.to_json();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(t);
    h.set_size(json.len() as u64);
    b.append_data(&mut h, "hup/state.json", &json[..])?;
    Ok(b.into_inner()?)
}

/// The default host data directory of an image: `DISK.data/` next to it.
pub fn default_data_dir(disk: &Path) -> PathBuf {
    let mut s = disk.as_os_str().to_owned();
    s.push(".data");
    PathBuf::from(s)
}
