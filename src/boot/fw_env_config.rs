//! `fw_env.config`, read the way libubootenv 0.3.2 reads it, and the storage it points at:
//! where each copy of the U-Boot environment ([`super::ubootenv`]) is, read and written so
//! that a power cut leaves the old or the new environment (docs/boot-backends.md, "U-Boot
//! environment").
//!
//! A line is `DEVICE OFFSET SIZE [SECTOR_SIZE [SECTORS]]`. As libubootenv's
//! `sscanf("%ms %lli %zx %zx %lx")`: OFFSET is C's `%lli` (`0x` hex, a leading `0` octal,
//! else decimal, may be negative: from the end of a block device), while SIZE, SECTOR_SIZE
//! and SECTORS are always hexadecimal, `0x` or not (`4000` is 0x4000). A line starting with
//! `#` is a comment; a line with fewer than three fields is skipped (hup logs it when it is
//! not blank); the first two lines that count are copy 0 and copy 1 (redundant), later ones
//! are ignored. hup is stricter in one way: where libubootenv would skip a line or read only
//! the leading digits of OFFSET or SIZE (`0x4000k`), hup refuses the file
//! ([`FwEnvConfigError::Number`]), so the two never disagree about where a copy is.
//! SECTOR_SIZE and SECTORS only matter for MTD flash, which hup does not drive.
//!
//! Writers hold libubootenv's lock (`flock` on `/var/lock/fw_printenv.lock`, when that can be
//! opened: not in the initramfs) so hup and `fw_setenv` never interleave.
//!
//! Storage of a copy ([`Storage`]): a file or block device at a byte offset, as named; or,
//! when the device path lies under the boot partition's mount point on the running OS
//! (`boot_mount`, e.g. `/boot`), the file at the rest of that path on the FAT boot
//! partition, reached through [`Esp`] (no mount).

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use super::ubootenv::{CopyWrite, FlagStyle, Image, UbootEnv};
use crate::disk::Esp;

/// Where libubootenv and hup look when nothing else is said.
pub const DEFAULT_PATH: &str = "/etc/fw_env.config";

/// Why a `fw_env.config` is refused (one line each).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FwEnvConfigError {
    #[error("fw_env.config names no environment (no line DEVICE OFFSET SIZE)")]
    Empty,
    #[error("fw_env.config line {line}: the size is 0")]
    ZeroSize { line: usize },
    #[error("fw_env.config: the two copies differ in size ({0:#x} and {1:#x} bytes)")]
    SizesDiffer(usize, usize),
    #[error("fw_env.config line {line}: {device} is MTD or UBI flash, which hup does not write")]
    Flash { line: usize, device: String },
    #[error("fw_env.config line {line}: the device path {device:?} is not absolute")]
    Relative { line: usize, device: String },
    #[error("fw_env.config line {line}: {what} {value:?} is not a number")]
    Number {
        line: usize,
        what: &'static str,
        value: String,
    },
}

/// One copy's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDevice {
    /// The 1-based line number in the file.
    pub line: usize,
    pub device: PathBuf,
    /// Byte offset; negative: from the end of the block device.
    pub offset: i64,
    /// Bytes of one copy.
    pub size: usize,
    pub sector_size: Option<u64>,
    pub sectors: Option<u64>,
}

/// A parsed `fw_env.config`: one copy, or two (redundant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvConfig {
    pub copies: Vec<EnvDevice>,
}

/// C's `strtoll(s, 0)` on a whole field: sign, `0x` hex, leading-`0` octal, decimal.
fn c_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// C's `%x` on a whole field: hexadecimal with or without `0x`.
fn c_hex(s: &str) -> Option<u64> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(h, 16).ok()
}

