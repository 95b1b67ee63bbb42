//! Building the initramfs: hup as `/init`, kernel modules, device config and keys.
//!
//! Layout (see docs/initramfs.md):
//! ```text
//! init                     the static hup binary
//! dev/console              char 5:1, so the kernel can give /init a console
//! dev proc sys run         mount points
//! etc/hup/system.json      device configuration (optional)
//! etc/hup/keys/*.pub       trusted public keys (optional)
//! etc/hup/modules          module names in load order (optional)
//! <fw_env_config>          the uboot backend's fw_env.config, at the path system.json names
//! lib/modules/NAME.ko      the modules named in etc/hup/modules
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::cpio::Archive;
use super::elf;
use crate::boot::fw_env_config::FwEnvConfig;
use crate::model::config::{BootBackendKind, SystemConfig};
use crate::model::initramfs::parse_module_list;

/// What goes into the initramfs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The static hup binary to install as `/init`.
    pub hup: PathBuf,
    /// Directory searched recursively for `NAME.ko` (for example an unpacked kernel package).
    pub modules_from: Option<PathBuf>,
    /// File of module names, one per line, in load order (`#` comments allowed).
    pub modules: Option<PathBuf>,
    /// Device configuration to ship as `/etc/hup/system.json`.
    pub config: Option<PathBuf>,
    /// Directory of `*.pub` keys to ship in `/etc/hup/keys/`.
    pub keys: Option<PathBuf>,
    /// The device's `fw_env.config` (uboot backend), shipped at the path the configuration's
    /// `fw_env_config` names: the initramfs switches slots through it.
    pub fw_env_config: Option<PathBuf>,
}

/// Builds the archive described by `opts`.
pub fn build(opts: &Options) -> Result<Archive> {
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "run", "etc/hup", "lib/modules"] {
        a.add_dir(d, 0o755)?;
    }
    a.add_char_dev("dev/console", 0o600, 5, 1)?;

    let hup = std::fs::read(&opts.hup)
        .with_context(|| format!("reading the hup binary {}", opts.hup.display()))?;
    let checking = || format!("checking the hup binary {}", opts.hup.display());
    let header = elf::header(&hup).with_context(checking)?;
    if let Some(interp) = elf::interpreter(&hup).with_context(checking)? {
        bail!(
            "{} is dynamically linked (interpreter {interp}); the initramfs needs the static \
             musl build (scripts/build-musl [--target aarch64-unknown-linux-musl]) given with --hup",
            opts.hup.display()
        );
    }
    if header.kind != elf::ET_EXEC && header.kind != elf::ET_DYN {
        bail!(
            "{} is not an executable (ELF type {}); --hup takes the static hup binary",
            opts.hup.display(),
            header.kind
        );
    }
    a.add_file("init", 0o755, hup)?;

    let config = match &opts.config {
        Some(cfg) => {
            let bytes =
                std::fs::read(cfg).with_context(|| format!("reading config {}", cfg.display()))?;
            let config = SystemConfig::from_json(&bytes)
                .with_context(|| format!("checking config {}", cfg.display()))?;
            a.add_file("etc/hup/system.json", 0o644, bytes)?;
            Some(config)
        }
        None => {
            log::warn!(
                "no --config: the initramfs has no /etc/hup/system.json and will use defaults"
            );
            None
        }
    };
    add_fw_env_config(&mut a, config.as_ref(), opts.fw_env_config.as_deref())?;

    if let Some(dir) = &opts.keys {
        add_keys(&mut a, dir)?;
    }

    match (&opts.modules, &opts.modules_from) {
        (Some(list), Some(from)) => add_modules(&mut a, list, from, header.machine)?,
        (None, None) => {}
        _ => bail!("--modules and --modules-from go together"),
    }
    Ok(a)
}

