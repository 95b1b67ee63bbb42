//! Raw access to the structures of a FAT filesystem, for what fatfs 0.3.6 does not expose:
//! the geometry from the boot sector, FAT entries (read from the active copy, written to every
//! copy), cluster chains, and directories as arrays of 32-byte entries. Used by the directory
//! repair (`fat_fix`) and the linear bulk writer (`fat_bulk`), always through the same
//! [`FatIo`] (one cache) that fatfs uses.

use anyhow::{Context, Result, bail};

use super::fat_io::FatIo;

pub(crate) const ENTRY: usize = 32;
pub(crate) const ATTR_LFN: u8 = 0x0f;
pub(crate) const ATTR_DIR: u8 = 0x10;
pub(crate) const ATTR_VOLUME: u8 = 0x08;
/// First byte of a deleted entry.
pub(crate) const DELETED: u8 = 0xe5;

#[derive(Debug)]
pub(crate) struct Geometry {
    pub(crate) cluster_bytes: u64,
    fat_start: u64,
    fat_bytes: u64,
    /// FAT copies written (all when mirrored, else the active one only).
    fats_written: Vec<u64>,
    /// The FAT copy read.
    fat_read: u64,
    /// FAT12, FAT16 or FAT32 (bits per FAT entry).
    pub(crate) bits: u32,
    /// FAT12/16: fixed root directory region (offset, length).
    root_region: (u64, u64),
    /// FAT32: first cluster of the root directory.
    root_cluster: u32,
    data_start: u64,
    /// Cluster numbers run from 2 to `end` (exclusive).
    end: u32,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// A byte range of the partition: (offset, length).
type Region = (u64, u64);

/// What a FAT entry says about the cluster after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Next(u32),
    End,
    /// Free, bad, reserved or out of range: not a link of a valid chain.
    Broken,
}

/// One file or directory entry of a directory (long-name entries and short entry).
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    /// Slot index of the first long-name entry (or of the short entry) and of the short entry.
    pub(crate) first_slot: usize,
    pub(crate) short_slot: usize,
    pub(crate) short: [u8; 11],
    pub(crate) attr: u8,
    pub(crate) cluster: u32,
}

impl RawEntry {
    pub(crate) fn is_dot(&self) -> bool {
        self.short == *b".          " || self.short == *b"..         "
    }
}

/// Geometry of the FAT filesystem on `io`, from its boot sector.
pub(crate) fn geometry(io: &FatIo) -> Result<Geometry> {
    let mut bs = [0u8; 512];
    io.read_exact_at(&mut bs, 0)
        .context("reading the FAT boot sector")?;
    let bps = le16(&bs, 11);
    let spc = u64::from(bs[13]);
    let reserved = le16(&bs, 14);
    let fats = u64::from(bs[16]);
    let root_entries = le16(&bs, 17);
    let total = match le16(&bs, 19) {
        0 => le32(&bs, 32),
        n => n,
    };
    let spf = match le16(&bs, 22) {
        0 => le32(&bs, 36),
        n => n,
    };
    if !(512..=4096).contains(&bps) || spc == 0 || fats == 0 || spf == 0 {
        bail!("not a FAT boot sector (bytes per sector {bps}, sectors per cluster {spc})");
    }
    let root_sectors = (root_entries * ENTRY as u64).div_ceil(bps);
    let first_data = reserved + fats * spf + root_sectors;
    let clusters = total.saturating_sub(first_data) / spc;
    let bits = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    // FAT32 extended flags: bit 7 set = only the active FAT (bits 0-3) is used.
    let flags = if bits == 32 { le16(&bs, 40) } else { 0 };
    let (fats_written, fat_read) = if flags & 0x80 != 0 {
        let active = (flags & 0x0f).min(fats - 1);
        (vec![active], active)
    } else {
        ((0..fats).collect(), 0)
    };
    let fat_bytes = spf * bps;
    let max = match bits {
        12 => 0xff5,
        16 => 0xfff5,
        _ => 0x0fff_fff5,
    };
    let end = (clusters + 2)
        .min(max + 1)
        .min((fat_bytes * 8) / u64::from(bits));
    Ok(Geometry {
        cluster_bytes: bps * spc,
        fat_start: reserved * bps,
        fat_bytes,
        fats_written,
        fat_read,
        bits,
        root_region: ((reserved + fats * spf) * bps, root_sectors * bps),
        root_cluster: le32(&bs, 44) as u32,
        data_start: first_data * bps,
        end: end as u32,
    })
}

impl Geometry {
    pub(crate) fn valid(&self, c: u32) -> bool {
        (2..self.end).contains(&c)
    }

