//! A deterministic writer of "newc" cpio archives (the initramfs format).
//!
//! Entries are kept sorted by path, parents are added automatically, owners are
//! root, mtimes are zero and inode numbers are assigned in order, so the same
//! input always gives the same bytes, without needing root to build it.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// What an archive member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
struct Member {
    node: Node,
    mode: u32,
}

/// An in-memory archive; members are written sorted by path.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    members: BTreeMap<String, Member>,
}

/// Checks and normalizes a member path: relative, no `.`/`..`/empty components.
fn normalize(path: &str) -> Result<String> {
    let trimmed = path.trim_start_matches('/');
    let mut parts = Vec::new();
    for c in trimmed.split('/') {
        match c {
            "" | "." => continue,
            ".." => bail!("cpio member {path:?}: \"..\" is not allowed"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        bail!("cpio member {path:?}: empty path");
    }
    Ok(parts.join("/"))
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, node: Node, mode: u32) -> Result<()> {
        let path = normalize(path)?;
        // Parents first, as directories 0755, unless already present.
        let mut parent = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for c in &components[..components.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.members.get(&parent) {
                Some(m) if m.node != Node::Dir => {
                    bail!("cpio member {path:?}: parent {parent:?} is not a directory")
                }
                Some(_) => {}
                None => {
                    self.members.insert(
                        parent.clone(),
                        Member {
                            node: Node::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
        }
        if let Some(old) = self.members.get(&path)
            && !(old.node == Node::Dir && node == Node::Dir)
        {
            bail!("cpio member {path:?} added twice");
        }
        self.members.insert(
            path,
            Member {
                node,
                mode: mode & 0o7777,
            },
        );
        Ok(())
    }

    /// Adds a directory (and its parents).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(path, Node::Dir, mode)
    }

    /// Adds a regular file with the given permission bits.
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<()> {
        self.insert(path, Node::File(data), mode)
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(path, Node::Symlink(target.to_string()), 0o777)
    }

    /// Adds a character device node (no root needed: it is only bytes in the archive).
    pub fn add_char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, Node::CharDev { major, minor }, mode)
    }

    /// Member paths in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// Writes the archive, with its trailer, padded to a multiple of 512 bytes.
    pub fn write_to<W: Write>(&self, mut out: W) -> Result<()> {
        let mut written = 0u64;
        for (ino, (path, m)) in self.members.iter().enumerate() {
            let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match &m.node {
                Node::Dir => (S_IFDIR, &[], (0, 0)),
                Node::File(d) => (S_IFREG, d, (0, 0)),
                Node::Symlink(t) => (S_IFLNK, t.as_bytes(), (0, 0)),
                Node::CharDev { major, minor } => (S_IFCHR, &[], (*major, *minor)),
            };
            let nlink = if m.node == Node::Dir { 2 } else { 1 };
            let header = Header {
                ino: ino as u32 + 1,
                mode: kind | m.mode,
                nlink,
                size: u32::try_from(data.len())
                    .with_context(|| format!("cpio member {path:?} is over 4 GiB"))?,
                rdev,
                name: path,
            };
            written += header.write(&mut out, data)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
            name: TRAILER,
        };
        written += trailer.write(&mut out, &[])?;
        let pad = (512 - written % 512) % 512;
        out.write_all(&vec![0u8; pad as usize])
            .context("writing cpio padding")?;
        out.flush().context("flushing cpio archive")?;
        Ok(())
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &'a str,
}

fn pad4(n: u64) -> usize {
    ((4 - n % 4) % 4) as usize
}

impl Header<'_> {
    /// Writes header, name and data with their padding; returns the bytes written.
    fn write<W: Write>(&self, out: &mut W, data: &[u8]) -> Result<u64> {
        let namesize = self.name.len() as u32 + 1;
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            0,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize,
            0,
        ];
        let mut buf = Vec::with_capacity(110 + self.name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(self.name.as_bytes());
        buf.push(0);
        buf.extend(std::iter::repeat_n(0u8, pad4(buf.len() as u64)));
        out.write_all(&buf)
            .with_context(|| format!("writing cpio header of {:?}", self.name))?;
        out.write_all(data)
            .with_context(|| format!("writing cpio data of {:?}", self.name))?;
        let dpad = pad4(data.len() as u64);
        out.write_all(&[0u8; 3][..dpad])
            .with_context(|| format!("writing cpio padding of {:?}", self.name))?;
        Ok((buf.len() + data.len() + dpad) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, rdev, data) of one member.
    type Read = (String, u32, (u32, u32), Vec<u8>);

    /// Minimal newc reader for the tests.
    fn read(bytes: &[u8]) -> Vec<Read> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        loop {
            let h = &bytes[pos..pos + 110];
            assert_eq!(&h[..6], MAGIC);
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&bytes[pos + 110..pos + 110 + namesize - 1])
                .unwrap()
                .to_string();
            pos += 110 + namesize;
            pos += pad4(pos as u64);
            let data = bytes[pos..pos + size].to_vec();
            pos += size;
            pos += pad4(pos as u64);
            if name == TRAILER {
                break;
            }
            out.push((name, mode, (field(9), field(10)), data));
        }
        assert_eq!(bytes.len() % 512, 0);
        assert!(bytes[pos..].iter().all(|b| *b == 0));
        out
    }

    #[test]
    fn sorted_with_parents_and_kinds() {
        let mut a = Archive::new();
        a.add_file("/init", 0o755, b"ELF".to_vec()).unwrap();
        a.add_file("etc/hup/system.json", 0o644, b"{}\n".to_vec())
            .unwrap();
        a.add_symlink("bin/sh", "busybox").unwrap();
        a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
        a.add_dir("proc", 0o555).unwrap();
        let members = read(&a.to_bytes().unwrap());
        let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/hup",
                "etc/hup/system.json",
                "init",
                "proc"
            ]
        );
        assert_eq!(members[1].1, S_IFLNK | 0o777);
        assert_eq!(members[1].3, b"busybox");
        assert_eq!(members[3].1, S_IFCHR | 0o600);
        assert_eq!(members[3].2, (5, 1));
        assert_eq!(members[6].3, b"{}\n");
        assert_eq!(members[7].1, S_IFREG | 0o755);
        assert_eq!(members[8].1, S_IFDIR | 0o555);
    }

    #[test]
    fn deterministic_and_rejects_bad_paths() {
        let build = || {
            let mut a = Archive::new();
            a.add_file("b", 0o644, vec![1; 5]).unwrap();
            a.add_file("a/x", 0o644, vec![2; 7]).unwrap();
            a.to_bytes().unwrap()
        };
        assert_eq!(build(), build());
        let mut a = Archive::new();
        assert!(a.add_file("../x", 0o644, vec![]).is_err());
        assert!(a.add_file("/", 0o644, vec![]).is_err());
        a.add_file("f", 0o644, vec![]).unwrap();
        assert!(a.add_file("f", 0o644, vec![]).is_err());
        assert!(a.add_file("f/g", 0o644, vec![]).is_err());
        a.add_dir("d", 0o755).unwrap();
        a.add_dir("d", 0o755).unwrap();
    }
}
