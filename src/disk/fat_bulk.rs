//! Many files into one FAT directory in work linear in their number (docs/boot-backends.md,
//! "Boot payloads on FAT"). fatfs 0.3.6 scans the whole directory twice for every file it
//! creates, so N creates cost N² entry reads; it has no append-only create. Here fatfs stays
//! the only cluster allocator (so its free-cluster count stays right) and writes ONE scratch
//! file, and the directory entries are written raw:
//!
//! 1. [`BulkWriter::new`]: fatfs creates the scratch file [`SCRATCH`] in the empty directory D.
//! 2. [`BulkWriter::add`]: each file's data is appended to the scratch file, padded to a
//!    cluster boundary, so no cluster holds two files.
//! 3. [`BulkWriter::finish`]: fatfs appends zeroed clusters for the entries that do not fit in
//!    D's clusters after the scratch entry (the "room"), and is flushed. Then raw, in this
//!    order: (a) the files' entries (long-name entries, then the short entry with the short
//!    name fatfs would have chosen, times as fatfs writes them) are written after the scratch
//!    entry and into the room, the rest of D zeroed; (b) D's last cluster is linked to the
//!    room; (c) the scratch chain is cut before the room; (d) each file's chain is cut after
//!    its last cluster (every FAT copy); (e) the scratch entry is marked deleted.
//!
//! Power cuts: until (a) the filesystem is one fatfs could leave. From (a) to (e) every
//! cluster the scratch took stays reachable from D's chain or from a live entry of D (entries
//! are written before any chain is cut, and the scratch entry is deleted last); clusters may
//! be reachable twice (cross-linked), never zero times. [`gather`], run by the next apply
//! before it empties D, makes any such directory one chain of all its files' clusters hung on
//! one entry, which fatfs then frees once: nothing is lost or freed twice. Its own writes keep
//! the same property, so a cut while it runs is repaired by the next run.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};

use super::fat_io::FatIo;
use super::fat_names::ShortName;
use super::fat_raw::{ATTR_DIR, ATTR_VOLUME, DELETED, ENTRY, Geometry, Link, geometry, parse};

/// Name of the scratch file: 8.3 with `~`, a form no boot payload name may have.
pub(crate) const SCRATCH: &str = "HUP~BULK.TMP";
const SCRATCH_SHORT: &[u8; 11] = b"HUP~BULKTMP";
/// 1980-01-01 as a DOS date, time 00:00:00: what fatfs writes with `esp::DosEpoch`.
const DOS_DATE: u16 = (1 << 5) | 1;
/// Long-name characters per entry.
const LFN_UNITS: usize = 13;

/// One file written so far: its entries (cluster still 0) and its clusters in the scratch.
struct Member {
    entries: Vec<u8>,
    clusters: usize,
}

/// Writes the files of one empty directory; see the module documentation.
pub struct BulkWriter<'a> {
    file: fatfs::File<'a, FatIo>,
    io: FatIo,
    geo: Geometry,
    dir: String,
    /// D's clusters, and the slots of the scratch entry (first long-name entry, short entry).
    dir_clusters: Vec<u32>,
    scratch_slots: (usize, usize),
    members: Vec<Member>,
    /// Bytes of the scratch file so far (a multiple of the cluster size).
    written: u64,
    zeros: Vec<u8>,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl std::fmt::Debug for BulkWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkWriter").finish_non_exhaustive()
    }
}

/// The directory's bytes: its clusters one after the other.
fn read_dir(g: &Geometry, io: &FatIo, clusters: &[u32]) -> Result<Vec<u8>> {
    let cs = g.cluster_bytes as usize;
    let mut buf = vec![0u8; clusters.len() * cs];
    for (i, c) in clusters.iter().enumerate() {
        io.read_exact_at(&mut buf[i * cs..(i + 1) * cs], g.cluster_offset(*c))
            .context("reading a directory")?;
    }
    Ok(buf)
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |s, b| (s << 7).wrapping_add(s >> 1).wrapping_add(*b))
}

