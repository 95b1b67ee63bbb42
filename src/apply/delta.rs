//! The apply of a delta bundle (docs/delta.md): the running slot's files, read-only through
//! libext2fs, as the base the delta stream expands against; the preflight check of the base
//! (version, fingerprint) and a dry run of the whole expansion (every base file's size and
//! sha256, every patch's result, the tar's sha256) before the first write.

use std::io::Read;
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};

use crate::bundle::delta::BaseFiles;
use crate::bundle::delta_base;
use crate::bundle::delta_expand::{Expander, dry_run};
use crate::bundle::reader::Bundle;
use crate::bundle::stream::zstd_stream;
use crate::data::fingerprint::{Fingerprint, KnownDigests};
use crate::disk::Disk;
use crate::ext4::{FileRef, ReadFs};
use crate::model::manifest::PayloadKind;

/// A slot's filesystem as the base of a delta; remembers the last file looked up.
pub struct SlotBase {
    fs: ReadFs,
    last: Option<(Vec<u8>, Option<FileRef>)>,
}

impl SlotBase {
    /// The filesystem of the partition labelled `label` on `disk`, read-only.
    pub fn open(disk: &Path, label: &str) -> Result<SlotBase> {
        let d = Disk::open_read_only(disk)?;
        Ok(SlotBase {
            fs: ReadFs::open_partition(&d, label)?,
            last: None,
        })
    }

    /// The regular file at `path` (the last one looked up is kept with its extent map).
    fn file(&mut self, path: &[u8]) -> Result<Option<&FileRef>> {
        if self.last.as_ref().is_none_or(|(p, _)| p != path) {
            let f = self.fs.lookup(path)?;
            self.last = Some((path.to_vec(), f));
        }
        Ok(self.last.as_ref().and_then(|(_, f)| f.as_ref()))
    }
}

impl BaseFiles for SlotBase {
    fn size(&mut self, path: &[u8]) -> Result<Option<u64>> {
        Ok(self.file(path)?.map(|f| f.size))
    }

    fn read_at(&mut self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.file(path)?.is_none() {
            bail!(
                "base file /{} is missing on the running slot",
                String::from_utf8_lossy(path)
            );
        }
        let (_, f) = self.last.as_ref().expect("looked up");
        let f = f.as_ref().expect("present");
        self.fs.read_at(f, offset, buf)
    }
}

/// For a delta bundle: the running slot (partition `label`, version `running`) must be its
/// base, and every base file it names must be there with its size and sha256. Reads only.
pub fn preflight(
    disk: &Path,
    label: &str,
    running: Option<&str>,
    hup_dir: Option<&Path>,
    bundle: &Bundle,
) -> Result<()> {
    let Some(d) = &bundle.manifest.delta else {
        return Ok(());
    };
    let digest = delta_base::slot_digest(&mut SlotBase::open(disk, label)?.fs, hup_dir)?;
    if let Some(line) = delta_base::mismatch(d, running, digest.as_deref()) {
        bail!("{line}");
    }
    let reader = bundle
        .reader_for(PayloadKind::Rootfs)?
        .context("bundle has no rootfs")?;
    let open = || -> Result<Box<dyn BaseFiles>> { Ok(Box::new(SlotBase::open(disk, label)?)) };
    let n = dry_run(zstd_stream(reader), &open, d.tar_size)?;
    log::info!(
        "preflight: delta from {}: {} copied and {} patched files from slot {label} check out, {n} bytes of tar",
        d.base_version,
        d.copy.files,
        d.patch.files
    );
    Ok(())
}

/// For a delta bundle: the tree populate wrote from its expansion, `written` (the
/// fingerprint of the expanded tar's members), must be the one the manifest signs, `want`
/// (its `fingerprint`). Populate computes that fingerprint for the slot's record anyway
/// (copied files with the digests preflight checked, every other file hashed as written),
/// so this checks the whole tree, every patched and new file's bytes and every entry's
/// metadata, at no extra cost; a slot that fails it is left marked bad.
pub fn check_written(written: &Fingerprint, want: &str) -> Result<()> {
    let got = delta_base::fingerprint_digest(written);
    ensure!(
        got == want,
        "the delta gave a tree with fingerprint {}, the bundle signs {}: the running slot changed while it was read",
        &got[..16],
        &want[..want.len().min(16)]
    );
    Ok(())
}

/// The rootfs tar of `bundle` from its decompressed rootfs `stream`: the stream itself, or
/// for a delta bundle its expansion over the slot labelled `base_label`, with the digests
/// of the files it copies from there (checked in preflight) for the slot's fingerprint.
pub fn rootfs_tar(
    disk: &Path,
    base_label: &str,
    bundle: &Bundle,
    stream: impl Read + Send + 'static,
) -> Result<(Box<dyn Read + Send>, Option<KnownDigests>)> {
    match &bundle.manifest.delta {
        None => Ok((Box::new(stream), None)),
        Some(d) => {
            let base = SlotBase::open(disk, base_label)?;
            let known = KnownDigests::default();
            let e = Expander::new(stream, Box::new(base), d.tar_size).with_known(known.clone());
            Ok((Box::new(e), Some(known)))
        }
    }
}
