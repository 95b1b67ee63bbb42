//! Follows the outer tar stream of a bundle while it downloads: where each member's data
//! starts, its size and its SHA-256, and the first two members' bytes for the early check.
//!
//! Handles ustar, GNU (base-256 sizes, `L` long names) and PAX (`size`, `path`) headers. When
//! something cannot be followed, the member table is dropped (`finish` returns `None`) and
//! the final verification reads the payloads again; only a first block that is not a tar
//! header at all is an error (`not a hup bundle`).
//!
//! It also bounds the download ([`Scanner::limit`]): until the early check has passed, the
//! stream may hold no more than the first two members can take; then no more than the
//! payloads of the signed manifest can take; a payload member that is not the manifest's
//! next payload is refused at its header; and at the end-of-archive marker (two zero
//! blocks) the bundle ends ([`Scanner::end`]): nothing after it is part of it.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use sha2::{Digest, Sha256};

use crate::archive::{header, pax};
use crate::bundle::sign::MAX_SIGNATURE_BYTES;
use crate::bundle::{MANIFEST, SIGNATURE};
use crate::model::manifest::MAX_MANIFEST_BYTES;

/// Largest PAX or GNU long-name header data followed.
const MAX_META: u64 = 64 * 1024;
/// Room allowed for the headers of one member: its own, a PAX header and a long-name
/// header, each with data up to [`MAX_META`].
const HEADERS: u64 = 512 + 2 * (512 + MAX_META);
/// The two zero blocks that end a tar archive.
const END_MARKER: u64 = 1024;

/// `n` rounded up to whole 512-byte blocks (saturating: only ever a bound).
fn blocks(n: u64) -> u64 {
    n.div_ceil(512).saturating_mul(512)
}

/// The most a stream may hold before its manifest and signature have been checked.
pub const BEFORE_MANIFEST: u64 =
    2 * HEADERS + MAX_MANIFEST_BYTES.div_ceil(512) * 512 + MAX_SIGNATURE_BYTES.div_ceil(512) * 512;

/// The first two members, once streamed.
pub struct Captured {
    pub manifest: Vec<u8>,
    pub signature: String,
}

/// Runs on [`Captured`]; an error stops the download. Shared, so that a restarted
/// download can run it again.
pub type EarlyCheck = Arc<dyn Fn(&Captured) -> Result<()> + Send + Sync>;

/// One member of the outer tar as seen in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMember {
    pub name: String,
    /// Offset of the member's data in the file.
    pub offset: u64,
    pub size: u64,
    /// Lowercase hex SHA-256 of the member's data.
    pub sha256: String,
}

enum Kind {
    Member(usize),
    Pax,
    LongName,
    Skip,
}

enum St {
    Header,
    Data { remaining: u64, kind: Kind },
    Pad(u64),
    End,
}

/// Follows a tar stream block by block.
pub struct Scanner {
    pos: u64,
    st: St,
    header: Box<[u8; 512]>,
    hfill: usize,
    members: Vec<StreamMember>,
    hasher: Sha256,
    capture: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    pending_name: Option<String>,
    pending_size: Option<u64>,
    lost: bool,
    early: Option<EarlyCheck>,
    checked_early: bool,
    /// The payloads (name, size) of the signed manifest, once the early check passed.
    payloads: Option<Vec<(String, u64)>>,
    /// Bytes the stream may hold (see the module documentation).
    limit: u64,
    /// A first zero block was read: the next block ends the archive.
    zero_block: bool,
    /// Offset just after the end-of-archive marker, once seen.
    end_at: Option<u64>,
}

/// `size` and `path` of PAX extended header records; `None` when the records are
/// malformed (the stream is then not followed further).
fn parse_pax(data: &[u8]) -> Option<(Option<u64>, Option<String>)> {
    let (mut size, mut path) = (None, None);
    for r in pax::parse(data) {
        let r = r.ok()?;
        match r.key {
            b"size" => size = Some(std::str::from_utf8(r.value).ok()?.parse().ok()?),
            b"path" => path = Some(String::from_utf8_lossy(r.value).into_owned()),
            _ => {}
        }
    }
    Some((size, path))
}

