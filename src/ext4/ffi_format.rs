//! Creating a filesystem through libext2fs, in the order mke2fs uses (misc/mke2fs.c):
//! initialize the superblock, allocate group tables, flag inode tables, reserved inodes,
//! root directory, lost+found, bad-block and resize inodes, journal.
//!
//! Nothing reaches the superblock location until [`Fs::close`]; the caller wipes the old one
//! first, so an interrupted run never leaves a filesystem that looks valid.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

use anyhow::{Context, Result};
use libe2fs_sys as sys;

use super::ffi::{Fs, InodeWrite, check, cpath};
use super::format::Plan;
use super::inode::{INODE_SIZE, InodeBuf};

const COMPAT: u32 = sys::EXT2_FEATURE_COMPAT_EXT_ATTR
    | sys::EXT2_FEATURE_COMPAT_RESIZE_INODE
    | sys::EXT2_FEATURE_COMPAT_DIR_INDEX
    | sys::EXT3_FEATURE_COMPAT_HAS_JOURNAL;
const INCOMPAT: u32 = sys::EXT2_FEATURE_INCOMPAT_FILETYPE
    | sys::EXT3_FEATURE_INCOMPAT_EXTENTS
    | sys::EXT4_FEATURE_INCOMPAT_64BIT
    | sys::EXT4_FEATURE_INCOMPAT_FLEX_BG;
const RO_COMPAT: u32 = sys::EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER
    | sys::EXT2_FEATURE_RO_COMPAT_LARGE_FILE
    | sys::EXT4_FEATURE_RO_COMPAT_HUGE_FILE
    | sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK
    | sys::EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE
    | sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;

impl Fs {
    /// Creates an empty ext4 filesystem of `plan.blocks` 4 KiB blocks, `offset` bytes into
    /// `path`. The handle is returned open: populate it, then [`Fs::close`] it.
    pub fn create(path: &Path, offset: u64, plan: &Plan) -> Result<Fs> {
        let name = cpath(path)?;
        // SAFETY: ext2_super_block is a plain C struct for which all-zero is the "use the
        // defaults" parameter block ext2fs_initialize expects.
        let mut param: sys::ext2_super_block = unsafe { std::mem::zeroed() };
        param.s_rev_level = 1;
        param.s_log_block_size = 2; // 1024 << 2
        param.s_feature_compat = COMPAT;
        param.s_feature_incompat = INCOMPAT;
        param.s_feature_ro_compat = RO_COMPAT;
        param.s_default_mount_opts = sys::EXT2_DEFM_XATTR_USER | sys::EXT2_DEFM_ACL;
        param.s_inode_size = INODE_SIZE as u16;
        param.s_log_groups_per_flex = 4; // flex_bg_size 16
        param.s_desc_size = sys::EXT2_MIN_DESC_SIZE_64BIT as u16;
        param.s_inodes_count = plan.inodes;
        // SAFETY: param is a valid superblock struct owned by this frame.
        unsafe {
            sys::ext2fs_blocks_count_set(&mut param, plan.blocks);
            sys::ext2fs_r_blocks_count_set(&mut param, plan.reserved_blocks);
        }
        let mut raw: sys::ext2_filsys = std::ptr::null_mut();
        let flags = sys::EXT2_FLAG_64BITS as i32;
        // SAFETY: name is a valid C string, param a valid parameter block (copied by the
        // library), unix_io_manager the library's static manager; raw receives the handle.
        let code = unsafe {
            sys::ext2fs_initialize(
                name.as_ptr(),
                flags,
                &mut param,
                sys::unix_io_manager,
                &mut raw,
            )
        };
        check(code, || {
            format!("setting up an ext4 superblock for {}", path.display())
        })?;
        let mut fs = Fs {
            fs: raw,
            name: path.display().to_string(),
        };
        fs.set_io_offset(offset)?;
        fs.set_identity(plan);
        fs.allocate_tables()?;
        fs.flag_inode_tables(plan.zeroed);
        fs.write_reserved_inodes()?;
        fs.make_root_and_lost_found()?;
        fs.reserve_special_inodes()?;
        fs.add_journal(plan.zeroed)?;
        Ok(fs)
    }

