//! Writes the outer bundle tar: fixed member order, fixed metadata, so that the same
//! manifest, signature and payloads always give the same bytes.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::sign::SecretKey;
use super::{MANIFEST, SIGNATURE};
use crate::model::manifest::Manifest;

/// One member to write: its name and where its bytes come from.
pub struct Member<'a> {
    pub name: &'a str,
    pub size: u64,
    pub data: Box<dyn Read + 'a>,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").finish_non_exhaustive()
    }
}

/// The directory `out` goes into, and a work directory in it (named `prefix...`) for the
/// bundle being written, so that [`publish`] is a rename on one filesystem.
pub fn work_dir(out: &Path, prefix: &str) -> Result<(PathBuf, tempfile::TempDir)> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work directory in {}", parent.display()))?;
    Ok((parent, work))
}

/// The manifest's JSON and its signature by `key`, whose trusted comment names the bundle.
pub fn sign_manifest(manifest: &Manifest, key: &SecretKey) -> (Vec<u8>, String) {
    let bytes = manifest.to_json();
    let signature = key.sign(
        &bytes,
        &format!("hup bundle {} {}", manifest.compatible, manifest.version),
    );
    (bytes, signature)
}

/// The bundle's first two members: the manifest and its signature.
pub fn head<'a>(manifest: &'a [u8], signature: &'a str) -> Vec<Member<'a>> {
    vec![
        Member {
            name: MANIFEST,
            size: manifest.len() as u64,
            data: Box::new(manifest),
        },
        Member {
            name: SIGNATURE,
            size: signature.len() as u64,
            data: Box::new(signature.as_bytes()),
        },
    ]
}

/// Moves the finished bundle `tmp` to `out` and syncs the directory `dir` holding it.
pub fn publish(tmp: &Path, out: &Path, dir: &Path) -> Result<()> {
    std::fs::rename(tmp, out).with_context(|| format!("moving the bundle to {}", out.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the members, in order, as a ustar archive to `out` (created or truncated), and fsyncs it.
pub fn write_bundle(out: &Path, members: Vec<Member<'_>>) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(m.name)
            .with_context(|| format!("member name {}", m.name))?;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(m.size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut limited = m.data.take(m.size);
        builder
            .append(&h, &mut limited)
            .with_context(|| format!("writing member {} to {}", m.name, out.display()))?;
        anyhow::ensure!(
            limited.limit() == 0,
            "member {}: source ended {} bytes early",
            m.name,
            limited.limit()
        );
    }
    let mut w = builder
        .into_inner()
        .with_context(|| format!("finishing {}", out.display()))?;
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("syncing {}", out.display()))?;
    Ok(())
}
