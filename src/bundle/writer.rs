//! Writes the outer bundle tar: fixed member order, fixed metadata, so that the same
//! manifest, signature and payloads always give the same bytes.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};

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
