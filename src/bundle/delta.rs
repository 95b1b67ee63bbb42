//! The delta stream of a delta bundle (docs/bundle-format.md, "Delta bundles"): the records
//! that rebuild the full bundle's rootfs tar, byte for byte, from the stream and the files
//! of the running slot.
//!
//! Each record starts with a tag byte; numbers are little-endian:
//! - `R` len:u64, then len bytes: tar bytes passed on as they are (headers, PAX records,
//!   padding, the data of files sent whole, the end-of-archive blocks);
//! - `C` path, base sha256, size:u64: the data of a file, copied whole from the base file
//!   at path (which must have that size and sha256);
//! - `P` path, base sha256, base size:u64, new sha256, new size:u64, pieces:u32, then per
//!   piece ref offset:u64, ref len:u32, out len:u32, patch len:u32 and the patch: a zstd
//!   frame that decompresses, with the base file's bytes `[ref offset, +ref len)` as its
//!   prefix (zstd `--patch-from`), to the next out len bytes of the new file;
//! - `E`: the end; nothing may follow.
//!
//! A path is len:u16 and the bytes, a sha256 32 raw bytes.

use std::io::{self, Read, Write};

use anyhow::{Result, bail, ensure};

/// Bytes of the new file one patch piece gives (at most).
pub const PIECE: u64 = 2 << 20;
/// Base bytes a piece may reference: its own range and half a piece either side.
pub const MAX_REF: u64 = 2 * PIECE;
/// The zstd window of a patch (a power of two above `MAX_REF + PIECE`).
pub const PATCH_WINDOW_LOG: u32 = 23;
/// Longest base path.
pub const MAX_PATH: usize = 4096;

pub const TAG_RAW: u8 = b'R';
pub const TAG_COPY: u8 = b'C';
pub const TAG_PATCH: u8 = b'P';
pub const TAG_END: u8 = b'E';

/// A base file a record names, with what it must hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaseRef {
    pub path: Vec<u8>,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// One piece of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub ref_offset: u64,
    pub ref_len: u32,
    pub out_len: u32,
    pub patch_len: u32,
}

/// A record's head (the bytes that follow it are read by the consumer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Raw(u64),
    Copy(BaseRef),
    Patch {
        base: BaseRef,
        sha256: [u8; 32],
        size: u64,
        pieces: u32,
    },
    End,
}

/// The base files of an expanded rootfs: the running slot, read-only.
pub trait BaseFiles: Send {
    /// Size of the regular file at `path`, `None` when there is none.
    fn size(&mut self, path: &[u8]) -> Result<Option<u64>>;
    /// Fills `buf` from `offset` of the regular file at `path`.
    fn read_at(&mut self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<()>;
}

pub fn write_path(w: &mut (impl Write + ?Sized), path: &[u8]) -> io::Result<()> {
    w.write_all(&(path.len() as u16).to_le_bytes())?;
    w.write_all(path)
}

pub fn write_base(w: &mut (impl Write + ?Sized), b: &BaseRef) -> io::Result<()> {
    write_path(w, &b.path)?;
    w.write_all(&b.sha256)?;
    w.write_all(&b.size.to_le_bytes())
}

pub fn write_piece(w: &mut (impl Write + ?Sized), p: &Piece) -> io::Result<()> {
    w.write_all(&p.ref_offset.to_le_bytes())?;
    w.write_all(&p.ref_len.to_le_bytes())?;
    w.write_all(&p.out_len.to_le_bytes())?;
    w.write_all(&p.patch_len.to_le_bytes())
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            anyhow::anyhow!("the delta stream ends inside a record")
        } else {
            anyhow::Error::new(e).context("reading the delta stream")
        }
    })
}

fn u64_of(r: &mut impl Read) -> Result<u64> {
    let mut b = [0u8; 8];
    read_exact(r, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn u32_of(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn sha_of(r: &mut impl Read) -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    read_exact(r, &mut b)?;
    Ok(b)
}

fn base_of(r: &mut impl Read) -> Result<BaseRef> {
    let mut l = [0u8; 2];
    read_exact(r, &mut l)?;
    let len = usize::from(u16::from_le_bytes(l));
    ensure!(
        (1..=MAX_PATH).contains(&len),
        "a base path of {len} bytes in the delta stream"
    );
    let mut path = vec![0; len];
    read_exact(r, &mut path)?;
    ensure!(
        !path.contains(&0),
        "a base path with a NUL byte in the delta stream"
    );
    Ok(BaseRef {
        path,
        sha256: sha_of(r)?,
        size: u64_of(r)?,
    })
}

/// Reads the next record's head; `Ok(None)` only at the very end of the stream, which is an
/// error for the caller unless `End` came before.
pub fn read_record(r: &mut impl Read) -> Result<Option<Record>> {
    let mut tag = [0u8; 1];
    loop {
        match r.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow::Error::new(e).context("reading the delta stream")),
        }
    }
    Ok(Some(match tag[0] {
        TAG_RAW => Record::Raw(u64_of(r)?),
        TAG_COPY => Record::Copy(base_of(r)?),
        TAG_PATCH => {
            let base = base_of(r)?;
            Record::Patch {
                base,
                sha256: sha_of(r)?,
                size: u64_of(r)?,
                pieces: u32_of(r)?,
            }
        }
        TAG_END => Record::End,
        t => bail!("unknown record tag {t:#04x} in the delta stream"),
    }))
}

