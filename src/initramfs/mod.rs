//! The initramfs image that `hup mkinitramfs` writes on the build host (docs/initramfs.md):
//! the newc cpio writer ([`cpio`]), the ELF header checks of the binary and modules ([`elf`])
//! and what goes into the image ([`image`]). The init (PID 1) reads the image; it does not
//! import this module.

pub mod cpio;
pub mod elf;
pub mod image;
