//! The on-disk ext4 inode as a byte buffer (little-endian layout of `struct ext2_inode_large`).
//!
//! libext2fs keeps inodes in memory in disk byte order on little-endian hosts, so the same
//! 256 bytes are handed to `ext2fs_write_inode_full` unchanged.

#[cfg(not(target_endian = "little"))]
compile_error!("the ext4 inode layout code assumes a little-endian host");

use crate::archive::member::Timestamp;

/// Inode size of the filesystems we create (and the only one `populate` accepts).
pub const INODE_SIZE: usize = 256;
/// `sizeof(struct ext2_inode_large) - 128`: the extra fields we fill (times, crtime, projid).
pub const EXTRA_ISIZE: u16 = 32;
/// Size of the fixed part we own when rewriting an inode (the rest holds in-inode xattrs).
pub const LARGE_INODE_SIZE: usize = 128 + EXTRA_ISIZE as usize;

pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;

/// `EXT4_EXTENTS_FL`: the inode's blocks are mapped by an extent tree.
pub const EXTENTS_FL: u32 = 0x0008_0000;
/// `EXT2_INDEX_FL`: the directory has an htree index.
pub const INDEX_FL: u32 = 0x0000_1000;

/// Directory entry file types (`EXT2_FT_*`).
pub mod ft {
    pub const REG: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHR: u8 = 3;
    pub const BLK: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const SYMLINK: u8 = 7;
}

/// A member's time as the inode stores it.
impl Timestamp {
    /// The kernel's encoding: low 32 bits of the seconds, and an extra word holding two epoch
    /// bits (seconds beyond the signed 32-bit range) and the nanoseconds shifted left by 2.
    fn encode(self) -> (u32, u32) {
        let epoch = ((self.secs - i64::from(self.secs as i32)) >> 32) as u32 & 3;
        (self.secs as u32, epoch | (self.nsec.min(999_999_999) << 2))
    }

    #[cfg(test)]
    fn decode(lo: u32, extra: u32) -> Self {
        let secs = i64::from(lo as i32) + (i64::from(extra & 3) << 32);
        Timestamp {
            secs,
            nsec: extra >> 2,
        }
    }
}

/// One inode, as the bytes written to the inode table.
#[derive(Clone)]
pub struct InodeBuf(pub [u8; INODE_SIZE]);

