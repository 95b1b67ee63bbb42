use std::path::PathBuf;

use argh::FromArgs;

use crate::apply::provision::{ProvisionOptions, default_data_dir, provision};
use crate::bundle::sign::TrustedKeys;
use crate::model::config::BootBackendKind;

/// Create a factory disk image from a bundle: GPT, boot partition, slot A installed and good,
/// slot B empty, data partition with hup's state.
#[derive(FromArgs)]
#[argh(subcommand, name = "provision")]
pub struct Provision {
    /// the bundle to install into slot A
    #[argh(option)]
    bundle: PathBuf,
    /// trusted public key file (repeatable)
    #[argh(option)]
    key: Vec<PathBuf>,
    /// image size (bytes or K/M/G/T)
    #[argh(option, from_str_fn(size_arg))]
    size: u64,
    /// size of each root slot (default: a third of what the boot partition leaves)
    #[argh(option, from_str_fn(size_arg))]
    slot_size: Option<u64>,
    /// size of the boot partition (default 64M)
    #[argh(option, from_str_fn(size_arg))]
    boot_size: Option<u64>,
    /// boot backend: gpt (default), systemd-boot, grub or uboot
    #[argh(option, default = "BootBackendKind::Gpt", from_str_fn(backend_arg))]
    boot_backend: BootBackendKind,
    /// systemd-boot EFI binary (default: Debian's systemd-bootx64.efi)
    #[argh(option)]
    systemd_boot_efi: Option<PathBuf>,
    /// GRUB EFI image to install, e.g. a signed grubx64.efi (default: one made with
    /// grub-mkimage)
    #[argh(option)]
    grub_efi: Option<PathBuf>,
    /// GRUB x86_64-efi modules for grub-mkimage (default: /usr/lib/grub/x86_64-efi)
    #[argh(option)]
    grub_modules: Option<PathBuf>,
    /// uboot: the fw_env.config saying where the environment is written (default
    /// /etc/fw_env.config); recorded in the device's system.json
    #[argh(option)]
    fw_env_config: Option<PathBuf>,
    /// uboot: the board's default environment (U-Boot's `u-boot-initial-env`, NAME=VALUE
    /// lines) the new environment starts from; without it, U-Boot would find only hup's
    /// variables and no bootcmd
    #[argh(option)]
    uboot_initial_env: Option<PathBuf>,
    /// logical sector size of the image: 512 (default) or 4096
    #[argh(option, default = "512")]
    sector_size: u64,
    /// host directory standing for the data partition's hup/ (default: DISK.data)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// the disk image to create
    #[argh(positional)]
    disk: PathBuf,
}

fn backend_arg(s: &str) -> Result<BootBackendKind, String> {
    s.parse()
}

fn size_arg(s: &str) -> Result<u64, String> {
    crate::size::from_arg(s)
}

impl Provision {
    /// The loader binary option that goes with `--boot-backend`; the others are refused.
    fn loader_options(&self) -> anyhow::Result<Option<PathBuf>> {
        let backend = self.boot_backend;
        let misplaced = [
            (
                "--systemd-boot-efi",
                self.systemd_boot_efi.is_some(),
                BootBackendKind::SystemdBoot,
            ),
            ("--grub-efi", self.grub_efi.is_some(), BootBackendKind::Grub),
            (
                "--grub-modules",
                self.grub_modules.is_some(),
                BootBackendKind::Grub,
            ),
            (
                "--fw-env-config",
                self.fw_env_config.is_some(),
                BootBackendKind::Uboot,
            ),
            (
                "--uboot-initial-env",
                self.uboot_initial_env.is_some(),
                BootBackendKind::Uboot,
            ),
        ];
        for (flag, given, kind) in misplaced {
            if given && kind != backend {
                anyhow::bail!("{flag} needs --boot-backend {kind} (this is {backend})");
            }
        }
        if self.grub_efi.is_some() && self.grub_modules.is_some() {
            anyhow::bail!(
                "--grub-efi and --grub-modules exclude each other: a given image is not made"
            );
        }
        Ok(match backend {
            BootBackendKind::SystemdBoot => self.systemd_boot_efi.clone(),
            BootBackendKind::Grub => self.grub_efi.clone(),
            BootBackendKind::Gpt | BootBackendKind::Uboot => None,
        })
    }

    pub fn run(self) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        let efi = self.loader_options()?;
        let keys = TrustedKeys::load(&self.key, &[])?;
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| default_data_dir(&self.disk));
        let p = provision(&ProvisionOptions {
            bundle: self.bundle,
            keys,
            disk: self.disk.clone(),
            size: self.size,
            slot_size: self.slot_size,
            boot_size: self.boot_size,
            boot_backend: self.boot_backend,
            efi,
            grub_modules: self.grub_modules,
            fw_env_config: self.fw_env_config,
            uboot_initial_env: self.uboot_initial_env,
            data_dir: Some(data_dir.clone()),
            sector_size: self.sector_size,
        })?;
        println!(
            "provisioned {} in {:.1} s: version {} in slot a ({} backend); boot {} MiB, slots {} MiB, data {} MiB; host state in {}",
            self.disk.display(),
            start.elapsed().as_secs_f64(),
            p.version,
            self.boot_backend,
            p.boot_size >> 20,
            p.slot_size >> 20,
            p.data_size >> 20,
            data_dir.display()
        );
        Ok(())
    }
}
