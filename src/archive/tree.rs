//! A directory tree to a deterministic tar stream: entries sorted by name, numeric
//! owners, full mode bits, mtimes (nanoseconds as PAX records), symlinks, hard links,
//! device nodes, fifos and extended attributes (PAX `SCHILY.xattr.*`). What a tree may hold
//! and what is counted is the caller's [`Policy`] (the bundle payloads, the data backup).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tar::{EntryType, Header};

/// What one use of [`walk`] does with the entries of its tree.
pub(crate) trait Policy {
    /// Whether to archive `path` (for a directory: and enter it). Sockets must be refused
    /// here: tar cannot hold them.
    fn accept(&mut self, path: &Path, meta: &fs::Metadata) -> Result<bool>;
    /// Whether extended attributes are archived (PAX `SCHILY.xattr.*`).
    fn xattrs(&self) -> bool {
        true
    }
    /// Headers only: regular files get their header (with their size) but no content is
    /// read or written, to measure a stream cheaply.
    fn headers_only(&self) -> bool {
        false
    }
    /// The names in a directory, before any is accepted.
    fn dir_names(&mut self, _names: &[std::ffi::OsString]) {}
    /// An entry was archived.
    fn archived(&mut self, _e: &Archived) {}
}

/// An archived entry, for [`Policy::archived`].
pub(crate) struct Archived<'a> {
    pub meta: &'a fs::Metadata,
    /// Its PAX xattr records.
    pub xattrs: &'a [(String, Vec<u8>)],
    /// A symlink's target.
    pub link_target: Option<&'a Path>,
    /// A second name of an inode archived before (a hard link member, no content).
    pub hard_link: bool,
}

/// Archives the tree at `root` (the root directory as the member `./`, then every entry,
/// sorted by name, depth first) into `builder`, as `policy` decides.
pub(crate) fn walk<W: Write, P: Policy>(
    root: &Path,
    builder: &mut tar::Builder<W>,
    policy: &mut P,
) -> Result<()> {
    let meta = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut w = Walker {
        builder,
        policy,
        links: HashMap::new(),
    };
    if w.entry(root, Path::new("."), &meta)? {
        w.dir(root, Path::new(""))?;
    }
    Ok(())
}

struct Walker<'a, W: Write, P: Policy> {
    builder: &'a mut tar::Builder<W>,
    policy: &'a mut P,
    /// (dev, ino) of files with several links -> the archive path of the first one.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write, P: Policy> Walker<'_, W, P> {
    fn dir(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading directory {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", dir.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        self.policy.dir_names(&names);
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if self.entry(&path, &rel, &meta)? && meta.is_dir() {
                self.dir(&path, &rel)?;
            }
        }
        Ok(())
    }

    /// Archives one entry; false when the policy left it out.
    fn entry(&mut self, path: &Path, rel: &Path, meta: &fs::Metadata) -> Result<bool> {
        if !self.policy.accept(path, meta)? {
            return Ok(false);
        }
        let ft = meta.file_type();
        let name = if rel == Path::new(".") {
            PathBuf::from("./")
        } else if ft.is_dir() {
            // Directories end in '/', as GNU tar writes them.
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
            pax.push((
                "mtime".into(),
                format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()).into_bytes(),
            ));
        }
        let xattrs = if self.policy.xattrs() {
            xattrs(path)?
        } else {
            Vec::new()
        };
        pax.extend(xattrs.iter().cloned());
        let mut done = Archived {
            meta,
            xattrs: &xattrs,
            link_target: None,
            hard_link: false,
        };

        // A second name of an already archived inode becomes a hard link.
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())).cloned() {
                h.set_entry_type(EntryType::Link);
                self.pax(&name, &pax)?;
                self.builder
                    .append_link(&mut h, &name, &first)
                    .with_context(|| format!("archiving hard link {}", path.display()))?;
                done.hard_link = true;
                self.policy.archived(&done);
                return Ok(true);
            }
            self.links.insert((meta.dev(), meta.ino()), name.clone());
        }

        let target;
        if ft.is_symlink() {
            target =
                fs::read_link(path).with_context(|| format!("reading link {}", path.display()))?;
            h.set_entry_type(EntryType::Symlink);
            self.pax(&name, &pax)?;
            self.builder
                .append_link(&mut h, &name, &target)
                .with_context(|| format!("archiving symlink {}", path.display()))?;
            done.link_target = Some(&target);
        } else if ft.is_file() {
            h.set_entry_type(EntryType::Regular);
            h.set_size(meta.len());
            self.pax(&name, &pax)?;
            if self.policy.headers_only() {
                self.builder
                    .append_data(&mut h, &name, std::io::empty())
                    .with_context(|| format!("archiving {}", path.display()))?;
            } else {
                let f =
                    fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
                // A file that changes size while archived would corrupt the stream: take
                // exactly len bytes.
                let data = ExactReader {
                    inner: f,
                    remaining: meta.len(),
                    path,
                };
                self.builder
                    .append_data(&mut h, &name, data)
                    .with_context(|| format!("archiving {}", path.display()))?;
            }
        } else {
            let ty = if ft.is_dir() {
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
                .append_data(&mut h, &name, std::io::empty())
                .with_context(|| format!("archiving {}", path.display()))?;
        }
        self.policy.archived(&done);
        Ok(true)
    }

    /// Writes a PAX extended header for the next entry when there are records.
    fn pax(&mut self, name: &Path, records: &[(String, Vec<u8>)]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let data = super::pax::encode(records);
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

/// Extended attributes of `path` (not following symlinks) as sorted PAX records.
pub(crate) fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", path.display())),
    };
    let mut out = Vec::new();
    for n in names {
        let Some(key) = n.to_str() else {
            bail!("{}: xattr name {:?} is not UTF-8", path.display(), n);
        };
        if let Some(v) = xattr::get(path, &n)
            .with_context(|| format!("reading xattr {key} of {}", path.display()))?
        {
            out.push((format!("SCHILY.xattr.{key}"), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Fails if the file yields fewer bytes than its size said (it shrank while archived).
/// Yields exactly `remaining` bytes of `inner`; a file that grew is cut at its archived
/// size, one that shrank is an error (the stream would be corrupt).
pub(crate) struct ExactReader<'a, R> {
    pub(crate) inner: R,
    pub(crate) remaining: u64,
    pub(crate) path: &'a Path,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "{} shrank while it was being archived",
                self.path.display()
            )));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