impl FwEnvConfig {
    /// Parses the text of a `fw_env.config`.
    pub fn parse(text: &str) -> Result<FwEnvConfig, FwEnvConfigError> {
        let mut copies: Vec<EnvDevice> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = raw.split_whitespace().collect();
            // An indented comment: libubootenv finds no number after its first word.
            if f.first().is_some_and(|w| w.starts_with('#')) {
                continue;
            }
            if f.len() < 3 {
                if !f.is_empty() {
                    log::warn!("fw_env.config line {line} skipped (not DEVICE OFFSET SIZE): {raw}");
                }
                continue;
            }
            let number = |what, value: &str| FwEnvConfigError::Number {
                line,
                what,
                value: value.to_string(),
            };
            let device = f[0];
            let offset = c_int(f[1]).ok_or_else(|| number("OFFSET", f[1]))?;
            let size = c_hex(f[2]).ok_or_else(|| number("SIZE", f[2]))?;
            if copies.len() == 2 {
                log::warn!("fw_env.config line {line} ignored: only two copies are read");
                continue;
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size == 0 {
                return Err(FwEnvConfigError::ZeroSize { line });
            }
            if device.starts_with("/dev/mtd") || device.starts_with("/dev/ubi") {
                return Err(FwEnvConfigError::Flash {
                    line,
                    device: device.to_string(),
                });
            }
            if !device.starts_with('/') {
                return Err(FwEnvConfigError::Relative {
                    line,
                    device: device.to_string(),
                });
            }
            // Optional fields end at a comment or at what is not a number, as sscanf stops.
            let sector_size = f.get(3).and_then(|s| c_hex(s));
            let sectors = sector_size.and(f.get(4).and_then(|s| c_hex(s)));
            copies.push(EnvDevice {
                line,
                device: PathBuf::from(device),
                offset,
                size,
                sector_size,
                sectors,
            });
        }
        match copies.as_slice() {
            [] => Err(FwEnvConfigError::Empty),
            [a, b] if a.size != b.size => Err(FwEnvConfigError::SizesDiffer(a.size, b.size)),
            _ => Ok(FwEnvConfig { copies }),
        }
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<FwEnvConfig> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        FwEnvConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Two copies.
    pub fn is_redundant(&self) -> bool {
        self.copies.len() == 2
    }

    /// Bytes of one copy.
    pub fn size(&self) -> usize {
        self.copies[0].size
    }
}

/// Where one copy lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A file or block device, at a byte offset (negative: from the end of a block device).
    Path { path: PathBuf, offset: i64 },
    /// A file on the FAT boot partition (path from its root), the copy at offset 0.
    Fat { path: String },
}

/// `path` without `.` components, or `None` when it has `..` or is not absolute.
fn lexical(path: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_str()?.to_string()),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    path.is_absolute().then_some(out)
}

impl Storage {
    /// Where the copy of `dev` is: on the FAT boot partition when `boot_mount` (the boot
    /// partition's mount point on the running OS) is given and the device path lies under it,
    /// compared component by component without touching the filesystem; else the path as
    /// named. A FAT copy must be at offset 0.
    pub fn resolve(dev: &EnvDevice, boot_mount: Option<&Path>) -> Result<Storage> {
        if let Some(mount) = boot_mount {
            let m = lexical(mount).with_context(|| {
                format!(
                    "boot mount point {} is not a plain absolute path",
                    mount.display()
                )
            })?;
            if let Some(d) = lexical(&dev.device)
                && d.len() > m.len()
                && d[..m.len()] == m[..]
            {
                if dev.offset != 0 {
                    bail!(
                        "fw_env.config line {}: {} is a file on the boot partition; its offset must be 0, not {:#x}",
                        dev.line,
                        dev.device.display(),
                        dev.offset
                    );
                }
                return Ok(Storage::Fat {
                    path: format!("/{}", d[m.len()..].join("/")),
                });
            }
        }
        Ok(Storage::Path {
            path: dev.device.clone(),
            offset: dev.offset,
        })
    }
}

/// The environment a `fw_env.config` points at: read, and written so that a power cut keeps
/// the old or the new one. Every call reads the copies afresh; nothing is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvStore {
    copies: Vec<Storage>,
    size: usize,
}

/// libubootenv's lock file: `fw_setenv` holds an exclusive `flock` on it while it works.
pub const LOCK_PATH: &str = "/var/lock/fw_printenv.lock";

/// Takes libubootenv's lock when its file can be opened (best effort, as libubootenv itself
/// goes on without it); held until dropped.
fn lock() -> Option<Flock<File>> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .open(LOCK_PATH)
        .ok()?;
    match Flock::lock(f, FlockArg::LockExclusive) {
        Ok(l) => Some(l),
        Err((_, e)) => {
            log::warn!("cannot lock {LOCK_PATH}: {e}");
            None
        }
    }
}

