//! The backup region in the spare root slot: two header copies, then the payloads.
//!
//! ```text
//! region + 0       header copy 0 (16 KiB)
//! region + 16 KiB  header copy 1 (16 KiB)
//! region + 32 KiB  staged bundle (raw), then, 4 KiB aligned, the data backup (tar.zst)
//! ```
//!
//! A header copy is `MAGIC`, the JSON length (u32 LE), the [`Record`] as JSON, zeros, and
//! the sha256 of everything before it in its last 32 bytes. A copy is valid when magic and
//! sha256 match, the JSON parses and the region start it names is where it was read. The
//! header is written after the payloads (it commits them), and rewritten for each phase:
//! copy 1 first, then copy 0, each fsynced, so a torn write leaves the other copy whole.
//! The valid copy with the higher `seq` wins. Regions start on a MiB boundary, which is
//! what [`scan`] looks at when nothing else says where the region is.

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::backup::ExtraFile;
use crate::disk::{Disk, Part, PartIo};

/// First bytes of a header copy.
pub const MAGIC: &[u8; 8] = b"HUPMIGR1";
/// Record format this hup writes and reads.
pub const FORMAT: u32 = 1;
/// Size of one header copy.
pub const HEADER_COPY: u64 = 16 << 10;
/// Where the payloads start in the region.
pub const PAYLOAD_START: u64 = 2 * HEADER_COPY;
/// Payload alignment.
pub const ALIGN: u64 = 4096;
/// Region starts are multiples of this (what [`scan`] probes).
pub const REGION_ALIGN: u64 = 1 << 20;

/// How far a migration got: each phase is recorded once its step is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The data and the bundle are in the region; the old table is still in place.
    BackedUp,
    /// The new partition table is written (the point of no return is behind).
    TableWritten,
    /// The new data partition holds the restored data and the bundle.
    Restored,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::BackedUp => "backed-up",
            Phase::TableWritten => "table-written",
            Phase::Restored => "restored",
        })
    }
}

/// A byte range of the region with its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Offset from the region start.
    pub offset: u64,
    pub len: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// The backup header: everything needed to finish the migration from the disk alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: u32,
    pub phase: Phase,
    /// Incremented on every header write; the higher valid copy wins.
    pub seq: u64,
    /// Random id of this migration attempt.
    pub id: String,
    /// Unix time of the backup.
    pub created_at: u64,
    /// GUID of the disk (kept by the new table); a header of another disk is ignored.
    pub disk_guid: String,
    pub sector_size: u64,
    pub layout_version: u32,
    /// Absolute disk offset and length of the region.
    pub region_start: u64,
    pub region_len: u64,
    /// The data backup: zstd-compressed tar.
    pub data: Payload,
    /// Length of the uncompressed tar (end marker included), archive members, and the space
    /// the files take on ext4.
    pub tar_bytes: u64,
    pub entries: u64,
    pub fs_bytes: u64,
    /// The staged bundle, stored raw, and where it goes back.
    pub bundle: Option<Payload>,
    pub bundle_file: Option<ExtraFile>,
    /// Label of the data partition, and the UUID and label of its old ext4 filesystem
    /// (kept by the new one, so mounts by UUID or LABEL keep working).
    pub data_label: String,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
    /// The old spare slot (the region's partition), whose boot state the new table clears.
    pub spare_label: String,
    /// The table before and after the migration.
    pub previous: Vec<Part>,
    pub table: Vec<Part>,
}

impl Record {
    /// The new data partition.
    pub fn data_part(&self) -> Result<&Part> {
        self.table
            .iter()
            .find(|p| p.label == self.data_label)
            .with_context(|| format!("the backup header has no partition {:?}", self.data_label))
    }
}

/// A stream over `len` bytes of the disk at `start`.
pub(crate) fn disk_range(disk: &Disk, start: u64, len: u64, name: &str) -> Result<PartIo> {
    let part = Part {
        label: name.to_string(),
        number: 0,
        start,
        len,
        guid: String::new(),
        type_guid: String::new(),
        attrs: 0,
    };
    disk.part_io(&part)
}

