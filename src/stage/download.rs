//! The download loop: `DATA/hup/staging/NAME.part`, resumed after an interruption, retried
//! with backoff on transient errors, hashed while it streams (see `stream.rs`).
//!
//! Beside the partial file, `NAME.part.meta` records the source and its validator (ETag or
//! Last-Modified), so that a rerun resumes only the same source, and the server restarts
//! from byte 0 (`If-Range`) when the file changed in between.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use super::progress::{Progress, human};
use super::source::{OpenError, Origin};
use super::stream::{CHUNK, EarlyCheck, Pipeline, Summary};

/// Attempts in a row that bring no new byte before the download gives up.
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; doubled after each failed attempt, at most [`MAX_BACKOFF`].
pub const BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Test and debug override of [`BACKOFF`] in milliseconds.
pub const BACKOFF_ENV: &str = "HUP_BACKOFF_MS";

/// What a rerun needs to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    source: String,
    validator: Option<String>,
    total: Option<u64>,
}

/// `NAME.part.meta` beside `NAME.part`.
pub fn meta_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

/// Removes a partial download and its meta file (missing files are fine).
pub fn discard(part: &Path) {
    for p in [part.to_path_buf(), meta_path(part)] {
        if let Err(e) = std::fs::remove_file(&p)
            && e.kind() != ErrorKind::NotFound
        {
            log::warn!("removing {}: {e}", p.display());
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let base = std::env::var(BACKOFF_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(BACKOFF, Duration::from_millis);
    base.saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF.max(base))
}

/// A download to run.
pub struct Request<'a> {
    pub origin: &'a mut dyn Origin,
    pub part: &'a Path,
    /// Checked once manifest and signature have streamed in.
    pub early: Option<EarlyCheck>,
    /// Called with the bytes still to fetch once the size is known, before the body is read.
    pub space: &'a dyn Fn(u64) -> Result<()>,
}

/// Why a download failed, and whether the partial file is worth keeping.
struct Failed {
    err: anyhow::Error,
    keep: bool,
}

fn permanent(err: anyhow::Error) -> Failed {
    Failed { err, keep: true }
}

fn bad_content(err: anyhow::Error) -> Failed {
    Failed { err, keep: false }
}

/// Downloads into `req.part` (resuming what a previous run left), fsyncs it, and returns the
/// stream's digests. A partial file is kept after network failures (for the next run) and
/// removed when its content was refused or the disk filled up.
pub fn run(req: Request) -> Result<Summary> {
    let part = req.part.to_path_buf();
    match run_inner(req) {
        Ok(s) => Ok(s),
        Err(f) => {
            let empty = std::fs::metadata(&part).is_ok_and(|m| m.len() == 0);
            if !f.keep || empty {
                discard(&part);
            }
            Err(f.err)
        }
    }
}

fn open_part(part: &Path) -> Result<File, Failed> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .with_context(|| format!("opening {}", part.display()))
        .map_err(permanent)
}

/// Feeds the bytes already in the partial file to the pipeline.
fn replay(file: &mut File, have: u64, pipe: &mut Pipeline, part: &Path) -> Result<(), Failed> {
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {}", part.display()))
        .map_err(permanent)?;
    let mut left = have;
    while left > 0 {
        let mut buf = pipe.buffer();
        let want = (left as usize).min(CHUNK);
        file.read_exact(&mut buf[..want])
            .with_context(|| format!("reading {}", part.display()))
            .map_err(permanent)?;
        if pipe.feed(buf, want).is_err() {
            return Err(stopped(std::mem::replace(pipe, new_pipe(None)?)));
        }
        left -= want as u64;
    }
    Ok(())
}

fn new_pipe(early: Option<EarlyCheck>) -> Result<Pipeline, Failed> {
    Pipeline::start(early).map_err(permanent)
}

/// The error that stopped the pipeline (the content was refused).
fn stopped(pipe: Pipeline) -> Failed {
    match pipe.finish() {
        Err(e) => bad_content(e),
        Ok(_) => bad_content(anyhow!("the hashing threads stopped")),
    }
}

