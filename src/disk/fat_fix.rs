//! A repair for directories created by `fatfs` 0.3.6 (rust-fatfs issue #117, fixed upstream
//! after 0.3.6): it writes a long-name entry before "." and before "..", so they are not the
//! first two slots of the directory as FAT requires (fsck.fat "moves" them and renames them to
//! FSCK0000.000), and on FAT32 it gives ".." of a first-level directory the root's cluster
//! number where FAT wants 0. [`fix_new_dir`] rewrites the first slots of a directory just
//! created: ".", "..", then the end marker. It reads the FAT geometry from the boot sector and
//! walks directories itself, because fatfs does not expose cluster numbers.

use anyhow::{Context, Result, bail};

use super::fat_io::FatIo;

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0f;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

#[derive(Debug)]
struct Geometry {
    cluster_bytes: u64,
    fat_start: u64,
    /// FAT12, FAT16 or FAT32 (bits per FAT entry).
    bits: u32,
    /// FAT12/16: fixed root directory region (offset, length).
    root_region: (u64, u64),
    /// FAT32: first cluster of the root directory.
    root_cluster: u32,
    data_start: u64,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn geometry(io: &FatIo) -> Result<Geometry> {
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
    if !(512..=4096).contains(&bps) || spc == 0 || fats == 0 {
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
    Ok(Geometry {
        cluster_bytes: bps * spc,
        fat_start: reserved * bps,
        bits,
        root_region: ((reserved + fats * spf) * bps, root_sectors * bps),
        root_cluster: le32(&bs, 44) as u32,
        data_start: first_data * bps,
    })
}

impl Geometry {
    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start + u64::from(c - 2) * self.cluster_bytes
    }

    fn next(&self, io: &FatIo, c: u32) -> Result<Option<u32>> {
        let c64 = u64::from(c);
        let (v, end) = match self.bits {
            12 => {
                let mut b = [0u8; 2];
                io.read_exact_at(&mut b, self.fat_start + c64 * 3 / 2)?;
                let w = u16::from_le_bytes(b);
                let v = if c.is_multiple_of(2) {
                    w & 0xfff
                } else {
                    w >> 4
                };
                (u32::from(v), 0xff8)
            }
            16 => {
                let mut b = [0u8; 2];
                io.read_exact_at(&mut b, self.fat_start + c64 * 2)?;
                (u32::from(u16::from_le_bytes(b)), 0xfff8)
            }
            _ => {
                let mut b = [0u8; 4];
                io.read_exact_at(&mut b, self.fat_start + c64 * 4)?;
                (u32::from_le_bytes(b) & 0x0fff_ffff, 0x0fff_fff8)
            }
        };
        Ok((v >= 2 && v < end).then_some(v))
    }

    /// The byte regions of a directory: `None` is the root.
    fn regions(&self, io: &FatIo, first: Option<u32>) -> Result<Vec<(u64, u64)>> {
        let mut c = match first {
            None if self.bits != 32 => return Ok(vec![self.root_region]),
            None => self.root_cluster,
            Some(c) => c,
        };
        let mut v = vec![(self.cluster_offset(c), self.cluster_bytes)];
        while let Some(n) = self.next(io, c)? {
            if v.len() > 1 << 20 {
                bail!("FAT cluster chain loops");
            }
            v.push((self.cluster_offset(n), self.cluster_bytes));
            c = n;
        }
        Ok(v)
    }

    /// First cluster of the subdirectory `name` of directory `dir`.
    fn find(&self, io: &FatIo, dir: Option<u32>, name: &str) -> Result<u32> {
        let mut lfn: Vec<(u8, Vec<u16>)> = Vec::new();
        for (off, len) in self.regions(io, dir)? {
            let mut buf = vec![0u8; len as usize];
            io.read_exact_at(&mut buf, off)?;
            for e in buf.chunks_exact(ENTRY) {
                match e[0] {
                    0 => bail!("no directory {name:?}"),
                    0xe5 => {
                        lfn.clear();
                        continue;
                    }
                    _ => {}
                }
                if e[11] == ATTR_LFN {
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
                lfn.clear();
                let short = {
                    let base = String::from_utf8_lossy(&e[..8]).trim_end().to_string();
                    let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
                    if ext.is_empty() {
                        base
                    } else {
                        format!("{base}.{ext}")
                    }
                };
                let is_dir = e[11] & 0x10 != 0;
                let matches = long
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(name))
                    || short.eq_ignore_ascii_case(name);
                if is_dir && matches {
                    let hi = if self.bits == 32 { le16(e, 20) } else { 0 };
                    return Ok(((hi << 16) | le16(e, 26)) as u32);
                }
            }
        }
        bail!("no directory {name:?}")
    }
}

/// Puts "." and ".." of the directory at `path` (just created by fatfs) into the first two
/// slots and gives ".." the cluster FAT expects. Does nothing when they are already right.
pub(crate) fn fix_new_dir(io: &FatIo, path: &str) -> Result<()> {
    let g = geometry(io)?;
    let mut parent: Option<u32> = None;
    let mut cluster: Option<u32> = None;
    for part in path.split('/').filter(|s| !s.is_empty()) {
        parent = cluster;
        cluster = Some(
            g.find(io, cluster, part)
                .with_context(|| format!("looking up {path:?} in the FAT"))?,
        );
    }
    let Some(c) = cluster else { return Ok(()) };
    let off = g.cluster_offset(c);
    let mut slots = [0u8; 4 * ENTRY];
    io.read_exact_at(&mut slots, off)?;
    let name = |i: usize| &slots[i * ENTRY..i * ENTRY + 11];
    let attr = |i: usize| slots[i * ENTRY + 11];
    let mut fixed = slots;
    if attr(0) == ATTR_LFN && name(1) == DOT && attr(2) == ATTR_LFN && name(3) == DOTDOT {
        fixed = [0u8; 4 * ENTRY];
        fixed[..ENTRY].copy_from_slice(&slots[ENTRY..2 * ENTRY]);
        fixed[ENTRY..2 * ENTRY].copy_from_slice(&slots[3 * ENTRY..]);
    } else if !(name(0) == DOT && name(1) == DOTDOT) {
        bail!("directory {path:?} does not start with \".\" and \"..\"");
    }
    // ".." of a directory in the root holds cluster 0 (FAT32 included).
    let parent_cluster = parent.unwrap_or(0);
    let dd = &mut fixed[ENTRY..2 * ENTRY];
    dd[20..22].copy_from_slice(&((parent_cluster >> 16) as u16).to_le_bytes());
    dd[26..28].copy_from_slice(&(parent_cluster as u16).to_le_bytes());
    if fixed != slots {
        io.write_all_at(&fixed, off)
            .with_context(|| format!("rewriting \".\" and \"..\" of {path:?}"))?;
    }
    Ok(())
}
