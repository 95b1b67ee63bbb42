//! QEMU tests: boot the Debian cloud kernel with hup's initramfs on GPT disk images.
//!
//! Harness: [`vm`] (launch with a hard timeout, serial log per boot under
//! `target/qemu-logs/`, waiting for markers; direct kernel boot or OVMF), [`disk`] (test
//! images without root), [`artifacts`] (static hup, key, kernel, initramfs, test OS
//! bundles; built once per run), [`fixture`] (what is built once per run and shared),
//! [`http`] (the file server the guests download from),
//! [`device`] (a provisioned image booted again and again, with the guest's markers
//! parsed). Scenarios live in their own modules; `update`, `rollback`, `powercut` and
//! `systemd_boot` are issue 6's, `grub` issue 13's (the same on GRUB), `uboot` the same on
//! aarch64 with U-Boot ([`aarch64`] builds its artifacts; [`loader`] holds the helpers
//! and the power-cut scenario the two share), `layout` issue 7's
//! (docs/layout-migration.md), `refund` the clean-shutdown refund of a try
//! (docs/boot-backends.md). See docs/initramfs.md.

mod aarch64;
mod artifacts;
mod debian;
mod device;
mod disk;
mod fixture;
#[path = "../tests/support/goosebit.rs"]
mod goosebit;
mod http;
mod loader;
mod machine;
mod script;
mod status;
#[path = "../tests/support/status_schema.rs"]
mod status_schema;
mod vm;

mod agent;
mod debian_initramfs;
mod debian_update;
mod delta;
mod fallback;
mod grub;
mod layout;
mod powercut;
mod refund;
mod rollback;
mod smoke;
mod systemd_boot;
mod uboot;
mod update;
