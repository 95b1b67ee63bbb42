//! Directories: the in-memory tree built while populating, and the on-disk block layout
//! (linear for one block, htree index for more) written once at the end.
//!
//! Every path of the archive is resolved here, by name lookups from the root inode; a
//! component that is not a directory of this tree stops the resolution, so no path can leave
//! the filesystem or pass through a symlink.

use std::collections::HashMap;

use anyhow::{Result, bail};

use super::inode::ft;

/// One directory being built.
pub struct Dir {
    pub parent: u32,
    /// name -> (inode, file type)
    pub entries: HashMap<Box<[u8]>, (u32, u8)>,
    /// Entries were added: the directory's blocks must be (re)written.
    pub dirty: bool,
}

/// All directories of the filesystem, by inode number.
#[derive(Default)]
pub struct Tree {
    pub dirs: HashMap<u32, Dir>,
}

impl Tree {
    /// Adds a directory the populator created: its blocks are written at the end.
    pub fn add_dir(&mut self, ino: u32, parent: u32) {
        self.dirs.insert(
            ino,
            Dir {
                parent,
                entries: HashMap::new(),
                dirty: true,
            },
        );
    }

    /// Adds a directory formatting wrote already (the root, /lost+found): clean until an
    /// entry is added.
    pub fn add_formatted_dir(&mut self, ino: u32, parent: u32) {
        self.dirs.insert(
            ino,
            Dir {
                parent,
                entries: HashMap::new(),
                dirty: false,
            },
        );
    }

    pub fn lookup(&self, dir: u32, name: &[u8]) -> Option<(u32, u8)> {
        self.dirs.get(&dir)?.entries.get(name).copied()
    }

    /// Adds `name` to `dir`; the caller checked that it is new.
    pub fn insert(&mut self, dir: u32, name: &[u8], ino: u32, ftype: u8) -> Result<()> {
        if name.is_empty() || name.len() > 255 || name.contains(&0) || name.contains(&b'/') {
            bail!(
                "{:?} is not a valid directory entry name (1 to 255 bytes, no NUL or \"/\")",
                String::from_utf8_lossy(name)
            );
        }
        let Some(d) = self.dirs.get_mut(&dir) else {
            bail!("internal error: inode {dir} is not a directory being built");
        };
        d.entries.insert(name.into(), (ino, ftype));
        d.dirty = true;
        Ok(())
    }
}

/// Size of a directory entry with a name of `len` bytes.
fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

const TAIL: usize = 12;

fn put_dirent(buf: &mut [u8], ino: u32, rec: usize, name: &[u8], ftype: u8) {
    buf[0..4].copy_from_slice(&ino.to_le_bytes());
    buf[4..6].copy_from_slice(&(rec as u16).to_le_bytes());
    buf[6] = name.len() as u8;
    buf[7] = ftype;
    buf[8..8 + name.len()].copy_from_slice(name);
}

/// The fake entry at the end of each leaf block that holds its checksum.
fn put_tail(block: &mut [u8]) {
    let n = block.len();
    let t = &mut block[n - TAIL..];
    t.fill(0);
    t[4..6].copy_from_slice(&(TAIL as u16).to_le_bytes());
    t[7] = 0xDE;
}

/// A directory's blocks in logical order, and whether they form an htree.
pub struct Layout {
    pub blocks: Vec<Vec<u8>>,
    pub indexed: bool,
    /// Number of subdirectories (for the link count).
    pub subdirs: u32,
}

/// Parameters of the directory hash, from the superblock.
pub trait Hasher {
    /// Returns (major, minor) hash of a name, the major with its low bit clear.
    fn hash(&self, name: &[u8]) -> Result<(u32, u32)>;
    /// `s_def_hash_version`, as stored in the index root.
    fn version(&self) -> u8;
}

/// Lays out a directory `ino` with parent `parent` and `entries` (name, inode, type).
pub fn layout(
    ino: u32,
    parent: u32,
    mut entries: Vec<(&[u8], u32, u8)>,
    blocksize: usize,
    hasher: &dyn Hasher,
) -> Result<Layout> {
    let subdirs = entries.iter().filter(|e| e.2 == ft::DIR).count() as u32;
    let space = blocksize - TAIL;
    let dots = rec_len(1) + rec_len(2);
    let total: usize = entries.iter().map(|e| rec_len(e.0.len())).sum();
    if dots + total <= space {
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut block = vec![0u8; blocksize];
        put_dirent(&mut block, ino, 12, b".", ft::DIR);
        let mut off = 12;
        let mut prev = (off, b"..".as_slice(), parent, ft::DIR);
        off += 12;
        for &(name, eino, eft) in &entries {
            let (poff, pname, pino, pft) = prev;
            put_dirent(&mut block[poff..], pino, rec_len(pname.len()), pname, pft);
            prev = (off, name, eino, eft);
            off += rec_len(name.len());
        }
        let (poff, pname, pino, pft) = prev;
        put_dirent(&mut block[poff..], pino, space - poff, pname, pft);
        put_tail(&mut block);
        return Ok(Layout {
            blocks: vec![block],
            indexed: false,
            subdirs,
        });
    }
    htree(ino, parent, entries, blocksize, hasher, subdirs)
}