impl Scanner {
    pub fn new(early: Option<EarlyCheck>) -> Scanner {
        Scanner {
            pos: 0,
            st: St::Header,
            header: Box::new([0u8; 512]),
            hfill: 0,
            members: Vec::new(),
            hasher: Sha256::new(),
            capture: None,
            manifest: None,
            pending_name: None,
            pending_size: None,
            lost: false,
            limit: if early.is_some() {
                BEFORE_MANIFEST
            } else {
                u64::MAX
            },
            early,
            checked_early: false,
            payloads: None,
            zero_block: false,
            end_at: None,
        }
    }

    /// Bytes the stream may hold so far: the bundle ends at or before this offset.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The offset just after the end-of-archive marker, once the stream reached it.
    pub fn end(&self) -> Option<u64> {
        self.end_at
    }

    /// The early check ran and passed.
    pub fn checked_early(&self) -> bool {
        self.checked_early
    }

    pub fn push(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let used = match &mut self.st {
                St::End => data.len(),
                St::Pad(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.st = St::Header;
                    }
                    n
                }
                St::Header => {
                    let n = (512 - self.hfill).min(data.len());
                    self.header[self.hfill..self.hfill + n].copy_from_slice(&data[..n]);
                    self.hfill += n;
                    if self.hfill == 512 {
                        self.hfill = 0;
                        self.pos += n as u64;
                        self.header_done()?;
                        data = &data[n..];
                        continue;
                    }
                    n
                }
                St::Data { remaining, .. } => {
                    let n = (*remaining).min(data.len() as u64) as usize;
                    *remaining -= n as u64;
                    self.hasher.update(&data[..n]);
                    if let Some(c) = &mut self.capture {
                        c.extend_from_slice(&data[..n]);
                    }
                    if *remaining == 0 {
                        self.pos += n as u64;
                        self.data_done()?;
                        data = &data[n..];
                        continue;
                    }
                    n
                }
            };
            self.pos += used as u64;
            data = &data[used..];
        }
        Ok(())
    }

    fn header_done(&mut self) -> Result<()> {
        let h = &*self.header;
        if h.iter().all(|b| *b == 0) {
            if self.zero_block {
                self.st = St::End;
                self.end_at = Some(self.pos);
                self.limit = self.pos;
            } else {
                self.zero_block = true;
                self.limit = self.limit.min(self.pos.saturating_add(512));
            }
            return Ok(());
        }
        if self.zero_block {
            bail!(
                "the end-of-archive marker at byte {} is followed by data instead of a second zero block",
                self.pos - 1024
            );
        }
        let size = header::number(&h[124..136]);
        let (true, Some(size)) = (header::checksum_ok(h), size) else {
            if self.members.is_empty() {
                bail!("not a hup bundle: the data does not start with a tar header");
            }
            log::debug!(
                "stream: unreadable tar header at byte {}; not following",
                self.pos - 512
            );
            self.lost = true;
            self.st = St::End;
            return Ok(());
        };
        let mut name = header::text(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = header::text(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let kind = match h[156] {
            b'x' | b'L' | b'g' | b'K' if size > MAX_META => {
                self.lost = true;
                self.st = St::End;
                return Ok(());
            }
            b'x' => {
                self.capture = Some(Vec::new());
                Kind::Pax
            }
            b'L' => {
                self.capture = Some(Vec::new());
                Kind::LongName
            }
            b'g' | b'K' => Kind::Skip,
            _ => {
                let size = self.pending_size.take().unwrap_or(size);
                let name = self.pending_name.take().unwrap_or(name);
                let index = self.members.len();
                self.check_payload(index, &name, size)?;
                let limit = match index {
                    0 => MAX_MANIFEST_BYTES,
                    1 => MAX_SIGNATURE_BYTES,
                    _ => 0,
                };
                self.capture = (index < 2 && size <= limit).then(Vec::new);
                self.members.push(StreamMember {
                    name,
                    offset: self.pos,
                    size,
                    sha256: String::new(),
                });
                self.hasher = Sha256::new();
                self.st = St::Data {
                    remaining: size,
                    kind: Kind::Member(index),
                };
                if size == 0 {
                    return self.data_done();
                }
                return Ok(());
            }
        };
        self.st = St::Data {
            remaining: size,
            kind,
        };
        if size == 0 {
            return self.data_done();
        }
        Ok(())
    }

    fn data_done(&mut self) -> Result<()> {
        let St::Data { kind, .. } = std::mem::replace(&mut self.st, St::Header) else {
            unreachable!("data_done outside of data");
        };
        let captured = self.capture.take();
        // Padding follows the data length: the effective size for a member (a PAX `size`
        // may override its header), the header's size for metadata entries.
        let size = match kind {
            Kind::Member(i) => {
                let digest = std::mem::take(&mut self.hasher).finalize();
                self.members[i].sha256 = hex::encode(digest);
                let name = self.members[i].name.clone();
                if i == 0 && name == MANIFEST {
                    self.manifest = captured;
                } else if i == 1 && name == SIGNATURE {
                    self.run_early(captured)?;
                }
                self.members[i].size
            }
            Kind::Pax => {
                match parse_pax(&captured.unwrap_or_default()) {
                    Some((size, path)) => {
                        self.pending_size = size.or(self.pending_size);
                        self.pending_name = path.or(self.pending_name.take());
                    }
                    None => self.lost = true,
                }
                header::number(&self.header[124..136]).unwrap_or(0)
            }
            Kind::LongName => {
                self.pending_name = Some(header::text(&captured.unwrap_or_default()));
                header::number(&self.header[124..136]).unwrap_or(0)
            }
            Kind::Skip => header::number(&self.header[124..136]).unwrap_or(0),
        };
        let pad = (512 - size % 512) % 512;
        if pad > 0 {
            self.st = St::Pad(pad);
        }
        if self.lost {
            self.st = St::End;
        }
        Ok(())
    }

    /// A payload member (index 2 on) must be the signed manifest's next payload, with its
    /// size; the bundle reader would refuse anything else, so the download stops here.
    fn check_payload(&self, index: usize, name: &str, size: u64) -> Result<()> {
        let Some(payloads) = &self.payloads else {
            return Ok(());
        };
        let Some(i) = index.checked_sub(2) else {
            return Ok(());
        };
        match payloads.get(i) {
            None => bail!("member {name}: not in the manifest"),
            Some((want, _)) if want != name => {
                bail!("member {name}: not in the manifest at this place (expected {want})")
            }
            Some((_, want)) if *want != size => {
                bail!("member {name}: size {size} differs from the manifest's {want}")
            }
            Some(_) => Ok(()),
        }
    }

    fn run_early(&mut self, signature: Option<Vec<u8>>) -> Result<()> {
        let (Some(manifest), Some(sig)) = (self.manifest.take(), signature) else {
            return Ok(());
        };
        let Some(check) = self.early.take() else {
            return Ok(());
        };
        let signature =
            String::from_utf8(sig).map_err(|_| anyhow!("member {SIGNATURE}: not text"))?;
        let captured = Captured {
            manifest,
            signature,
        };
        check(&captured)?;
        self.checked_early = true;
        // The signed manifest bounds the rest: each payload with room for its headers,
        // then the end-of-archive marker.
        let m = crate::model::manifest::Manifest::from_json(&captured.manifest)?;
        let rest = m.payloads.iter().fold(END_MARKER, |acc, p| {
            acc.saturating_add(HEADERS).saturating_add(blocks(p.size))
        });
        self.limit = blocks(self.pos).saturating_add(rest);
        self.payloads = Some(m.payloads.into_iter().map(|p| (p.name, p.size)).collect());
        Ok(())
    }

    /// The member table (`None` when the stream could not be followed to its end) and
    /// whether the early check ran.
    pub fn finish(self) -> (Option<Vec<StreamMember>>, bool) {
        let complete = matches!(self.st, St::End) && !self.lost;
        (complete.then_some(self.members), self.checked_early)
    }
}

#[cfg(test)]
#[path = "tarscan_tests.rs"]
mod tests;
