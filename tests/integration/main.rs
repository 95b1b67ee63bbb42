//! The integration tests, one binary: each module was a test file of its own and keeps its
//! tests' names (`cargo test --test integration disk_hardening::`). They run the real `hup`
//! binary and the library on real images; the shared runner and fixtures are in
//! `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod agent_bad_input;
mod agent_goosebit;
mod agent_mock;
mod apply;
mod apply_base;
mod architecture;
// Needs the `failpoints` feature (scripts/test enables it).
#[cfg(feature = "failpoints")]
mod apply_failpoints;
mod apply_layout;
mod arch_aarch64;
mod boot_gpt;
mod boot_grub;
mod boot_payload_hardening;
mod boot_systemd;
mod boot_uboot;
mod boot_ubootenv;
// Needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
mod boot_ubootenv_power;
mod bundle;
mod bundle_refusals;
mod debian_initrd;
mod delta;
// Needs the `failpoints` feature.
#[cfg(feature = "failpoints")]
mod delta_power;
mod delta_refusals;
mod disk_esp;
mod disk_gpt_repair;
mod disk_hardening;
mod disk_layout;
mod docs_bad_inputs;
mod dracut_module;
mod ext4_api;
mod ext4_diff;
mod ext4_dir_xattrs;
mod ext4_inputs;
mod ext4_malicious;
mod fat_linear;
mod fingerprint_check;
mod fuzz_regressions;
mod init_mkinitramfs;
mod init_mkinitramfs_uboot;
mod init_test_os;
mod initramfs_tools;
mod layout_migrate;
mod layout_refuse;
mod manifest_hardening;
mod migrate_wifi;
mod payload_bounds;
mod provision_grub;
mod provision_uboot;
mod refund_try;
mod scripts_refusals;
mod stage_hardening;
mod stage_http;
mod stage_layout;
mod stage_refusals;
mod status_cmds;
mod status_schema;
mod tar_hardening;
