//! Reading files of an ext4 filesystem through libext2fs, read-only and without mounting it:
//! the running slot, which a delta bundle's apply reads its base files from (docs/delta.md).
//!
//! The filesystem is opened without `EXT2_FLAG_RW`, so libext2fs never writes to it; its
//! bitmaps are not read. Paths are resolved component by component from the root: every
//! component before the last must be a directory, the last a regular file; symlinks are
//! never followed (a delta names base files by their path in the base's tar, which has no
//! symlinks on the way). Each directory on the way is listed once and its entries kept
//! (name to inode): `ext2fs_lookup` scans a directory's blocks and checks their checksums on
//! every call, which for thousands of files in one directory cost more than reading them.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::path::Path;

use anyhow::{Context, Result, bail};
use libe2fs_sys as sys;

use super::ffi::{Fs, check, cpath};
use super::inode::{S_IFDIR, S_IFMT, S_IFREG};
use crate::disk::Disk;

const ROOT: u32 = 2;
/// Most bytes asked of libext2fs in one read.
const CHUNK: usize = 1 << 20;

/// A regular file found by [`ReadFs::lookup`]: its inode, size and, for a file mapped by
/// extents, where its data is (read straight from the device, in runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub ino: u32,
    pub size: u64,
    runs: Option<Vec<Run>>,
}

/// `len` blocks of a file from logical block `lblk` at physical block `pblk`; `zero`: an
/// uninitialized extent (reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    lblk: u64,
    pblk: u64,
    len: u64,
    zero: bool,
}

/// An ext4 filesystem opened read-only.
pub struct ReadFs {
    fs: Fs,
    /// The same device, for reading mapped file data in large pieces.
    dev: std::fs::File,
    offset: u64,
    /// The directories listed so far (each checked to be a directory): name to inode.
    dirs: HashMap<u32, HashMap<Box<[u8]>, u32>>,
}

impl std::fmt::Debug for ReadFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFs").field("fs", &self.fs.name).finish()
    }
}

// SAFETY: the libext2fs handle is owned by this value and used only through `&self` /
// `&mut self` methods, so by one thread at a time; libext2fs keeps no thread-local state for
// a handle, so moving it to another thread (the apply's tar reader thread) is sound.
unsafe impl Send for ReadFs {}

impl ReadFs {
    /// Opens the filesystem `offset` bytes into `path` (an image or block device), read-only.
    pub fn open(path: &Path, offset: u64) -> Result<ReadFs> {
        let name = cpath(path)?;
        let opts = CString::new(format!("offset={offset}")).context("io options")?;
        let mut fs: sys::ext2_filsys = std::ptr::null_mut();
        let flags = sys::EXT2_FLAG_64BITS as i32;
        // SAFETY: name and opts are valid C strings for the call; unix_io_manager is the
        // library's static manager; fs receives a new handle or stays NULL on error. Without
        // EXT2_FLAG_RW the library opens the device read-only and never writes it.
        let code = unsafe {
            sys::ext2fs_open2(
                name.as_ptr(),
                opts.as_ptr(),
                flags,
                0,
                0,
                sys::unix_io_manager,
                &mut fs,
            )
        };
        check(code, || {
            format!(
                "opening the ext4 filesystem on {} read-only",
                path.display()
            )
        })?;
        let fs = Fs {
            fs,
            name: path.display().to_string(),
        };
        let dev = std::fs::File::open(path)
            .with_context(|| format!("opening {} read-only", path.display()))?;
        Ok(ReadFs {
            fs,
            dev,
            offset,
            dirs: HashMap::new(),
        })
    }

    /// Opens the filesystem of the partition labelled `label` on `disk`, read-only.
    pub fn open_partition(disk: &Disk, label: &str) -> Result<ReadFs> {
        let part = disk.partition(label)?;
        ReadFs::open(disk.path(), part.start)
            .with_context(|| format!("reading partition {label:?}"))
    }

    /// The inode's mode, size and flags.
    fn stat(&self, ino: u32) -> Result<(u16, u64, u32)> {
        // SAFETY: ext2_inode is plain old data; all-zero is a valid value.
        let mut inode: sys::ext2_inode = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is live (invariant of Fs); inode is a valid out pointer of the
        // size the library writes (struct ext2_inode).
        let code = unsafe { sys::ext2fs_read_inode(self.fs.fs, ino, &mut inode) };
        check(code, || format!("reading inode {ino} of {}", self.fs.name))?;
        let size = u64::from(inode.i_size) | (u64::from(inode.i_size_high) << 32);
        Ok((inode.i_mode, size, inode.i_flags))
    }

