//! Filling a new filesystem from a tar stream.
//!
//! Members are created as they arrive; directory contents are kept in memory ([`dir::Tree`])
//! and written once, at the end, as linear blocks or htree indexes. Every member name is
//! resolved in that tree from the root, component by component: `..` is refused, a leading
//! `/` ignored, and a component that is a symlink or a file stops the member with an error.

use std::io::Read;

use anyhow::{Context, Result, bail};

use super::data::{self, Allocator, BUF_SIZE, Blocks, FileWriter};
use super::dir::{self, Hasher};
use super::ffi::{Fs, InodeWrite, is_no_space};
use super::inode::{self, EXTENTS_FL, INDEX_FL, InodeBuf, Meta, ft};
use super::path::{components, show};
use super::stats::Stats;
use super::target::Target;
use crate::archive::member::{Kind, Member, Timestamp};
use crate::archive::sparse::{self, Sparse};

const ROOT: u32 = 2;
/// Highest link count of a non-directory inode.
const LINK_MAX: u16 = 65000;

struct FsHasher<'a>(&'a Fs);

impl Hasher for FsHasher<'_> {
    fn hash(&self, name: &[u8]) -> Result<(u32, u32)> {
        self.0.dirhash(name)
    }
    fn version(&self) -> u8 {
        self.0.hash_version()
    }
}

pub struct Populator<'a> {
    fs: &'a mut Fs,
    target: &'a Target,
    tree: dir::Tree,
    alloc: Allocator,
    buf: Vec<u8>,
    now: Timestamp,
    pub stats: Stats,
}

impl<'a> Populator<'a> {
    /// Prepares to fill `fs`, which must be freshly formatted (only `/` and `/lost+found`).
    pub fn new(fs: &'a mut Fs, target: &'a Target) -> Result<Self> {
        if usize::from(fs.inode_size()) != inode::INODE_SIZE
            || !fs.has_extents()
            || !fs.has_metadata_csum()
        {
            bail!(
                "{}: not an ext4 filesystem as hup formats it (256-byte inodes, extents, metadata_csum)",
                target.path.display()
            );
        }
        if fs.free_inodes() != fs.inodes_count().saturating_sub(11) {
            bail!(
                "{}: the filesystem is not freshly formatted ({} inodes in use); format it again",
                target.path.display(),
                fs.inodes_count() - fs.free_inodes()
            );
        }
        let lpf = fs.lookup(ROOT, b"lost+found")?.with_context(|| {
            format!(
                "{}: /lost+found is missing; format it again",
                target.path.display()
            )
        })?;
        let mut tree = dir::Tree::default();
        tree.add_formatted_dir(ROOT, ROOT);
        tree.add_formatted_dir(lpf, ROOT);
        tree.insert(ROOT, b"lost+found", lpf, ft::DIR)?;
        if let Some(root) = tree.dirs.get_mut(&ROOT) {
            root.dirty = false;
        }
        Ok(Populator {
            fs,
            target,
            tree,
            alloc: Allocator { goal: 0 },
            buf: vec![0; BUF_SIZE],
            now: Timestamp::now(),
            stats: Stats::default(),
        })
    }

    /// Reads the whole archive and creates its members.
    pub fn run(&mut self, tar: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().context("reading the tar stream")?;
        let mut count: u64 = 0;
        let mut last = String::from("(start of archive)");
        for entry in entries {
            let mut entry =
                entry.with_context(|| format!("reading the tar stream after member {last:?}"))?;
            let Some(m) = crate::archive::member::member(&mut entry)? else {
                continue;
            };
            last = m.show();
            self.add(&m, &mut entry)
                .with_context(|| format!("archive member {:?}", m.show()))?;
            count += 1;
            if count == MIDDLE {
                failpoint_middle(count);
            }
        }
        failpoint_middle(count);
        self.write_dirs()
    }