/// Failpoint: an in-place write stopped half way (half the copy written and synced).
pub const FP_WRITE_MIDDLE: &str = "ubootenv-write-middle";
/// Failpoint: the temporary file of a whole-file write is complete and synced, not renamed.
pub const FP_TMP_WRITTEN: &str = "ubootenv-tmp-written";
/// Failpoint: the first copy of a fresh redundant environment is written, the second not.
pub const FP_FRESH_FIRST: &str = "ubootenv-fresh-first";

impl EnvStore {
    /// The store for `config`, with FAT copies mapped under `boot_mount` ([`Storage::resolve`]).
    pub fn new(config: &FwEnvConfig, boot_mount: Option<&Path>) -> Result<EnvStore> {
        let copies = config
            .copies
            .iter()
            .map(|d| Storage::resolve(d, boot_mount))
            .collect::<Result<Vec<_>>>()?;
        Ok(EnvStore {
            copies,
            size: config.size(),
        })
    }

    /// Where each copy is.
    pub fn copies(&self) -> &[Storage] {
        &self.copies
    }

    /// libubootenv counts up the flags of files and block devices.
    pub const STYLE: FlagStyle = FlagStyle::Incremental;

    /// Reads the environment: the one copy, or the redundant copy in use. `esp` is the open
    /// boot partition, needed when a copy is on it. The error of a bad environment carries a
    /// [`super::ubootenv::UbootEnvError`] (`BadCrc`, `BothBad`, ...).
    pub fn read(&self, esp: Option<&Esp>) -> Result<Image> {
        if self.copies.len() == 1 {
            let buf = self
                .read_copy(0, esp)?
                .with_context(|| format!("no U-Boot environment at {}", self.describe(0)))?;
            return Image::single(&buf, self.size)
                .with_context(|| format!("U-Boot environment at {}", self.describe(0)));
        }
        let (a, b) = (self.read_copy(0, esp)?, self.read_copy(1, esp)?);
        Image::redundant([a.as_deref(), b.as_deref()], self.size, Self::STYLE).with_context(|| {
            format!(
                "U-Boot environment at {} and {}",
                self.describe(0),
                self.describe(1)
            )
        })
    }

    /// Stores `env` over `image` (what [`EnvStore::read`] returned): a single copy through a
    /// temporary file and a rename when the copy is a whole file, in place otherwise;
    /// redundant, the copy not in use, which wins once it is whole.
    fn write(&self, esp: Option<&Esp>, image: &Image, env: &UbootEnv) -> Result<()> {
        let w = image
            .next(env)
            .context("rendering the U-Boot environment")?;
        self.apply(esp, &w)
    }

    /// Reads the environment, lets `change` edit it and writes it back when it changed;
    /// returns what `change` returned.
    pub fn update<T>(
        &self,
        esp: Option<&Esp>,
        change: impl FnOnce(&mut UbootEnv) -> Result<T>,
    ) -> Result<T> {
        let _lock = lock();
        let image = self.read(esp)?;
        let mut env = image.env.clone();
        let out = change(&mut env)?;
        if env != image.env {
            self.write(esp, &image, &env)?;
        }
        Ok(out)
    }

    /// Writes `env` as a new environment over whatever is there (provisioning): every copy,
    /// copy 1 first, so a cut in between leaves copy 1 whole (and in use).
    pub fn create(&self, esp: Option<&Esp>, env: &UbootEnv) -> Result<()> {
        let writes = Image::fresh(env, self.size, self.copies.len() == 2)
            .context("rendering the U-Boot environment")?;
        let _lock = lock();
        for (i, w) in writes.iter().enumerate() {
            if i == 1 {
                crate::failpoint::hit(FP_FRESH_FIRST);
            }
            self.apply(esp, w)?;
        }
        Ok(())
    }

    fn describe(&self, copy: usize) -> String {
        match &self.copies[copy] {
            Storage::Path { path, offset: 0 } => path.display().to_string(),
            Storage::Path { path, offset } => format!("{} offset {offset:#x}", path.display()),
            Storage::Fat { path } => format!("{path} on the boot partition"),
        }
    }

