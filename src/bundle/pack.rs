//! `hup pack`: payloads from a directory or tar, the manifest, its signature, the bundle.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::sign::SecretKey;
use super::tree::{self, TreeKind};
use super::writer::{Member, head, publish, sign_manifest, work_dir, write_bundle};
use crate::archive::io::{Counting, read_full};
use crate::data::fingerprint::{Fingerprint, TarTap};
use crate::model::layout::TargetLayout;
use crate::model::manifest::{FORMAT, Manifest, Payload, PayloadKind};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd window: 8 MiB, so that a device decompresses with bounded memory.
const WINDOW_LOG: u32 = 23;

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// A directory, a tar or a tar.zst.
    pub rootfs: PathBuf,
    /// A directory of boot files.
    pub boot: Option<PathBuf>,
    pub version: String,
    pub compatible: String,
    pub min_from_version: Option<String>,
    pub key: PathBuf,
    pub out: PathBuf,
    /// zstd level (1..=22).
    pub level: i32,
    /// The partition layout the new system needs (manifest `layout`; see [`read_layout`]).
    pub layout: Option<TargetLayout>,
    /// Configuration migrations to run after the slot is written, each known to
    /// [`crate::migrate::is_known`] (manifest `migrations`).
    pub migrations: Vec<String>,
    /// Refuse devices whose running slot differs from its fingerprint (manifest
    /// `requires_unmodified_base`).
    pub requires_unmodified_base: bool,
}

/// Reads a [`TargetLayout`] from a JSON file and checks it (`hup pack --layout FILE`).
pub fn read_layout(path: &Path) -> Result<TargetLayout> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading layout file {}", path.display()))?;
    let layout: TargetLayout = serde_json::from_slice(&bytes)
        .with_context(|| format!("layout file {}: invalid layout JSON", path.display()))?;
    layout
        .validate()
        .with_context(|| format!("layout file {}", path.display()))?;
    Ok(layout)
}

/// Refuses a migration id this hup does not know (it could not run it on a device).
fn check_migrations(ids: &[String]) -> Result<()> {
    for id in ids {
        if !crate::migrate::is_known(id) {
            let known: Vec<&str> = crate::migrate::registry().iter().map(|m| m.id()).collect();
            bail!("unknown migration {id:?} (known: {})", known.join(", "));
        }
    }
    Ok(())
}

/// Builds and signs a bundle. On error nothing is left at `out` (the bundle is written
/// under a temporary name and renamed at the end).
pub fn pack(opts: &PackOptions) -> Result<Manifest> {
    if !(1..=22).contains(&opts.level) {
        bail!("--level {} is out of range (1..=22)", opts.level);
    }
    check_migrations(&opts.migrations)?;
    // Check everything cheap before the expensive compression.
    let mut manifest = Manifest {
        format: FORMAT,
        compatible: opts.compatible.clone(),
        version: opts.version.clone(),
        min_from_version: opts.min_from_version.clone(),
        payloads: vec![Payload {
            name: "rootfs.tar.zst".into(),
            kind: PayloadKind::Rootfs,
            size: 0,
            sha256: "0".repeat(64),
            unpacked_size: 0,
        }],
        migrations: opts.migrations.clone(),
        layout: opts.layout.clone(),
        requires_unmodified_base: opts.requires_unmodified_base,
        delta: None,
    };
    manifest.validate()?;
    let key = SecretKey::load(&opts.key)?;
    let (parent, work) = work_dir(&opts.out, ".hup-pack-")?;

    let rootfs_path = work.path().join("rootfs.tar.zst");
    let (rootfs, fingerprint) = rootfs_payload(&opts.rootfs, &rootfs_path, opts.level)
        .with_context(|| format!("rootfs {}", opts.rootfs.display()))?;
    manifest.payloads[0] = rootfs;
    let mut files = vec![rootfs_path];
    if let Some(boot) = &opts.boot {
        crate::disk::check_boot_dir(boot)?;
        let boot_path = work.path().join("boot.tar.zst");
        let (size, sha256, unpacked_size) =
            compress_tree(boot, TreeKind::Boot, &boot_path, opts.level)
                .with_context(|| format!("boot files {}", boot.display()))?;
        manifest.payloads.push(Payload {
            name: "boot.tar.zst".into(),
            kind: PayloadKind::Boot,
            size,
            sha256,
            unpacked_size,
        });
        files.push(boot_path);
    }
    // The rootfs's fingerprint, computed while the rootfs was compressed.
    let fp_path = work.path().join("fingerprint.json");
    let fp_bytes = fingerprint.to_json();
    std::fs::write(&fp_path, &fp_bytes)
        .with_context(|| format!("writing {}", fp_path.display()))?;
    manifest.payloads.push(Payload {
        name: "fingerprint.json".into(),
        kind: PayloadKind::Fingerprint,
        size: fp_bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&fp_bytes)),
        unpacked_size: fp_bytes.len() as u64,
    });
    files.push(fp_path);
    manifest.validate()?;
    let (manifest_bytes, signature) = sign_manifest(&manifest, &key);
    let mut members = head(&manifest_bytes, &signature);
    for (p, f) in manifest.payloads.iter().zip(&files) {
        let file = File::open(f).with_context(|| format!("opening {}", f.display()))?;
        members.push(Member {
            name: &p.name,
            size: p.size,
            data: Box::new(BufReader::with_capacity(1 << 20, file)),
        });
    }
    let tmp_out = work.path().join("bundle.hup");
    write_bundle(&tmp_out, members)?;
    publish(&tmp_out, &opts.out, &parent)?;
    Ok(manifest)
}