    fn add(&mut self, m: &Member, data: &mut dyn Read) -> Result<()> {
        let comps = components(&m.path)?;
        let Some((&name, parents)) = comps.split_last() else {
            if m.kind != Kind::Dir {
                bail!("the archive root must be a directory");
            }
            return self.update_dir(ROOT, m);
        };
        let parent = self.resolve(parents, Some(m.mtime))?;
        if let Some((ino, ftype)) = self.tree.lookup(parent, name) {
            if ftype == ft::DIR && m.kind == Kind::Dir {
                return self.update_dir(ino, m);
            }
            bail!("a member with this name was already extracted (duplicate member)");
        }
        let ftype = match &m.kind {
            Kind::File => self.add_file(parent, m, data)?,
            Kind::Dir => {
                let ino = self.new_dir(parent, name, self.meta(m, inode::S_IFDIR))?;
                self.set_xattrs(ino, m)?;
                self.stats.dirs += 1;
                return Ok(());
            }
            Kind::Symlink(to) => self.add_symlink(parent, m, to)?,
            Kind::HardLink(to) => return self.add_hardlink(parent, name, to),
            Kind::Char(a, b) => self.add_special(parent, m, inode::S_IFCHR, Some((*a, *b)))?,
            Kind::Block(a, b) => self.add_special(parent, m, inode::S_IFBLK, Some((*a, *b)))?,
            Kind::Fifo => self.add_special(parent, m, inode::S_IFIFO, None)?,
        };
        self.tree.insert(parent, name, ftype.0, ftype.1)
    }

    fn meta(&self, m: &Member, fmt: u16) -> Meta {
        Meta {
            mode: fmt | m.perm,
            uid: m.uid,
            gid: m.gid,
            atime: m.atime.unwrap_or(m.mtime),
            mtime: m.mtime,
            ctime: m.ctime.unwrap_or(m.mtime),
        }
    }

    /// Walks `comps` from the root; every component must be a directory of the tree. With
    /// `create` (a member's mtime), missing directories are made (0755, root-owned).
    fn resolve(&mut self, comps: &[&[u8]], create: Option<Timestamp>) -> Result<u32> {
        let mut cur = ROOT;
        for (i, &c) in comps.iter().enumerate() {
            match self.tree.lookup(cur, c) {
                Some((ino, ft::DIR)) => cur = ino,
                Some((_, t)) => bail!(
                    "{:?} is a {}, not a directory (paths are never resolved through links)",
                    show(&comps[..=i].join(&b'/')),
                    type_name(t)
                ),
                None if create.is_some() => {
                    let t = create.unwrap_or_default();
                    let meta = Meta {
                        mode: inode::S_IFDIR | 0o755,
                        uid: 0,
                        gid: 0,
                        atime: t,
                        mtime: t,
                        ctime: t,
                    };
                    cur = self.new_dir(cur, c, meta)?;
                    self.stats.dirs += 1;
                }
                None => bail!("{:?} does not exist", show(&comps[..=i].join(&b'/'))),
            }
        }
        Ok(cur)
    }

    fn new_inode(&mut self, parent: u32, mode: u16) -> Result<u32> {
        self.fs.new_inode(parent, mode).map_err(|e| {
            if is_no_space(&e) {
                anyhow::anyhow!(
                    "no free inode left (the filesystem has {} inodes; ask for more)",
                    self.fs.inodes_count()
                )
            } else {
                e.into()
            }
        })
    }

    fn fresh_inode(&self, meta: &Meta) -> InodeBuf {
        let mut i = InodeBuf::new();
        i.set_meta(meta);
        i.set_crtime(self.now);
        i.set_links(1);
        i
    }

    fn new_dir(&mut self, parent: u32, name: &[u8], meta: Meta) -> Result<u32> {
        let ino = self.new_inode(parent, meta.mode)?;
        let mut i = self.fresh_inode(&meta);
        i.set_links(2);
        i.set_empty_extents();
        self.fs.write_inode(ino, &i, InodeWrite::Whole)?;
        self.tree.add_dir(ino, parent);
        self.tree.insert(parent, name, ino, ft::DIR)?;
        Ok(ino)
    }

    fn update_dir(&mut self, ino: u32, m: &Member) -> Result<()> {
        let mut i = self.fs.read_inode(ino)?;
        i.set_meta(&self.meta(m, inode::S_IFDIR));
        self.fs.write_inode(ino, &i, InodeWrite::KeepXattrs)?;
        self.set_xattrs(ino, m)
    }

