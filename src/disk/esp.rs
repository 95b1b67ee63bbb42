//! The boot partition (vfat ESP), read and written with the `fatfs` crate through a [`PartIo`]:
//! no mount, so it works the same on an image file and in the initramfs.
//!
//! Paths are `/`-separated and relative to the root (a leading `/` is ignored); FAT name
//! lookups are case-insensitive. FAT has no atomic rename-over: [`Esp::rename`] removes the
//! destination first, so callers write to a temporary name and rename last;
//! [`Esp::replace_file`] switches an existing file's content atomically with raw
//! directory-entry writes.

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use serde::Serialize;

use super::fat_bulk::{self, BulkWriter};
use super::fat_io::{FatIo, IoCounts};
use super::part_io::PartIo;

type Fs = FileSystem<FatIo>;
type Dir<'a> = fatfs::Dir<'a, FatIo>;

/// Time stamp of the entries hup writes. fatfs 0.3.6 without its `chrono` feature stamps
/// the invalid DOS date 1980-00-00, and UEFI's FAT driver refuses to rename (SetInfo) such
/// a file: systemd-boot then cannot count a boot try by renaming its entry.
#[derive(Debug)]
struct DosEpoch;

impl fatfs::TimeProvider for DosEpoch {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static DOS_EPOCH: DosEpoch = DosEpoch;

/// Below this size the ESP is FAT16 (or FAT12 when tiny), at and above it FAT32.
const FAT32_MIN_BYTES: u64 = 256 << 20;

/// Formats `io` as FAT (FAT32 from 256 MiB, else FAT16/FAT12 as the size allows) with the
/// given volume label (upper-cased, at most 11 characters) and FAT sector size (the disk's
/// logical sector size: 512 or 4096).
pub fn format_esp(mut io: PartIo, label: &str, sector_size: u64) -> Result<()> {
    let name = io.name().to_string();
    let ss = u16::try_from(sector_size)
        .ok()
        .filter(|s| *s == 512 || *s == 4096)
        .with_context(|| format!("unsupported FAT sector size {sector_size} for {name}"))?;
    let mut vol = [b' '; 11];
    if label.len() > 11 || !label.is_ascii() {
        bail!("FAT volume label {label:?} must be at most 11 ASCII characters");
    }
    for (d, s) in vol.iter_mut().zip(label.bytes()) {
        *d = s.to_ascii_uppercase();
    }
    let mut opts = FormatVolumeOptions::new()
        .volume_label(vol)
        .bytes_per_sector(ss);
    if io.len() >= FAT32_MIN_BYTES {
        opts = opts
            .fat_type(FatType::Fat32)
            .bytes_per_cluster(4096.max(u32::from(ss)));
    }
    fatfs::format_volume(&mut io, opts).with_context(|| format!("formatting {name} as FAT"))?;
    io.sync()
        .with_context(|| format!("syncing {name} after formatting"))?;
    Ok(())
}

/// One directory entry of the ESP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EspEntry {
    pub name: String,
    pub is_dir: bool,
    pub len: u64,
}

/// An open FAT filesystem on the boot partition.
pub struct Esp {
    fs: Fs,
    /// A clone of the stream fatfs uses (same cache), for the directory repair and syncs.
    sync_io: FatIo,
    name: String,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl std::fmt::Debug for Esp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Esp").finish_non_exhaustive()
    }
}

fn trim(path: &str) -> &str {
    path.trim_start_matches('/').trim_end_matches('/')
}