    fn apply(&self, esp: Option<&Esp>, w: &CopyWrite) -> Result<()> {
        if w.obsolete_other {
            bail!("the boolean flag style of NOR flash is not written by hup");
        }
        let what = || {
            format!(
                "writing the U-Boot environment to {}",
                self.describe(w.copy)
            )
        };
        match &self.copies[w.copy] {
            Storage::Fat { path } => fat(esp, path)?
                .replace_file(path, &w.bytes)
                .with_context(what),
            Storage::Path { path, offset } => {
                let single = self.copies.len() == 1;
                write_path(path, *offset, &w.bytes, single).with_context(what)
            }
        }
    }

    /// The bytes of one copy; `None` when its file is absent.
    fn read_copy(&self, copy: usize, esp: Option<&Esp>) -> Result<Option<Vec<u8>>> {
        let what = || format!("reading the U-Boot environment at {}", self.describe(copy));
        match &self.copies[copy] {
            Storage::Fat { path } => {
                let esp = fat(esp, path)?;
                if !esp.exists(path)? {
                    return Ok(None);
                }
                let mut buf = esp.read_file(path).with_context(what)?;
                if buf.len() < self.size {
                    bail!(
                        "{} has {} bytes, less than the environment's {:#x}",
                        self.describe(copy),
                        buf.len(),
                        self.size
                    );
                }
                buf.truncate(self.size);
                Ok(Some(buf))
            }
            Storage::Path { path, offset } => {
                let f = match File::open(path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e).with_context(what),
                };
                let at = position(&f, path, *offset)?;
                let mut buf = vec![0; self.size];
                f.read_exact_at(&mut buf, at).with_context(what)?;
                Ok(Some(buf))
            }
        }
    }
}

fn fat<'a>(esp: Option<&'a Esp>, path: &str) -> Result<&'a Esp> {
    esp.with_context(|| {
        format!("the U-Boot environment {path} is on the boot partition, which is not open")
    })
}

/// The absolute byte position of `offset` in `f` (negative: from the end of a block device).
fn position(f: &File, path: &Path, offset: i64) -> Result<u64> {
    if offset >= 0 {
        return Ok(offset.unsigned_abs());
    }
    let meta = f.metadata()?;
    if !meta.file_type().is_block_device() {
        bail!(
            "{}: a negative offset ({offset}) needs a block device",
            path.display()
        );
    }
    let end = (&*f).seek(SeekFrom::End(0))?;
    end.checked_add_signed(offset)
        .with_context(|| format!("{}: offset {offset} is before its start", path.display()))
}

/// True when the copy is the whole of a regular file (offset 0, absent or exactly its size):
/// it can be replaced through a temporary file and a rename.
fn whole_file(path: &Path, offset: i64, len: usize) -> Result<bool> {
    if offset != 0 {
        return Ok(false);
    }
    match fs::metadata(path) {
        Ok(m) => Ok(m.file_type().is_file() && m.len() == len as u64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
}

/// Writes one copy at `path`: a single copy that is a whole file through a temporary file and
/// a rename; anything else in place (a redundant copy: the other one stays valid meanwhile; a
/// single copy on a raw offset: a cut leaves a bad CRC, the documented risk).
fn write_path(path: &Path, offset: i64, bytes: &[u8], single: bool) -> Result<()> {
    if single && whole_file(path, offset, bytes.len())? {
        return replace_whole(path, bytes);
    }
    let f = match OpenOptions::new().write(true).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && offset == 0 => {
            // A redundant copy's file that is not there yet: made whole, then renamed in.
            return replace_whole(path, bytes);
        }
        r => r.with_context(|| format!("opening {}", path.display()))?,
    };
    let at = position(&f, path, offset)?;
    let half = bytes.len() / 2;
    f.write_all_at(&bytes[..half], at)?;
    f.sync_data()?;
    crate::failpoint::hit(FP_WRITE_MIDDLE);
    f.write_all_at(&bytes[half..], at + half as u64)?;
    f.sync_all()?;
    Ok(())
}

/// Replaces the file `path` by `bytes`: `.<name>.hup-new` beside it, fsync, rename, fsync of
/// the directory. Keeps the old file's permissions (0644 for a new one).
fn replace_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.hup-new", name.to_string_lossy()));
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    let f = File::open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    crate::failpoint::hit(FP_TMP_WRITTEN);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    crate::fsutil::sync_dir(dir)
}

#[cfg(test)]
#[path = "fw_env_config_tests.rs"]
mod tests;
