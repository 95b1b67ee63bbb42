//! Backup of a data partition for a layout migration (docs/layout-migration.md): a mounted
//! directory tree as a tar stream, compressed with zstd, and the stream that restores it.
//!
//! The tar holds everything `ext4::populate` restores: numeric owners, all 12 mode bits,
//! mtimes with nanoseconds (PAX `mtime`), extended attributes (PAX `SCHILY.xattr.NAME`,
//! including `security.*`, `trusted.*` and POSIX ACLs in their xattr form), symlinks, hard
//! links, device nodes and fifos; the root directory is the member `./`. Entries are sorted
//! by name; other filesystems mounted below the root are not entered; sockets are skipped
//! (tar cannot hold them). Files can be excluded (the staged bundle, stored on its own).
//!
//! [`Source::scan`] computes the exact tar size from metadata only (no file is read), so
//! the space a backup needs can be bounded cheaply at staging time.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tar::{EntryType, Header};

use crate::bundle::tree::{ExactReader, pax_records, xattrs};

/// zstd level of the backup (zstd's default: fast, and data partitions are often binary).
const LEVEL: i32 = 3;
/// Tar blocks.
const BLOCK: u64 = 512;
/// ext4 blocks, for the space the restored files take.
const FS_BLOCK: u64 = 4096;
/// The end-of-archive marker `tar::Builder` writes: two zero blocks.
pub const TAR_END: u64 = 1024;

/// What a tar stream of the tree holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Scan {
    /// Archive members (hard links and the root directory included).
    pub entries: u64,
    /// Bytes of regular file content.
    pub file_bytes: u64,
    /// Length of the uncompressed tar stream, end marker included.
    pub tar_bytes: u64,
    /// Space the entries take on a new ext4 filesystem (4 KiB blocks; sparse files count in
    /// full): an upper bound for the restore.
    pub fs_bytes: u64,
    /// Entries left out: sockets, other filesystems.
    pub skipped: u64,
}

/// A mounted data partition to back up.
#[derive(Debug, Clone)]
pub struct Source {
    root: PathBuf,
    dev: u64,
    exclude: Vec<(u64, u64)>,
}

