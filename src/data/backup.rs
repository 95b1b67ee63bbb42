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

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tar::{EntryType, Header};

use crate::archive::io::Counting;
use crate::archive::pax;
use crate::archive::tree::{Archived, Policy, walk};

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
        self.walk(io::sink(), Contents::CountOnly).map(|(s, _)| s)
    }

    /// Writes the tar stream to `out`.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<Scan> {
        self.walk(out, Contents::Read).map(|(s, _)| s)
    }

    /// Writes the tar stream compressed with zstd (all cores) to `out`; returns what the tar
    /// held and the number of compressed bytes written.
    pub fn write_zstd<W: Write>(&self, out: W) -> Result<(Scan, u64)> {
        let counted = Counting::new(out);
        let mut enc = zstd::stream::write::Encoder::new(counted, LEVEL)
            .context("starting the zstd compressor")?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        enc.multithread(u32::try_from(threads).unwrap_or(1))
            .context("enabling zstd worker threads")?;
        let (scan, enc) = self.walk(enc, Contents::Read)?;
        let counted = enc.finish().context("finishing the zstd stream")?;
        Ok((scan, counted.n))
    }

    /// The exact compressed size of the backup, by compressing it to nowhere.
    pub fn compressed_size(&self) -> Result<(Scan, u64)> {
        self.write_zstd(io::sink())
    }

    fn walk<W: Write>(&self, out: W, contents: Contents) -> Result<(Scan, W)> {
        let mut builder = tar::Builder::new(Counting::new(out));
        let mut policy = BackupPolicy {
            src: self,
            count_only: contents == Contents::CountOnly,
            scan: Scan::default(),
        };
        walk(&self.root, &mut builder, &mut policy)?;
        let mut scan = policy.scan;
        let counted = builder.into_inner().context("finishing the tar stream")?;
        scan.tar_bytes += counted.n;
        Ok((scan, counted.inner))
    }
}

/// Whether a walk reads file contents into the stream or only counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    Read,
    CountOnly,
}

/// The data backup's policy: one filesystem, no excluded file, no socket; counts what the
/// stream and the restored filesystem hold.
struct BackupPolicy<'a> {
    src: &'a Source,
    /// Headers only: file contents are counted, not read.
    count_only: bool,
    scan: Scan,
}

impl Policy for BackupPolicy<'_> {
    fn accept(&mut self, path: &Path, meta: &fs::Metadata) -> Result<bool> {
        if meta.dev() != self.src.dev {
            log::warn!("backup: skipping {} (another filesystem)", path.display());
            self.scan.skipped += 1;
            return Ok(false);
        }
        if self.src.exclude.contains(&(meta.dev(), meta.ino())) {
            return Ok(false);
        }
        if meta.file_type().is_socket() {
            log::warn!("backup: skipping socket {}", path.display());
            self.scan.skipped += 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn headers_only(&self) -> bool {
        self.count_only
    }

    fn dir_names(&mut self, names: &[std::ffi::OsString]) {
        // Directory blocks, on top of the one counted with the directory itself.
        let bytes: u64 = names
            .iter()
            .map(|n| 8 + (n.len() as u64).div_ceil(4) * 4)
            .sum();
        self.scan.fs_bytes += bytes.div_ceil(FS_BLOCK) * FS_BLOCK;
    }

    fn archived(&mut self, e: &Archived) {
        self.scan.entries += 1;
        let xattr_bytes: usize = e.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if xattr_bytes > 96 {
            self.scan.fs_bytes += FS_BLOCK; // beyond the in-inode space: an xattr block
        }
        if e.hard_link {
            return;
        }
        if e.link_target.is_some_and(|t| t.as_os_str().len() >= 60) {
            self.scan.fs_bytes += FS_BLOCK;
        }
        if e.meta.is_dir() {
            self.scan.fs_bytes += FS_BLOCK;
        } else if e.meta.is_file() {
            let len = e.meta.len();
            self.scan.file_bytes += len;
            self.scan.fs_bytes += len.div_ceil(FS_BLOCK) * FS_BLOCK;
            if self.count_only {
                self.scan.tar_bytes += len.div_ceil(BLOCK) * BLOCK;
            }
        }
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
            let data = pax::encode(&[("mtime".to_string(), t.into_bytes())]);
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
