//! `hup pack --delta-from BASE.hup`: the delta bundle of a new root filesystem against the
//! full bundle of the version on the device (docs/delta.md).
//!
//! The full bundle is packed first (its rootfs tar is what the delta must rebuild, byte for
//! byte, and its size is the bound: a delta that is not smaller is not written). Then every
//! regular file of the new tar is sent whole, copied from a base file with the same sha256,
//! or patched from the base file at the same path (or, for a path the base does not have,
//! the base path equal to it but for its digits: a new kernel's modules, a new library
//! version): whichever is smallest. Everything else of the tar (headers, PAX records,
//! padding, symlinks, devices, sparse files) is sent as it is.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use super::delta::{
    BaseRef, PIECE, Piece, TAG_COPY, TAG_END, TAG_PATCH, TAG_RAW, patch, ref_range, write_base,
    write_piece,
};
use super::delta_base::fingerprint_digest;
use super::pack::{PackOptions, compress, pack};
use super::reader::Bundle;
use super::sign::SecretKey;
use super::writer::{Member, head, publish, sign_manifest, work_dir, write_bundle};
use crate::data::fingerprint::{Fingerprint, fingerprint_of_tar};
use crate::model::manifest::{Delta, DeltaCount, Manifest, Payload, PayloadKind};

/// What `hup pack --delta-from` wrote.
#[derive(Debug)]
pub struct DeltaPacked {
    pub manifest: Manifest,
    /// The full bundle's size, and the delta bundle's (also when it was not kept).
    pub full_size: u64,
    pub delta_size: u64,
    /// `false`: the delta was not smaller than the full bundle, which was written instead.
    pub is_delta: bool,
}

/// A regular file of a tar: where its data is and what it holds.
#[derive(Debug, Clone)]
struct TarFile {
    path: Vec<u8>,
    offset: u64,
    size: u64,
    sha256: [u8; 32],
}

/// Packs `opts` as a delta against the full bundle `base`.
pub fn pack_delta(opts: &PackOptions, base: &Path) -> Result<DeltaPacked> {
    let base_bundle =
        Bundle::open_unverified(base).with_context(|| format!("base bundle {}", base.display()))?;
    let bm = &base_bundle.manifest;
    ensure!(
        bm.delta.is_none(),
        "base bundle {} is a delta bundle: give the full bundle of the base version",
        base.display()
    );
    ensure!(
        bm.compatible == opts.compatible,
        "base bundle {} is for {:?}, not {:?}",
        base.display(),
        bm.compatible,
        opts.compatible
    );
    let (parent, work) = work_dir(&opts.out, ".hup-delta-")?;
    let full_path = work.path().join("full.hup");
    let full_opts = PackOptions {
        out: full_path.clone(),
        ..opts.clone()
    };
    pack(&full_opts)?;
    let full = Bundle::open_unverified(&full_path)?;

    let base_tar = work.path().join("base.tar");
    unpack_rootfs(&base_bundle, &base_tar).context("base bundle")?;
    let new_tar = work.path().join("new.tar");
    let tar_size = unpack_rootfs(&full, &new_tar)?;
    let base_fingerprint = bundle_fingerprint(&base_bundle, &base_tar).context("base bundle")?;
    let new_fingerprint = bundle_fingerprint(&full, &new_tar)?;

    let (base_files, _) = tar_files(&base_tar).context("reading the base rootfs")?;
    let (new_files, new_links) = tar_files(&new_tar).context("reading the new rootfs")?;
    let delta_path = work.path().join("rootfs.delta.zst");
    let mut counts = Counts::default();
    let (size, sha256, unpacked_size) = compress(&delta_path, opts.level, |w| {
        write_stream(
            w,
            &new_tar,
            tar_size,
            &new_files,
            &new_links,
            &base_tar,
            &base_files,
            opts.level,
            &mut counts,
        )
    })
    .context("writing the delta stream")?;

    let mut manifest = full.manifest.clone();
    let delta_payload = Payload {
        name: "rootfs.delta.zst".into(),
        kind: PayloadKind::Rootfs,
        size,
        sha256,
        unpacked_size,
    };
    // The fingerprint payload is left out: nothing on a device reads it (the apply records
    // the fingerprint of the stream it writes), and it is large (about 2 % of a full bundle).
    manifest
        .payloads
        .retain(|p| p.kind != PayloadKind::Fingerprint);
    for p in &mut manifest.payloads {
        if p.kind == PayloadKind::Rootfs {
            *p = delta_payload.clone();
        }
    }
    manifest.delta = Some(Delta {
        base_version: bm.version.clone(),
        base_fingerprint: fingerprint_digest(&base_fingerprint),
        tar_size,
        fingerprint: fingerprint_digest(&new_fingerprint),
        new: counts.new,
        copy: counts.copy,
        patch: counts.patch,
    });
    manifest.validate()?;
    let key = SecretKey::load(&opts.key)?;
    let (manifest_bytes, signature) = sign_manifest(&manifest, &key);
    let mut members = head(&manifest_bytes, &signature);
    for p in &manifest.payloads {
        let data: Box<dyn Read> = if p.kind == PayloadKind::Rootfs {
            Box::new(BufReader::with_capacity(1 << 20, File::open(&delta_path)?))
        } else {
            let m = full
                .scan
                .payload_members
                .iter()
                .find(|m| m.name == p.name)
                .context("a payload of the full bundle is missing")?;
            let mut f = File::open(&full_path)?;
            f.seek(SeekFrom::Start(m.offset))?;
            Box::new(BufReader::new(f.take(m.size)))
        };
        members.push(Member {
            name: &p.name,
            size: p.size,
            data,
        });
    }
    let delta_out = work.path().join("delta.hup");
    write_bundle(&delta_out, members)?;
    let full_size = std::fs::metadata(&full_path)?.len();
    let delta_size = std::fs::metadata(&delta_out)?.len();
    let is_delta = delta_size < full_size;
    let (chosen, manifest) = if is_delta {
        (&delta_out, manifest)
    } else {
        (&full_path, full.manifest.clone())
    };
    publish(chosen, &opts.out, &parent)?;
    Ok(DeltaPacked {
        manifest,
        full_size,
        delta_size,
        is_delta,
    })
}

