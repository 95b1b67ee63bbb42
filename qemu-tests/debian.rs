//! The Debian bookworm test OS (scripts/mk-debian-os): a real systemd distribution of a few
//! hundred MB instead of the busybox test OS. Built once per run: hup's initramfs with the
//! modules of the Debian kernel (direct boot on the gpt backend), and on first use each
//! signed bundle of a Debian tree. The Debian trees themselves are cached across runs by
//! scripts/mk-debian-os under the user's cache directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::artifacts::{self, REPO, run};
use crate::device::{Backend, BootOpts, Device, Machine};
use crate::fixture::Cached;

/// A boot of the Debian OS under TCG takes tens of seconds; an apply of its rootfs more.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// The Debian kernel and hup's initramfs for it.
#[derive(Debug)]
pub struct Kit {
    /// `/boot/vmlinuz-*` of the v1 tree: the direct-boot kernel of gpt devices.
    pub vmlinuz: PathBuf,
    /// hup's initramfs (gpt backend, test key) with that kernel's modules.
    pub initrd: PathBuf,
}

static KIT: Cached<Kit> = Cached::new("building the Debian test kit failed");
static BUNDLES: Mutex<Option<HashMap<String, std::result::Result<PathBuf, String>>>> =
    Mutex::new(None);

/// The kit, built on first use (this builds the Debian trees on a machine's first run).
pub fn kit() -> &'static Kit {
    KIT.get(build_kit)
}

/// `scripts/mk-debian-os base BASE`: the cached tree's path.
pub fn base_tree(base: &str) -> Result<PathBuf> {
    let out = run(Command::new(Path::new(REPO).join("scripts/mk-debian-os")).args(["base", base]))?;
    Ok(PathBuf::from(out.trim()))
}

/// The one file `dir/prefix*`.
fn one_file(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(prefix) {
            found.push(e.path());
        }
    }
    anyhow::ensure!(
        found.len() == 1,
        "expected one {prefix}* in {}, found {found:?}",
        dir.display()
    );
    Ok(found.remove(0))
}

fn build_kit() -> Result<Kit> {
    let a = artifacts::get();
    let tree = base_tree("v1")?;
    let vmlinuz = one_file(&tree.join("boot"), "vmlinuz-")?;
    let initrd = a.work.join("initrd-debian.cpio");
    run(Command::new(&a.hup)
        .arg("mkinitramfs")
        .arg("-o")
        .arg(&initrd)
        .arg("--hup")
        .arg(&a.hup)
        .arg("--config")
        .arg(Path::new(REPO).join("initramfs/system.json"))
        .arg("--keys")
        .arg(a.pubkey.parent().context("no key directory")?)
        .arg("--modules-from")
        .arg(&tree)
        .arg("--modules")
        .arg(Path::new(REPO).join("initramfs/modules-qemu-x86_64")))?;
    Ok(Kit { vmlinuz, initrd })
}

/// What a Debian test OS bundle holds.
#[derive(Debug, Clone)]
pub struct DebianOs {
    /// Unique name of the bundle in this run.
    pub name: String,
    /// `v1` or `v2` (scripts/mk-debian-os).
    pub base: &'static str,
    pub version: String,
    /// scripts/mk-debian-os flags (`--never-healthy`, `--initramfs-tools`, ...).
    pub flags: Vec<String>,
    /// The grub backend: the tree's own kernel and initrd (`/boot/vmlinuz-*`,
    /// `/boot/initrd.img-*`) as the boot payload, with this `cmdline`.
    pub grub_cmdline: Option<String>,
    /// More `hup pack` arguments (`--migration ID`).
    pub pack_args: Vec<String>,
}

impl DebianOs {
    /// A gpt-backend Debian OS.
    pub fn gpt(name: &str, base: &'static str, version: &str, flags: &[&str]) -> DebianOs {
        DebianOs {
            name: name.to_string(),
            base,
            version: version.to_string(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            grub_cmdline: None,
            pack_args: Vec::new(),
        }
    }
}

/// The signed bundle of `spec`, built on first use into the HTTP server's
/// `bundles/<name>.hup`; cached by name.
pub fn bundle(spec: &DebianOs) -> PathBuf {
    let mut map = BUNDLES.lock().unwrap_or_else(|e| e.into_inner());
    let r = map
        .get_or_insert_with(HashMap::new)
        .entry(spec.name.clone())
        .or_insert_with(|| pack(spec).map_err(|e| format!("{e:#}")));
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("building Debian bundle {}: {e}", spec.name),
    }
}

fn pack(spec: &DebianOs) -> Result<PathBuf> {
    let a = artifacts::get();
    let dir = a.scratch(&format!("debian-{}", spec.name))?;
    let os = dir.join("rootfs");
    let config = match spec.grub_cmdline {
        Some(_) => a.config_grub.clone(),
        None => Path::new(REPO).join("initramfs/system.json"),
    };
    run(Command::new(Path::new(REPO).join("scripts/mk-debian-os"))
        .args(["os", spec.base, &spec.version])
        .arg(&os)
        .args(&spec.flags)
        .arg("--hup")
        .arg(&a.hup)
        .arg("--key")
        .arg(&a.pubkey)
        .arg("--config")
        .arg(&config))?;
    let (mut pack, out) = a.pack_command(&os, &spec.name, &spec.version)?;
    pack.args(&spec.pack_args);
    if let Some(cmdline) = &spec.grub_cmdline {
        let tree_boot = os.join("boot");
        let boot = artifacts::boot_dir(
            &dir.join("boot"),
            &one_file(&tree_boot, "vmlinuz-")?,
            &one_file(&tree_boot, "initrd.img-")?,
            cmdline,
        )?;
        pack.arg("--boot").arg(&boot);
    }
    run(&mut pack)?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(out)
}

/// The machine of a Debian device: 1200 MiB slots, a data partition that holds a staged
/// Debian bundle, 1 GiB of memory; on gpt the Debian kernel with hup's initramfs.
pub fn machine(backend: Backend) -> Machine {
    let direct = match backend {
        Backend::Gpt => Some((kit().vmlinuz.clone(), kit().initrd.clone())),
        // (The Debian test OS is x86_64: uboot does not boot it.)
        Backend::SystemdBoot | Backend::Grub | Backend::Uboot => None,
    };
    Machine {
        size: "3600M".into(),
        slot_size: "1200M".into(),
        boot_size: "160M".into(),
        memory_mib: 1024,
        direct,
    }
}

/// A Debian device provisioned with `spec`'s bundle.
pub fn provision(name: &str, spec: &DebianOs, backend: Backend) -> Result<Device> {
    let b = bundle(spec);
    Device::provision_on(name, &b, backend, machine(backend))
}

/// [`BootOpts`] with the Debian timeout.
pub fn opts(label: &str) -> BootOpts {
    let mut o = BootOpts::new(label);
    o.timeout = BOOT_TIMEOUT;
    o
}