/// The long-name entries and the short entry of a file, as fatfs writes them (cluster 0).
fn entries(name: &str, short: &[u8; 11], size: u32) -> Vec<u8> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let n = units.len().div_ceil(LFN_UNITS);
    let sum = lfn_checksum(short);
    let mut out = Vec::with_capacity((n + 1) * ENTRY);
    for i in (1..=n).rev() {
        let part = &units[(i - 1) * LFN_UNITS..(i * LFN_UNITS).min(units.len())];
        let mut padded = [0xffffu16; LFN_UNITS];
        padded[..part.len()].copy_from_slice(part);
        if part.len() < LFN_UNITS {
            padded[part.len()] = 0;
        }
        let mut e = [0u8; ENTRY];
        e[0] = i as u8 | if i == n { 0x40 } else { 0 };
        e[11] = 0x0f;
        e[13] = sum;
        let at = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (u, off) in padded.iter().zip(at) {
            e[off..off + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&e);
    }
    let mut e = [0u8; ENTRY];
    e[..11].copy_from_slice(short);
    for at in [16, 18, 24] {
        e[at..at + 2].copy_from_slice(&DOS_DATE.to_le_bytes());
    }
    e[28..32].copy_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&e);
    out
}

/// Stores `cluster` in the short entry at the end of `entries`.
fn set_cluster(entries: &mut [u8], cluster: u32, fat32: bool) {
    let e = entries.len() - ENTRY;
    if fat32 {
        entries[e + 20..e + 22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    }
    entries[e + 26..e + 28].copy_from_slice(&(cluster as u16).to_le_bytes());
}

impl<'a> BulkWriter<'a> {
    /// Creates the scratch file in the directory `dir` (not the root), which must hold no
    /// entries but "." and "..".
    pub(crate) fn new(fs: &'a fatfs::FileSystem<FatIo>, io: &FatIo, dir: &str) -> Result<Self> {
        if dir.is_empty() {
            bail!("files are written in bulk into a subdirectory, not the root");
        }
        let mut file = fs
            .root_dir()
            .create_file(&format!("{dir}/{SCRATCH}"))
            .with_context(|| format!("creating {dir}/{SCRATCH}"))?;
        file.truncate()
            .with_context(|| format!("truncating {dir}/{SCRATCH}"))?;
        file.flush()
            .with_context(|| format!("flushing {dir}/{SCRATCH}"))?;
        let geo = geometry(io)?;
        let (Some(first), _) = geo.dir_at(io, dir)? else {
            bail!("no directory {dir:?}");
        };
        let dir_clusters = geo.chain(io, first)?;
        let buf = read_dir(&geo, io, &dir_clusters)?;
        let mut scratch = None;
        for (e, long) in parse(&buf, geo.bits == 32) {
            if e.is_dot() {
                continue;
            }
            if e.short == *SCRATCH_SHORT && scratch.is_none() {
                scratch = Some((e.first_slot, e.short_slot));
                continue;
            }
            bail!(
                "directory {dir:?} is not empty: it holds {:?}",
                long.unwrap_or_else(|| String::from_utf8_lossy(&e.short).into_owned())
            );
        }
        let scratch_slots =
            scratch.with_context(|| format!("{dir}/{SCRATCH} is missing after its creation"))?;
        let zeros = vec![0u8; geo.cluster_bytes as usize];
        Ok(BulkWriter {
            file,
            io: io.clone(),
            geo,
            dir: dir.to_string(),
            dir_clusters,
            scratch_slots,
            members: Vec::new(),
            written: 0,
            zeros,
        })
    }

    /// Appends the file `name` (short name `short`) with the content of `src`; returns its
    /// length. The names of one writer must come from one [`super::BootNames`].
    pub fn add(&mut self, name: &str, short: ShortName, src: &mut dyn Read) -> Result<u64> {
        let path = format!("{}/{name}", self.dir);
        let n = io::copy(src, &mut self.file).with_context(|| format!("writing {path:?}"))?;
        let size = u32::try_from(n)
            .ok()
            .filter(|_| n < u64::from(u32::MAX))
            .with_context(|| format!("{path:?}: {n} bytes is more than a FAT file holds"))?;
        let cs = self.geo.cluster_bytes;
        let pad = (cs - n % cs) % cs;
        self.file
            .write_all(&self.zeros[..pad as usize])
            .with_context(|| format!("writing {path:?}"))?;
        self.written += n + pad;
        self.members.push(Member {
            entries: entries(name, &short.0, size),
            clusters: ((n + pad) / cs) as usize,
        });
        Ok(n)
    }

    /// Gives every file its own cluster chain and directory entry and removes the scratch
    /// file (the module documentation gives the order of the writes).
    pub fn finish(self) -> Result<()> {
        let BulkWriter {
            mut file,
            io,
            geo: g,
            dir,
            dir_clusters,
            scratch_slots,
            mut members,
            written,
            zeros,
        } = self;
        let cs = g.cluster_bytes as usize;
        let fat32 = g.bits == 32;
        let start = (scratch_slots.1 + 1) * ENTRY;
        let needed: usize = members.iter().map(|m| m.entries.len()).sum();
        let room = (start + needed).saturating_sub(dir_clusters.len() * cs);
        let room_clusters = room.div_ceil(cs);
        for _ in 0..room_clusters {
            file.write_all(&zeros)
                .with_context(|| format!("writing {dir}/{SCRATCH}"))?;
        }
        file.flush()
            .with_context(|| format!("flushing {dir}/{SCRATCH}"))?;
        drop(file);
        #[cfg(test)]
        io.arm_cut();
        let data_clusters = (written / g.cluster_bytes) as usize;
        // The scratch chain, from its short entry.
        let short_at = scratch_slots.1 * ENTRY;
        let mut sfn = [0u8; ENTRY];
        io.read_exact_at(
            &mut sfn,
            g.cluster_offset(dir_clusters[short_at / cs]) + (short_at % cs) as u64,
        )?;
        let first = parse(&sfn, fat32).first().map_or(0, |(e, _)| e.cluster);
        let chain = if first == 0 {
            Vec::new()
        } else {
            g.chain(&io, first)?
        };
        if chain.len() != data_clusters + room_clusters {
            bail!(
                "{dir}/{SCRATCH} has {} clusters, {} expected",
                chain.len(),
                data_clusters + room_clusters
            );
        }
        // (a) the entries, after the scratch entry and into the room; the rest zeroed.
        let mut cuts = Vec::new();
        let mut at = 0;
        for m in &mut members {
            if m.clusters > 0 {
                set_cluster(&mut m.entries, chain[at], fat32);
                at += m.clusters;
                cuts.push(chain[at - 1]);
            }
        }
        let stream: Vec<u32> = dir_clusters
            .iter()
            .chain(&chain[data_clusters..])
            .copied()
            .collect();
        let mut bytes = Vec::with_capacity(stream.len() * cs - start);
        for m in &members {
            bytes.extend_from_slice(&m.entries);
        }
        bytes.resize(stream.len() * cs - start, 0);
        for (i, c) in stream.iter().enumerate() {
            let (lo, hi) = ((i * cs).max(start), (i + 1) * cs);
            if lo < hi {
                io.write_all_at(
                    &bytes[lo - start..hi - start],
                    g.cluster_offset(*c) + (lo - i * cs) as u64,
                )
                .with_context(|| format!("writing the entries of {dir:?}"))?;
            }
        }
        // (b) D's chain continues into the room; (c) the data ends before it.
        if room_clusters > 0 {
            let last = *dir_clusters.last().expect("a directory has a cluster");
            g.set(&io, last, Link::Next(chain[data_clusters]))?;
            if data_clusters > 0 {
                g.set(&io, chain[data_clusters - 1], Link::End)?;
            }
        }
        // (d) each file's chain ends after its last cluster.
        for c in cuts {
            g.set(&io, c, Link::End)?;
        }
        // (e) the scratch entry is deleted.
        for slot in scratch_slots.0..=scratch_slots.1 {
            let at = slot * ENTRY;
            io.write_all_at(
                &[DELETED],
                g.cluster_offset(dir_clusters[at / cs]) + (at % cs) as u64,
            )
            .with_context(|| format!("removing {dir}/{SCRATCH}"))?;
        }
        Ok(())
    }
}

/// Makes the files of directory `dir` one cluster chain hung on the first file that has
/// clusters, and deletes every other file's entry (raw); the caller then removes the
/// remaining file with fatfs, which frees the whole chain once and keeps its free count
/// right. Repairs what a power cut during [`BulkWriter::finish`] or during this function
/// leaves: clusters shared by several files (or by a file and D) are counted once, chains
/// that loop or run into a free cluster are cut. Leaves a directory holding a subdirectory
/// alone. Work linear in the directory's size and its files' clusters.
pub(crate) fn gather(io: &FatIo, dir: &str) -> Result<()> {
    let g = geometry(io)?;
    let (Some(first), _) = g.dir_at(io, dir)? else {
        return Ok(());
    };
    let dir_clusters = g.chain(io, first)?;
    let buf = read_dir(&g, io, &dir_clusters)?;
    let files: Vec<_> = parse(&buf, g.bits == 32)
        .into_iter()
        .map(|(e, _)| e)
        .filter(|e| !e.is_dot())
        .collect();
    if files.is_empty() || files.iter().any(|e| e.attr & (ATTR_DIR | ATTR_VOLUME) != 0) {
        return Ok(());
    }
    let owned_by_dir: HashSet<u32> = dir_clusters.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut segments: Vec<Vec<u32>> = Vec::new();
    for e in &files {
        let mut seg = Vec::new();
        let mut c = e.cluster;
        while g.valid(c) && !owned_by_dir.contains(&c) && !seen.contains(&c) {
            // A free or bad cluster (or a corrupt entry) is not part of the chain: the
            // chain is cut before it.
            let link = g.next(io, c)?;
            if link == Link::Broken {
                break;
            }
            seen.insert(c);
            seg.push(c);
            match link {
                Link::Next(n) => c = n,
                _ => break,
            }
        }
        segments.push(seg);
    }
    let dirty = DirtyBit::set(io, &g)?;
    let full: Vec<&Vec<u32>> = segments.iter().filter(|s| !s.is_empty()).collect();
    for w in full.windows(2) {
        g.set(io, *w[0].last().expect("not empty"), Link::Next(w[1][0]))?;
    }
    if let Some(last) = full.last() {
        g.set(io, *last.last().expect("not empty"), Link::End)?;
    }
    // D's own chain, in every FAT copy (a cut may have left the copies different there).
    for w in dir_clusters.windows(2) {
        g.set(io, w[0], Link::Next(w[1]))?;
    }
    g.set(io, *dir_clusters.last().expect("not empty"), Link::End)?;
    let keeper = segments.iter().position(|s| !s.is_empty());
    let cs = g.cluster_bytes as usize;
    for (i, e) in files.iter().enumerate() {
        if Some(i) == keeper {
            continue;
        }
        for slot in e.first_slot..=e.short_slot {
            let at = slot * ENTRY;
            io.write_all_at(
                &[DELETED],
                g.cluster_offset(dir_clusters[at / cs]) + (at % cs) as u64,
            )
            .with_context(|| format!("deleting an entry of {dir:?}"))?;
        }
    }
    dirty.clear(io)
}

/// The boot sector's "volume dirty" bit, set raw around raw writes fatfs does not know of
/// when it was clear (fatfs sets it itself at its first write and clears it at unmount).
struct DirtyBit(Option<u64>);

impl DirtyBit {
    fn set(io: &FatIo, g: &Geometry) -> Result<DirtyBit> {
        let at = if g.bits == 32 { 0x41 } else { 0x25 };
        let mut b = [0u8; 1];
        io.read_exact_at(&mut b, at)?;
        if b[0] & 1 != 0 {
            return Ok(DirtyBit(None));
        }
        io.write_all_at(&[b[0] | 1], at)
            .context("setting the FAT dirty bit")?;
        io.sync().context("syncing the FAT dirty bit")?;
        Ok(DirtyBit(Some(at)))
    }

    fn clear(self, io: &FatIo) -> Result<()> {
        if let Some(at) = self.0 {
            io.sync().context("syncing the FAT")?;
            let mut b = [0u8; 1];
            io.read_exact_at(&mut b, at)?;
            io.write_all_at(&[b[0] & !1], at)
                .context("clearing the FAT dirty bit")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "fat_bulk_tests.rs"]
mod tests;
