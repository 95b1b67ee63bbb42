//! Computing a fingerprint: from a tar stream (what the ext4 writer would create from it)
//! or from a directory tree (a mounted slot).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::known::KnownDigests;
use super::record::{Entry, Fingerprint, Kind, ROOT, escape_path, normalize, parent};
use super::sparse::{SparseHasher, digest_file, digest_reader, has_holes};
use crate::archive::gnu_sparse::GnuSparseFilter;
use crate::archive::member::{Member, check_entry};
use crate::archive::sparse::{Map, Sparse, read_map};

const BUF: usize = 1 << 20;

/// The fingerprint of the tree a tar stream (not compressed) describes, as the ext4 writer
/// creates it: the root is a 0755 root-owned directory unless the archive has a root
/// member; a missing parent directory is a 0755 root-owned directory; a hard link has the
/// record of its target under its own path; a later member replaces an earlier one.
pub fn fingerprint_of_tar<R: Read>(tar: R) -> Result<Fingerprint> {
    fingerprint_of_tar_with(tar, None)
}

/// [`fingerprint_of_tar`], taking the digest of a regular member's data from `known` when
/// it has one for where that data starts (and the member's size), instead of hashing it.
pub fn fingerprint_of_tar_with<R: Read>(
    tar: R,
    known: Option<&KnownDigests>,
) -> Result<Fingerprint> {
    // Old GNU sparse members are read as the PAX sparse members they are equivalent to.
    let filter = GnuSparseFilter::new(tar);
    // After a rewritten member, offsets are no longer those of the stream `known` names.
    let shifted = filter.shifted();
    let known = known.map(|k| (k, shifted));
    let mut archive = tar::Archive::new(filter);
    let mut fp = Fingerprint::default();
    fp.insert(Entry::new(ROOT.into(), Kind::Dir, 0o755, 0, 0));
    let mut buf = vec![0u8; BUF];
    let mut last = String::from("(start of archive)");
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry =
            entry.with_context(|| format!("reading the tar stream after member {last:?}"))?;
        // What the ext4 writer would refuse, refused here too (with its message); a sparse
        // member's map and real name as the writer takes them.
        let Some(member) = check_entry(&mut entry)? else {
            continue;
        };
        let name = escape_path(&entry.path_bytes());
        let e = tar_entry(&mut entry, &member, &fp, &mut buf, known.as_ref())
            .with_context(|| format!("member {name:?}"))?;
        last = e.path.clone();
        let mut p = parent(&e.path);
        while let Some(dir) = p {
            if fp.get(dir).is_some() {
                break;
            }
            fp.insert(Entry::new(dir.to_string(), Kind::Dir, 0o755, 0, 0));
            p = parent(dir);
        }
        fp.insert(e);
    }
    Ok(fp)
}

