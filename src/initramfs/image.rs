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
//! lib/modules/NAME.ko      the modules named in etc/hup/modules
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::cpio::Archive;
use crate::model::config::SystemConfig;
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
    if let Some(interp) = elf_interpreter(&hup)
        .with_context(|| format!("checking the hup binary {}", opts.hup.display()))?
    {
        bail!(
            "{} is dynamically linked (interpreter {interp}); the initramfs needs the static \
             musl build (cargo build --release --target x86_64-unknown-linux-musl) given with --hup",
            opts.hup.display()
        );
    }
    a.add_file("init", 0o755, hup)?;

    if let Some(cfg) = &opts.config {
        let bytes =
            std::fs::read(cfg).with_context(|| format!("reading config {}", cfg.display()))?;
        SystemConfig::from_json(&bytes)
            .with_context(|| format!("checking config {}", cfg.display()))?;
        a.add_file("etc/hup/system.json", 0o644, bytes)?;
    } else {
        log::warn!("no --config: the initramfs has no /etc/hup/system.json and will use defaults");
    }

    if let Some(dir) = &opts.keys {
        add_keys(&mut a, dir)?;
    }

    match (&opts.modules, &opts.modules_from) {
        (Some(list), Some(from)) => add_modules(&mut a, list, from)?,
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

fn add_modules(a: &mut Archive, list: &Path, from: &Path) -> Result<()> {
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
        a.add_file(&format!("lib/modules/{name}.ko"), 0o644, bytes)
            .with_context(|| format!("adding module {name} (listed twice?)"))?;
        order.push_str(&name);
        order.push('\n');
    }
    a.add_file("etc/hup/modules", 0o644, order.into_bytes())
}

/// Returns the ELF interpreter (`PT_INTERP`) of an executable, `None` for a static one.
pub fn elf_interpreter(bytes: &[u8]) -> Result<Option<String>> {
    let get = |off: usize, len: usize| -> Result<&[u8]> {
        bytes.get(off..off + len).context("truncated ELF file")
    };
    if get(0, 4)? != b"\x7fELF" {
        bail!("not an ELF executable");
    }
    if get(4, 1)? != [2] || get(5, 1)? != [1] {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |off| -> Result<u16> { Ok(u16::from_le_bytes(get(off, 2)?.try_into()?)) };
    let u32_at = |off| -> Result<u32> { Ok(u32::from_le_bytes(get(off, 4)?.try_into()?)) };
    let u64_at = |off| -> Result<u64> { Ok(u64::from_le_bytes(get(off, 8)?.try_into()?)) };
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? == 3 {
            let off = u64_at(ph + 8)? as usize;
            let size = u64_at(ph + 32)? as usize;
            let s = get(off, size)?;
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Ok(Some(String::from_utf8_lossy(s).into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_compare_like_modprobe() {
        assert_eq!(module_key("crc32c-intel"), "crc32c_intel");
    }

    #[test]
    fn elf_interpreter_of_this_test_binary() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are built for the host target; a glibc build has an interpreter,
        // a musl static build has none. Either way the parser must not fail.
        let interp = elf_interpreter(&me).unwrap();
        if cfg!(target_env = "gnu") {
            assert!(interp.unwrap().contains("ld-linux"));
        }
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(b"\x7fELF\x02\x01").is_err());
    }
}
