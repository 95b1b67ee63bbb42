//! What every QEMU test needs, built once per test run: the static (musl) hup with the
//! `failpoints` feature, a signing key pair, the Debian kernel (scripts/qemu-kernel), the
//! initramfs for each boot backend (`hup mkinitramfs`, with the test key), and signed test
//! OS bundles (scripts/mk-test-os + `hup pack --level 1`), each built on first use.
//!
//! `HUP_MUSL_BIN` points at an already built static hup (with `--features failpoints`, or
//! the power-cut scenarios fail) instead of running `scripts/build-musl --features
//! failpoints` ([`static_hup`], shared with the aarch64 artifacts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::fixture::Cached;
use crate::http;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Device type of every test bundle (initramfs/system.json).
pub const COMPATIBLE: &str = "qemu-x86_64";

/// The shared build outputs.
#[derive(Debug)]
pub struct Artifacts {
    /// Static hup (musl, release, failpoints), copied out of the target directory.
    pub hup: PathBuf,
    /// Kernel image (direct boot, and the `vmlinuz` of systemd-boot bundles).
    pub vmlinuz: PathBuf,
    /// Initramfs for the gpt backend: initramfs/system.json, the QEMU modules, the test key.
    pub initrd: PathBuf,
    /// The same for the systemd-boot backend (its system.json says so).
    pub initrd_sb: PathBuf,
    /// system.json of the systemd-boot test machine.
    pub config_sb: PathBuf,
    /// The same for the grub backend.
    pub initrd_grub: PathBuf,
    pub config_grub: PathBuf,
    /// Test signing key: secret (`hup pack --key`) and public (devices trust it).
    pub key: PathBuf,
    pub pubkey: PathBuf,
    /// Scratch space for this run: `<target>/tmp/qemu`.
    pub work: PathBuf,
    bundles: Mutex<HashMap<String, std::result::Result<PathBuf, String>>>,
}

static ARTIFACTS: Cached<Artifacts> = Cached::new("building the QEMU test artifacts failed");

/// The artifacts, built on first use; panics (failing the test) if they cannot be built.
pub fn get() -> &'static Artifacts {
    ARTIFACTS.get(build)
}

/// The test HTTP server (serving `<work>/http`).
pub fn server() -> &'static http::Server {
    http::server(&get().work.join("http"))
}

pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The static hup for `target` built with `--features failpoints` by scripts/build-musl,
/// copied into `work` (another build, e.g. scripts/demo's, may replace the original); or
/// the binary the environment variable `override_var` names.
pub fn static_hup(work: &Path, target: &str, override_var: &str) -> Result<PathBuf> {
    if let Ok(p) = std::env::var(override_var) {
        return Ok(PathBuf::from(p));
    }
    run(
        Command::new(Path::new(REPO).join("scripts/build-musl")).args([
            "--target",
            target,
            "--features",
            "failpoints",
        ]),
    )
    .with_context(|| format!("building the static {target} hup with failpoints"))?;
    let built = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("no target directory")?
        .join(target)
        .join("release/hup");
    let copy = work.join(format!("hup-{target}-failpoints"));
    std::fs::copy(&built, &copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}

/// The value of `key=VALUE` among the lines a script printed.
pub fn field(out: &str, key: &str) -> Result<PathBuf> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(PathBuf::from))
        .with_context(|| format!("no {key}= in {out}"))
}