/// (parent directory path, final name).
fn split(path: &str) -> (&str, &str) {
    let p = trim(path);
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

impl Esp {
    /// Opens the FAT filesystem on `io`.
    pub fn open(io: PartIo) -> Result<Esp> {
        let name = io.name().to_string();
        let io = FatIo::new(io);
        let sync_io = io.clone();
        let fs = FileSystem::new(io, FsOptions::new().time_provider(&DOS_EPOCH))
            .with_context(|| format!("opening the FAT filesystem on {name}"))?;
        Ok(Esp { fs, sync_io, name })
    }

    /// "FAT12", "FAT16" or "FAT32".
    pub fn fat_type(&self) -> &'static str {
        match self.fs.fat_type() {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }

    /// Volume label from the boot sector, trailing spaces removed.
    pub fn volume_label(&self) -> String {
        self.fs.volume_label().trim_end().to_string()
    }

    /// Bytes read and written through the partition stream since [`Esp::open`] (cache hits
    /// included): a deterministic measure of work for tests.
    pub fn io_counts(&self) -> IoCounts {
        self.sync_io.counts()
    }

    /// Tests: the stream fatfs and the raw FAT code share.
    #[cfg(test)]
    pub(crate) fn raw_io(&self) -> &FatIo {
        &self.sync_io
    }

    /// Allocation unit in bytes.
    pub fn cluster_size(&self) -> u64 {
        u64::from(self.fs.cluster_size())
    }

    /// Free space in bytes.
    pub fn free_bytes(&self) -> Result<u64> {
        let st = self
            .fs
            .stats()
            .with_context(|| format!("reading free space of {}", self.name))?;
        Ok(u64::from(st.free_clusters()) * u64::from(st.cluster_size()))
    }

    /// Bytes a file of `len` bytes occupies (whole clusters).
    pub fn allocation(&self, len: u64) -> u64 {
        len.div_ceil(self.cluster_size()) * self.cluster_size()
    }

    /// Fails, naming both numbers, when fewer than `needed` bytes are free.
    pub fn ensure_room(&self, needed: u64) -> Result<()> {
        let free = self.free_bytes()?;
        if free < needed {
            bail!(
                "boot partition {} has {free} bytes free, {needed} bytes needed",
                self.name
            );
        }
        Ok(())
    }

    fn dir(&self, path: &str) -> io::Result<Dir<'_>> {
        let p = trim(path);
        if p.is_empty() {
            Ok(self.fs.root_dir())
        } else {
            self.fs.root_dir().open_dir(p)
        }
    }

    /// The entry at `path`, if present.
    pub fn entry(&self, path: &str) -> Result<Option<EspEntry>> {
        let (parent, name) = split(path);
        if name.is_empty() {
            return Ok(Some(EspEntry {
                name: String::new(),
                is_dir: true,
                len: 0,
            }));
        }
        let dir = match self.dir(parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("opening {parent:?} on {}", self.name));
            }
        };
        for e in dir.iter() {
            let e = e.with_context(|| format!("listing {parent:?} on {}", self.name))?;
            if e.file_name().eq_ignore_ascii_case(name) {
                return Ok(Some(EspEntry {
                    name: e.file_name(),
                    is_dir: e.is_dir(),
                    len: e.len(),
                }));
            }
        }
        Ok(None)
    }

    /// True when a file or directory exists at `path`.
    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.entry(path)?.is_some())
    }

    /// Entries of the directory `dir` (without `.` and `..`), sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<EspEntry>> {
        let d = self
            .dir(dir)
            .with_context(|| format!("opening directory {dir:?} on {}", self.name))?;
        let mut v = Vec::new();
        for e in d.iter() {
            let e = e.with_context(|| format!("listing {dir:?} on {}", self.name))?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            v.push(EspEntry {
                name,
                is_dir: e.is_dir(),
                len: e.len(),
            });
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Creates `path` and its missing parents.
    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        let mut cur = String::new();
        for part in trim(path).split('/').filter(|s| !s.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            match self.entry(&cur)? {
                Some(e) if e.is_dir => {}
                Some(_) => bail!("{cur:?} on {} is a file, not a directory", self.name),
                None => {
                    self.fs
                        .root_dir()
                        .create_dir(&cur)
                        .with_context(|| format!("creating directory {cur:?} on {}", self.name))?;
                    super::fat_fix::fix_new_dir(&self.sync_io, &cur)
                        .with_context(|| format!("directory {cur:?} on {}", self.name))?;
                }
            }
        }
        Ok(())
    }

    /// Writes `path` (created or truncated, parents created) from `src`; returns the length.
    pub fn write_file(&self, path: &str, src: &mut dyn Read) -> Result<u64> {
        let (parent, _) = split(path);
        self.create_dir_all(parent)?;
        self.write_new_file(path, src)
    }

    /// Writes a new file `path` from `src` in an existing directory; returns the length. One
    /// create of fatfs (two scans of the directory), no lookups of ours; many files into one
    /// directory go through [`Esp::bulk_writer`] instead. The caller makes sure no file of
    /// that name (on FAT's terms) is there: it would be overwritten.
    pub fn write_new_file(&self, path: &str, src: &mut dyn Read) -> Result<u64> {
        let mut f = self
            .fs
            .root_dir()
            .create_file(trim(path))
            .with_context(|| format!("creating {path:?} on {}", self.name))?;
        f.truncate()
            .with_context(|| format!("truncating {path:?} on {}", self.name))?;
        let n =
            io::copy(src, &mut f).with_context(|| format!("writing {path:?} on {}", self.name))?;
        f.flush()
            .with_context(|| format!("flushing {path:?} on {}", self.name))?;
        Ok(n)
    }

    /// Starts writing new files into the directory `dir`, which must hold nothing but "."
    /// and "..", in work linear in their number (`disk/fat_bulk.rs`): the files' short
    /// names come from one [`super::BootNames`], in the order they are added.
    pub fn bulk_writer(&self, dir: &str) -> Result<BulkWriter<'_>> {
        BulkWriter::new(&self.fs, &self.sync_io, trim(dir))
            .with_context(|| format!("writing files into {dir:?} on {}", self.name))
    }

    /// Prepares the directory `dir` for emptying in linear work: its files become one
    /// cluster chain on one entry (others deleted), and what a power cut during a bulk
    /// write left is repaired. The caller then removes what [`Esp::list`] shows.
    pub fn gather_dir(&self, dir: &str) -> Result<()> {
        fat_bulk::gather(&self.sync_io, trim(dir))
            .with_context(|| format!("emptying {dir:?} on {}", self.name))
    }

    /// Writes `data` to `path` (created or truncated, parents created).
    pub fn write_bytes(&self, path: &str, data: &[u8]) -> Result<()> {
        self.write_file(path, &mut &data[..]).map(|_| ())
    }

    /// The whole content of the file at `path`.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let mut f = self
            .fs
            .root_dir()
            .open_file(trim(path))
            .with_context(|| format!("opening {path:?} on {}", self.name))?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .with_context(|| format!("reading {path:?} on {}", self.name))?;
        Ok(v)
    }

    /// Renames `from` to `to` (any directories), replacing an existing `to` (not atomic on
    /// FAT: the old `to` is removed first).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        if !self.exists(from)? {
            bail!("cannot rename {from:?} on {}: it does not exist", self.name);
        }
        if !trim(from).eq_ignore_ascii_case(trim(to)) {
            self.remove_if_exists(to)?;
        }
        let root = self.fs.root_dir();
        root.rename(trim(from), &root, trim(to))
            .with_context(|| format!("renaming {from:?} to {to:?} on {}", self.name))
    }

    /// Replaces the content of the existing file `path` by `data` so that a power cut at any
    /// point leaves `path` whole with its old or its new content (never torn, never missing);
    /// creates the file (not atomically: there is nothing to keep) when it is absent.
    ///
    /// fatfs 0.3.6 cannot rename onto an existing file, so the switch is raw
    /// (docs/boot-backends.md, "The atomic update"): fatfs writes `data` as `<path>.new`
    /// (chain N) and everything is synced; then three single-entry writes, each synced:
    /// (1) `<path>.new` is pointed at no cluster, (2) `path` at N with the new size, (3)
    /// `<path>.new` at the old chain O with the old size; fatfs then removes `<path>.new`,
    /// freeing O. No two entries ever share a cluster; a cut after (1) or (2) leaves one
    /// chain (N, then O) that no entry references, which `fsck.fat` reclaims. The next call
    /// removes a leftover `<path>.new`, freeing whatever it still points at.
    pub fn replace_file(&self, path: &str, data: &[u8]) -> Result<()> {
        let tmp = format!("{}.new", trim(path));
        let (parent, name) = split(path);
        let (_, tmp_name) = split(&tmp);
        self.create_dir_all(parent)?;
        let geo = super::fat_raw::geometry(&self.sync_io)?;
        let (dir, _) = geo.dir_at(&self.sync_io, parent)?;
        let raw_err = || format!("replacing {path:?} on {}", self.name);
        if let Some(left) = geo
            .file_entry(&self.sync_io, dir, tmp_name)
            .with_context(raw_err)?
        {
            let cur = geo
                .file_entry(&self.sync_io, dir, name)
                .with_context(raw_err)?;
            if cur.is_some_and(|c| c.cluster != 0 && c.cluster == left.cluster) {
                // A cut inside fatfs's rename when `path` was first created (below): both
                // entries name one chain; drop the temporary name, keep the chain.
                geo.forget_entry(&self.sync_io, &left)
                    .with_context(raw_err)?;
            } else {
                self.remove(&tmp)?;
            }
            self.sync()?;
        }
        if !self.exists(path)? {
            self.write_new_file(&tmp, &mut &data[..])?;
            return self.rename(&tmp, path);
        }
        self.write_new_file(&tmp, &mut &data[..])?;
        self.sync()?;
        crate::failpoint::hit("esp-replace-written");
        let find = |n: &str| -> Result<super::fat_raw::FileEntry> {
            geo.file_entry(&self.sync_io, dir, n)
                .with_context(raw_err)?
                .with_context(|| format!("{n:?} vanished while replacing {path:?}"))
        };
        let (old, new) = (find(name)?, find(tmp_name)?);
        geo.point_entry(&self.sync_io, &new, 0, 0)
            .with_context(raw_err)?;
        self.sync()?;
        crate::failpoint::hit("esp-replace-detached");
        geo.point_entry(&self.sync_io, &old, new.cluster, new.size)
            .with_context(raw_err)?;
        self.sync()?;
        crate::failpoint::hit("esp-replace-switched");
        geo.point_entry(&self.sync_io, &new, old.cluster, old.size)
            .with_context(raw_err)?;
        self.sync()?;
        crate::failpoint::hit("esp-replace-swapped");
        self.remove(&tmp)
    }

    fn sync(&self) -> Result<()> {
        self.sync_io
            .sync()
            .with_context(|| format!("syncing the boot partition {}", self.name))
    }

    /// Removes a file or an empty directory.
    pub fn remove(&self, path: &str) -> Result<()> {
        self.fs
            .root_dir()
            .remove(trim(path))
            .with_context(|| format!("removing {path:?} on {}", self.name))
    }

    /// Removes `path` if present; returns whether it was there.
    pub fn remove_if_exists(&self, path: &str) -> Result<bool> {
        if self.exists(path)? {
            self.remove(path)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Writes pending metadata (FSInfo, clean flag) and syncs the partition.
    pub fn close(self) -> Result<()> {
        let Esp { fs, sync_io, name } = self;
        fs.unmount()
            .with_context(|| format!("unmounting the FAT filesystem on {name}"))?;
        sync_io
            .sync()
            .with_context(|| format!("syncing the boot partition {name}"))
    }
}

#[cfg(test)]
#[path = "esp_replace_tests.rs"]
mod replace_tests;