    fn set_xattrs(&mut self, ino: u32, m: &Member) -> Result<()> {
        if m.xattrs.is_empty() {
            return Ok(());
        }
        self.fs.set_xattrs(ino, &m.xattrs)?;
        self.stats.xattrs += m.xattrs.len() as u64;
        Ok(())
    }

    /// Writes `i` (with `blocks` mapped by extents) and its tree nodes.
    fn finish_inode(
        &mut self,
        ino: u32,
        mut i: InodeBuf,
        blocks: &Blocks,
        what: InodeWrite,
    ) -> Result<()> {
        let mut tree = self.alloc.tree(self.fs, blocks)?;
        i.i_block_mut().copy_from_slice(&tree.root);
        i.set_flags(i.flags() | EXTENTS_FL);
        i.set_sectors((blocks.count + tree.blocks.len() as u64) * 8);
        self.fs.write_inode(ino, &i, what)?;
        data::write_tree(self.fs, &mut tree, ino)
    }

    fn add_file(&mut self, parent: u32, m: &Member, data: &mut dyn Read) -> Result<(u32, u8)> {
        let size = m.sparse.as_ref().map_or(m.size, |s| s.realsize);
        if size > self.target.size {
            // A sparse file may be larger than its filesystem, but not in a root filesystem:
            // refused before anything is read (its holes would be read as zeros).
            bail!(
                "file size {size} is larger than the whole filesystem ({} bytes); refused",
                self.target.size
            );
        }
        let meta = self.meta(m, inode::S_IFREG);
        let ino = self.new_inode(parent, meta.mode)?;
        let mut w = FileWriter::new(self.fs, self.target, &mut self.alloc, &mut self.buf);
        match &m.sparse {
            None => w.region(data, 0, m.size),
            Some(sp) => write_sparse(&mut w, data, sp, m.size),
        }
        .with_context(|| format!("writing {size} bytes of data"))?;
        let blocks = w.finish()?;
        let mut i = self.fresh_inode(&meta);
        i.set_size(size);
        self.finish_inode(ino, i, &blocks, InodeWrite::Whole)?;
        self.set_xattrs(ino, m)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        self.stats.data_blocks += blocks.count;
        Ok((ino, ft::REG))
    }

    fn add_symlink(&mut self, parent: u32, m: &Member, to: &[u8]) -> Result<(u32, u8)> {
        if to.len() >= 4096 {
            bail!("symlink target is {} bytes long (at most 4095)", to.len());
        }
        let meta = self.meta(m, inode::S_IFLNK);
        let ino = self.new_inode(parent, meta.mode)?;
        let mut i = self.fresh_inode(&meta);
        i.set_size(to.len() as u64);
        if to.len() < 60 {
            // fast symlink: the target lives in i_block
            i.i_block_mut()[..to.len()].copy_from_slice(to);
            self.fs.write_inode(ino, &i, InodeWrite::Whole)?;
        } else {
            let mut block = vec![0u8; 4096];
            block[..to.len()].copy_from_slice(to);
            let mut blocks = Blocks::default();
            let target = self.target;
            self.alloc.alloc(self.fs, 0, 1, &mut blocks, |_, p, _, _| {
                target.write_blocks(p, &block)
            })?;
            self.finish_inode(ino, i, &blocks, InodeWrite::Whole)?;
        }
        self.set_xattrs(ino, m)?;
        self.stats.symlinks += 1;
        Ok((ino, ft::SYMLINK))
    }

    fn add_special(
        &mut self,
        parent: u32,
        m: &Member,
        fmt: u16,
        dev: Option<(u32, u32)>,
    ) -> Result<(u32, u8)> {
        let meta = self.meta(m, fmt);
        let ino = self.new_inode(parent, meta.mode)?;
        let mut i = self.fresh_inode(&meta);
        if let Some((major, minor)) = dev {
            i.set_device(major, minor);
            self.stats.devices += 1;
        } else {
            self.stats.fifos += 1;
        }
        self.fs.write_inode(ino, &i, InodeWrite::Whole)?;
        self.set_xattrs(ino, m)?;
        Ok((ino, inode::file_type(fmt)))
    }