/// The rootfs payload and the fingerprint of its tar stream (computed on the side, in the
/// same pass).
fn rootfs_payload(src: &Path, dst: &Path, level: i32) -> Result<(Payload, Fingerprint)> {
    let meta = std::fs::metadata(src).context("reading it")?;
    let mut fp = None;
    let (size, sha256, unpacked_size) = if meta.is_dir() {
        compress(dst, level, |w| {
            let mut tap = TarTap::new(w)?;
            tree::write_tar(src, TreeKind::Rootfs, &mut tap)?;
            fp = Some(tap.finish()?.1);
            Ok(())
        })?
    } else {
        let mut f = File::open(src).context("opening it")?;
        let mut magic = [0u8; 4];
        let n = read_full(&mut f, &mut magic).context("reading it")?;
        drop(f);
        if n == 4 && magic == ZSTD_MAGIC {
            let (size, sha, unpacked, f) = copy_tar_zst(src, dst)?;
            fp = Some(f);
            (size, sha, unpacked)
        } else {
            check_tar(src)?;
            let input = BufReader::with_capacity(1 << 20, File::open(src).context("opening it")?);
            compress(dst, level, |w| {
                let mut input = input;
                let mut tap = TarTap::new(w)?;
                io::copy(&mut input, &mut tap).context("reading it")?;
                fp = Some(tap.finish()?.1);
                Ok(())
            })?
        }
    };
    let payload = Payload {
        name: "rootfs.tar.zst".into(),
        kind: PayloadKind::Rootfs,
        size,
        sha256,
        unpacked_size,
    };
    Ok((payload, fp.context("no fingerprint computed")?))
}

/// Refuses a file that does not start with a valid tar header.
fn check_tar(src: &Path) -> Result<()> {
    let mut a = tar::Archive::new(File::open(src).context("opening it")?);
    let mut entries = a.entries().context("not a tar archive")?;
    match entries.next() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e).context("not a tar, tar.zst or directory"),
        None => bail!("empty tar archive"),
    }
}

/// Compresses what `fill` writes into `dst`; returns (compressed size, sha256, tar size).
pub(super) fn compress(
    dst: &Path,
    level: i32,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<(u64, String, u64)> {
    let out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let hashing = HashWriter::new(BufWriter::with_capacity(1 << 20, out));
    let mut enc = zstd::stream::Encoder::new(hashing, level).context("zstd")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    enc.multithread(threads).context("zstd threads")?;
    enc.long_distance_matching(true).context("zstd ldm")?;
    enc.window_log(WINDOW_LOG).context("zstd window")?;
    enc.include_checksum(true).context("zstd checksum")?;
    let mut counting = Counting::new(enc);
    fill(&mut counting)?;
    let unpacked = counting.n;
    let hashing = counting.inner.finish().context("finishing zstd stream")?;
    let (w, size, sha) = hashing.finish();
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().context("syncing payload")?;
    Ok((size, sha, unpacked))
}

fn compress_tree(src: &Path, kind: TreeKind, dst: &Path, level: i32) -> Result<(u64, String, u64)> {
    compress(dst, level, |w| tree::write_tar(src, kind, w).map(|_| ()))
}

/// Takes an existing tar.zst as it is; measures its decompressed size (which also
/// proves that it decompresses) and fingerprints the tar.
fn copy_tar_zst(src: &Path, dst: &Path) -> Result<(u64, String, u64, Fingerprint)> {
    let mut dec =
        zstd::stream::Decoder::new(File::open(src).context("opening it")?).context("zstd")?;
    let mut tap = TarTap::new(io::sink())?;
    let unpacked = io::copy(&mut dec, &mut tap).context("decompressing it")?;
    let (_, fp) = tap.finish()?;
    let mut input = File::open(src).context("opening it")?;
    let out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut hashing = HashWriter::new(BufWriter::with_capacity(1 << 20, out));
    io::copy(&mut input, &mut hashing).context("copying it")?;
    let (w, size, sha) = hashing.finish();
    w.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("syncing payload")?;
    Ok((size, sha, unpacked, fp))
}

struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(mut self) -> (W, u64, String) {
        let _ = self.inner.flush();
        (self.inner, self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