/// The record of one member (`member`: its header as the ext4 writer reads it).
fn tar_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    member: &Member,
    fp: &Fingerprint,
    buf: &mut [u8],
    known: Option<&(&KnownDigests, Arc<AtomicBool>)>,
) -> Result<Entry> {
    let etype = entry.header().entry_type();
    // A sparse member's real name (`GNU.sparse.name`) is the member's path.
    let raw_path = member.path.clone();
    let path = normalize(&raw_path)?;
    let h = entry.header();
    let mode = h.mode().context("bad mode field")?;
    let uid = u32::try_from(h.uid().context("bad uid field")?).context("uid over 32 bits")?;
    let gid = u32::try_from(h.gid().context("bad gid field")?).context("gid over 32 bits")?;
    let link = || -> Result<Vec<u8>> {
        match entry.link_name_bytes() {
            Some(l) if !l.is_empty() => Ok(l.into_owned()),
            _ => bail!("link member without a link target"),
        }
    };
    let kind = match etype {
        EntryType::Regular if raw_path.ends_with(b"/") => Kind::Dir,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Char => Kind::Char,
        EntryType::Block => Kind::Block,
        EntryType::Fifo => Kind::Fifo,
        EntryType::Link => {
            let to = normalize(&link()?)?;
            let mut e = fp
                .get(&to)
                .with_context(|| {
                    format!("hard link to {to:?}, which is not earlier in the archive")
                })?
                .clone();
            e.path = path;
            return Ok(e);
        }
        other => bail!(
            "tar member type {:?} cannot be stored in a filesystem",
            char::from(other.as_byte())
        ),
    };
    let mut e = Entry::new(path, kind, mode, uid, gid);
    match kind {
        Kind::Symlink => e.target = Some(escape_path(&link()?)),
        Kind::Char | Kind::Block => {
            let major = h.device_major().ok().flatten();
            let minor = h.device_minor().ok().flatten();
            match (major, minor) {
                (Some(a), Some(b)) => e.rdev = Some([a, b]),
                _ => bail!("device member without a valid device number"),
            }
        }
        Kind::File if member.sparse.is_some() => {
            let sparse = member.sparse.as_ref().expect("checked");
            let (size, sha) = hash_sparse(entry, sparse, buf)?;
            e.size = Some(size);
            e.sparse_sha256 = Some(sha);
        }
        Kind::File if etype == EntryType::GNUSparse => {
            // Old GNU sparse that the filter did not rewrite: the tar crate fills the holes
            // with zeros (it does not expose the map), so they are read, but counted rather
            // than hashed.
            let (size, sha) = digest_reader(entry, buf).context("reading the member's data")?;
            e.size = Some(size);
            e.sparse_sha256 = Some(sha);
        }
        Kind::File => {
            let size = entry.size();
            let given = known
                .filter(|(_, shifted)| !shifted.load(Ordering::SeqCst))
                .and_then(|(k, _)| k.take(entry.raw_file_position(), size));
            let (size, sha) = match given {
                // the data is skipped unread by the archive's next entry
                Some(sha) => (size, hex::encode(sha)),
                None => hash_reader(entry, buf).context("reading the member's data")?,
            };
            e.size = Some(size);
            e.sha256 = Some(sha);
        }
        _ => {}
    }
    Ok(e)
}

fn hash_reader(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut n: u64 = 0;
    loop {
        match r.read(buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Size and `sparse_sha256` of a GNU PAX sparse member's apparent content: time
/// proportional to the stored data and the map, not to the holes.
fn hash_sparse(r: &mut dyn Read, s: &Sparse, buf: &mut [u8]) -> Result<(u64, String)> {
    let realsize = s.realsize;
    let map: Vec<(u64, u64)> = match &s.map {
        Map::InData => read_map(r)?.0,
        Map::Listed(map) => map.clone(),
    };
    let mut h = SparseHasher::new();
    let mut pos: u64 = 0;
    for (off, len) in map {
        if off < pos || off.checked_add(len).is_none_or(|end| end > realsize) {
            bail!("sparse region {off}+{len} overlaps or leaves the file ({realsize} bytes)");
        }
        h.zeros(off - pos);
        let mut left = len;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..k]).context("reading sparse data")?;
            h.data(&buf[..k]);
            left -= k as u64;
        }
        pos = off + len;
    }
    h.zeros(realsize - pos);
    Ok(h.finish())
}

/// A directory tree's fingerprint and the mount points found in it.
#[derive(Debug, Clone, Default)]
pub struct DirScan {
    pub fingerprint: Fingerprint,
    /// Entries on another filesystem than the root (mount points): neither recorded nor
    /// entered. A check ignores them.
    pub mountpoints: Vec<String>,
}

/// The fingerprint of the tree at `root` (see [`scan_dir`]; mount points are left out).
pub fn fingerprint_of_dir(root: &Path) -> Result<Fingerprint> {
    Ok(scan_dir(root)?.fingerprint)
}