    /// The regular file at `path` (relative to the root; `/` separated), if there is one.
    /// A path through something other than a directory, or naming something other than a
    /// regular file, is an error.
    pub fn lookup(&mut self, path: &[u8]) -> Result<Option<FileRef>> {
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let show = || String::from_utf8_lossy(path).into_owned();
        if comps.iter().any(|c| *c == b"..") {
            bail!("{:?}: \"..\" in a base path", show());
        }
        let Some((last, dirs)) = comps.split_last() else {
            bail!("{:?} names the root directory", show());
        };
        let mut cur = ROOT;
        for c in dirs {
            let Some(ino) = self.child(cur, c)? else {
                return Ok(None);
            };
            if !self.dirs.contains_key(&ino) {
                let (mode, _, _) = self.stat(ino)?;
                if mode & S_IFMT != S_IFDIR {
                    bail!(
                        "{:?}: {:?} is not a directory",
                        show(),
                        String::from_utf8_lossy(c)
                    );
                }
            }
            cur = ino;
        }
        let Some(ino) = self.child(cur, last)? else {
            return Ok(None);
        };
        let (mode, size, flags) = self.stat(ino)?;
        if mode & S_IFMT != S_IFREG {
            bail!("{:?} is not a regular file", show());
        }
        let mapped = flags & sys::EXT4_EXTENTS_FL != 0 && flags & sys::EXT4_INLINE_DATA_FL == 0;
        let runs = if mapped {
            Some(self.extents(ino).with_context(|| format!("{:?}", show()))?)
        } else {
            None
        };
        Ok(Some(FileRef { ino, size, runs }))
    }

    /// The inode of `name` in directory `dir` (a directory), listing `dir` the first time.
    fn child(&mut self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        if !self.dirs.contains_key(&dir) {
            let entries = self.list(dir)?;
            self.dirs.insert(dir, entries);
        }
        Ok(self.dirs.get(&dir).and_then(|d| d.get(name)).copied())
    }

    /// The entries of directory `dir` but `.` and `..`: name to inode.
    fn list(&self, dir: u32) -> Result<HashMap<Box<[u8]>, u32>> {
        let mut entries: HashMap<Box<[u8]>, u32> = HashMap::new();
        // SAFETY: the handle is live; a NULL block buffer makes the library allocate one;
        // `collect` matches the callback type and gets `entries` as priv_data, a live
        // exclusive borrow for the whole call, not used elsewhere until the call returns.
        let code = unsafe {
            sys::ext2fs_dir_iterate2(
                self.fs.fs,
                dir,
                0,
                std::ptr::null_mut(),
                Some(collect),
                std::ptr::from_mut(&mut entries).cast(),
            )
        };
        check(code, || {
            format!("listing directory inode {dir} of {}", self.fs.name)
        })?;
        Ok(entries)
    }

    /// The leaf extents of inode `ino`, in logical order, each inside the filesystem.
    fn extents(&self, ino: u32) -> Result<Vec<Run>> {
        let mut h: sys::ext2_extent_handle_t = std::ptr::null_mut();
        // SAFETY: the handle is live; a NULL inode makes the library read it; h receives a
        // new extent handle, freed below.
        let code =
            unsafe { sys::ext2fs_extent_open2(self.fs.fs, ino, std::ptr::null_mut(), &mut h) };
        check(code, || format!("reading the extents of inode {ino}"))?;
        let r = self.leaves(h, ino);
        // SAFETY: h was opened above and is freed exactly once.
        unsafe { sys::ext2fs_extent_free(h) };
        r
    }

    fn leaves(&self, h: sys::ext2_extent_handle_t, ino: u32) -> Result<Vec<Run>> {
        let blocks = self.fs.blocks_count();
        let mut runs: Vec<Run> = Vec::new();
        // SAFETY: ext2fs_extent is plain old data; all-zero is a valid value.
        let mut e: sys::ext2fs_extent = unsafe { std::mem::zeroed() };
        let mut op = sys::EXT2_EXTENT_ROOT;
        loop {
            // SAFETY: h is a live extent handle; e is a valid out pointer.
            let code = unsafe { sys::ext2fs_extent_get(h, op as i32, &mut e) };
            if code == sys::EXT2_ET_EXTENT_NO_NEXT as sys::errcode_t
                || (op == sys::EXT2_EXTENT_ROOT
                    && code == sys::EXT2_ET_NO_CURRENT_NODE as sys::errcode_t)
            {
                break;
            }
            check(code, || format!("reading the extents of inode {ino}"))?;
            op = sys::EXT2_EXTENT_NEXT_LEAF;
            if e.e_flags & sys::EXT2_EXTENT_FLAGS_LEAF == 0 || e.e_len == 0 {
                continue;
            }
            let run = Run {
                lblk: e.e_lblk,
                pblk: e.e_pblk,
                len: u64::from(e.e_len),
                zero: e.e_flags & sys::EXT2_EXTENT_FLAGS_UNINIT != 0,
            };
            if run.pblk.checked_add(run.len).is_none_or(|end| end > blocks)
                || runs.last().is_some_and(|l| l.lblk + l.len > run.lblk)
            {
                bail!("inode {ino} has an extent outside the filesystem or out of order");
            }
            runs.push(run);
        }
        Ok(runs)
    }

