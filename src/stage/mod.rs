//! Online staging (docs/staging.md): download a bundle, verify it, check it fits this
//! device, and store it in `DATA/hup/staged/` for the initramfs to apply at the next boot.
//! The running device itself (config, booted slot, locks, where the staged bundle lives) is
//! [`crate::device`]; this module imports it, never the other way round.
//!
//! The pieces, in the order a `hup stage` uses them: [`crate::device`] (config, booted slot,
//! running version, disk), [`crate::device::lock`] (one command at a time), [`source`] and
//! [`http`] (file or URL, resumable, both an [`origin::Origin`]), `download` (retries,
//! progress, free space), `stream` (hashing and tar-following while downloading),
//! [`verify`] (signature and digests), [`checks`] (compatible, version, sizes), [`layout`]
//! (the partition layout a bundle may require; its unmodified base is checked by
//! [`crate::data::fingerprint::check_base`]), [`store`] (atomic move, state.json).

pub mod checks;
mod download;
pub mod http;
pub mod layout;
pub mod origin;
pub mod pace;
mod progress;
pub mod source;
pub mod store;
mod stream;
mod tarscan;
pub mod verify;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::device::{self, Device, lock};
use crate::error::Exit;
use crate::model::manifest::Manifest;
use source::Source;
use stream::{Captured, EarlyCheck};

pub use download::{BACKOFF_ENV, MAX_ATTEMPTS};

/// What to stage.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// A local path, or an `http://` / `https://` URL.
    pub source: String,
    /// Expected SHA-256 of the whole bundle file (64 hex digits).
    pub sha256: Option<String>,
    /// Accept a version older than the running one.
    pub allow_downgrade: bool,
    /// Trust only the certificates of this PEM file for https (instead of the system bundle).
    pub ca: Option<std::path::PathBuf>,
    /// The running slot's root, checked against its fingerprint for a bundle with
    /// `requires_unmodified_base` (default `/`; tests use another directory).
    pub base_root: Option<std::path::PathBuf>,
    /// Download limits instead of system.json's `download` (each field that is `Some`).
    pub deadline_s: Option<u64>,
    pub min_rate: Option<u64>,
    pub min_rate_window_s: Option<u64>,
    /// An `Authorization` header value for http(s), sent only to the source URL's host (a
    /// fleet server's artifact link; not to the hosts it redirects to).
    pub authorization: Option<String>,
    /// One more check of the downloaded file before it is stored (a fleet server's sha1
    /// or md5); its error refuses the bundle like any other check.
    pub file_check: Option<FileCheck>,
}

/// The check function of a [`FileCheck`]: gets the downloaded file.
pub type FileCheckFn = dyn Fn(&std::path::Path) -> Result<()> + Send + Sync;

/// A check of the whole downloaded file, run after verification and before the store.
#[derive(Clone)]
pub struct FileCheck(pub Arc<FileCheckFn>);

impl std::fmt::Debug for FileCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileCheck")
    }
}

/// A bundle that is now staged.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub staged: crate::model::state::Staged,
    pub path: std::path::PathBuf,
    pub signed_by: String,
    /// Payloads in the bundle.
    pub payloads: usize,
    /// Payloads read a second time because the stream could not provide their digest.
    pub reread: usize,
    /// The partition layout migration the apply runs first (the bundle names a layout this
    /// disk does not have yet).
    pub layout_plan: Option<crate::layout::Plan>,
}

/// `hup stage`: downloads (resuming), verifies, checks and stores a bundle. Fails with
/// [`Exit::Locked`] when another stage runs (or the state lock stays taken) and [`Exit::NothingToDo`] when the
/// bundle is already staged or its version already runs. On any failure nothing is staged
/// and an earlier staged bundle stays as it was.
pub fn stage(dev: &Device, opts: &StageOptions) -> Result<StageReport> {
    stage_inner(dev, opts).with_context(|| format!("staging {}", opts.source))
}