fn htree(
    ino: u32,
    parent: u32,
    entries: Vec<(&[u8], u32, u8)>,
    blocksize: usize,
    hasher: &dyn Hasher,
    subdirs: u32,
) -> Result<Layout> {
    let space = blocksize - TAIL;
    let mut hashed = Vec::with_capacity(entries.len());
    for (name, eino, eft) in entries {
        let (h, minor) = hasher.hash(name)?;
        hashed.push((h, minor, name, eino, eft));
    }
    hashed.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));

    // Leaves, filled completely, and the hash each one starts with (low bit: continuation).
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let mut starts: Vec<u32> = Vec::new();
    let mut i = 0;
    while i < hashed.len() {
        let mut block = vec![0u8; blocksize];
        let first = hashed[i].0;
        let continued = i > 0 && hashed[i - 1].0 == first;
        starts.push(if continued { first | 1 } else { first });
        let mut off = 0;
        let mut last_off = 0;
        while i < hashed.len() {
            let (_, _, name, eino, eft) = hashed[i];
            let len = rec_len(name.len());
            if off + len > space {
                break;
            }
            put_dirent(&mut block[off..], eino, len, name, eft);
            last_off = off;
            off += len;
            i += 1;
        }
        let last_len = space - last_off;
        block[last_off + 4..last_off + 6].copy_from_slice(&(last_len as u16).to_le_bytes());
        put_tail(&mut block);
        leaves.push(block);
    }

    let root_limit = (blocksize - 32 - 8) / 8;
    let node_limit = (blocksize - 8 - 8) / 8;
    let nleaves = leaves.len();
    let mut blocks = Vec::new();
    let mut root = vec![0u8; blocksize];
    put_dirent(&mut root, ino, 12, b".", ft::DIR);
    put_dirent(&mut root[12..], parent, blocksize - 12, b"..", ft::DIR);
    root[28] = hasher.version();
    root[29] = 8; // info_length
    if nleaves <= root_limit {
        root[30] = 0; // indirect levels
        let refs: Vec<(u32, u32)> = starts
            .iter()
            .enumerate()
            .map(|(k, &h)| (h, 1 + k as u32))
            .collect();
        put_index(&mut root[32..], root_limit, &refs);
        blocks.push(root);
        blocks.extend(leaves);
    } else {
        let nnodes = nleaves.div_ceil(node_limit);
        if nnodes > root_limit {
            bail!(
                "directory with {nleaves} blocks needs a 3-level htree (largedir), not supported"
            );
        }
        root[30] = 1;
        let first_leaf = 1 + nnodes as u32;
        let mut root_refs = Vec::new();
        let mut nodes = Vec::new();
        for (n, chunk) in starts.chunks(node_limit).enumerate() {
            let base = n * node_limit;
            let refs: Vec<(u32, u32)> = chunk
                .iter()
                .enumerate()
                .map(|(k, &h)| (h, first_leaf + (base + k) as u32))
                .collect();
            let mut node = vec![0u8; blocksize];
            node[4..6].copy_from_slice(&(blocksize as u16).to_le_bytes());
            put_index(&mut node[8..], node_limit, &refs);
            root_refs.push((chunk[0], 1 + n as u32));
            nodes.push(node);
        }
        put_index(&mut root[32..], root_limit, &root_refs);
        blocks.push(root);
        blocks.extend(nodes);
        blocks.extend(leaves);
    }
    Ok(Layout {
        blocks,
        indexed: true,
        subdirs,
    })
}

/// Writes a dx count/limit header followed by (hash, block) entries; the first entry's hash
/// slot holds the count and limit.
fn put_index(buf: &mut [u8], limit: usize, refs: &[(u32, u32)]) {
    buf[0..2].copy_from_slice(&(limit as u16).to_le_bytes());
    buf[2..4].copy_from_slice(&(refs.len() as u16).to_le_bytes());
    for (k, &(hash, block)) in refs.iter().enumerate() {
        let off = k * 8;
        if k > 0 {
            buf[off..off + 4].copy_from_slice(&hash.to_le_bytes());
        }
        buf[off + 4..off + 8].copy_from_slice(&block.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeHash;
    impl Hasher for FakeHash {
        fn hash(&self, name: &[u8]) -> Result<(u32, u32)> {
            let mut h: u32 = 0x1234_5678;
            for &b in name {
                h = h.wrapping_mul(31).wrapping_add(u32::from(b));
            }
            Ok((h & !1, 0))
        }
        fn version(&self) -> u8 {
            1
        }
    }

    fn names(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{i:0len$}").into_bytes()).collect()
    }

    #[test]
    fn small_dir_is_linear() {
        let ns = names(10, 8);
        let e: Vec<(&[u8], u32, u8)> = ns.iter().map(|n| (n.as_slice(), 20, ft::REG)).collect();
        let l = layout(12, 2, e, 4096, &FakeHash).unwrap();
        assert!(!l.indexed);
        assert_eq!(l.blocks.len(), 1);
        let b = &l.blocks[0];
        assert_eq!(&b[8..9], b".");
        assert_eq!(&b[20..22], b"..");
        assert_eq!(b[4096 - 5], 0xDE);
    }

    #[test]
    fn big_dirs_are_indexed() {
        for (n, levels) in [(1000, 0u8), (70_000, 1)] {
            let ns = names(n, 40);
            let e: Vec<(&[u8], u32, u8)> = ns.iter().map(|n| (n.as_slice(), 20, ft::REG)).collect();
            let l = layout(12, 2, e, 4096, &FakeHash).unwrap();
            assert!(l.indexed);
            assert_eq!(l.blocks[0][30], levels);
            let count = u16::from_le_bytes([l.blocks[0][34], l.blocks[0][35]]) as usize;
            let leaves = n.div_ceil((4096 - 12) / 48);
            if levels == 0 {
                assert_eq!(count, leaves);
                assert_eq!(l.blocks.len(), 1 + leaves);
            } else {
                let nodes = leaves.div_ceil((4096 - 16) / 8);
                assert_eq!(count, nodes);
                assert_eq!(l.blocks.len(), 1 + nodes + leaves);
            }
        }
    }
}