    pub(crate) fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start + u64::from(c - 2) * self.cluster_bytes
    }

    /// (byte offset inside one FAT copy, bytes the entry spans).
    fn fat_pos(&self, c: u32) -> (u64, usize) {
        let c = u64::from(c);
        match self.bits {
            12 => (c * 3 / 2, 2),
            16 => (c * 2, 2),
            _ => (c * 4, 4),
        }
    }

    fn read_raw(&self, io: &FatIo, c: u32) -> Result<u32> {
        let (off, n) = self.fat_pos(c);
        let mut b = [0u8; 4];
        io.read_exact_at(
            &mut b[..n],
            self.fat_start + self.fat_read * self.fat_bytes + off,
        )
        .with_context(|| format!("reading the FAT entry of cluster {c}"))?;
        Ok(u32::from_le_bytes(b))
    }

    /// The link stored for cluster `c`.
    pub(crate) fn next(&self, io: &FatIo, c: u32) -> Result<Link> {
        if !self.valid(c) {
            return Ok(Link::Broken);
        }
        let raw = self.read_raw(io, c)?;
        let (v, eoc) = match self.bits {
            12 => {
                let v = if c.is_multiple_of(2) {
                    raw & 0xfff
                } else {
                    (raw & 0xffff) >> 4
                };
                (v, 0xff8)
            }
            16 => (raw & 0xffff, 0xfff8),
            _ => (raw & 0x0fff_ffff, 0x0fff_fff8),
        };
        Ok(if v >= eoc {
            Link::End
        } else if self.valid(v) {
            Link::Next(v)
        } else {
            Link::Broken
        })
    }

    /// Stores `link` (`Next` or `End`) for cluster `c` in every FAT copy in use.
    pub(crate) fn set(&self, io: &FatIo, c: u32, link: Link) -> Result<()> {
        if !self.valid(c) {
            bail!("cluster {c} is outside the FAT");
        }
        let v = match link {
            Link::Next(n) if self.valid(n) => n,
            Link::End => 0x0fff_ffff,
            _ => bail!("not a link to store: {link:?}"),
        };
        let raw = self.read_raw(io, c)?;
        let (off, n) = self.fat_pos(c);
        let new = match self.bits {
            12 if c.is_multiple_of(2) => (raw & 0xf000) | (v & 0xfff),
            12 => (raw & 0x000f) | ((v & 0xfff) << 4),
            16 => v & 0xffff,
            // The top 4 bits of a FAT32 entry are reserved: kept.
            _ => (raw & 0xf000_0000) | (v & 0x0fff_ffff),
        };
        let bytes = new.to_le_bytes();
        for copy in &self.fats_written {
            io.write_all_at(&bytes[..n], self.fat_start + copy * self.fat_bytes + off)
                .with_context(|| format!("writing the FAT entry of cluster {c}"))?;
        }
        Ok(())
    }

    /// The clusters of the chain starting at `first`; an error unless it ends in an
    /// end-of-chain mark without a loop.
    pub(crate) fn chain(&self, io: &FatIo, first: u32) -> Result<Vec<u32>> {
        let mut v = vec![first];
        let mut c = first;
        loop {
            match self.next(io, c)? {
                Link::End => return Ok(v),
                Link::Next(n) if v.len() < self.end as usize => {
                    v.push(n);
                    c = n;
                }
                Link::Next(_) => bail!("FAT cluster chain from {first} loops"),
                Link::Broken => bail!("FAT cluster chain from {first} is broken at {c}"),
            }
        }
    }

    /// The byte regions of a directory: `None` is the root.
    pub(crate) fn regions(&self, io: &FatIo, first: Option<u32>) -> Result<Vec<(u64, u64)>> {
        let c = match first {
            None if self.bits != 32 => return Ok(vec![self.root_region]),
            None => self.root_cluster,
            Some(c) => c,
        };
        Ok(self
            .chain(io, c)?
            .into_iter()
            .map(|c| (self.cluster_offset(c), self.cluster_bytes))
            .collect())
    }

    /// First cluster of the directory at `path` (`None`: the root), and of its parent.
    pub(crate) fn dir_at(&self, io: &FatIo, path: &str) -> Result<(Option<u32>, Option<u32>)> {
        let mut parent = None;
        let mut cluster = None;
        for part in path.split('/').filter(|s| !s.is_empty()) {
            parent = cluster;
            cluster = Some(
                self.find(io, cluster, part)
                    .with_context(|| format!("looking up {path:?} in the FAT"))?,
            );
        }
        Ok((cluster, parent))
    }

    /// The bytes of directory `dir` (`None`: the root) and the regions they came from.
    fn dir_bytes(&self, io: &FatIo, dir: Option<u32>) -> Result<(Vec<Region>, Vec<u8>)> {
        let regions = self.regions(io, dir)?;
        let mut buf = Vec::new();
        for &(off, len) in &regions {
            let at = buf.len();
            buf.resize(at + len as usize, 0);
            io.read_exact_at(&mut buf[at..], off)?;
        }
        Ok((regions, buf))
    }

    /// First cluster of the subdirectory `name` of directory `dir`.
    fn find(&self, io: &FatIo, dir: Option<u32>, name: &str) -> Result<u32> {
        let (_, buf) = self.dir_bytes(io, dir)?;
        for (e, long) in parse(&buf, self.bits == 32) {
            if e.attr & ATTR_DIR != 0
                && e.attr != ATTR_LFN
                && e.cluster != 0
                && e.named(long.as_deref(), name)
            {
                return Ok(e.cluster);
            }
        }
        bail!("no directory {name:?}")
    }

    /// The file (not directory) entry `name` of directory `dir`, with where it lies.
    pub(crate) fn file_entry(
        &self,
        io: &FatIo,
        dir: Option<u32>,
        name: &str,
    ) -> Result<Option<FileEntry>> {
        let (regions, buf) = self.dir_bytes(io, dir)?;
        let at = |slot: usize| -> u64 {
            let mut byte = (slot * ENTRY) as u64;
            for &(off, len) in &regions {
                if byte < len {
                    return off + byte;
                }
                byte -= len;
            }
            unreachable!("a parsed slot lies inside the directory's bytes")
        };
        for (e, long) in parse(&buf, self.bits == 32) {
            if e.attr & (ATTR_DIR | ATTR_VOLUME) == 0 && e.named(long.as_deref(), name) {
                let b = e.short_slot * ENTRY;
                let mut raw = [0u8; ENTRY];
                raw.copy_from_slice(&buf[b..b + ENTRY]);
                return Ok(Some(FileEntry {
                    slots: (e.first_slot..=e.short_slot).map(at).collect(),
                    raw,
                    cluster: e.cluster,
                    size: u32::from_le_bytes([raw[28], raw[29], raw[30], raw[31]]),
                }));
            }
        }
        Ok(None)
    }

    /// Rewrites the short entry of `entry` to point at `cluster` with `size` bytes: one
    /// 32-byte write (inside one sector), nothing else of the entry changed.
    pub(crate) fn point_entry(
        &self,
        io: &FatIo,
        entry: &FileEntry,
        cluster: u32,
        size: u32,
    ) -> Result<()> {
        let mut raw = entry.raw;
        if self.bits == 32 {
            raw[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        }
        raw[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        raw[28..32].copy_from_slice(&size.to_le_bytes());
        let short = *entry
            .slots
            .last()
            .context("a file entry has a short entry")?;
        io.write_all_at(&raw, short)
            .context("writing a FAT directory entry")
    }

    /// Marks every slot of `entry` deleted, leaving its clusters alone (the caller knows
    /// another entry owns them).
    pub(crate) fn forget_entry(&self, io: &FatIo, entry: &FileEntry) -> Result<()> {
        for &slot in &entry.slots {
            io.write_all_at(&[DELETED], slot)
                .context("deleting a FAT directory entry")?;
        }
        Ok(())
    }
}

/// A file's directory entry found by [`Geometry::file_entry`].
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    /// Byte offsets of its slots: long-name entries, then the short entry (last).
    pub(crate) slots: Vec<u64>,
    /// The short entry's bytes.
    pub(crate) raw: [u8; ENTRY],
    pub(crate) cluster: u32,
    pub(crate) size: u32,
}