    fn set_io_offset(&mut self, offset: u64) -> Result<()> {
        if offset == 0 {
            return Ok(());
        }
        let opts = CString::new(format!("offset={offset}")).context("io options")?;
        // SAFETY: live handle with its io channel; opts is a valid C string for the call.
        let code = unsafe { sys::io_channel_set_options((*self.fs).io, opts.as_ptr()) };
        check(code, || {
            format!("setting the partition offset {offset} on {}", self.name)
        })?;
        Ok(())
    }

    fn set_identity(&mut self, plan: &Plan) {
        // SAFETY: the live handle's superblock is valid and exclusively ours (&mut self).
        let sb = unsafe { &mut *(*self.fs).super_ };
        sb.s_max_mnt_count = -1;
        sb.s_kbytes_written = 1;
        sb.s_uuid = plan.uuid;
        sb.s_volume_name = plan.label;
        for (i, w) in sb.s_hash_seed.iter_mut().enumerate() {
            let b = &plan.hash_seed[i * 4..i * 4 + 4];
            *w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        sb.s_def_hash_version = sys::EXT2_HASH_HALF_MD4 as u8;
        sb.s_checksum_type = sys::EXT2_CRC32C_CHKSUM as u8;
        // SAFETY: live handle; derives the checksum seed from the UUID just set.
        unsafe { sys::ext2fs_init_csum_seed(self.fs) };
    }

    fn allocate_tables(&mut self) -> Result<()> {
        // SAFETY: live handle; allocates bitmaps and inode tables in its in-memory bitmaps.
        let code = unsafe { sys::ext2fs_allocate_tables(self.fs) };
        check(code, || {
            format!("allocating the group tables of {}", self.name)
        })?;
        // SAFETY: live handle; block_map is its own bitmap field, replaced in place.
        let code =
            unsafe { sys::ext2fs_convert_subcluster_bitmap(self.fs, &mut (*self.fs).block_map) };
        check(code, || "converting the block bitmap".to_string())?;
        let mut overhead = 0u64;
        let last = self.blocks_count() - 1;
        // SAFETY: live handle, valid block range, overhead is an out pointer.
        let code = unsafe { sys::ext2fs_count_used_clusters(self.fs, 0, last, &mut overhead) };
        check(code, || "counting metadata blocks".to_string())?;
        // SAFETY: live handle's superblock, exclusively ours.
        unsafe { (*(*self.fs).super_).s_overhead_clusters = overhead as u32 };
        Ok(())
    }

    /// Lazy inode table initialisation, as mke2fs on a kernel that supports it: the tables are
    /// not written; if the storage reads as zeros they are flagged zeroed.
    fn flag_inode_tables(&mut self, zeroed: bool) {
        if !zeroed {
            return;
        }
        // SAFETY: reading the group count of the live handle.
        let groups = unsafe { (*self.fs).group_desc_count };
        for g in 0..groups {
            // SAFETY: g < group_desc_count; the descriptors are allocated by initialize.
            unsafe {
                sys::ext2fs_bg_flags_set(self.fs, g, sys::EXT2_BG_INODE_ZEROED as u16);
                sys::ext2fs_group_desc_csum_set(self.fs, g);
            }
        }
    }

    /// Reserved inodes 1..10 get valid (zeroed) contents and checksums.
    fn write_reserved_inodes(&mut self) -> Result<()> {
        let zero = InodeBuf([0; INODE_SIZE]);
        for ino in 1..sys::EXT2_GOOD_OLD_FIRST_INO {
            self.write_inode(ino, &zero, InodeWrite::Whole)?;
        }
        Ok(())
    }

    fn make_root_and_lost_found(&mut self) -> Result<()> {
        // SAFETY: live handle; NULL name with inum = root creates the root directory.
        let code = unsafe {
            sys::ext2fs_mkdir(
                self.fs,
                sys::EXT2_ROOT_INO,
                sys::EXT2_ROOT_INO,
                std::ptr::null(),
            )
        };
        check(code, || {
            format!("creating the root directory of {}", self.name)
        })?;
        let lpf = c"lost+found";
        // SAFETY: live handle; umask is a plain field.
        unsafe { (*self.fs).umask = 0o077 };
        // SAFETY: live handle; lpf is a valid C string; inum 0 allocates a new inode.
        let code = unsafe { sys::ext2fs_mkdir(self.fs, sys::EXT2_ROOT_INO, 0, lpf.as_ptr()) };
        // SAFETY: as above.
        unsafe { (*self.fs).umask = 0o022 };
        check(code, || "creating /lost+found".to_string())?;
        let ino = self
            .lookup(sys::EXT2_ROOT_INO, b"lost+found")?
            .context("lost+found missing right after creating it")?;
        // mke2fs makes lost+found 16 KiB so e2fsck can use it without allocating.
        for _ in 1..4 {
            // SAFETY: live handle; ino is the directory just created.
            let code = unsafe { sys::ext2fs_expand_dir(self.fs, ino) };
            check(code, || "expanding /lost+found".to_string())?;
        }
        Ok(())
    }

    fn reserve_special_inodes(&mut self) -> Result<()> {
        // SAFETY (block): live handle; inode numbers 1 and 3..10 are the reserved inodes,
        // valid for every filesystem; update_bb_inode with NULL writes an empty bad-block list.
        unsafe {
            for ino in (sys::EXT2_ROOT_INO + 1)..sys::EXT2_GOOD_OLD_FIRST_INO {
                sys::ext2fs_inode_alloc_stats2(self.fs, ino, 1, 0);
            }
            (*self.fs).flags |= (sys::EXT2_FLAG_IB_DIRTY | sys::EXT2_FLAG_CHANGED) as i32;
            sys::ext2fs_inode_alloc_stats2(self.fs, sys::EXT2_BAD_INO, 1, 0);
        }
        // SAFETY: see above.
        let code = unsafe { sys::ext2fs_update_bb_inode(self.fs, std::ptr::null_mut()) };
        check(code, || "writing the bad blocks inode".to_string())?;
        // SAFETY: live handle with resize_inode enabled; allocates and writes inode 7.
        let code = unsafe { sys::ext2fs_create_resize_inode(self.fs) };
        check(code, || "reserving blocks for online resize".to_string())?;
        Ok(())
    }

    fn add_journal(&mut self, zeroed: bool) -> Result<()> {
        let mut jp = sys::ext2fs_journal_params {
            num_journal_blocks: 0,
            num_fc_blocks: 0,
        };
        // SAFETY: live handle; jp is a valid out struct.
        let code = unsafe { sys::ext2fs_get_journal_params(&mut jp, self.fs) };
        check(code, || "sizing the journal".to_string())?;
        // Like mke2fs: no mount check. The library's check opens the device O_EXCL and
        // refuses (EBUSY) a whole disk while any of its partitions is mounted.
        let flags = sys::EXT2_MKJOURNAL_NO_MNT_CHECK as i32
            | if zeroed {
                sys::EXT2_MKJOURNAL_LAZYINIT as i32
            } else {
                0
            };
        // SAFETY: live handle; jp valid; goal !0 = the library's default placement (middle).
        let code = unsafe { sys::ext2fs_add_journal_inode3(self.fs, &mut jp, !0, flags) };
        check(code, || {
            format!("creating the journal ({} blocks)", jp.num_journal_blocks)
        })?;
        // SAFETY: live handle's superblock, exclusively ours.
        unsafe {
            let sb = &mut *(*self.fs).super_;
            sb.s_overhead_clusters += jp.num_journal_blocks + jp.num_fc_blocks;
        }
        Ok(())
    }
}