fn encode(rec: &Record) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(rec).context("encoding the backup header")?;
    let room = HEADER_COPY as usize - 8 - 4 - 32;
    if json.len() > room {
        bail!(
            "the backup header needs {} bytes, more than the {room} a header copy holds",
            json.len()
        );
    }
    let mut buf = vec![0u8; HEADER_COPY as usize];
    buf[..8].copy_from_slice(MAGIC);
    buf[8..12].copy_from_slice(&(json.len() as u32).to_le_bytes());
    buf[12..12 + json.len()].copy_from_slice(&json);
    let end = buf.len() - 32;
    let digest = Sha256::digest(&buf[..end]);
    buf[end..].copy_from_slice(&digest);
    Ok(buf)
}

fn decode(buf: &[u8], at: u64) -> Option<Record> {
    if buf.len() != HEADER_COPY as usize || &buf[..8] != MAGIC {
        return None;
    }
    let end = buf.len() - 32;
    if Sha256::digest(&buf[..end])[..] != buf[end..] {
        return None;
    }
    let len = u32::from_le_bytes(buf[8..12].try_into().ok()?) as usize;
    let rec: Record = serde_json::from_slice(buf.get(12..12 + len)?).ok()?;
    (rec.format == FORMAT && rec.region_start == at).then_some(rec)
}

/// The valid header of the region starting at `start`, if any (the newer copy).
pub(crate) fn read(disk: &Disk, start: u64) -> Result<Option<Record>> {
    if start
        .checked_add(PAYLOAD_START)
        .is_none_or(|end| end > disk.size())
    {
        return Ok(None);
    }
    let io = disk_range(disk, start, PAYLOAD_START, "backup header")?;
    let mut buf = vec![0u8; PAYLOAD_START as usize];
    io.read_exact_at(&mut buf, 0)
        .with_context(|| format!("reading the backup header at byte {start}"))?;
    let copies = buf
        .chunks(HEADER_COPY as usize)
        .filter_map(|c| decode(c, start));
    Ok(copies.max_by_key(|r| r.seq))
}

/// Writes `rec` (its `seq` incremented) to both copies, copy 1 first, each fsynced.
pub(crate) fn write(disk: &Disk, rec: &mut Record) -> Result<()> {
    rec.seq += 1;
    let buf = encode(rec)?;
    let io = disk_range(disk, rec.region_start, PAYLOAD_START, "backup header")?;
    for copy in [1, 0] {
        io.write_all_at(&buf, copy * HEADER_COPY)
            .and_then(|()| io.sync())
            .with_context(|| {
                format!(
                    "writing backup header copy {copy} at byte {}",
                    rec.region_start
                )
            })?;
    }
    Ok(())
}

/// Zeroes both header copies of the region at `start` (fsynced).
pub(crate) fn clear(disk: &Disk, start: u64) -> Result<()> {
    let io = disk_range(disk, start, PAYLOAD_START, "backup header")?;
    io.write_all_at(&vec![0u8; PAYLOAD_START as usize], 0)
        .and_then(|()| io.sync())
        .with_context(|| format!("clearing the backup header at byte {start}"))
}

/// Every valid header at a MiB boundary of the disk outside `skip` (byte ranges).
pub(crate) fn scan(disk: &Disk, skip: &[(u64, u64)]) -> Result<Vec<Record>> {
    let io = disk_range(disk, 0, disk.size(), "disk")?;
    let mut found = Vec::new();
    let mut magic = [0u8; 8];
    let mut at = REGION_ALIGN;
    // `at` stays below the disk size, so `at + PAYLOAD_START` and `at + REGION_ALIGN` fit.
    while at
        .checked_add(PAYLOAD_START)
        .is_some_and(|e| e <= disk.size())
    {
        if let Some(&(_, end)) = skip.iter().find(|(s, e)| (*s..*e).contains(&at)) {
            match end.div_ceil(REGION_ALIGN).checked_mul(REGION_ALIGN) {
                Some(next) => at = next,
                None => break,
            }
            continue;
        }
        let hit = [0, HEADER_COPY]
            .iter()
            .any(|off| io.read_exact_at(&mut magic, at + off).is_ok() && &magic == MAGIC);
        if hit && let Some(rec) = read(disk, at)? {
            found.push(rec);
        }
        at += REGION_ALIGN;
    }
    Ok(found)
}

/// Writes into the region from `offset` on, hashing, and refuses to pass `end`.
pub(crate) struct RegionWriter {
    io: PartIo,
    start: u64,
    pos: u64,
    hasher: Sha256,
    what: String,
}