impl RawEntry {
    /// Whether this entry is called `name` (long or 8.3 name, case-insensitive).
    fn named(&self, long: Option<&str>, name: &str) -> bool {
        let base = String::from_utf8_lossy(&self.short[..8])
            .trim_end()
            .to_string();
        let ext = String::from_utf8_lossy(&self.short[8..])
            .trim_end()
            .to_string();
        let short = if ext.is_empty() {
            base
        } else {
            format!("{base}.{ext}")
        };
        long.is_some_and(|l| l.eq_ignore_ascii_case(name)) || short.eq_ignore_ascii_case(name)
    }
}

/// The live entries of a directory's bytes, up to the end mark, with their long names.
/// `fat32`: the high half of the cluster number is stored (FAT12/16 leave that field alone).
pub(crate) fn parse(buf: &[u8], fat32: bool) -> Vec<(RawEntry, Option<String>)> {
    let mut out = Vec::new();
    let mut lfn: Vec<(u8, Vec<u16>)> = Vec::new();
    let mut lfn_start = 0;
    for (slot, e) in buf.chunks_exact(ENTRY).enumerate() {
        match e[0] {
            0 => break,
            DELETED => {
                lfn.clear();
                continue;
            }
            _ => {}
        }
        if e[11] == ATTR_LFN {
            if lfn.is_empty() {
                lfn_start = slot;
            }
            let units = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                .iter()
                .map(|&i| u16::from_le_bytes([e[i], e[i + 1]]))
                .collect();
            lfn.push((e[0] & 0x1f, units));
            continue;
        }
        let long = if lfn.is_empty() {
            None
        } else {
            lfn.sort_by_key(|(seq, _)| *seq);
            let units: Vec<u16> = lfn
                .iter()
                .flat_map(|(_, u)| u.iter().copied())
                .take_while(|u| *u != 0 && *u != 0xffff)
                .collect();
            Some(String::from_utf16_lossy(&units))
        };
        let mut short = [0u8; 11];
        short.copy_from_slice(&e[..11]);
        let hi = if fat32 {
            u32::from(u16::from_le_bytes([e[20], e[21]]))
        } else {
            0
        };
        let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
        out.push((
            RawEntry {
                first_slot: if lfn.is_empty() { slot } else { lfn_start },
                short_slot: slot,
                short,
                attr: e[11],
                cluster: (hi << 16) | lo,
            },
            long,
        ));
        lfn.clear();
    }
    out
}
