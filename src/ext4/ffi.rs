//! The safe handle over libext2fs (`ext2_filsys`): the only FFI of the crate besides
//! `ffi_format.rs`. Every `unsafe` block states why the call is sound.
//!
//! Invariants of [`Fs`]: `fs` is a live filesystem handle returned by `ext2fs_initialize` or
//! `ext2fs_open2`, owned by this value (freed exactly once, in `close` or `Drop`), used from
//! one thread at a time (`Fs` is neither `Send` nor `Sync` because it holds a raw pointer).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, bail};
use libe2fs_sys as sys;

use super::inode::{INODE_SIZE, InodeBuf, LARGE_INODE_SIZE};

static ERROR_TABLE: Once = Once::new();

/// The text of a libext2fs / com_err error code.
pub fn error_text(code: sys::errcode_t) -> String {
    ERROR_TABLE.call_once(|| {
        // SAFETY: registers the static ext2 error table with com_err; called once, before any
        // error_message() call of ours.
        unsafe { sys::initialize_ext2_error_table() };
    });
    // SAFETY: error_message returns a pointer to a NUL-terminated static or thread-local
    // string (never NULL), which we copy immediately.
    let msg = unsafe { CStr::from_ptr(sys::error_message(code)) };
    msg.to_string_lossy().into_owned()
}

/// An error from libext2fs, with the code for callers that react to it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {text}")]
pub struct Ext2Error {
    pub what: String,
    pub code: sys::errcode_t,
    pub text: String,
}

pub fn check(code: sys::errcode_t, what: impl FnOnce() -> String) -> Result<(), Ext2Error> {
    if code == 0 {
        return Ok(());
    }
    Err(Ext2Error {
        what: what(),
        code,
        text: error_text(code),
    })
}

/// `true` when `e` is libext2fs' "no free block/inode" error (or ENOSPC).
pub fn is_no_space(e: &Ext2Error) -> bool {
    [
        sys::EXT2_ET_BLOCK_ALLOC_FAIL as sys::errcode_t,
        sys::EXT2_ET_INODE_ALLOC_FAIL as sys::errcode_t,
        nix::errno::Errno::ENOSPC as sys::errcode_t,
    ]
    .contains(&e.code)
}