/// Reads a piece's head and checks its bounds: `done` bytes of the new file were made,
/// which has `size` bytes; the base file has `base_size`.
pub fn read_piece(r: &mut impl Read, done: u64, size: u64, base_size: u64) -> Result<Piece> {
    let p = Piece {
        ref_offset: u64_of(r)?,
        ref_len: u32_of(r)?,
        out_len: u32_of(r)?,
        patch_len: u32_of(r)?,
    };
    let out = u64::from(p.out_len);
    ensure!(
        (1..=PIECE).contains(&out) && out <= size.saturating_sub(done),
        "a patch piece of {out} bytes at {done} of a {size}-byte file"
    );
    ensure!(
        u64::from(p.ref_len) <= MAX_REF
            && p.ref_offset
                .checked_add(u64::from(p.ref_len))
                .is_some_and(|e| e <= base_size),
        "a patch piece refers to bytes {}+{} of a {base_size}-byte base file",
        p.ref_offset,
        p.ref_len
    );
    ensure!(
        (p.patch_len as usize) <= zstd::zstd_safe::compress_bound(p.out_len as usize) + 64,
        "a patch piece of {} bytes for {out} bytes",
        p.patch_len
    );
    Ok(p)
}

/// Decompresses one patch piece into `out` (exactly `out.len()` bytes).
pub fn unpatch(reference: &[u8], patch: &[u8], out: &mut [u8]) -> Result<()> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let mut d = DCtx::create();
    let e = |c: usize| zstd::zstd_safe::get_error_name(c).to_string();
    d.set_parameter(DParameter::WindowLogMax(PATCH_WINDOW_LOG))
        .map_err(|c| anyhow::anyhow!("zstd: {}", e(c)))?;
    d.ref_prefix(reference)
        .map_err(|c| anyhow::anyhow!("zstd: {}", e(c)))?;
    let n = d
        .decompress(out, patch)
        .map_err(|c| anyhow::anyhow!("a patch piece does not decompress: {}", e(c)))?;
    ensure!(
        n == out.len(),
        "a patch piece gives {n} bytes, not {}",
        out.len()
    );
    Ok(())
}

/// Compresses `data` with `reference` as prefix (the patch of one piece).
pub fn patch(reference: &[u8], data: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let e = |c: usize| anyhow::anyhow!("zstd: {}", zstd::zstd_safe::get_error_name(c));
    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(e)?;
    c.set_parameter(CParameter::WindowLog(PATCH_WINDOW_LOG))
        .map_err(e)?;
    c.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(e)?;
    c.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(e)?;
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(e)?;
    c.ref_prefix(reference).map_err(e)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    c.compress2(&mut out, data).map_err(e)?;
    Ok(out)
}

/// The range of the base file piece `[offset, offset + len)` of the new file refers to.
pub fn ref_range(offset: u64, len: u64, base_size: u64) -> (u64, u64) {
    if base_size <= MAX_REF {
        return (0, base_size);
    }
    let start = offset.saturating_sub(PIECE / 2).min(base_size);
    let end = (offset + len + PIECE / 2).min(base_size);
    let start = start.min(end);
    // keep within MAX_REF
    let end = end.min(start + MAX_REF);
    (start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_roundtrip_and_bounds() {
        let base: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = base.clone();
        new[1000..1010].copy_from_slice(b"0123456789");
        let p = patch(&base, &new, 19).unwrap();
        assert!(p.len() < 200, "{}", p.len());
        let mut out = vec![0; new.len()];
        unpatch(&base, &p, &mut out).unwrap();
        assert_eq!(out, new);
        // a patch with the wrong reference gives other bytes or an error
        let other = vec![0u8; base.len()];
        let r = unpatch(&other, &p, &mut out);
        assert!(r.is_err() || out != new);
        // a wrong output length is refused
        let mut short = vec![0; new.len() - 1];
        assert!(unpatch(&base, &p, &mut short).is_err());
        let (s, l) = ref_range(10 * PIECE, PIECE, 20 * PIECE);
        assert_eq!((s, l), (10 * PIECE - PIECE / 2, MAX_REF));
        assert_eq!(ref_range(0, 5, 100), (0, 100));
    }

    #[test]
    fn records_roundtrip_and_refusals() {
        let b = BaseRef {
            path: b"usr/bin/x".to_vec(),
            size: 5,
            sha256: [7; 32],
        };
        let mut v = vec![TAG_COPY];
        write_base(&mut v, &b).unwrap();
        v.push(TAG_END);
        let mut r = &v[..];
        assert_eq!(read_record(&mut r).unwrap(), Some(Record::Copy(b.clone())));
        assert_eq!(read_record(&mut r).unwrap(), Some(Record::End));
        assert_eq!(read_record(&mut r).unwrap(), None);
        let e = read_record(&mut &v[..v.len() - 3]).map(|_| ()).unwrap_err();
        assert!(format!("{e:#}").contains("ends inside a record"), "{e:#}");
        let e = read_record(&mut &b"X"[..]).unwrap_err();
        assert!(format!("{e:#}").contains("unknown record tag"));
        let mut p = Vec::new();
        write_piece(
            &mut p,
            &Piece {
                ref_offset: 0,
                ref_len: 10,
                out_len: 5,
                patch_len: 9,
            },
        )
        .unwrap();
        assert!(read_piece(&mut &p[..], 0, 5, 10).is_ok());
        assert!(read_piece(&mut &p[..], 0, 5, 9).is_err());
        assert!(read_piece(&mut &p[..], 1, 5, 10).is_err());
    }
}