/// Walks the tree at `root` without following symlinks or crossing into other filesystems.
/// A regular file gets a `sparse_sha256` when the filesystem reports a hole in it, else a
/// `sha256`.
pub fn scan_dir(root: &Path) -> Result<DirScan> {
    scan_dir_for(root, None)
}

/// [`scan_dir`] for a comparison with `expected`: a regular file that `expected` records
/// with the same size gets the digest of the kind recorded there (`sha256` or
/// `sparse_sha256`), so that a file is compared with what was recorded whatever holes its
/// filesystem has.
pub fn scan_dir_for(root: &Path, expected: Option<&Fingerprint>) -> Result<DirScan> {
    let meta = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut w = Walker {
        dev: meta.dev(),
        scan: DirScan::default(),
        hashes: HashMap::new(),
        buf: vec![0u8; BUF],
        expected,
    };
    w.record(root, ROOT.to_string(), &meta)?;
    w.dir(root, &[])?;
    w.scan.mountpoints.sort();
    Ok(w.scan)
}

struct Walker<'a> {
    dev: u64,
    scan: DirScan,
    /// (dev, ino, sparse digest) of files with several links -> (size, digest).
    hashes: HashMap<(u64, u64, bool), (u64, String)>,
    buf: Vec<u8>,
    expected: Option<&'a Fingerprint>,
}