fn run_inner(req: Request) -> Result<Summary, Failed> {
    let Request {
        origin,
        part,
        early,
        space,
    } = req;
    let src = origin.describe();
    let mpath = meta_path(part);
    let mut meta: Option<Meta> = std::fs::read(&mpath)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|m: &Meta| m.source == src);
    if meta.is_none() {
        discard(part);
    }
    let mut file = open_part(part)?;
    let mut have = file
        .metadata()
        .with_context(|| format!("reading {}", part.display()))
        .map_err(permanent)?
        .len();
    let mut pipe = new_pipe(early.clone())?;
    if have > 0 {
        log::info!("resuming {src} at byte {have} ({})", human(have));
        replay(&mut file, have, &mut pipe, part)?;
    }
    let mut progress = Progress::new();
    let mut failures = 0u32;
    let mut furthest = have;
    let mut space_checked = false;
    loop {
        let validator = meta.as_ref().and_then(|m| m.validator.clone());
        let opened = match origin.open(have, validator.as_deref()) {
            Ok(o) => o,
            Err(OpenError::Permanent(e)) => return Err(permanent(e)),
            Err(OpenError::Transient(e)) => {
                failures += 1;
                retry_or_give_up(e, failures, have)?;
                continue;
            }
        };
        if opened.start != have || opened.total.is_some_and(|t| t < have) {
            if have > 0 {
                log::info!(
                    "{src}: cannot resume at byte {have} (no Range support, or the file changed): restarting from byte 0"
                );
            }
            if opened.start != 0 {
                // The source shrank below what we have: start over with a fresh request.
                discard(part);
                meta = None;
                file = open_part(part)?;
                have = 0;
                pipe = new_pipe(early.clone())?;
                continue;
            }
            file.set_len(0)
                .with_context(|| format!("truncating {}", part.display()))
                .map_err(permanent)?;
            have = 0;
            pipe = new_pipe(early.clone())?;
            space_checked = false;
        }
        file.seek(SeekFrom::Start(have))
            .with_context(|| format!("seeking in {}", part.display()))
            .map_err(permanent)?;
        if !space_checked {
            match opened.total {
                Some(t) => space(t.saturating_sub(have)).map_err(permanent)?,
                None => log::info!(
                    "{src}: size unknown (no Content-Length): free space not checked ahead"
                ),
            }
            space_checked = true;
        }
        let m = Meta {
            source: src.clone(),
            validator: opened.validator.clone(),
            total: opened.total,
        };
        if meta.as_ref() != Some(&m) {
            crate::fsutil::write_atomic(
                &mpath,
                &serde_json::to_vec(&m).expect("meta serializes"),
                0o644,
            )
            .map_err(permanent)?;
            meta = Some(m);
        }
        progress.begin(have, opened.total);
        let result = body(
            opened.reader,
            &mut file,
            &mut pipe,
            &mut have,
            &mut progress,
            part,
        )?;
        let of = opened.total.map(|t| format!(" of {t}")).unwrap_or_default();
        let err = match (result, opened.total) {
            (Ok(()), Some(t)) if have < t => {
                anyhow!("the connection closed after {have}{of} bytes")
            }
            (Ok(()), Some(t)) if have > t => {
                return Err(bad_content(anyhow!(
                    "the server sent {have} bytes, more than the announced {t}"
                )));
            }
            (Ok(()), _) => break,
            (Err(e), _) if e.kind() == ErrorKind::UnexpectedEof => {
                anyhow!("the connection closed after {have}{of} bytes")
            }
            (Err(e), _) => anyhow!("reading failed after {have}{of} bytes: {e}"),
        };
        progress.interrupt();
        // Progress means getting further than ever before: a server that restarts from
        // byte 0 each time and always breaks at the same place does not count.
        if have > furthest {
            furthest = have;
            failures = 0;
        }
        failures += 1;
        retry_or_give_up(err, failures, have)?;
    }
    progress.finish(have);
    file.sync_all()
        .with_context(|| format!("syncing {}", part.display()))
        .map_err(permanent)?;
    drop(file);
    pipe.finish().map_err(bad_content)
}

/// Waits before the next attempt, or gives up after [`MAX_ATTEMPTS`] without progress.
fn retry_or_give_up(err: anyhow::Error, failures: u32, have: u64) -> Result<(), Failed> {
    if failures >= MAX_ATTEMPTS {
        let hint = if have > 0 {
            "; run the same command again to resume"
        } else {
            ""
        };
        return Err(permanent(anyhow!(
            "{err:#} (gave up after {failures} attempts{hint})"
        )));
    }
    let wait = backoff(failures);
    log::warn!("{err:#}; retrying in {:.1} s", wait.as_secs_f64());
    std::thread::sleep(wait);
    Ok(())
}

/// Copies the response body into the file and the pipeline. The outer error ends the
/// download (disk full, content refused); the inner one is a network error worth a retry.
fn body(
    mut reader: Box<dyn Read + Send>,
    file: &mut File,
    pipe: &mut Pipeline,
    have: &mut u64,
    progress: &mut Progress,
    part: &Path,
) -> Result<Result<(), std::io::Error>, Failed> {
    loop {
        let mut buf = pipe.buffer();
        // Small chunks first, so that the early check sees the manifest after a few KiB.
        let target = usize::try_from(*have)
            .unwrap_or(CHUNK)
            .clamp(16 * 1024, CHUNK);
        let mut filled = 0;
        let mut end: Option<Result<(), std::io::Error>> = None;
        while filled < target {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    end = Some(Ok(()));
                    break;
                }
                Ok(n) => {
                    filled += n;
                    progress.update(*have + filled as u64);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Some(Err(e));
                    break;
                }
            }
        }
        if filled > 0 {
            if let Err(e) = file.write_all(&buf[..filled]) {
                let full = e.raw_os_error() == Some(nix::libc::ENOSPC);
                let err = anyhow!("writing {}: {e}", part.display());
                return Err(if full {
                    bad_content(err.context("the data partition is full"))
                } else {
                    permanent(err)
                });
            }
            if pipe.feed(buf, filled).is_err() {
                let p = std::mem::replace(pipe, new_pipe(None)?);
                return Err(stopped(p));
            }
            *have += filled as u64;
        }
        if let Some(r) = end {
            return Ok(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), BACKOFF);
        assert_eq!(backoff(2), BACKOFF * 2);
        assert_eq!(backoff(3), BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert_eq!(
            meta_path(Path::new("/d/x.hup.part")),
            PathBuf::from("/d/x.hup.part.meta")
        );
    }
}