fn stage_inner(dev: &Device, opts: &StageOptions) -> Result<StageReport> {
    let want_sha = opts
        .sha256
        .as_deref()
        .map(verify::parse_sha256)
        .transpose()?;
    let source = Source::parse(&opts.source)?;
    let data = &dev.data;
    data.create()?;
    // The download lock for the whole run; the state lock only to store the result, so
    // that `hup mark-good` and the others are not held up by a long download.
    let _download = lock::download(data, &format!("hup stage {}", opts.source))?;
    let booted = device::booted_slot(&dev.config.labels)?;
    let state = dev.load_state_or_new(booted.slot)?;
    let running = device::running_version(&state, booted.slot)?;
    if let Some(want) = &want_sha
        && store::is_staged(data, &state, want)
    {
        return Err(
            Exit::NothingToDo(format!("this bundle (sha256 {want}) is already staged")).into(),
        );
    }
    let disk = dev.disk()?;
    let facts = checks::gather(
        &dev.config,
        &disk,
        booted.slot,
        &running,
        opts.allow_downgrade,
        Some(&data.root),
    )?;
    let keys = Arc::new(dev.keys()?);
    log::info!(
        "staging {} for {} (running {running} on slot {}, found by {}; the update goes to slot {})",
        opts.source,
        dev.config.compatible,
        booted.slot,
        booted.source,
        facts.spare
    );

    let name = format!("{}.part", source.file_name());
    for old in device::staged::clean_staging(data, &name)? {
        log::info!(
            "removed {old} left in {} by an earlier run",
            data.staging_dir().display()
        );
    }
    let part = data.staging_dir().join(&name);
    let early = early_check(
        keys.clone(),
        facts.clone(),
        store::staged_manifest(data, &state),
    );
    let mut origin = source.origin(opts.ca.as_deref(), opts.authorization.as_deref())?;
    let staging_dir = data.staging_dir();
    let space = move |bytes: u64| store::ensure_space(&staging_dir, bytes);
    let summary = download::run(download::Request {
        origin: origin.as_mut(),
        part: &part,
        early: Some(early),
        space: &space,
        pace: pace::Pace::from_config(&crate::model::config::DownloadLimits {
            deadline_s: opts.deadline_s.unwrap_or(dev.config.download.deadline_s),
            min_rate: opts.min_rate.unwrap_or(dev.config.download.min_rate),
            min_rate_window_s: opts
                .min_rate_window_s
                .unwrap_or(dev.config.download.min_rate_window_s),
        }),
    })?;

    let checked = (|| {
        verify::check_sha256(want_sha.as_deref(), &summary)?;
        if let Some(check) = &opts.file_check {
            (check.0)(&part)?;
        }
        let (bundle, reread) = verify::verify(&part, &summary, &keys)?;
        checks::check(&bundle.manifest, &facts)?;
        if store::is_staged(data, &state, &summary.sha256) {
            return Err(Exit::NothingToDo(format!(
                "bundle {} (sha256 {}) is already staged",
                bundle.manifest.version, summary.sha256
            ))
            .into());
        }
        let plan = requirements(
            dev,
            opts,
            &bundle.manifest,
            &disk,
            booted.slot,
            &part,
            summary.len,
        )?;
        Ok((bundle, reread, plan))
    })();
    let (bundle, reread, layout_plan) = match checked {
        Ok(v) => v,
        Err(e) => {
            download::discard(&part);
            return Err(e);
        }
    };
    let staged = {
        let _state_lock = lock::acquire(data, &format!("hup stage {} (storing)", opts.source))?;
        // Read again: another command may have changed state.json during the download.
        let mut state = dev.load_state_or_new(booted.slot)?;
        if store::is_staged(data, &state, &summary.sha256) {
            download::discard(&part);
            return Err(Exit::NothingToDo(format!(
                "bundle {} (sha256 {}) is already staged",
                bundle.manifest.version, summary.sha256
            ))
            .into());
        }
        store::commit(data, &mut state, &part, &summary, &bundle.manifest.version)?
    };
    Ok(StageReport {
        path: device::staged::staged_path(data),
        staged,
        signed_by: bundle.signed_by.unwrap_or_default(),
        payloads: bundle.manifest.payloads.len(),
        reread,
        layout_plan,
    })
}

/// What the bundle requires beyond the [`checks`]: its partition layout (reachable, and
/// the data survives the migration) and an unmodified running system.
fn requirements(
    dev: &Device,
    opts: &StageOptions,
    m: &Manifest,
    disk: &std::path::Path,
    booted: crate::model::slot::Slot,
    part: &std::path::Path,
    bundle_size: u64,
) -> Result<Option<crate::layout::Plan>> {
    let mut plan = None;
    if let Some(target) = &m.layout {
        let data_root = dev.data.root.parent().with_context(|| {
            format!(
                "the data directory {} has no parent (the data partition's root)",
                dev.data.root.display()
            )
        })?;
        // The staged bundle this one replaces is not backed up; the download becomes it.
        let replaced = device::staged::staged_path(&dev.data);
        plan = layout::check_layout(
            disk,
            target,
            &dev.config.labels,
            booted,
            data_root,
            &[&replaced, part],
            bundle_size,
        )?;
    }
    if m.requires_unmodified_base {
        let root = opts
            .base_root
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("/"));
        crate::data::fingerprint::check_base(&root, booted)?;
    }
    Ok(plan)
}

/// The check run as soon as manifest and signature have streamed in: trusted signature,
/// valid manifest, not the bundle already staged, fits this device.
fn early_check(
    keys: Arc<crate::bundle::sign::TrustedKeys>,
    facts: checks::Facts,
    staged_manifest: Option<Vec<u8>>,
) -> EarlyCheck {
    let said = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |c: &Captured| {
        let (key_id, _) = keys
            .verify(&c.manifest, &c.signature)
            .with_context(|| format!("member {}", crate::bundle::SIGNATURE))?;
        let m = Manifest::from_json(&c.manifest)
            .with_context(|| format!("member {}", crate::bundle::MANIFEST))?;
        if staged_manifest.as_deref() == Some(&c.manifest[..]) {
            return Err(
                Exit::NothingToDo(format!("bundle {} is already staged", m.version)).into(),
            );
        }
        checks::check(&m, &facts)?;
        if !said.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::info!(
                "bundle {} {} signed by trusted key {key_id}; fetching the payloads",
                m.compatible,
                m.version
            );
        }
        Ok(())
    })
}

/// This process's peak resident memory in KiB (`VmHWM` of /proc/self/status), for `-v`
/// output and scripts/bench-stage.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Asks the init system to reboot (runs `reboot`, found in `PATH`).
pub fn request_reboot() -> Result<()> {
    let status = std::process::Command::new("reboot")
        .status()
        .context("running reboot")?;
    if !status.success() {
        anyhow::bail!("reboot exited with {status}");
    }
    Ok(())
}