impl Walker<'_> {
    fn dir(&mut self, dir: &Path, rel: &[u8]) -> Result<()> {
        let rd =
            fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?;
        for item in rd {
            let item = item.with_context(|| format!("reading directory {}", dir.display()))?;
            let path = item.path();
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(item.file_name().as_bytes());
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.dev() != self.dev {
                self.scan.mountpoints.push(escape_path(&child));
                continue;
            }
            self.record(&path, escape_path(&child), &meta)?;
            if meta.is_dir() {
                self.dir(&path, &child)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, path: &Path, rel: String, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let mut e = Entry::new(rel, kind, meta.mode(), meta.uid(), meta.gid());
        match kind {
            Kind::File => {
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let recorded = self
                    .expected
                    .and_then(|x| x.get(&e.path))
                    .filter(|x| x.kind == Kind::File && x.size == Some(meta.len()));
                let sparse = match recorded {
                    Some(x) => x.sparse_sha256.is_some(),
                    None => has_holes(&f, meta.len()),
                };
                let key = (meta.dev(), meta.ino(), sparse);
                let cached = if meta.nlink() > 1 {
                    self.hashes.get(&key).cloned()
                } else {
                    None
                };
                let (size, sha) = match cached {
                    Some(v) => v,
                    None => {
                        let v = if sparse {
                            digest_file(&f, meta.len(), &mut self.buf)
                        } else {
                            hash_reader(&mut &f, &mut self.buf).map_err(anyhow::Error::from)
                        }
                        .with_context(|| format!("reading {}", path.display()))?;
                        if meta.nlink() > 1 {
                            self.hashes.insert(key, v.clone());
                        }
                        v
                    }
                };
                e.size = Some(size);
                if sparse {
                    e.sparse_sha256 = Some(sha);
                } else {
                    e.sha256 = Some(sha);
                }
            }
            Kind::Symlink => {
                let t = fs::read_link(path)
                    .with_context(|| format!("reading the symlink {}", path.display()))?;
                e.target = Some(escape_path(t.as_os_str().as_bytes()));
            }
            Kind::Char | Kind::Block => {
                let d = meta.rdev();
                let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
                let minor = (d & 0xff) | ((d >> 12) & !0xff);
                e.rdev = Some([major as u32, minor as u32]);
            }
            _ => {}
        }
        self.scan.fingerprint.insert(e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of regular files `(name, data)`, without its end blocks.
    fn files(list: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in list {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(5);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        let mut v = b.into_inner().unwrap();
        v.truncate(v.len() - 1024);
        v
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn known_digests_are_taken_where_the_data_starts_and_nowhere_else() {
        let tar = files(&[("a", b"hello"), ("b", b"world!"), ("c", b"c")]);
        // data of a at 512, of b at 1536, of c at 2560
        let known = KnownDigests::default();
        known.insert(512, 5, [7; 32]); // taken: the fingerprint shows it, not the data's
        known.insert(1536, 99, [8; 32]); // another size: hashed
        known.insert(2000, 1, [9; 32]); // not where a member's data starts: hashed
        let fp = fingerprint_of_tar_with(&tar[..], Some(&known)).unwrap();
        assert_eq!(fp.get("a").unwrap().sha256, Some(hex::encode([7u8; 32])));
        assert_eq!(fp.get("a").unwrap().size, Some(5));
        assert_eq!(fp.get("b").unwrap().sha256, Some(sha(b"world!")));
        assert_eq!(fp.get("c").unwrap().sha256, Some(sha(b"c")));
        assert_eq!(
            fingerprint_of_tar(&tar[..])
                .unwrap()
                .get("a")
                .unwrap()
                .sha256,
            Some(sha(b"hello"))
        );

        // After an old GNU sparse member, which the reader rewrites (moving what follows),
        // offsets are not the stream's: nothing known is taken.
        let mut shifted = crate::archive::gnu_sparse::tests::old_sparse("s", 4096, 8192);
        shifted.extend_from_slice(&files(&[("a", b"hello")]));
        let known = KnownDigests::default();
        known.insert(1024 + 512, 5, [7; 32]); // where a's data is in the stream as given
        known.insert(2560, 5, [7; 32]); // and where it is once the PAX header is in
        let fp = fingerprint_of_tar_with(&shifted[..], Some(&known)).unwrap();
        assert_eq!(fp.get("a").unwrap().sha256, Some(sha(b"hello")));
        assert!(fp.get("s").unwrap().sparse_sha256.is_some());
    }

    #[test]
    fn an_old_gnu_sparse_member_is_fingerprinted_from_its_map() {
        // 'S' member: 512 bytes of data at 4096, apparent size 1 TiB (the holes are not read)
        let mut h = tar::Header::new_gnu();
        h.set_path("dir/f").unwrap();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_size(512);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(5);
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(1 << 40);
        g.sparse[0].set_offset(4096);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(1 << 40);
        g.sparse[1].set_length(0);
        h.set_cksum();
        let mut input = h.as_bytes().to_vec();
        input.extend_from_slice(&[7u8; 512]);
        input.extend_from_slice(&[0u8; 1024]);
        let fp = fingerprint_of_tar(&input[..]).unwrap();
        let e = fp.get("dir/f").unwrap();
        assert_eq!(e.size, Some(1 << 40));
        let mut want = SparseHasher::new();
        want.zeros(4096);
        want.data(&[7u8; 512]);
        want.zeros((1 << 40) - 4096 - 512);
        assert_eq!(e.sparse_sha256, Some(want.finish().1));
        assert_eq!(e.sha256, None);
    }

    #[test]
    fn a_sparse_member_has_the_size_the_ext4_writer_gives_it() {
        // format 0.1 with a contradicting `realsize` after its `size`: the writer takes
        // `size` (archive::sparse), and so does the fingerprint
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("GNU.sparse.size", &b"8192"[..]),
            ("GNU.sparse.map", b"0,4"),
            ("GNU.sparse.realsize", b"5"),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(5);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"abcd"[..]).unwrap();
        let fp = fingerprint_of_tar(&b.into_inner().unwrap()[..]).unwrap();
        let e = fp.get("f").unwrap();
        assert_eq!(e.size, Some(8192));
        let mut want = SparseHasher::new();
        want.data(b"abcd");
        want.zeros(8192 - 4);
        assert_eq!(e.sparse_sha256, Some(want.finish().1));
    }
}