/// The fingerprint of a full bundle's rootfs: its `fingerprint.json` payload, or computed
/// from its rootfs tar (`tar`, unpacked) when it has none.
fn bundle_fingerprint(b: &Bundle, tar: &Path) -> Result<Fingerprint> {
    match b.reader_for(PayloadKind::Fingerprint)? {
        Some(mut r) => {
            let mut v = Vec::new();
            r.read_to_end(&mut v).context("reading the fingerprint")?;
            Fingerprint::from_json(&v)
        }
        None => fingerprint_of_tar(File::open(tar)?),
    }
}

/// Decompresses a bundle's rootfs into `dst`; its size.
fn unpack_rootfs(b: &Bundle, dst: &Path) -> Result<u64> {
    let r = b
        .reader_for(PayloadKind::Rootfs)?
        .context("the bundle has no rootfs")?;
    let mut dec = zstd::stream::read::Decoder::new(r).context("zstd")?;
    let out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    let n = io::copy(&mut dec, &mut w).context("decompressing the rootfs")?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", dst.display()))?;
    Ok(n)
}

/// The plain regular files of a tar (not sparse, not empty), in archive order, and its hard
/// links: for a file's path, the other names of the same file.
fn tar_files(path: &Path) -> Result<(Vec<TarFile>, Links)> {
    let mut a = tar::Archive::new(File::open(path)?);
    let mut out = Vec::new();
    let mut links = Links::new();
    for e in a.entries().context("reading the tar")? {
        let mut e = e.context("reading the tar")?;
        let t = e.header().entry_type();
        if t == tar::EntryType::Link
            && let Some(target) = e.link_name_bytes().map(|l| strip(&l))
        {
            links
                .entry(target)
                .or_default()
                .push(strip(&e.path_bytes()));
            continue;
        }
        if !(t.is_file() || t == tar::EntryType::Continuous) || e.size() == 0 {
            continue;
        }
        let sparse = e.pax_extensions().ok().flatten().is_some_and(|x| {
            x.flatten()
                .any(|p| p.key_bytes().starts_with(b"GNU.sparse"))
        });
        if sparse {
            continue;
        }
        let path = strip(&e.path_bytes());
        let offset = e.raw_file_position();
        let size = e.size();
        let mut h = Sha256::new();
        let n = io::copy(&mut e, &mut HashSink(&mut h)).context("reading the tar")?;
        ensure!(n == size, "a tar member ends early");
        out.push(TarFile {
            path,
            offset,
            size,
            sha256: h.finalize().into(),
        });
    }
    Ok((out, links))
}

/// Other names of a file (hard links), by the path of its first name.
type Links = HashMap<Vec<u8>, Vec<Vec<u8>>>;

