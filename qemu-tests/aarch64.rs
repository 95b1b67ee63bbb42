//! What the aarch64 U-Boot scenarios need besides [`crate::artifacts`] (whose x86_64 hup
//! runs every host command and whose key signs every bundle), built once per run on first
//! use: the static arm64 hup with the `failpoints` feature (scripts/build-musl), Debian's
//! arm64 cloud kernel (scripts/qemu-kernel --arch aarch64), the test U-Boot with its
//! environment on the FAT boot partition and its default environment (scripts/qemu-uboot),
//! the device's `fw_env.config` and system.json (uboot backend, `qemu-aarch64`), the
//! initramfs made of them, and the aarch64 test OS bundles.
//!
//! `HUP_MUSL_BIN_AARCH64` points at an already built arm64 hup (with failpoints) instead.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::artifacts::{self, REPO, boot_dir, field, run, static_hup};
use crate::device::Device;
use crate::fixture::Cached;

/// Device type of the aarch64 test bundles.
pub const COMPATIBLE: &str = "qemu-aarch64";
/// The aarch64 guest's serial console (PL011).
pub const CONSOLE: &str = "console=ttyAMA0";
/// The redundant environment's files on the boot partition (qemu/uboot/fw_env.config).
pub const ENV_FILES: [&str; 2] = ["uboot.env", "uboot-redund.env"];

#[derive(Debug)]
pub struct Aarch64 {
    /// Static arm64 hup (musl, release, failpoints), copied out of the target directory.
    pub hup: PathBuf,
    pub vmlinuz: PathBuf,
    /// Initramfs of the uboot backend: the system.json and fw_env.config below.
    pub initrd: PathBuf,
    pub config: PathBuf,
    pub fw_env_config: PathBuf,
    /// U-Boot (`-bios`) and its default environment (`--uboot-initial-env`).
    pub u_boot: PathBuf,
    pub initial_env: PathBuf,
    bundles: Mutex<HashMap<String, std::result::Result<PathBuf, String>>>,
}

static AARCH64: Cached<Aarch64> = Cached::new("building the aarch64 QEMU artifacts failed");

pub fn get() -> &'static Aarch64 {
    AARCH64.get(build)
}

fn build() -> Result<Aarch64> {
    let a = artifacts::get();
    let work = a.work.join("aarch64");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let hup = static_hup(&work, "aarch64-unknown-linux-musl", "HUP_MUSL_BIN_AARCH64")?;
    let kernel =
        run(Command::new(Path::new(REPO).join("scripts/qemu-kernel")).args(["--arch", "aarch64"]))?;
    let uboot = run(&mut Command::new(
        Path::new(REPO).join("scripts/qemu-uboot"),
    ))?;
    let fw_env_config = field(&uboot, "fw_env_config")?;

    let mut sys: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(REPO).join("initramfs/system.json"))
            .context("reading initramfs/system.json")?,
    )?;
    sys["compatible"] = COMPATIBLE.into();
    sys["boot_backend"] = "uboot".into();
    let config = work.join("system-uboot.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&sys)?)
        .with_context(|| format!("writing {}", config.display()))?;

    let initrd = work.join("initrd-uboot.cpio");
    run(Command::new(&a.hup)
        .arg("mkinitramfs")
        .arg("-o")
        .arg(&initrd)
        .arg("--hup")
        .arg(&hup)
        .arg("--config")
        .arg(&config)
        .arg("--fw-env-config")
        .arg(&fw_env_config)
        .arg("--keys")
        .arg(a.pubkey.parent().context("no key directory")?)
        .arg("--modules-from")
        .arg(field(&kernel, "root")?)
        .arg("--modules")
        .arg(Path::new(REPO).join("initramfs/modules-qemu-aarch64")))?;
    Ok(Aarch64 {
        hup,
        vmlinuz: field(&kernel, "vmlinuz")?,
        initrd,
        config,
        fw_env_config,
        u_boot: field(&uboot, "u_boot")?,
        initial_env: field(&uboot, "initial_env")?,
        bundles: Mutex::new(HashMap::new()),
    })
}

impl Aarch64 {
    /// The signed aarch64 test OS bundle `name` (scripts/mk-test-os --arch aarch64 with
    /// `flags`), its boot payload the arm64 kernel, the uboot initramfs and `cmdline`;
    /// built on first use into the HTTP server's `bundles/<name>.hup`.
    pub fn bundle(&self, name: &str, version: &str, flags: &[&str], cmdline: &str) -> PathBuf {
        let mut map = self.bundles.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.entry(name.to_string()).or_insert_with(|| {
            self.pack(name, version, flags, cmdline)
                .map_err(|e| format!("{e:#}"))
        });
        match r {
            Ok(p) => p.clone(),
            Err(e) => panic!("building bundle {name}: {e}"),
        }
    }

    fn pack(&self, name: &str, version: &str, flags: &[&str], cmdline: &str) -> Result<PathBuf> {
        let a = artifacts::get();
        let dir = a.scratch(&format!("bundle-{name}"))?;
        let os = dir.join("rootfs");
        run(Command::new(Path::new(REPO).join("scripts/mk-test-os"))
            .arg(version)
            .arg(&os)
            .args(flags)
            .args(["--arch", "aarch64"])
            .arg("--hup")
            .arg(&self.hup)
            .arg("--key")
            .arg(&a.pubkey)
            .arg("--config")
            .arg(&self.config)
            .arg("--fw-env-config")
            .arg(&self.fw_env_config))?;
        let boot = boot_dir(&dir.join("boot"), &self.vmlinuz, &self.initrd, cmdline)?;
        let (mut pack, out) = a.pack_command_for(&os, name, version, COMPATIBLE)?;
        run(pack.arg("--boot").arg(&boot))?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        Ok(out)
    }
}

/// The device's U-Boot environment as the host's `fw_printenv` reads it: both files copied
/// out of the boot partition, named in a `fw_env.config` of the copies.
pub fn uboot_env(dev: &Device) -> Result<BTreeMap<String, String>> {
    let mut lines = String::new();
    for f in ENV_FILES {
        let copy = dev.dir.join(format!("{f}.copy"));
        std::fs::write(&copy, dev.esp_file(&format!("/{f}"))?)
            .with_context(|| format!("writing {}", copy.display()))?;
        lines.push_str(&format!("{} 0x0 0x4000\n", copy.display()));
    }
    let cfg = dev.dir.join("host-fw_env.config");
    std::fs::write(&cfg, lines).with_context(|| format!("writing {}", cfg.display()))?;
    let out = run(Command::new("fw_printenv").arg("-c").arg(&cfg))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