    /// Fills `buf` with the bytes of `file` from `offset`; an error when the file ends first.
    pub fn read_at(&mut self, file: &FileRef, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > file.size) {
            bail!(
                "reading {} bytes at {offset} of inode {} ({} bytes)",
                buf.len(),
                file.ino,
                file.size
            );
        }
        if let Some(runs) = &file.runs {
            return self
                .read_runs(runs, offset, buf)
                .with_context(|| format!("reading inode {} of {}", file.ino, self.fs.name));
        }
        let mut f: sys::ext2_file_t = std::ptr::null_mut();
        // SAFETY: the handle is live; a NULL inode pointer makes the library read the inode;
        // flags 0 opens the file for reading only; f receives the file handle.
        let code = unsafe {
            sys::ext2fs_file_open2(self.fs.fs, file.ino, std::ptr::null_mut(), 0, &mut f)
        };
        check(code, || {
            format!("opening inode {} of {}", file.ino, self.fs.name)
        })?;
        let r = read_open(f, offset, buf);
        // SAFETY: f is the handle opened above, closed exactly once here; a read-only file has
        // nothing to flush.
        let code = unsafe { sys::ext2fs_file_close(f) };
        r.with_context(|| format!("reading inode {} of {}", file.ino, self.fs.name))?;
        check(code, || {
            format!("closing inode {} of {}", file.ino, self.fs.name)
        })?;
        Ok(())
    }

    /// The whole regular file at `path`, if it exists and holds at most `limit` bytes.
    pub fn read_file(&mut self, path: &[u8], limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(f) = self.lookup(path)? else {
            return Ok(None);
        };
        if f.size > limit {
            bail!(
                "{:?} has {} bytes, more than {limit}",
                String::from_utf8_lossy(path),
                f.size
            );
        }
        let mut buf = vec![0; f.size as usize];
        self.read_at(&f, 0, &mut buf)?;
        Ok(Some(buf))
    }

    /// `buf` from `offset` of a file mapped by `runs`: holes and uninitialized extents read
    /// as zeros, the rest straight from the device, a run at a time.
    fn read_runs(&self, runs: &[Run], offset: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let bs = self.fs.blocksize();
        buf.fill(0);
        let end = offset + buf.len() as u64;
        // the first run that ends after `offset`
        let first = runs.partition_point(|r| (r.lblk + r.len) * bs <= offset);
        for r in &runs[first..] {
            let (start, stop) = (r.lblk * bs, (r.lblk + r.len) * bs);
            if start >= end {
                break;
            }
            let (from, to) = (start.max(offset), stop.min(end));
            if r.zero || from >= to {
                continue;
            }
            let at = self.offset + r.pblk * bs + (from - start);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            self.dev
                .read_exact_at(dst, at)
                .with_context(|| format!("reading {} bytes at {at}", dst.len()))?;
        }
        Ok(())
    }
}

/// `ext2fs_dir_iterate2`'s callback for [`ReadFs::list`]: adds one entry to the map
/// `priv_data` points to. Returns 0: go on.
unsafe extern "C" fn collect(
    _dir: sys::ext2_ino_t,
    _entry: c_int,
    dirent: *mut sys::ext2_dir_entry,
    _offset: c_int,
    _blocksize: c_int,
    _buf: *mut c_char,
    priv_data: *mut c_void,
) -> c_int {
    // SAFETY: libext2fs passes a dirent inside the directory block it holds, valid for this
    // call; its fixed fields are read through raw pointers (the struct's 255-byte name
    // array may reach past the block's end, so no reference to the whole struct is made),
    // and the name's first `name_len & 0xff` bytes lie inside the block (the library checked
    // the entry's rec_len before calling). priv_data is the `&mut HashMap` of `list`, alive
    // and otherwise unused during the iteration.
    unsafe {
        let ino = std::ptr::addr_of!((*dirent).inode).read_unaligned();
        let len = usize::from(std::ptr::addr_of!((*dirent).name_len).read_unaligned() & 0xff);
        let name = std::slice::from_raw_parts(std::ptr::addr_of!((*dirent).name).cast::<u8>(), len);
        let entries = &mut *priv_data.cast::<HashMap<Box<[u8]>, u32>>();
        if ino != 0 && name != b"." && name != b".." {
            entries.insert(name.into(), ino);
        }
    }
    0
}

fn read_open(f: sys::ext2_file_t, offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut pos: u64 = 0;
    // SAFETY: f is a live file handle; pos is a valid out pointer.
    let code = unsafe { sys::ext2fs_file_llseek(f, offset, 0, &mut pos) };
    check(code, || format!("seeking to {offset}"))?;
    let mut done = 0;
    while done < buf.len() {
        let want = (buf.len() - done).min(CHUNK);
        let mut got: std::os::raw::c_uint = 0;
        // SAFETY: f is a live file handle; the destination is `want` writable bytes inside
        // `buf`; got is a valid out pointer.
        let code = unsafe {
            sys::ext2fs_file_read(
                f,
                buf[done..].as_mut_ptr().cast(),
                want as std::os::raw::c_uint,
                &mut got,
            )
        };
        check(code, || format!("reading at {}", offset + done as u64))?;
        if got == 0 {
            bail!("the file ends at {}", offset + done as u64);
        }
        done += got as usize;
    }
    Ok(())
}