/// Starts writing back `len` bytes at `offset` of `file` without waiting (best effort), so
/// the final fsync finds less to do.
pub fn start_writeback(file: &impl std::os::fd::AsFd, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor belongs to
    // `file`, borrowed for the duration of the call. Errors are ignored (it is a hint).
    unsafe {
        libc::sync_file_range(
            file.as_fd().as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

pub(super) fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

/// How much of an inode [`Fs::write_inode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeWrite {
    /// All 256 bytes: a new inode (its in-inode extended attribute area is cleared).
    Whole,
    /// Only the fixed 160 bytes, keeping the in-inode extended attributes.
    KeepXattrs,
}

/// An open filesystem.
pub struct Fs {
    pub(super) fs: sys::ext2_filsys,
    pub(super) name: String,
}

impl Drop for Fs {
    fn drop(&mut self) {
        if !self.fs.is_null() {
            // SAFETY: `fs` is live and owned (invariant); after this it is never used again.
            // Changes not yet flushed are dropped: the superblock is not rewritten.
            unsafe { sys::ext2fs_free(self.fs) };
            self.fs = std::ptr::null_mut();
        }
    }
}

impl Fs {
    /// Opens an existing filesystem read-write, `offset` bytes into `path`, with its bitmaps.
    pub fn open(path: &Path, offset: u64) -> Result<Fs> {
        let name = cpath(path)?;
        let opts = CString::new(format!("offset={offset}")).context("io options")?;
        let mut fs: sys::ext2_filsys = std::ptr::null_mut();
        let flags = (sys::EXT2_FLAG_RW | sys::EXT2_FLAG_64BITS) as i32;
        // SAFETY: name and opts are valid C strings for the call; unix_io_manager is the
        // library's static manager; fs receives a new handle or stays NULL on error.
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
            format!("opening the ext4 filesystem on {}", path.display())
        })?;
        let fs = Fs {
            fs,
            name: path.display().to_string(),
        };
        // SAFETY: fs.fs is a live handle (just opened).
        let code = unsafe { sys::ext2fs_read_bitmaps(fs.fs) };
        check(code, || format!("reading the bitmaps of {}", fs.name))?;
        Ok(fs)
    }

    /// Writes everything out (bitmaps, group descriptors, backups, then the primary
    /// superblock, with an fsync before and after it) and releases the handle.
    pub fn close(mut self) -> Result<()> {
        let fs = std::mem::replace(&mut self.fs, std::ptr::null_mut());
        // SAFETY: fs is live and owned; ext2fs_close2 frees it on success.
        let code = unsafe { sys::ext2fs_close2(fs, 0) };
        if code != 0 {
            // SAFETY: on failure ext2fs_close2 leaves the handle allocated; free it once.
            unsafe { sys::ext2fs_free(fs) };
        }
        check(code, || {
            format!("writing the filesystem metadata of {}", self.name)
        })?;
        Ok(())
    }

    /// Makes [`Fs::close`] write the whole primary superblock (libext2fs otherwise writes only
    /// the fields that differ from what it read) and the backups (it otherwise skips them
    /// after `open`), for when we zero them on disk meanwhile.
    pub fn rewrite_all_superblocks(&mut self) {
        // SAFETY: orig_super is NULL or the SUPERBLOCK_SIZE (1024) byte copy the library
        // allocated at open time, owned by the live handle; flags is a plain field of it.
        unsafe {
            let orig = (*self.fs).orig_super;
            if !orig.is_null() {
                std::ptr::write_bytes(orig.cast::<u8>(), 0, 1024);
            }
            (*self.fs).flags &= !(sys::EXT2_FLAG_MASTER_SB_ONLY as i32);
            // Without these, a populate that changed nothing else (an empty rootfs) would
            // close without writing any superblock, after all were invalidated.
            (*self.fs).flags |= (sys::EXT2_FLAG_DIRTY | sys::EXT2_FLAG_CHANGED) as i32;
        }
    }

    /// Blocks holding the backup superblocks (at the start of the block, 4 KiB blocks).
    pub fn backup_superblocks(&self) -> Vec<u64> {
        // SAFETY: reading the group count of the live handle.
        let groups = unsafe { (*self.fs).group_desc_count };
        (1..groups)
            // SAFETY: g < group_desc_count; both functions only read the superblock.
            .filter(|&g| unsafe { sys::ext2fs_bg_has_super(self.fs, g) } != 0)
            // SAFETY: as above.
            .map(|g| unsafe { sys::ext2fs_group_first_block2(self.fs, g) })
            .collect()
    }

    fn sb(&self) -> &sys::ext2_super_block {
        // SAFETY: a live handle always points to its in-memory superblock, which lives as
        // long as the handle; we only read it through a shared borrow of self.
        unsafe { &*(*self.fs).super_ }
    }

    pub fn blocksize(&self) -> u64 {
        // SAFETY: reading a plain field of the live handle.
        u64::from(unsafe { (*self.fs).blocksize })
    }

    pub fn blocks_count(&self) -> u64 {
        // SAFETY: the superblock pointer is valid for the live handle; the function only reads.
        unsafe { sys::ext2fs_blocks_count((*self.fs).super_) }
    }

    pub fn free_blocks(&self) -> u64 {
        // SAFETY: as in blocks_count.
        unsafe { sys::ext2fs_free_blocks_count((*self.fs).super_) }
    }

    pub fn inodes_count(&self) -> u32 {
        self.sb().s_inodes_count
    }

    pub fn free_inodes(&self) -> u32 {
        self.sb().s_free_inodes_count
    }

    pub fn inode_size(&self) -> u16 {
        self.sb().s_inode_size
    }

    pub fn has_metadata_csum(&self) -> bool {
        self.sb().s_feature_ro_compat & sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM != 0
    }

    pub fn has_extents(&self) -> bool {
        self.sb().s_feature_incompat & sys::EXT3_FEATURE_INCOMPAT_EXTENTS != 0
    }

    /// Allocates an inode near `parent` and accounts it (bitmap, group and superblock counts).
    pub fn new_inode(&mut self, parent: u32, mode: u16) -> Result<u32, Ext2Error> {
        let mut ino: sys::ext2_ino_t = 0;
        // SAFETY: live handle; NULL map selects the filesystem's inode bitmap; ino is a
        // valid out pointer.
        let code = unsafe {
            sys::ext2fs_new_inode(
                self.fs,
                parent,
                i32::from(mode),
                std::ptr::null_mut(),
                &mut ino,
            )
        };
        check(code, || "allocating an inode".to_string())?;
        let is_dir = i32::from(mode & super::inode::S_IFMT == super::inode::S_IFDIR);
        // SAFETY: ino was just returned as free by ext2fs_new_inode for this handle.
        unsafe { sys::ext2fs_inode_alloc_stats2(self.fs, ino, 1, is_dir) };
        Ok(ino)
    }

    /// Allocates the first run of free blocks at or after `goal` (wrapping around), at most
    /// `len` long, and accounts it. Returns (first block, count).
    pub fn alloc_range(&mut self, goal: u64, len: u64) -> Result<(u64, u64), Ext2Error> {
        let len = len.clamp(1, 1 << 30);
        let (mut pblk, mut plen) = (0u64, 0u64);
        // SAFETY: live handle; NULL map selects the block bitmap; out pointers are valid.
        let code = unsafe {
            sys::ext2fs_new_range(
                self.fs,
                0,
                goal,
                len,
                std::ptr::null_mut(),
                &mut pblk,
                &mut plen,
            )
        };
        check(code, || format!("allocating {len} blocks"))?;
        let plen = plen.min(len);
        // SAFETY: [pblk, pblk+plen) was reported free by ext2fs_new_range; plen < 2^31.
        unsafe { sys::ext2fs_block_alloc_stats_range(self.fs, pblk, plen as u32, 1) };
        Ok((pblk, plen))
    }

    pub fn read_inode(&self, ino: u32) -> Result<InodeBuf> {
        let mut buf = InodeBuf([0; INODE_SIZE]);
        // SAFETY: buf is INODE_SIZE bytes, the size passed; libext2fs copies at most that.
        let code = unsafe {
            sys::ext2fs_read_inode_full(
                self.fs,
                ino,
                buf.0.as_mut_ptr().cast::<sys::ext2_inode>(),
                INODE_SIZE as i32,
            )
        };
        check(code, || format!("reading inode {ino}"))?;
        Ok(buf)
    }

    /// Writes an inode (with its checksum), as much of it as `what` says.
    pub fn write_inode(&mut self, ino: u32, inode: &InodeBuf, what: InodeWrite) -> Result<()> {
        let mut copy = inode.clone();
        let len = match what {
            InodeWrite::Whole => INODE_SIZE,
            InodeWrite::KeepXattrs => LARGE_INODE_SIZE,
        };
        // SAFETY: copy holds INODE_SIZE >= len bytes; the library reads len bytes from it.
        let code = unsafe {
            sys::ext2fs_write_inode_full(
                self.fs,
                ino,
                copy.0.as_mut_ptr().cast::<sys::ext2_inode>(),
                len as i32,
            )
        };
        check(code, || format!("writing inode {ino}"))?;
        Ok(())
    }

    /// Sets extended attributes (names like `security.capability`) on an inode already written.
    pub fn set_xattrs(&mut self, ino: u32, attrs: &[(String, Vec<u8>)]) -> Result<()> {
        let mut h: *mut sys::ext2_xattr_handle = std::ptr::null_mut();
        // SAFETY: live handle, h is a valid out pointer.
        let code = unsafe { sys::ext2fs_xattrs_open(self.fs, ino, &mut h) };
        check(code, || format!("opening the xattrs of inode {ino}"))?;
        let result = (|| -> Result<()> {
            // SAFETY: h is the handle just opened.
            let code = unsafe { sys::ext2fs_xattrs_read(h) };
            check(code, || format!("reading the xattrs of inode {ino}"))?;
            for (name, value) in attrs {
                let key = CString::new(name.as_bytes())
                    .with_context(|| format!("xattr name {name:?} contains a NUL byte"))?;
                // SAFETY: h is open; key is a C string and value a slice, both valid for the
                // call (the library copies them); it writes the inode/EA block itself.
                let code = unsafe {
                    sys::ext2fs_xattr_set(h, key.as_ptr(), value.as_ptr().cast(), value.len())
                };
                check(code, || {
                    format!("setting xattr {name} ({} bytes)", value.len())
                })?;
            }
            Ok(())
        })();
        // SAFETY: h is open and closed exactly once here.
        unsafe { sys::ext2fs_xattrs_close(&mut h) };
        result
    }

    /// The directory hash of `name` with this filesystem's algorithm and seed.
    pub fn dirhash(&self, name: &[u8]) -> Result<(u32, u32)> {
        let sb = self.sb();
        let mut version = u32::from(sb.s_def_hash_version);
        if version <= sys::EXT2_HASH_TEA && sb.s_flags & sys::EXT2_FLAGS_UNSIGNED_HASH != 0 {
            version += 3;
        }
        let (mut h, mut minor) = (0u32, 0u32);
        // SAFETY: name is valid for name.len() bytes; seed points to 4 u32 of the live
        // superblock; NULL charset means no casefolding; out pointers are valid.
        let code = unsafe {
            sys::ext2fs_dirhash2(
                version as i32,
                name.as_ptr().cast(),
                name.len() as i32,
                std::ptr::null(),
                0,
                sb.s_hash_seed.as_ptr(),
                &mut h,
                &mut minor,
            )
        };
        check(code, || "hashing a directory entry name".to_string())?;
        Ok((h, minor))
    }

    pub fn hash_version(&self) -> u8 {
        self.sb().s_def_hash_version
    }

    fn check_block_buf(&self, buf: &[u8]) -> Result<()> {
        if buf.len() as u64 != self.blocksize() {
            bail!("internal error: block buffer of {} bytes", buf.len());
        }
        Ok(())
    }

    /// Writes a directory block (leaf or htree node) of directory `ino`, setting its checksum.
    pub fn write_dir_block(&mut self, blk: u64, buf: &mut [u8], ino: u32) -> Result<()> {
        self.check_block_buf(buf)?;
        // SAFETY: buf is exactly one block long; the library checksums it in place and writes it.
        let code =
            unsafe { sys::ext2fs_write_dir_block4(self.fs, blk, buf.as_mut_ptr().cast(), 0, ino) };
        check(code, || {
            format!("writing directory block {blk} of inode {ino}")
        })?;
        Ok(())
    }

    /// Writes an extent tree node of inode `ino` (already written), setting its checksum.
    pub fn write_extent_block(&mut self, blk: u64, buf: &mut [u8], ino: u32) -> Result<()> {
        self.check_block_buf(buf)?;
        // SAFETY: buf is one block holding an extent header at its start; the library writes
        // the checksum into its tail.
        let code = unsafe {
            sys::ext2fs_extent_block_csum_set(
                self.fs,
                ino,
                buf.as_mut_ptr().cast::<sys::ext3_extent_header>(),
            )
        };
        check(code, || {
            format!("checksumming extent block {blk} of inode {ino}")
        })?;
        // SAFETY: live handle and io channel; buf is one block.
        let code =
            unsafe { sys::io_channel_write_blk64((*self.fs).io, blk, 1, buf.as_ptr().cast()) };
        check(code, || {
            format!("writing extent block {blk} of inode {ino}")
        })?;
        Ok(())
    }

    /// Frees all blocks of inode `ino` (a directory about to be rewritten).
    pub fn punch(&mut self, ino: u32) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        // SAFETY: inode holds a full inode whose first 128 bytes are a struct ext2_inode;
        // NULL block_buf lets the library allocate; the range covers every block.
        let code = unsafe {
            sys::ext2fs_punch(
                self.fs,
                ino,
                inode.0.as_mut_ptr().cast::<sys::ext2_inode>(),
                std::ptr::null_mut(),
                0,
                !0,
            )
        };
        check(code, || format!("freeing the blocks of inode {ino}"))?;
        Ok(())
    }

    /// Looks a name up in a directory on disk.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        let mut ino: sys::ext2_ino_t = 0;
        // SAFETY: name valid for its length; NULL buf lets the library allocate; ino is an
        // out pointer.
        let code = unsafe {
            sys::ext2fs_lookup(
                self.fs,
                dir,
                name.as_ptr().cast(),
                name.len() as i32,
                std::ptr::null_mut(),
                &mut ino,
            )
        };
        if code == sys::EXT2_ET_FILE_NOT_FOUND as sys::errcode_t {
            return Ok(None);
        }
        check(code, || {
            format!(
                "looking up {:?} in directory inode {dir}",
                String::from_utf8_lossy(name)
            )
        })?;
        Ok(Some(ino))
    }
}
