//! Reads bundles: the member list, the signed manifest and verified payload streams.
//!
//! Opening checks the structure without reading payload data (member order, names,
//! types, sizes against the manifest, truncation); payloads are then read through a
//! [`VerifyingReader`] on their own file handle, so a consumer may stream one into
//! another thread.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use super::sign::{MAX_SIGNATURE_BYTES, TrustedKeys};
use super::verified::VerifyingReader;
use super::{MANIFEST, SIGNATURE};
use crate::model::manifest::{MAX_MANIFEST_BYTES, Manifest, Payload, PayloadKind};

/// A member of the outer tar: name, offset of its data in the file, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// What a bundle file holds, before any trust decision.
#[derive(Debug)]
pub struct Scan {
    pub path: PathBuf,
    pub file_len: u64,
    pub manifest_bytes: Vec<u8>,
    pub signature: String,
    /// Members after the manifest and the signature, in file order.
    pub payload_members: Vec<Member>,
}

/// A bundle whose manifest is parsed (and, when opened with keys, signed by a trusted key).
#[derive(Debug)]
pub struct Bundle {
    pub scan: Scan,
    pub manifest: Manifest,
    /// Key id of the trusted key that signed it; `None` when opened without keys.
    pub signed_by: Option<String>,
}

/// Reads the member list and the first two members. Checks what needs no manifest:
/// member types, the first two names, sizes limits and truncation.
pub fn scan(path: &Path) -> Result<Scan> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries_with_seek()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut members: Vec<Member> = Vec::new();
    let mut manifest_bytes = None;
    let mut signature = None;
    for entry in entries {
        let after = members
            .last()
            .map(|m| format!("after member {}", m.name))
            .unwrap_or_else(|| "at the start".into());
        let mut entry =
            entry.with_context(|| format!("truncated or invalid tar header {after}"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let ty = entry.header().entry_type();
        ensure!(
            ty.is_file(),
            "member {name}: not a regular file (tar type {:?})",
            ty.as_byte() as char
        );
        let size = entry.size();
        let offset = entry.raw_file_position();
        ensure!(
            offset.saturating_add(size) <= file_len,
            "member {name}: truncated: the file ends {} bytes into its {size} bytes",
            file_len.saturating_sub(offset)
        );
        ensure!(
            !members.iter().any(|m| m.name == name),
            "member {name}: duplicate member"
        );
        match members.len() {
            0 => {
                ensure!(
                    name == MANIFEST,
                    "first member is {name}, expected {MANIFEST}"
                );
                ensure!(
                    size <= MAX_MANIFEST_BYTES,
                    "member {MANIFEST}: {size} bytes exceeds the {MAX_MANIFEST_BYTES} byte limit"
                );
                let mut b = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut b)
                    .with_context(|| format!("reading member {MANIFEST}"))?;
                manifest_bytes = Some(b);
            }
            1 => {
                ensure!(
                    name == SIGNATURE,
                    "second member is {name}, expected {SIGNATURE}"
                );
                ensure!(
                    size <= MAX_SIGNATURE_BYTES,
                    "member {SIGNATURE}: {size} bytes is too large for a signature"
                );
                let mut s = String::new();
                entry
                    .read_to_string(&mut s)
                    .with_context(|| format!("member {SIGNATURE}: not text"))?;
                signature = Some(s);
            }
            _ => {}
        }
        members.push(Member { name, offset, size });
    }
    let manifest_bytes = manifest_bytes.context("empty bundle: no manifest.json member")?;
    let signature = signature.context("member manifest.json.minisig: missing (unsigned bundle)")?;
    Ok(Scan {
        path: path.to_path_buf(),
        file_len,
        manifest_bytes,
        signature,
        payload_members: members.split_off(2),
    })
}

impl Bundle {
    /// Opens a bundle and checks its signature with the trusted keys, then the member list
    /// against the manifest. Payload bytes are not read: see [`Bundle::verify_payloads`].
    pub fn open(path: &Path, keys: &TrustedKeys) -> Result<Bundle> {
        let scan = scan(path).with_context(|| path.display().to_string())?;
        let (key_id, _comment) = keys
            .verify(&scan.manifest_bytes, &scan.signature)
            .with_context(|| format!("{}: member {SIGNATURE}", path.display()))?;
        let manifest = Manifest::from_json(&scan.manifest_bytes)
            .with_context(|| format!("{}: member {MANIFEST}", path.display()))?;
        check_members(&manifest, &scan.payload_members)
            .with_context(|| path.display().to_string())?;
        Ok(Bundle {
            scan,
            manifest,
            signed_by: Some(key_id),
        })
    }

    /// Opens a bundle without checking its signature (for `hup inspect`).
    pub fn open_unverified(path: &Path) -> Result<Bundle> {
        let scan = scan(path).with_context(|| path.display().to_string())?;
        let manifest = Manifest::from_json(&scan.manifest_bytes)
            .with_context(|| format!("{}: member {MANIFEST}", path.display()))?;
        Ok(Bundle {
            scan,
            manifest,
            signed_by: None,
        })
    }

    /// A verified stream of one payload, on its own file handle; a decompressor of it stops
    /// past the manifest's `unpacked_size`.
    pub fn payload_reader(&self, payload: &Payload) -> Result<VerifyingReader<Take<File>>> {
        let member = self
            .scan
            .payload_members
            .iter()
            .find(|m| m.name == payload.name)
            .with_context(|| format!("member {}: missing", payload.name))?;
        let mut f = File::open(&self.scan.path)
            .with_context(|| format!("opening {}", self.scan.path.display()))?;
        f.seek(SeekFrom::Start(member.offset))
            .with_context(|| format!("seeking to member {}", payload.name))?;
        Ok(VerifyingReader::new(
            f.take(member.size),
            &format!("member {}", payload.name),
            payload.size,
            &payload.sha256,
        )
        .with_unpacked_limit(payload.unpacked_size))
    }

    /// The verified stream of the payload of `kind`, if the bundle has one.
    pub fn reader_for(&self, kind: PayloadKind) -> Result<Option<VerifyingReader<Take<File>>>> {
        match self.manifest.payload(kind) {
            Some(p) => self.payload_reader(p).map(Some),
            None => Ok(None),
        }
    }

    /// Streams every payload and checks its size and SHA-256.
    pub fn verify_payloads(&self) -> Result<()> {
        for p in &self.manifest.payloads {
            let r = self.payload_reader(p)?;
            r.finish()
                .with_context(|| self.scan.path.display().to_string())?;
        }
        Ok(())
    }
}

/// The payload members must be exactly the manifest's payloads, in manifest order, with
/// the sizes the manifest gives.
fn check_members(manifest: &Manifest, members: &[Member]) -> Result<()> {
    for (i, p) in manifest.payloads.iter().enumerate() {
        let Some(m) = members.get(i) else {
            bail!("member {}: listed in the manifest but missing", p.name);
        };
        if m.name != p.name {
            if manifest.payloads.iter().any(|q| q.name == m.name) {
                bail!(
                    "member {}: out of order (expected {} at position {})",
                    m.name,
                    p.name,
                    i + 3
                );
            }
            bail!("member {}: not in the manifest", m.name);
        }
        ensure!(
            m.size == p.size,
            "member {}: size {} differs from the manifest's {}",
            m.name,
            m.size,
            p.size
        );
    }
    if let Some(extra) = members.get(manifest.payloads.len()) {
        bail!("member {}: not in the manifest", extra.name);
    }
    Ok(())
}