impl Source {
    /// The tree under `root` (a directory, usually the mount point of the data partition).
    pub fn new(root: &Path) -> Result<Source> {
        let meta = fs::symlink_metadata(root)
            .with_context(|| format!("reading the data directory {}", root.display()))?;
        if !meta.is_dir() {
            bail!("the data directory {} is not a directory", root.display());
        }
        Ok(Source {
            root: root.to_path_buf(),
            dev: meta.dev(),
            exclude: Vec::new(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Leaves the file at `path` out of the archive (matched by device and inode, so any of
    /// its names); a missing file is ignored.
    pub fn exclude(&mut self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) => self.exclude.push((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        Ok(())
    }

    /// The exact size and content counts of the tar stream, from metadata alone.
    pub fn scan(&self) -> Result<Scan> {
        self.walk(io::sink(), true).map(|(s, _)| s)
    }

    /// Writes the tar stream to `out`.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<Scan> {
        self.walk(out, false).map(|(s, _)| s)
    }

    /// Writes the tar stream compressed with zstd (all cores) to `out`; returns what the tar
    /// held and the number of compressed bytes written.
    pub fn write_zstd<W: Write>(&self, out: W) -> Result<(Scan, u64)> {
        let counted = Counting { inner: out, n: 0 };
        let mut enc = zstd::stream::write::Encoder::new(counted, LEVEL)
            .context("starting the zstd compressor")?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        enc.multithread(u32::try_from(threads).unwrap_or(1))
            .context("enabling zstd worker threads")?;
        let (scan, enc) = self.walk(enc, false)?;
        let counted = enc.finish().context("finishing the zstd stream")?;
        Ok((scan, counted.n))
    }

    /// The exact compressed size of the backup, by compressing it to nowhere.
    pub fn compressed_size(&self) -> Result<(Scan, u64)> {
        self.write_zstd(io::sink())
    }

    fn walk<W: Write>(&self, out: W, count_only: bool) -> Result<(Scan, W)> {
        let mut w = Walker {
            builder: tar::Builder::new(Counting { inner: out, n: 0 }),
            src: self,
            count_only,
            links: HashMap::new(),
            scan: Scan::default(),
        };
        let meta = fs::symlink_metadata(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?;
        w.entry(&self.root, Path::new("."), &meta)?;
        w.dir(&self.root, Path::new(""))?;
        let mut scan = w.scan;
        let counted = w.builder.into_inner().context("finishing the tar stream")?;
        scan.tar_bytes += counted.n;
        Ok((scan, counted.inner))
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Walker<'a, W: Write> {
    builder: tar::Builder<Counting<W>>,
    src: &'a Source,
    /// Headers only: file contents are counted, not read.
    count_only: bool,
    /// (dev, ino) of files with several links -> the archive name of the first one.
    links: HashMap<(u64, u64), PathBuf>,
    scan: Scan,
}

impl<W: Write> Walker<'_, W> {
    fn dir(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect())
            .with_context(|| format!("reading directory {}", dir.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut dir_bytes = 0;
        for name in names {
            dir_bytes += 8 + (name.len() as u64).div_ceil(4) * 4;
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.dev() != self.src.dev {
                log::warn!("backup: skipping {} (another filesystem)", path.display());
                self.scan.skipped += 1;
                continue;
            }
            if self.src.exclude.contains(&(meta.dev(), meta.ino())) {
                continue;
            }
            if self.entry(&path, &rel, &meta)? && meta.is_dir() {
                self.dir(&path, &rel)?;
            }
        }
        // Directory blocks, on top of the one counted with the directory itself.
        self.scan.fs_bytes += dir_bytes.div_ceil(FS_BLOCK) * FS_BLOCK;
        Ok(())
    }

    /// Archives one entry; false when it was skipped.
    fn entry(&mut self, path: &Path, rel: &Path, meta: &fs::Metadata) -> Result<bool> {
        let ft = meta.file_type();
        if ft.is_socket() {
            log::warn!("backup: skipping socket {}", path.display());
            self.scan.skipped += 1;
            return Ok(false);
        }
        let name = if rel == Path::new(".") {
            PathBuf::from("./")
        } else if ft.is_dir() {
            let mut s = rel.as_os_str().to_owned();
            s.push("/");
            PathBuf::from(s)
        } else {
            rel.to_path_buf()
        };
        let mut h = Header::new_ustar();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if meta.mtime_nsec() != 0 && meta.mtime() >= 0 {
            let t = format!("{}.{:09}", meta.mtime(), meta.mtime_nsec());
            pax.push(("mtime".into(), t.into_bytes()));
        }
        let xattrs = xattrs(path)?;
        if xattrs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > 96 {
            self.scan.fs_bytes += FS_BLOCK; // beyond the in-inode space: an xattr block
        }
        pax.extend(xattrs);
        self.scan.entries += 1;

        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())).cloned() {
                h.set_entry_type(EntryType::Link);
                self.pax(&name, &pax)?;
                self.builder
                    .append_link(&mut h, &name, &first)
                    .with_context(|| format!("archiving hard link {}", path.display()))?;
                return Ok(true);
            }
            self.links.insert((meta.dev(), meta.ino()), name.clone());
        }

        if ft.is_symlink() {
            let target =
                fs::read_link(path).with_context(|| format!("reading link {}", path.display()))?;
            if target.as_os_str().len() >= 60 {
                self.scan.fs_bytes += FS_BLOCK;
            }
            h.set_entry_type(EntryType::Symlink);
            self.pax(&name, &pax)?;
            self.builder
                .append_link(&mut h, &name, &target)
                .with_context(|| format!("archiving symlink {}", path.display()))?;
        } else if ft.is_file() {
            let len = meta.len();
            h.set_entry_type(EntryType::Regular);
            h.set_size(len);
            self.pax(&name, &pax)?;
            self.scan.file_bytes += len;
            self.scan.fs_bytes += len.div_ceil(FS_BLOCK) * FS_BLOCK;
            if self.count_only {
                self.builder
                    .append_data(&mut h, &name, io::empty())
                    .with_context(|| format!("archiving {}", path.display()))?;
                self.scan.tar_bytes += len.div_ceil(BLOCK) * BLOCK;
            } else {
                let f =
                    fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let data = ExactReader {
                    inner: f,
                    remaining: len,
                    path,
                };
                self.builder
                    .append_data(&mut h, &name, data)
                    .with_context(|| format!("archiving {}", path.display()))?;
            }
        } else {
            let ty = if ft.is_dir() {
                self.scan.fs_bytes += FS_BLOCK;
                EntryType::Directory
            } else if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else if ft.is_fifo() {
                EntryType::Fifo
            } else {
                bail!("{}: unsupported file type", path.display());
            };
            h.set_entry_type(ty);
            if ft.is_char_device() || ft.is_block_device() {
                let rdev = meta.rdev();
                h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            }
            self.pax(&name, &pax)?;
            self.builder
                .append_data(&mut h, &name, io::empty())
                .with_context(|| format!("archiving {}", path.display()))?;
        }
        Ok(true)
    }

    /// A PAX extended header for the next entry, when there are records.
    fn pax(&mut self, name: &Path, records: &[(String, Vec<u8>)]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let data = pax_records(records);
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        let base = name.file_name().map_or(&b"."[..], |n| n.as_bytes());
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(80)]);
        h.set_path(std::ffi::OsStr::from_bytes(&pax_name))
            .or_else(|_| h.set_path("PaxHeaders/entry"))?;
        h.set_cksum();
        self.builder
            .append(&h, &data[..])
            .with_context(|| format!("archiving the attributes of {}", name.display()))
    }
}

/// A regular file added at the end of a restored archive (the staged bundle).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtraFile {
    /// Path inside the archive, relative (`hup/staged/bundle.hup`).
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
}

impl ExtraFile {
    /// The tar header (with a PAX record for the mtime's nanoseconds and a GNU long-name
    /// record when the path needs them) that precedes the file's `size` bytes.
    fn header(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        if self.mtime_nsec != 0 {
            let t = format!("{}.{:09}", self.mtime, self.mtime_nsec);
            let data = pax_records(&[("mtime".to_string(), t.into_bytes())]);
            let mut x = Header::new_ustar();
            x.set_entry_type(EntryType::XHeader);
            x.set_mode(0o644);
            x.set_size(data.len() as u64);
            x.set_path("PaxHeaders/extra")?;
            x.set_cksum();
            b.append(&x, &data[..])
                .with_context(|| format!("making the tar header of {}", self.path))?;
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(self.mode & 0o7777);
        h.set_uid(u64::from(self.uid));
        h.set_gid(u64::from(self.gid));
        h.set_mtime(self.mtime);
        h.set_size(self.size);
        b.append_data(&mut h, &self.path, io::empty())
            .with_context(|| format!("making the tar header of {}", self.path))?;
        Ok(b.get_ref().clone())
    }
}

/// The tar stream that restores a backup: the decompressed backup without its end marker,
/// then `extra` (header, `content`, padding), then the end marker. `tar_bytes` is the
/// uncompressed length the backup recorded.
pub fn restore_stream(
    compressed: impl Read + Send + 'static,
    tar_bytes: u64,
    extra: Option<(ExtraFile, Box<dyn Read + Send>)>,
) -> Result<Box<dyn Read + Send>> {
    if tar_bytes < TAR_END {
        bail!("the backup's tar stream of {tar_bytes} bytes is shorter than its end marker");
    }
    let dec = zstd::stream::read::Decoder::new(compressed).context("starting zstd")?;
    let body = dec.take(tar_bytes - TAR_END);
    let Some((file, content)) = extra else {
        return Ok(Box::new(body.chain(io::repeat(0).take(TAR_END))));
    };
    let header = file.header()?;
    let pad = file.size.div_ceil(BLOCK) * BLOCK - file.size;
    Ok(Box::new(
        body.chain(io::Cursor::new(header))
            .chain(ExactLen {
                inner: content.take(file.size),
                left: file.size,
                name: file.path.clone(),
            })
            .chain(io::repeat(0).take(pad + TAR_END)),
    ))
}

/// Fails when the reader ends before `left` bytes.
struct ExactLen<R> {
    inner: R,
    left: u64,
    name: String,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {} bytes missing", self.name, self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/file"), vec![7u8; 5000]).unwrap();
        fs::write(r.join("empty"), b"").unwrap();
        fs::hard_link(r.join("a/file"), r.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink("a/file", r.join("sym")).unwrap();
        fs::write(r.join("a/b/").join("n".repeat(150)), b"long").unwrap();
        fs::write(r.join("skip.me"), b"excluded").unwrap();
        t
    }