/// A member path without its leading `./` or `/`.
fn strip(p: &[u8]) -> Vec<u8> {
    let mut p = p;
    while let Some(rest) = p.strip_prefix(b"./").or(p.strip_prefix(b"/")) {
        p = rest;
    }
    p.to_vec()
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Counts {
    new: DeltaCount,
    copy: DeltaCount,
    patch: DeltaCount,
}

/// A path with its digits taken out: the key that pairs a renamed file with its base.
fn digitless(p: &[u8]) -> Vec<u8> {
    p.iter().copied().filter(|b| !b.is_ascii_digit()).collect()
}

#[allow(clippy::too_many_arguments)]
fn write_stream(
    w: &mut dyn Write,
    new_tar: &Path,
    tar_size: u64,
    new_files: &[TarFile],
    new_links: &Links,
    base_tar: &Path,
    base_files: &[TarFile],
    level: i32,
    counts: &mut Counts,
) -> Result<()> {
    let new = File::open(new_tar)?;
    let base = File::open(base_tar)?;
    let mut by_path: HashMap<&[u8], &TarFile> = HashMap::new();
    let mut by_sha: HashMap<([u8; 32], u64), &TarFile> = HashMap::new();
    let mut by_digitless: HashMap<Vec<u8>, &TarFile> = HashMap::new();
    for f in base_files {
        by_path.entry(&f.path).or_insert(f);
        by_sha.entry((f.sha256, f.size)).or_insert(f);
        by_digitless.entry(digitless(&f.path)).or_insert(f);
    }
    let mut raw_from = 0u64;
    for f in new_files {
        // The base file of the same path, or of another name of the same file.
        let same = by_path.get(&f.path[..]).copied().or_else(|| {
            new_links
                .get(&f.path)
                .and_then(|names| names.iter().find_map(|n| by_path.get(&n[..]).copied()))
        });
        let copy_from = match same {
            Some(b) if b.sha256 == f.sha256 && b.size == f.size => Some(b),
            _ => by_sha.get(&(f.sha256, f.size)).copied(),
        };
        if let Some(b) = copy_from {
            flush_raw(w, &new, raw_from, f.offset)?;
            w.write_all(&[TAG_COPY])?;
            write_base(w, &base_ref(b))?;
            raw_from = f.offset + f.size;
            counts.copy.files += 1;
            counts.copy.bytes += f.size;
            continue;
        }
        let similar = same.or_else(|| {
            by_digitless.get(&digitless(&f.path)).copied().filter(|b| {
                b.size <= f.size.saturating_mul(2) && f.size <= b.size.saturating_mul(2)
            })
        });
        if let Some(b) = similar
            && let Some(pieces) = patches(&new, f, &base, b, level)?
        {
            flush_raw(w, &new, raw_from, f.offset)?;
            w.write_all(&[TAG_PATCH])?;
            write_base(w, &base_ref(b))?;
            w.write_all(&f.sha256)?;
            w.write_all(&f.size.to_le_bytes())?;
            w.write_all(&(pieces.len() as u32).to_le_bytes())?;
            let mut sent = 0;
            for (p, bytes) in &pieces {
                write_piece(w, p)?;
                w.write_all(bytes)?;
                sent += bytes.len() as u64;
            }
            raw_from = f.offset + f.size;
            counts.patch.files += 1;
            counts.patch.bytes += f.size;
            counts.patch.sent += sent;
            continue;
        }
        counts.new.files += 1;
        counts.new.bytes += f.size;
        counts.new.sent += f.size;
    }
    flush_raw(w, &new, raw_from, tar_size)?;
    w.write_all(&[TAG_END])?;
    Ok(())
}

fn base_ref(b: &TarFile) -> BaseRef {
    BaseRef {
        path: b.path.clone(),
        size: b.size,
        sha256: b.sha256,
    }
}

fn flush_raw(w: &mut dyn Write, tar: &File, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    w.write_all(&[TAG_RAW])?;
    w.write_all(&(to - from).to_le_bytes())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        tar.read_exact_at(&mut buf[..n], at)?;
        w.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// One piece of a patch and its bytes.
type Patched = (Piece, Vec<u8>);

/// The patch pieces of `f` against `b`, or `None` when sending the file whole (zstd at the
/// same level) would be no larger.
fn patches(
    new: &File,
    f: &TarFile,
    base: &File,
    b: &TarFile,
    level: i32,
) -> Result<Option<Vec<Patched>>> {
    let mut pieces = Vec::new();
    let mut total = 0u64;
    let mut whole = 0u64;
    let mut data = Vec::new();
    let mut reference = Vec::new();
    let mut done = 0;
    while done < f.size {
        let len = (f.size - done).min(PIECE);
        data.resize(len as usize, 0);
        new.read_exact_at(&mut data, f.offset + done)?;
        let (ref_offset, ref_len) = ref_range(done, len, b.size);
        reference.resize(ref_len as usize, 0);
        base.read_exact_at(&mut reference, b.offset + ref_offset)?;
        let bytes = patch(&reference, &data, level)?;
        whole += zstd::bulk::compress(&data, level).context("zstd")?.len() as u64;
        total += bytes.len() as u64;
        pieces.push((
            Piece {
                ref_offset,
                ref_len: ref_len as u32,
                out_len: len as u32,
                patch_len: bytes.len() as u32,
            },
            bytes,
        ));
        done += len;
    }
    if total >= whole {
        return Ok(None);
    }
    if pieces.is_empty() {
        bail!("no pieces for a file of {} bytes", f.size);
    }
    Ok(Some(pieces))
}
