//! `hup provision`: a factory image made from a bundle. GPT with the four partitions, the
//! boot partition (and systemd-boot or GRUB when asked), slot A installed and marked good,
//! slot B empty, the data partition with `hup/` and a state.json that records slot A's
//! version.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::{bootfiles, slotfs};
use crate::boot;
use crate::boot::grub_script;
use crate::bundle::reader::Bundle;
use crate::bundle::sign::TrustedKeys;
use crate::disk::{self, Disk, Esp};
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
/// Default GRUB modules for `--boot-backend grub` (Debian's grub-efi-amd64-bin).
pub const DEFAULT_GRUB_MODULES: &str = "/usr/lib/grub/x86_64-efi";
/// Where the firmware looks for the default loader.
const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

#[derive(Debug)]
pub struct ProvisionOptions {
    pub bundle: PathBuf,
    pub keys: TrustedKeys,
    pub disk: PathBuf,
    pub size: u64,
    pub slot_size: Option<u64>,
    pub boot_size: Option<u64>,
    pub boot_backend: BootBackendKind,
    /// The loader's EFI binary: systemd-boot's (default [`DEFAULT_EFI`]), or a GRUB image
    /// (default: one made with `grub-mkimage` from `grub_modules`).
    pub efi: Option<PathBuf>,
    /// `grub` without `efi`: the GRUB modules directory (default [`DEFAULT_GRUB_MODULES`]).
    pub grub_modules: Option<PathBuf>,
    /// `uboot`: the `fw_env.config` naming where the environment is written (default
    /// [`crate::model::config::DEFAULT_FW_ENV_CONFIG`]); recorded in system.json.
    pub fw_env_config: Option<PathBuf>,
    /// uboot: the board's default environment (`NAME=VALUE` lines) the new one starts from.
    pub uboot_initial_env: Option<PathBuf>,
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
    if m.delta.is_some() {
        bail!("a delta bundle cannot provision a device: give the full bundle");
    }
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
    let mut json =
        serde_json::json!({ "compatible": m.compatible, "boot_backend": o.boot_backend });
    if let Some(f) = &o.fw_env_config {
        let abs = std::path::absolute(f).with_context(|| format!("{}", f.display()))?;
        json["fw_env_config"] = abs.to_string_lossy().into();
    }
    let config = SystemConfig::from_json(json.to_string().as_bytes()).context("--boot-backend")?;
    let labels = &config.labels;

    // GRUB's image and script first: a missing tool fails before the disk is touched.
    let grub = match o.boot_backend {
        BootBackendKind::Grub => {
            if let Some(cmdline) = bootfiles::check_payload(&bundle)? {
                grub_script::kernel_args(&labels.root_a, Slot::A, &cmdline)
                    .context("the boot payload's cmdline")?;
            }
            Some(grub_files(&config, o)?)
        }
        BootBackendKind::Gpt | BootBackendKind::SystemdBoot | BootBackendKind::Uboot => None,
    };
    // U-Boot's script compiled first: a missing mkimage fails before the disk is touched.
    let boot_scr = match o.boot_backend {
        BootBackendKind::Uboot => Some(super::provision_uboot::prepare(
            &config,
            o.uboot_initial_env.as_deref(),
        )?),
        _ => None,
    };

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
        // The environment block is made by the backend below (mark_good, mark_bad).
        BootBackendKind::Grub => install_grub(
            &o.disk,
            &config,
            grub.as_ref().expect("made above"),
            o.efi.is_some(),
        )?,
        BootBackendKind::Uboot => {
            let (scr, env) = boot_scr.as_ref().expect("made above");
            super::provision_uboot::install(&o.disk, &config, scr, env)?
        }
        BootBackendKind::Gpt => {}
    }

    log::info!("installing {} {} into slot a", m.compatible, m.version);
    slotfs::format(&o.disk, &labels.root_a, Slot::A)?;
    // A full bundle (checked above): no base slot is read.
    slotfs::populate(&o.disk, &labels.root_a, &labels.root_b, &bundle, Vec::new())?;
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

/// What `--boot-backend grub` installs: the GRUB image and hup's script.
#[derive(Debug)]
struct GrubFiles {
    image: Vec<u8>,
    script: String,
}

/// The GRUB image (`--grub-efi`, or one made by [`make_grub_image`]) and the script for
/// `grub_env`.
fn grub_files(config: &SystemConfig, o: &ProvisionOptions) -> Result<GrubFiles> {
    let script = grub_script::script(&config.grub_env).context("grub_env")?;
    let image = match &o.efi {
        Some(p) => std::fs::read(p)
            .with_context(|| format!("reading the GRUB EFI image {}", p.display()))?,
        None => make_grub_image(
            o.grub_modules
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_GRUB_MODULES)),
        )?,
    };
    Ok(GrubFiles { image, script })
}

/// Installs GRUB on the boot partition: the image as `/EFI/BOOT/BOOTX64.EFI` and hup's
/// script as `/EFI/hup/grub.cfg`. A made image has `/EFI/hup` as its prefix and reads the
/// script by itself; a `given` one (a signed `grubx64.efi`) reads `grub.cfg` next to itself,
/// so a stub there sources the script.
fn install_grub(disk: &Path, config: &SystemConfig, files: &GrubFiles, given: bool) -> Result<()> {
    let d = Disk::open(disk)?;
    let esp = Esp::open(d.open_partition(&config.labels.boot)?)?;
    esp.ensure_room(esp.allocation(files.image.len() as u64) + 8 * esp.cluster_size())?;
    esp.write_bytes(LOADER_PATH, &files.image)?;
    esp.write_bytes(grub_script::SCRIPT_PATH, files.script.as_bytes())?;
    if given {
        esp.write_bytes(grub_script::STUB_PATH, grub_script::stub().as_bytes())?;
    }
    esp.close().context("installing GRUB")
}

/// A GRUB EFI image made on this host with `grub-mkimage -O x86_64-efi`: only
/// [`grub_script::MODULES`] (and what they need) from `modules`, prefix `/EFI/hup` on the
/// ESP it is loaded from. Made in a fresh temporary directory on every call.
pub fn make_grub_image(modules: &Path) -> Result<Vec<u8>> {
    if !modules.join("normal.mod").is_file() {
        bail!(
            "no GRUB x86_64-efi modules in {} (normal.mod is missing): install grub-efi-amd64-bin, or give a GRUB image with --grub-efi",
            modules.display()
        );
    }
    let tmp = tempfile::tempdir().context("a temporary directory for grub-mkimage")?;
    let out = tmp.path().join("grubx64.efi");
    let run = Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", grub_script::PREFIX, "-d"])
        .arg(modules)
        .arg("-o")
        .arg(&out)
        .args(grub_script::MODULES)
        .output();
    let run = match run {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "grub-mkimage not found: install grub-common and grub-efi-amd64-bin, or give a GRUB image with --grub-efi"
        ),
        Err(e) => return Err(e).context("running grub-mkimage"),
    };
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        bail!(
            "grub-mkimage failed ({}): {}",
            run.status,
            err.lines().last().unwrap_or("").trim()
        );
    }
    std::fs::read(&out).with_context(|| format!("reading {}", out.display()))
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