    fn members(tar: &[u8]) -> Vec<(String, u64)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.size())
            })
            .collect()
    }

    #[test]
    fn scan_predicts_the_stream_exactly() {
        let t = tree();
        let mut src = Source::new(t.path()).unwrap();
        src.exclude(&t.path().join("skip.me")).unwrap();
        src.exclude(&t.path().join("missing")).unwrap();
        let scan = src.scan().unwrap();
        let mut out = Vec::new();
        assert_eq!(src.write_tar(&mut out).unwrap(), scan);
        assert_eq!(out.len() as u64, scan.tar_bytes);
        assert_eq!(scan.file_bytes, 5004);
        assert_eq!(scan.entries, 8); // ./ a/ a/b/ link long file empty sym
        let names: Vec<String> = members(&out).into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n.contains("skip.me")), "{names:?}");
        assert!(
            names.iter().any(|n| n.ends_with(&"n".repeat(150))),
            "{names:?}"
        );

        let (scan2, n) = src.compressed_size().unwrap();
        assert_eq!(scan2, scan);
        let mut z = Vec::new();
        let (_, written) = src.write_zstd(&mut z).unwrap();
        assert_eq!((written, z.len() as u64), (n, n));
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), out);
    }

    #[test]
    fn restore_stream_appends_the_extra_file() {
        let t = tree();
        let src = Source::new(t.path()).unwrap();
        let mut z = Vec::new();
        let (scan, _) = src.write_zstd(&mut z).unwrap();
        let extra = ExtraFile {
            path: format!("hup/staged/{}", "b".repeat(120)),
            size: 700,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            mtime_nsec: 5,
        };
        let content: Box<dyn Read + Send> = Box::new(io::Cursor::new(vec![1u8; 700]));
        let mut s = restore_stream(
            io::Cursor::new(z.clone()),
            scan.tar_bytes,
            Some((extra.clone(), content)),
        )
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let m = members(&all);
        assert_eq!(m.last().unwrap(), &(extra.path.clone(), 700));
        assert_eq!(m.len() as u64, scan.entries + 1);

        let short: Box<dyn Read + Send> = Box::new(io::Cursor::new(vec![1u8; 10]));
        let mut s =
            restore_stream(io::Cursor::new(z), scan.tar_bytes, Some((extra, short))).unwrap();
        let err = s.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("bytes missing"), "{err}");
    }
}