    fn add_hardlink(&mut self, parent: u32, name: &[u8], to: &[u8]) -> Result<()> {
        let comps = components(to).with_context(|| format!("hard link target {:?}", show(to)))?;
        let Some((&tname, tparents)) = comps.split_last() else {
            bail!("hard link to the root directory");
        };
        let found = self
            .resolve(tparents, None)
            .ok()
            .and_then(|d| self.tree.lookup(d, tname));
        let Some((ino, ftype)) = found else {
            bail!(
                "hard link target {:?} is not an earlier member of the archive",
                show(to)
            );
        };
        if ftype == ft::DIR {
            bail!("hard link to directory {:?} refused", show(to));
        }
        let mut i = self.fs.read_inode(ino)?;
        if i.links() >= LINK_MAX {
            bail!("{:?} already has {LINK_MAX} links", show(to));
        }
        i.set_links(i.links() + 1);
        self.fs.write_inode(ino, &i, InodeWrite::KeepXattrs)?;
        self.tree.insert(parent, name, ino, ftype)?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Writes every directory that received entries, replacing any blocks it had.
    fn write_dirs(&mut self) -> Result<()> {
        let mut inos: Vec<u32> = self
            .tree
            .dirs
            .iter()
            .filter(|(_, d)| d.dirty)
            .map(|(&i, _)| i)
            .collect();
        inos.sort_unstable();
        for ino in inos {
            self.write_dir(ino)
                .with_context(|| format!("writing directory inode {ino}"))?;
        }
        Ok(())
    }

    fn write_dir(&mut self, ino: u32) -> Result<()> {
        let Some(d) = self.tree.dirs.remove(&ino) else {
            return Ok(());
        };
        let entries: Vec<(&[u8], u32, u8)> = d
            .entries
            .iter()
            .map(|(n, &(i, t))| (&n[..], i, t))
            .collect();
        let layout = dir::layout(ino, d.parent, entries, 4096, &FsHasher(self.fs))?;
        drop(d);
        let mut i = self.fs.read_inode(ino)?;
        if i.sectors() > 0 {
            self.fs.punch(ino)?;
            i = self.fs.read_inode(ino)?;
        }
        let mut blocks = Blocks::default();
        let mut bufs = layout.blocks;
        let n = bufs.len() as u64;
        self.alloc
            .alloc(self.fs, 0, n, &mut blocks, |fs, p, first, len| {
                for k in 0..len {
                    fs.write_dir_block(p + k, &mut bufs[(first + k) as usize], ino)?;
                }
                Ok(())
            })?;
        i.set_size(n * 4096);
        let links = 2 + layout.subdirs;
        i.set_links(if links > u32::from(LINK_MAX) {
            1
        } else {
            links as u16
        });
        let flags = i.flags() | EXTENTS_FL;
        i.set_flags(if layout.indexed {
            flags | INDEX_FL
        } else {
            flags & !INDEX_FL
        });
        self.finish_inode(ino, i, &blocks, InodeWrite::KeepXattrs)
    }
}

/// Writes the regions of a GNU sparse member (`stored`: its size in the archive).
fn write_sparse(
    w: &mut FileWriter<'_>,
    data: &mut dyn Read,
    sp: &Sparse,
    stored: u64,
) -> Result<()> {
    let (map, map_bytes) = match &sp.map {
        sparse::Map::InData => sparse::read_map(data)?,
        sparse::Map::Listed(v) => (v.clone(), 0),
    };
    sparse::check(&map, sp.realsize, stored, map_bytes)?;
    for (off, len) in map {
        w.region(data, off, len)?;
    }
    Ok(())
}

fn type_name(t: u8) -> &'static str {
    match t {
        ft::SYMLINK => "symlink",
        ft::REG => "regular file",
        ft::CHR | ft::BLK => "device",
        ft::FIFO => "fifo",
        _ => "non-directory",
    }
}

/// Archive members after which the `populate-middle` failpoint stops the process.
const MIDDLE: u64 = 64;

/// With the `failpoints` feature and `HUP_FAILPOINT=populate-middle`, exits with status 99
/// after the 64th member (or after the last one, before directories are written, in smaller
/// archives), leaving an unfinished filesystem behind.
fn failpoint_middle(count: u64) {
    crate::failpoint::hit_with(
        "populate-middle",
        format_args!("exiting after {count} archive members"),
    );
}
