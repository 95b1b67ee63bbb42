//! Recording the fingerprint inside the tree it describes: a tar stream passes through
//! unchanged except that a member `etc/hup/fingerprint.json` holding the fingerprint of
//! everything before it is inserted before the end-of-archive blocks. The apply pipeline
//! wraps the rootfs stream it populates the slot from, so the slot carries its own record.

use crate::archive::io::read_full;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use sha2::{Digest, Sha256};

use super::known::KnownDigests;
use super::record::{Entry, Fingerprint, Kind, normalize, parent, unescape_path};
use super::tap::Feeder;

/// Where the fingerprint is recorded inside a root filesystem.
pub const EMBED_PATH: &str = "etc/hup/fingerprint.json";

const BLOCK: usize = 512;
/// Data blocks passed on per refill.
const RUN: u64 = 128;

/// The fingerprint an [`EmbedReader`] computed, available once the stream was read to its end.
#[derive(Debug, Clone, Default)]
pub struct Embedded(Arc<Mutex<Option<Computed>>>);

#[derive(Debug)]
struct Computed {
    written: Fingerprint,
    stream: Fingerprint,
}

impl Embedded {
    /// The fingerprint of the tree as written (the stream's members, the added files and
    /// the directories made for them; not the record itself), once the stream was read whole.
    pub fn get(&self) -> Option<Fingerprint> {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|c| c.written.clone())
    }

    /// The fingerprint of the stream's own members (without the added files), once the
    /// stream was read whole: what `fingerprint_of_tar` gives for the same tar.
    pub fn of_stream(&self) -> Option<Fingerprint> {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|c| c.stream.clone())
    }
}

/// Wraps a plain (decompressed) tar stream so that it carries its fingerprint at
/// [`EMBED_PATH`]. Everything after the end-of-archive block of `tar` is read (so that a
/// verifying reader sees its end) and dropped. An archive that already has a member at
/// [`EMBED_PATH`], or whose `etc` or `etc/hup` is not a directory, is passed on unchanged
/// (with a warning); [`Embedded`] still gets the fingerprint.
pub fn embed<R: Read>(tar: R) -> Result<(EmbedReader<R>, Embedded)> {
    embed_with(tar, Vec::new())
}

/// A file to add to the tree (root-owned; missing parent directories are made 0755).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Relative to the root, e.g. `etc/NetworkManager/system-connections/resin-wifi`.
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// [`embed`], and also adds `extra` files (for example migrated configuration) before the
/// fingerprint member; the fingerprint covers them. An extra file whose path the archive
/// already has, or whose parent is not a directory, is left out with a warning.
pub fn embed_with<R: Read>(tar: R, extra: Vec<ExtraFile>) -> Result<(EmbedReader<R>, Embedded)> {
    embed_known(tar, extra, None)
}

/// [`embed_with`], the fingerprint taking the digests `known` has instead of hashing those
/// members' data (a delta's copied files, checked in preflight).
pub fn embed_known<R: Read>(
    tar: R,
    extra: Vec<ExtraFile>,
    known: Option<KnownDigests>,
) -> Result<(EmbedReader<R>, Embedded)> {
    let done = Embedded::default();
    let r = EmbedReader {
        inner: tar,
        feeder: Feeder::spawn(known)?,
        out: Vec::new(),
        pos: 0,
        data_blocks: 0,
        sparse_ext: false,
        finished: false,
        extra,
        result: done.clone(),
    };
    Ok((r, done))
}

pub struct EmbedReader<R> {
    inner: R,
    feeder: Feeder,
    out: Vec<u8>,
    pos: usize,
    /// Data blocks of the current member still to pass on.
    data_blocks: u64,
    /// The next block is a GNU sparse extension header.
    sparse_ext: bool,
    finished: bool,
    extra: Vec<ExtraFile>,
    result: Embedded,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl<R> std::fmt::Debug for EmbedReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedReader").finish_non_exhaustive()
    }
}

