//! The base a delta bundle needs, as the device sees it: the running slot's version and the
//! digest of its recorded fingerprint (docs/delta.md, "Which base").
//!
//! The slot's record (`/etc/hup/fingerprint.json`, written by the apply that installed it)
//! also covers the migrated NetworkManager keyfiles that apply added, and the directories
//! it made for them and for the record; those entries are left out, so the digest equals
//! that of the base bundle's own fingerprint payload.

use std::path::Path;

use anyhow::{Context, Result};

use crate::data::fingerprint::{EMBED_PATH, Fingerprint, Kind};
use crate::ext4::ReadFs;
use crate::model::manifest::Delta;

/// Most bytes of a fingerprint record read from a slot.
const MAX_RECORD: u64 = 256 << 20;
/// Where an apply puts the migrated keyfiles (as `apply::slotfs` writes them).
const SLOT_CONNECTIONS_DIR: &str = "etc/NetworkManager/system-connections";

/// The running slot's base digest: SHA-256 of its recorded fingerprint without the files
/// the apply added from `hup_dir` (the data partition's `hup/`). `None` when the slot has no
/// record.
pub fn slot_digest(fs: &mut ReadFs, hup_dir: Option<&Path>) -> Result<Option<String>> {
    let Some(bytes) = fs
        .read_file(EMBED_PATH.as_bytes(), MAX_RECORD)
        .with_context(|| format!("reading /{EMBED_PATH} of the running slot"))?
    else {
        return Ok(None);
    };
    let mut fp = Fingerprint::from_json(&bytes)
        .with_context(|| format!("/{EMBED_PATH} of the running slot"))?;
    if let Some(dir) = hup_dir {
        let migrated = dir.join(
            crate::migrate::CONNECTIONS_DIR
                .strip_prefix("hup/")
                .expect("CONNECTIONS_DIR is under hup/"),
        );
        if let Ok(entries) = std::fs::read_dir(&migrated) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                fp.entries.remove(&format!("{SLOT_CONNECTIONS_DIR}/{name}"));
            }
        }
    }
    Ok(Some(fingerprint_digest(&fp)))
}

/// The base digest a delta names: SHA-256 (hex) of the canonical JSON of a fingerprint's
/// entries other than directories. Directories are left out: an apply makes the ones its
/// own files need (`etc/hup` for the record, the keyfiles' directories) when the tar has
/// none, and a delta never reads a directory of its base.
pub fn fingerprint_digest(fp: &Fingerprint) -> String {
    use sha2::{Digest, Sha256};
    let mut files = fp.clone();
    files.entries.retain(|_, e| e.kind != Kind::Dir);
    hex::encode(Sha256::digest(files.to_json()))
}

/// `None` when the running slot (`running` version, `digest` of its record) is the delta's
/// base; else the one line that says why not.
pub fn mismatch(d: &Delta, running: Option<&str>, digest: Option<&str>) -> Option<String> {
    use crate::model::version::Version;
    // Ordering, not ==: `1.5` and `1.5.0` are the same version.
    let same_version = running.is_some_and(|r| {
        Version::parse(r)
            .is_ok_and(|r| Version::parse(&d.base_version).is_ok_and(|b| r.cmp(&b).is_eq()))
    });
    if same_version && digest == Some(d.base_fingerprint.as_str()) {
        return None;
    }
    Some(format!(
        "delta bundle needs base version {} with fingerprint {}, the running slot has version {} with fingerprint {}: use the full bundle",
        d.base_version,
        short(&d.base_fingerprint),
        running.unwrap_or("unknown"),
        digest.map_or("none recorded", short)
    ))
}

fn short(s: &str) -> &str {
    &s[..s.len().min(16)]
}