fn build() -> Result<Artifacts> {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let hup = static_hup(&work, "x86_64-unknown-linux-musl", "HUP_MUSL_BIN")?;
    anyhow::ensure!(hup.is_file(), "no static hup at {}", hup.display());

    let kernel = run(&mut Command::new(
        Path::new(REPO).join("scripts/qemu-kernel"),
    ))?;
    let vmlinuz = field(&kernel, "vmlinuz")?;
    let kernel_root = field(&kernel, "root")?;

    let keys = work.join("keys");
    if keys.exists() {
        std::fs::remove_dir_all(&keys).with_context(|| format!("removing {}", keys.display()))?;
    }
    std::fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    run(Command::new(&hup)
        .arg("keygen")
        .arg("-o")
        .arg(keys.join("test")))?;
    let pubkeys = work.join("pubkeys");
    std::fs::create_dir_all(&pubkeys).with_context(|| format!("creating {}", pubkeys.display()))?;
    std::fs::copy(keys.join("test.pub"), pubkeys.join("test.pub")).context("copying test.pub")?;

    let gpt_config = Path::new(REPO).join("initramfs/system.json");
    let mut sb: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&gpt_config).with_context(|| format!("reading {}", gpt_config.display()))?,
    )
    .context("initramfs/system.json")?;
    let mut config_for = |backend: &str| -> Result<PathBuf> {
        sb["boot_backend"] = backend.into();
        let path = work.join(format!("system-{backend}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&sb)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let config_sb = config_for("systemd-boot")?;
    let config_grub = config_for("grub")?;

    let initramfs = |out: &Path, config: &Path| -> Result<()> {
        run(Command::new(&hup)
            .arg("mkinitramfs")
            .arg("-o")
            .arg(out)
            .arg("--hup")
            .arg(&hup)
            .arg("--config")
            .arg(config)
            .arg("--keys")
            .arg(&pubkeys)
            .arg("--modules-from")
            .arg(&kernel_root)
            .arg("--modules")
            .arg(Path::new(REPO).join("initramfs/modules-qemu-x86_64")))?;
        Ok(())
    };
    let initrd = work.join("initrd.cpio");
    initramfs(&initrd, &gpt_config)?;
    let initrd_sb = work.join("initrd-systemd-boot.cpio");
    initramfs(&initrd_sb, &config_sb)?;
    let initrd_grub = work.join("initrd-grub.cpio");
    initramfs(&initrd_grub, &config_grub)?;
    Ok(Artifacts {
        hup,
        vmlinuz,
        initrd,
        initrd_sb,
        config_sb,
        initrd_grub,
        config_grub,
        key: keys.join("test.key"),
        pubkey: pubkeys.join("test.pub"),
        work,
        bundles: Mutex::new(HashMap::new()),
    })
}

/// What a test OS bundle holds.
#[derive(Debug, Clone)]
pub struct OsSpec {
    /// Unique name of the bundle in this run (`v2`, `v3-never-healthy`, ...).
    pub name: String,
    pub version: String,
    /// scripts/mk-test-os flags: `--never-healthy`, `--cannot-boot`.
    pub flags: Vec<String>,
    pub boot: BootPayload,
}

/// The boot payload of a test OS bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPayload {
    /// gpt backend: none (the kernel is QEMU's `-kernel`).
    None,
    /// systemd-boot backend: `vmlinuz`, `initrd` (the systemd-boot initramfs) and this
    /// `cmdline`.
    SystemdBoot(String),
    /// grub backend: `vmlinuz`, `initrd` (the grub initramfs) and this `cmdline`.
    Grub(String),
}

impl OsSpec {
    /// A gpt-backend test OS.
    pub fn gpt(name: &str, version: &str, flags: &[&str]) -> OsSpec {
        OsSpec {
            name: name.to_string(),
            version: version.to_string(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            boot: BootPayload::None,
        }
    }
}

impl Artifacts {
    /// A fresh scratch directory for one test.
    pub fn scratch(&self, test: &str) -> Result<PathBuf> {
        let d = self.work.join(test);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Builds a test OS tree with scripts/mk-test-os into `out` (`flags`: e.g.
    /// `--never-healthy`); it trusts the test key.
    pub fn test_os(&self, version: &str, out: &Path, flags: &[&str]) -> Result<()> {
        run(Command::new(Path::new(REPO).join("scripts/mk-test-os"))
            .arg(version)
            .arg(out)
            .args(flags)
            .arg("--hup")
            .arg(&self.hup)
            .arg("--key")
            .arg(&self.pubkey))?;
        Ok(())
    }

    /// The signed bundle of `spec`, built on first use into the HTTP server's
    /// `bundles/<name>.hup`. Returns its host path; the guest URL is
    /// `server().guest_url(&format!("bundles/{name}.hup"))`.
    pub fn bundle(&self, spec: &OsSpec) -> PathBuf {
        self.bundle_with(spec, &[])
    }

    /// [`Artifacts::bundle`] with `pack_args` added to `hup pack` (e.g. `--layout FILE`,
    /// `--migration ID`); the bundle is cached by `spec.name` alone, so a name must always
    /// come with the same arguments.
    pub fn bundle_with(&self, spec: &OsSpec, pack_args: &[String]) -> PathBuf {
        let mut map = self.bundles.lock().unwrap_or_else(|e| e.into_inner());
        let r = map
            .entry(spec.name.clone())
            .or_insert_with(|| self.pack(spec, pack_args).map_err(|e| format!("{e:#}")));
        match r {
            Ok(p) => p.clone(),
            Err(e) => panic!("building bundle {}: {e}", spec.name),
        }
    }

    /// `hup pack --rootfs ROOTFS` of a test bundle (level 1, the test key, the test device
    /// type) into the HTTP server's `bundles/<name>.hup`; the command and that path.
    pub fn pack_command(
        &self,
        rootfs: &Path,
        name: &str,
        version: &str,
    ) -> Result<(Command, PathBuf)> {
        self.pack_command_for(rootfs, name, version, COMPATIBLE)
    }

    /// [`Artifacts::pack_command`] for the device type `compatible`.
    pub fn pack_command_for(
        &self,
        rootfs: &Path,
        name: &str,
        version: &str,
        compatible: &str,
    ) -> Result<(Command, PathBuf)> {
        let out = server().path(&format!("bundles/{name}.hup"))?;
        let mut pack = Command::new(&self.hup);
        pack.arg("pack")
            .arg("--rootfs")
            .arg(rootfs)
            .args(["--version", version, "--compatible", compatible])
            .args(["--level", "1"])
            .arg("--key")
            .arg(&self.key)
            .arg("-o")
            .arg(&out);
        Ok((pack, out))
    }

    fn pack(&self, spec: &OsSpec, pack_args: &[String]) -> Result<PathBuf> {
        let dir = self.scratch(&format!("bundle-{}", spec.name))?;
        let os = dir.join("rootfs");
        let mut cmd = Command::new(Path::new(REPO).join("scripts/mk-test-os"));
        cmd.arg(&spec.version)
            .arg(&os)
            .args(&spec.flags)
            .arg("--hup")
            .arg(&self.hup)
            .arg("--key")
            .arg(&self.pubkey);
        let (mut pack, out) = self.pack_command(&os, &spec.name, &spec.version)?;
        pack.args(pack_args);
        let boot_payload = match &spec.boot {
            BootPayload::None => None,
            BootPayload::SystemdBoot(c) => Some((c, &self.config_sb, &self.initrd_sb)),
            BootPayload::Grub(c) => Some((c, &self.config_grub, &self.initrd_grub)),
        };
        if let Some((cmdline, config, initrd)) = boot_payload {
            cmd.arg("--config").arg(config);
            let boot = boot_dir(&dir.join("boot"), &self.vmlinuz, initrd, cmdline)?;
            pack.arg("--boot").arg(&boot);
        }
        run(&mut cmd)?;
        run(&mut pack)?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        Ok(out)
    }
}

/// A bundle's boot directory (`hup pack --boot`): `vmlinuz`, `initrd` and `cmdline`.
pub fn boot_dir(boot: &Path, vmlinuz: &Path, initrd: &Path, cmdline: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(boot).with_context(|| format!("creating {}", boot.display()))?;
    std::fs::copy(vmlinuz, boot.join("vmlinuz")).context("copying the kernel")?;
    std::fs::copy(initrd, boot.join("initrd")).context("copying the initrd")?;
    std::fs::write(boot.join("cmdline"), format!("{cmdline}\n")).context("writing cmdline")?;
    Ok(boot.to_path_buf())
}