impl<R: Read> Read for EmbedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.finished {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            self.refill()
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> EmbedReader<R> {
    /// Puts the next blocks into `out` (or the inserted member and the end of the archive).
    fn refill(&mut self) -> Result<()> {
        if self.data_blocks > 0 && !self.sparse_ext {
            let k = self.data_blocks.min(RUN);
            self.out.resize(k as usize * BLOCK, 0);
            self.inner
                .read_exact(&mut self.out)
                .context("the tar stream ends inside a member")?;
            self.feeder.feed(&self.out);
            self.data_blocks -= k;
            return Ok(());
        }
        let mut block = [0u8; BLOCK];
        let n = read_full(&mut self.inner, &mut block).context("reading the tar stream")?;
        if self.sparse_ext {
            if n < BLOCK {
                bail!("the tar stream ends inside a sparse member's headers");
            }
            self.out.extend_from_slice(&block);
            self.feeder.feed(&block);
            self.sparse_ext = block[504] != 0;
            return Ok(());
        }
        if n == 0 || block.iter().all(|&b| b == 0) {
            if n != 0 {
                io::copy(&mut self.inner, &mut io::sink())
                    .context("reading the end of the tar stream")?;
            }
            return self.finish();
        }
        if n < BLOCK {
            bail!("the tar stream ends inside a header");
        }
        self.out.extend_from_slice(&block);
        self.feeder.feed(&block);
        self.data_blocks = size_field(&block[124..136])?.div_ceil(BLOCK as u64);
        // A GNU sparse header ('S') may be followed by extension headers.
        self.sparse_ext = block[156] == b'S' && block[482] != 0;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut fp = self.feeder.finish()?;
        let stream = fp.clone();
        for x in std::mem::take(&mut self.extra) {
            let path = normalize(x.path.as_bytes())?;
            if !can_add(&fp, &path) {
                continue;
            }
            add_parents(&mut fp, &path);
            let mut e = Entry::new(path.clone(), Kind::File, x.mode, 0, 0);
            e.size = Some(x.data.len() as u64);
            e.sha256 = Some(hex::encode(Sha256::digest(&x.data)));
            fp.insert(e);
            self.member(&unescape_path(&path)?, &x.data, x.mode)?;
        }
        if can_add(&fp, EMBED_PATH) {
            // The record describes the tree as written: with the directories the ext4
            // writer makes for it, without itself.
            add_parents(&mut fp, EMBED_PATH);
            self.member(EMBED_PATH.as_bytes(), &fp.to_json(), 0o644)?;
        }
        self.out.resize(self.out.len() + 2 * BLOCK, 0);
        *self.result.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Computed {
            written: fp,
            stream,
        });
        self.finished = true;
        Ok(())
    }

    /// Appends a regular file member (root-owned, mtime 0).
    fn member(&mut self, path: &[u8], data: &[u8], mode: u32) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut h = tar::Header::new_ustar();
        h.set_path(std::ffi::OsStr::from_bytes(path))
            .with_context(|| format!("naming the member {:?}", String::from_utf8_lossy(path)))?;
        h.set_size(data.len() as u64);
        h.set_mode(mode & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.resize(self.out.len() + pad, 0);
        Ok(())
    }
}

/// Records the missing parent directories of `path` as the ext4 writer makes them
/// (0755, root-owned).
fn add_parents(fp: &mut Fingerprint, path: &str) {
    let mut dir = parent(path);
    while let Some(d) = dir.filter(|d| fp.get(d).is_none()) {
        fp.insert(Entry::new(d.to_string(), Kind::Dir, 0o755, 0, 0));
        dir = parent(d);
    }
}

/// Whether a file can be added at `path`: it is not in the tree yet and no ancestor is
/// anything but a directory (the ext4 writer would refuse the member otherwise).
fn can_add(fp: &Fingerprint, path: &str) -> bool {
    if fp.get(path).is_some() {
        log::warn!("the rootfs has its own {path}: keeping it");
        return false;
    }
    let mut dir = parent(path);
    while let Some(d) = dir {
        if fp.get(d).is_some_and(|e| e.kind != Kind::Dir) {
            log::warn!("the rootfs's {d} is not a directory: not adding {path}");
            return false;
        }
        dir = parent(d);
    }
    true
}

/// A tar numeric field: octal digits (space or NUL terminated), or GNU base-256.
fn size_field(f: &[u8]) -> Result<u64> {
    if f[0] & 0x80 != 0 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&f[f.len() - 8..]);
        return Ok(u64::from_be_bytes(b));
    }
    let text: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&c| c == b' ')
        .take_while(|&c| c != 0 && c != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).unwrap_or("?");
    u64::from_str_radix(s, 8).with_context(|| format!("bad size field {s:?} in a tar header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_fields() {
        assert_eq!(size_field(b"00000001750\0").unwrap(), 1000);
        assert_eq!(size_field(b"        \0\0\0\0").unwrap(), 0);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(size_field(&big).unwrap(), 1 << 40);
        assert!(size_field(b"0000000009x\0").is_err());
    }
}
