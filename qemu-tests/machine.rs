//! The machine a test device is: disk sizes, memory and, for direct boot, its kernel.

use std::path::PathBuf;

use crate::device::Backend;

/// Root slot size for `hup provision` of the busybox test OS (a few MiB).
const SLOT_SIZE: &str = "40M";

/// The machine a device is: disk sizes for `hup provision`, memory, and for direct boot
/// the kernel and initramfs (default: the artifacts' for the busybox test OS).
#[derive(Debug, Clone)]
pub struct Machine {
    /// `--size`, `--slot-size`, `--boot-size` of `hup provision`.
    pub size: String,
    pub slot_size: String,
    pub boot_size: String,
    pub memory_mib: u32,
    /// Direct boot (gpt): kernel and initramfs instead of the artifacts'.
    pub direct: Option<(PathBuf, PathBuf)>,
}

impl Machine {
    /// The busybox test OS's machine: a few MiB per slot.
    pub fn test_os(backend: Backend) -> Machine {
        // The data partition must hold a staged bundle plus hup stage's 16 MiB margin:
        // about 3 MiB with gpt, 18 MiB with systemd-boot (kernel and initramfs inside).
        let (size, boot_size) = match backend {
            Backend::Gpt => ("160M", "8M"),
            Backend::SystemdBoot | Backend::Grub => ("256M", "48M"),
            // The arm64 kernel is an uncompressed Image (27 MB): two slots' boot files.
            Backend::Uboot => ("320M", "96M"),
        };
        Machine {
            size: size.into(),
            slot_size: SLOT_SIZE.into(),
            boot_size: boot_size.into(),
            // The arm64 kernel reserves 64 MiB for CMA.
            memory_mib: if backend == Backend::Uboot { 512 } else { 256 },
            direct: None,
        }
    }
}
