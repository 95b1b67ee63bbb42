//! The content digest of sparse files (`sparse_sha256`): SHA-256 over the content in
//! 4096-byte blocks where a run of all-zero blocks is counted instead of hashed, so a hole
//! costs O(1) whatever its length, and the same content gives the same digest wherever its
//! holes are (a tar sparse map, the holes of a filesystem, or zeros read from a plain file).
//!
//! The hashed stream, after the prefix `hup sparse sha256 1\0`: for each 4096-byte block at
//! a multiple of 4096, in order, `D` and the block when it holds a non-zero byte, or, for a
//! maximal run of N all-zero blocks, `Z` and N (u64 little-endian); then, when the size is
//! not a multiple of 4096, `T` and the last partial block (zeros included).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const BLOCK: usize = 4096;
const PREFIX: &[u8] = b"hup sparse sha256 1\0";

/// Computes a `sparse_sha256` from data and hole lengths given in file order.
#[derive(Debug)]
pub struct SparseHasher {
    h: Sha256,
    /// The current partial block.
    block: Vec<u8>,
    /// All-zero blocks not hashed yet.
    zero_run: u64,
    size: u64,
}

impl Default for SparseHasher {
    fn default() -> Self {
        Self::new()
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

impl SparseHasher {
    pub fn new() -> SparseHasher {
        let mut h = Sha256::new();
        h.update(PREFIX);
        SparseHasher {
            h,
            block: Vec::with_capacity(BLOCK),
            zero_run: 0,
            size: 0,
        }
    }

    fn flush_run(&mut self) {
        if self.zero_run > 0 {
            self.h.update(b"Z");
            self.h.update(self.zero_run.to_le_bytes());
            self.zero_run = 0;
        }
    }

    fn whole_block(&mut self, b: &[u8]) {
        if is_zero(b) {
            self.zero_run += 1;
        } else {
            self.flush_run();
            self.h.update(b"D");
            self.h.update(b);
        }
    }

    /// The next `bytes` of the file.
    pub fn data(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if !self.block.is_empty() {
            let k = (BLOCK - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..k]);
            bytes = &bytes[k..];
            if self.block.len() < BLOCK {
                return;
            }
            let b = std::mem::take(&mut self.block);
            self.whole_block(&b);
            self.block = b;
            self.block.clear();
        }
        let mut chunks = bytes.chunks_exact(BLOCK);
        for b in &mut chunks {
            self.whole_block(b);
        }
        self.block.extend_from_slice(chunks.remainder());
    }

    /// The next `n` bytes of the file are zeros (a hole): O(1) whatever `n`.
    pub fn zeros(&mut self, mut n: u64) {
        const Z: [u8; BLOCK] = [0; BLOCK];
        if !self.block.is_empty() {
            let k = (BLOCK - self.block.len()).min(usize::try_from(n).unwrap_or(BLOCK));
            self.data(&Z[..k]);
            n -= k as u64;
        }
        let whole = n / BLOCK as u64;
        self.zero_run += whole;
        self.size += whole * BLOCK as u64;
        self.data(&Z[..(n % BLOCK as u64) as usize]);
    }

    /// The size seen and the lowercase hex digest.
    pub fn finish(mut self) -> (u64, String) {
        self.flush_run();
        if !self.block.is_empty() {
            self.h.update(b"T");
            self.h.update(&self.block);
        }
        (self.size, hex::encode(self.h.finalize()))
    }
}

/// Feeds everything `r` yields (zeros detected by content).
pub fn digest_reader(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<(u64, String)> {
    let mut h = SparseHasher::new();
    loop {
        match r.read(buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(k) => h.data(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Where the next data of `f` starts at or after `pos` (`None`: only a hole is left), and
/// where that data ends; `Err` when the filesystem cannot tell (no SEEK_DATA).
fn next_data(f: &File, pos: u64, len: u64) -> nix::Result<Option<(u64, u64)>> {
    use nix::unistd::{Whence, lseek};
    let at = i64::try_from(pos).map_err(|_| nix::errno::Errno::EOVERFLOW)?;
    let start = match lseek(f, at, Whence::SeekData) {
        Ok(s) => s as u64,
        Err(nix::errno::Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(e),
    };
    if start >= len {
        return Ok(None);
    }
    let end = lseek(f, start as i64, Whence::SeekHole)? as u64;
    Ok(Some((start, end.min(len))))
}

/// The `sparse_sha256` of the first `len` bytes of a file, reading only its data: the
/// holes the filesystem reports (SEEK_DATA / SEEK_HOLE) are counted, not read. Where the
/// filesystem does not report holes, the whole file is read. A file that shrinks while it
/// is read gives the digest and size of what was read (a running system's files change).
pub fn digest_file(f: &File, len: u64, buf: &mut [u8]) -> Result<(u64, String)> {
    let mut h = SparseHasher::new();
    let mut pos = 0u64;
    'outer: while pos < len {
        let (start, end) = match next_data(f, pos, len) {
            Ok(Some(r)) => r,
            Ok(None) => (len, len),
            Err(_) => (pos, len), // no hole information: read the rest
        };
        h.zeros(start - pos);
        pos = start;
        while pos < end {
            let k = (end - pos).min(buf.len() as u64) as usize;
            let n = match f.read_at(&mut buf[..k], pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r.context("reading")?,
            };
            if n == 0 {
                break 'outer;
            }
            h.data(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(h.finish())
}

/// Whether the filesystem reports a hole in the first `len` bytes of `f` (whose offset is
/// left at 0).
pub fn has_holes(f: &File, len: u64) -> bool {
    use nix::unistd::{Whence, lseek};
    let holes = len > 0 && lseek(f, 0, Whence::SeekHole).is_ok_and(|h| (h as u64) < len);
    let _ = lseek(f, 0, Whence::SeekSet);
    holes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(content: &[u8]) -> String {
        let mut h = SparseHasher::new();
        h.data(content);
        h.finish().1
    }

    #[test]
    fn holes_and_zeros_give_the_same_digest() {
        let mut content = vec![0u8; 5 * BLOCK + 100];
        content[BLOCK + 7] = 1;
        content[3 * BLOCK..3 * BLOCK + 5].copy_from_slice(b"hello");
        let want = of(&content);
        // the same content as regions and holes, cut anywhere
        for cut in [0, 1, 100, BLOCK - 1, BLOCK, BLOCK + 7] {
            let mut h = SparseHasher::new();
            h.zeros(cut as u64);
            h.data(&content[cut..3 * BLOCK + 5]);
            h.zeros((content.len() - 3 * BLOCK - 5) as u64);
            assert_eq!(
                h.finish(),
                (content.len() as u64, want.clone()),
                "cut {cut}"
            );
        }
        // and through a reader with an odd buffer
        let mut buf = vec![0u8; 777];
        let got = digest_reader(&mut &content[..], &mut buf).unwrap();
        assert_eq!(got.1, want);
        // different content, different digest; trailing zeros count
        let mut other = content.clone();
        other[4 * BLOCK] = 2;
        assert_ne!(of(&other), want);
        content.push(0);
        assert_ne!(of(&content), want);
    }

    #[test]
    fn a_huge_hole_costs_nothing() {
        let mut h = SparseHasher::new();
        h.data(b"start");
        h.zeros(1 << 60);
        h.data(b"end");
        let (size, _) = h.finish();
        assert_eq!(size, (1 << 60) + 8);
    }

    #[test]
    fn files_with_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"in the middle", 20 << 20).unwrap();
        f.write_all_at(&[7u8; 9000], (40 << 20) + 3).unwrap();
        let f = File::open(&p).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let (size, got) = digest_file(&f, 64 << 20, &mut buf).unwrap();
        assert_eq!(size, 64 << 20);
        let content = std::fs::read(&p).unwrap();
        assert_eq!(got, of(&content));
        assert!(has_holes(&f, 64 << 20));
        let small = dir.path().join("small");
        std::fs::write(&small, b"x").unwrap();
        let mut f = File::open(&small).unwrap();
        assert!(!has_holes(&f, 1));
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"x", "the offset is back at 0");
    }
}