impl RegionWriter {
    /// `io` covers the region; writing starts at `offset` within it.
    pub(crate) fn new(io: PartIo, offset: u64, what: &str) -> RegionWriter {
        RegionWriter {
            io,
            start: offset,
            pos: offset,
            hasher: Sha256::new(),
            what: what.to_string(),
        }
    }

    /// fsyncs and returns what was written.
    pub(crate) fn finish(self) -> Result<Payload> {
        self.io
            .sync()
            .with_context(|| format!("syncing the {} in the backup region", self.what))?;
        Ok(Payload {
            offset: self.start,
            len: self.pos - self.start,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

impl Write for RegionWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .pos
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.io.len())
        {
            return Err(io::Error::other(format!(
                "the {} does not fit the backup region ({} bytes)",
                self.what,
                self.io.len()
            )));
        }
        self.io.write_all_at(buf, self.pos)?;
        self.hasher.update(buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader of one payload of the region at `region_start`.
pub(crate) fn payload_reader(
    disk: &Disk,
    region_start: u64,
    p: &Payload,
    what: &str,
) -> Result<PartIo> {
    let start = region_start.checked_add(p.offset).with_context(|| {
        format!(
            "the {what} at offset {} of the region at byte {region_start} is outside the disk",
            p.offset
        )
    })?;
    disk_range(disk, start, p.len, what)
}

/// Reads a payload back and checks its sha256.
pub(crate) fn verify(disk: &Disk, region_start: u64, p: &Payload, what: &str) -> Result<()> {
    let r = payload_reader(disk, region_start, p, what)?;
    let (sha, len) = crate::bundle::verified::sha256_of(r)
        .with_context(|| format!("reading the {what} back from the backup region"))?;
    if len != p.len || sha != p.sha256 {
        bail!(
            "the {what} in the backup region is damaged: sha256 {sha} ({len} bytes), expected {} ({} bytes)",
            p.sha256,
            p.len
        );
    }
    Ok(())
}

/// Copies `r` into the region at `offset` (hashing); returns the payload.
pub(crate) fn copy_in(io: PartIo, offset: u64, mut r: impl Read, what: &str) -> Result<Payload> {
    let mut w = io::BufWriter::with_capacity(1 << 20, RegionWriter::new(io, offset, what));
    io::copy(&mut r, &mut w)
        .with_context(|| format!("copying the {what} into the backup region"))?;
    let w = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing the {what} into the backup region"))?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_print_as_recorded() {
        for ph in [Phase::BackedUp, Phase::TableWritten, Phase::Restored] {
            assert_eq!(
                serde_json::to_string(&ph).unwrap(),
                format!("\"{ph}\""),
                "{ph:?}"
            );
        }
    }

    pub(crate) fn record(start: u64) -> Record {
        Record {
            format: FORMAT,
            phase: Phase::BackedUp,
            seq: 0,
            id: "id".into(),
            created_at: 1,
            disk_guid: "G".into(),
            sector_size: 512,
            layout_version: 2,
            region_start: start,
            region_len: 1 << 20,
            data: Payload {
                offset: PAYLOAD_START,
                len: 3,
                sha256: "x".into(),
            },
            tar_bytes: 1024,
            entries: 1,
            fs_bytes: 4096,
            bundle: None,
            bundle_file: None,
            data_label: "hup-data".into(),
            fs_uuid: None,
            fs_label: None,
            spare_label: "hup-root-b".into(),
            previous: Vec::new(),
            table: Vec::new(),
        }
    }

    #[test]
    fn copies_are_checked() {
        let mut r = record(1 << 20);
        r.seq = 4;
        let buf = encode(&r).unwrap();
        assert_eq!(decode(&buf, 1 << 20), Some(r.clone()));
        assert_eq!(decode(&buf, 2 << 20), None, "read at another place");
        let mut torn = buf.clone();
        torn[100] ^= 1;
        assert_eq!(decode(&torn, 1 << 20), None);
        let mut magic = buf.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic, 1 << 20), None);
        r.previous = vec![
            Part {
                label: "x".repeat(36),
                number: 1,
                start: 0,
                len: 0,
                guid: "0".repeat(36),
                type_guid: "0".repeat(36),
                attrs: u64::MAX,
            };
            100
        ];
        assert!(encode(&r).is_err());
    }
}