impl Default for InodeBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeBuf {
    /// A zeroed inode with `i_extra_isize` set.
    pub fn new() -> Self {
        let mut b = InodeBuf([0; INODE_SIZE]);
        b.put16(0x80, EXTRA_ISIZE);
        b
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.0[off], self.0[off + 1]])
    }
    fn put16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap_or([0; 4]))
    }
    fn put32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_mode(&mut self, mode: u16) {
        self.put16(0x00, mode);
    }
    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        self.put16(0x02, uid as u16);
        self.put16(0x78, (uid >> 16) as u16);
        self.put16(0x18, gid as u16);
        self.put16(0x7A, (gid >> 16) as u16);
    }
    #[cfg(test)]
    pub fn uid(&self) -> u32 {
        u32::from(self.get16(0x02)) | u32::from(self.get16(0x78)) << 16
    }
    #[cfg(test)]
    pub fn gid(&self) -> u32 {
        u32::from(self.get16(0x18)) | u32::from(self.get16(0x7A)) << 16
    }
    #[cfg(test)]
    pub fn size(&self) -> u64 {
        u64::from(self.get32(0x04)) | u64::from(self.get32(0x6C)) << 32
    }
    pub fn set_size(&mut self, size: u64) {
        self.put32(0x04, size as u32);
        self.put32(0x6C, (size >> 32) as u32);
    }
    pub fn links(&self) -> u16 {
        self.get16(0x1A)
    }
    pub fn set_links(&mut self, n: u16) {
        self.put16(0x1A, n);
    }
    pub fn flags(&self) -> u32 {
        self.get32(0x20)
    }
    pub fn set_flags(&mut self, f: u32) {
        self.put32(0x20, f);
    }
    /// `i_blocks` in 512-byte sectors (huge_file's block units are never needed below 128 PiB).
    pub fn sectors(&self) -> u64 {
        u64::from(self.get32(0x1C)) | u64::from(self.get16(0x74)) << 32
    }
    pub fn set_sectors(&mut self, n: u64) {
        self.put32(0x1C, n as u32);
        self.put16(0x74, (n >> 32) as u16);
    }
    /// The 60 bytes of `i_block`: extent root, fast symlink target or device number.
    pub fn i_block_mut(&mut self) -> &mut [u8] {
        &mut self.0[0x28..0x64]
    }
    pub fn set_times(&mut self, atime: Timestamp, mtime: Timestamp, ctime: Timestamp) {
        let (a, ax) = atime.encode();
        let (m, mx) = mtime.encode();
        let (c, cx) = ctime.encode();
        self.put32(0x08, a);
        self.put32(0x8C, ax);
        self.put32(0x10, m);
        self.put32(0x88, mx);
        self.put32(0x0C, c);
        self.put32(0x84, cx);
    }
    pub fn set_crtime(&mut self, t: Timestamp) {
        let (s, x) = t.encode();
        self.put32(0x90, s);
        self.put32(0x94, x);
    }

    /// Mode, owner and the three times in one call.
    pub fn set_meta(&mut self, m: &Meta) {
        self.set_mode(m.mode);
        self.set_owner(m.uid, m.gid);
        self.set_times(m.atime, m.mtime, m.ctime);
    }

    /// An empty extent tree root in `i_block` (what mke2fs writes for empty files).
    pub fn set_empty_extents(&mut self) {
        self.i_block_mut().fill(0);
        let root = crate::ext4::extents::empty_root();
        self.i_block_mut().copy_from_slice(&root);
        self.set_flags(self.flags() | EXTENTS_FL);
    }

    /// Device number in `i_block`, encoded like the kernel's old/new_encode_dev.
    pub fn set_device(&mut self, major: u32, minor: u32) {
        let (b0, b1) = if major < 256 && minor < 256 {
            (major << 8 | minor, 0)
        } else {
            (0, (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
        };
        self.i_block_mut().fill(0);
        self.put32(0x28, b0);
        self.put32(0x2C, b1);
    }
}

/// Metadata common to every inode we create, from a tar header.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// File type and permission bits (`S_IF* | 07777`).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

/// The directory entry file type for a mode.
pub fn file_type(mode: u16) -> u8 {
    match mode & S_IFMT {
        S_IFREG => ft::REG,
        S_IFDIR => ft::DIR,
        S_IFCHR => ft::CHR,
        S_IFBLK => ft::BLK,
        S_IFIFO => ft::FIFO,
        S_IFSOCK => ft::SOCK,
        S_IFLNK => ft::SYMLINK,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding_round_trips() {
        for secs in [
            0i64,
            1,
            -1,
            1_700_000_000,
            i64::from(i32::MAX) + 10,
            1 << 33,
        ] {
            let t = Timestamp {
                secs,
                nsec: 123_456_789,
            };
            let (lo, x) = t.encode();
            assert_eq!(Timestamp::decode(lo, x), t, "secs {secs}");
        }
        // pre-1970 dates keep epoch bits 0 (e2fsck flags epoch 3 as suspicious)
        let (_, x) = Timestamp { secs: -5, nsec: 0 }.encode();
        assert_eq!(x & 3, 0);
    }

    #[test]
    fn fields() {
        let mut i = InodeBuf::new();
        i.set_owner(70000, 65537);
        i.set_size(5 << 30);
        i.set_sectors((5u64 << 30) / 512);
        assert_eq!((i.uid(), i.gid()), (70000, 65537));
        assert_eq!(i.size(), 5 << 30);
        assert_eq!(i.sectors(), (5u64 << 30) / 512);
        i.set_device(8, 1);
        assert_eq!(&i.0[0x28..0x2C], &[1, 8, 0, 0]);
        i.set_device(259, 300);
        let b1 = u32::from_le_bytes(i.0[0x2C..0x30].try_into().unwrap());
        assert_eq!(b1, (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12));
    }
}