/// Builds the archive and writes it to `output` atomically (temp file + rename).
pub fn write(opts: &Options, output: &Path) -> Result<()> {
    let archive = build(opts)?;
    let bytes = archive.to_bytes()?;
    let tmp = output.with_extension("cpio.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
    log::info!(
        "wrote {} ({} bytes, {} members)",
        output.display(),
        bytes.len(),
        archive.paths().count()
    );
    Ok(())
}

/// The uboot backend's `fw_env.config` at the path `config` names for it: required with
/// that backend (the initramfs could not switch slots without it), refused with the others.
fn add_fw_env_config(
    a: &mut Archive,
    config: Option<&SystemConfig>,
    file: Option<&Path>,
) -> Result<()> {
    let uboot = config.is_some_and(|c| c.boot_backend == BootBackendKind::Uboot);
    match (uboot, file) {
        (false, None) => Ok(()),
        (false, Some(_)) => {
            bail!("--fw-env-config goes with a --config whose boot_backend is uboot")
        }
        (true, None) => bail!(
            "the uboot backend needs --fw-env-config: the device's fw_env.config, installed at {}",
            config.map_or("", |c| c.fw_env_config.as_str())
        ),
        (true, Some(file)) => {
            let config = config.expect("uboot comes from a config");
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            FwEnvConfig::parse(&text).with_context(|| format!("checking {}", file.display()))?;
            // The archive refuses `..` and adds the parent directories.
            a.add_file(&config.fw_env_config, 0o644, text.into_bytes())
        }
    }
}

fn add_keys(a: &mut Archive, dir: &Path) -> Result<()> {
    let mut n = 0;
    for entry in sorted_dir(dir)? {
        let name = entry
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".pub") || !entry.is_file() {
            continue;
        }
        let bytes =
            std::fs::read(&entry).with_context(|| format!("reading key {}", entry.display()))?;
        a.add_file(&format!("etc/hup/keys/{name}"), 0o644, bytes)?;
        n += 1;
    }
    if n == 0 {
        bail!("no *.pub key in {}", dir.display());
    }
    Ok(())
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    v.sort();
    Ok(v)
}

/// Module names compare with `-` and `_` as the same character, like modprobe.
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// Finds `*.ko` and `*.ko.zst` under `dir` (recursively) by module name.
fn index_modules(dir: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut index: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in sorted_dir(&d)? {
            let ft = std::fs::symlink_metadata(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .file_type();
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let base = name
                .strip_suffix(".ko")
                .or_else(|| name.strip_suffix(".ko.zst"));
            if let Some(base) = base {
                index.entry(module_key(base)).or_default().push(p.clone());
            }
        }
    }
    Ok(index)
}

/// Names listed in `modules.builtin` files under `dir` (modules compiled into the kernel).
fn builtin_modules(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let modules = dir.join("lib/modules");
    let roots = if modules.is_dir() {
        sorted_dir(&modules)?
    } else {
        vec![dir.to_path_buf()]
    };
    for r in roots {
        let f = r.join("modules.builtin");
        if let Ok(text) = std::fs::read_to_string(&f) {
            for l in text.lines() {
                let name = l.rsplit('/').next().unwrap_or("");
                if let Some(base) = name.strip_suffix(".ko") {
                    out.push(module_key(base));
                }
            }
        }
    }
    Ok(out)
}

/// Adds the modules `list` names, found under `from`; each must be an ELF object of
/// `machine`, the hup binary's (one kernel loads them and runs /init).
fn add_modules(a: &mut Archive, list: &Path, from: &Path, machine: u16) -> Result<()> {
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("reading module list {}", list.display()))?;
    let names = parse_module_list(&text);
    let index = index_modules(from)?;
    let builtin = builtin_modules(from)?;
    let mut order = String::new();
    for name in names {
        let key = module_key(&name);
        let path = match index.get(&key).map(Vec::as_slice) {
            Some([one]) => one,
            Some(many) => bail!(
                "module {name}: found {} files under {} ({}); point --modules-from at one kernel",
                many.len(),
                from.display(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None if builtin.contains(&key) => {
                log::info!("module {name} is built into the kernel, skipped");
                continue;
            }
            None => bail!(
                "module {name} (from {}): no {name}.ko under {}",
                list.display(),
                from.display()
            ),
        };
        let raw =
            std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?;
        let bytes = if path.extension().is_some_and(|e| e == "zst") {
            zstd::decode_all(raw.as_slice())
                .with_context(|| format!("decompressing module {}", path.display()))?
        } else {
            raw
        };
        let m = elf::header(&bytes)
            .with_context(|| format!("module {name} ({})", path.display()))?
            .machine;
        if m != machine {
            bail!(
                "module {name} ({}) is built for {}, the hup binary for {}: /init and the \
                 modules run on one kernel; give the modules of a kernel of the binary's \
                 architecture (or the other binary)",
                path.display(),
                elf::machine_name(m),
                elf::machine_name(machine)
            );
        }
        a.add_file(&format!("lib/modules/{name}.ko"), 0o644, bytes)
            .with_context(|| format!("adding module {name} (listed twice?)"))?;
        order.push_str(&name);
        order.push('\n');
    }
    a.add_file("etc/hup/modules", 0o644, order.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_compare_like_modprobe() {
        assert_eq!(module_key("crc32c-intel"), "crc32c_intel");
    }
}
