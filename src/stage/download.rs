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

use super::origin::{OpenError, Origin};
use super::pace::{Pace, Watch};
use super::progress::Progress;
use super::stream::{CHUNK, EarlyCheck, Pipeline, Summary};
use crate::size::human;

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
    /// Deadline and minimum rate.
    pub pace: Pace,
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

/// A limit of [`Pace`] was reached: given up, the partial file kept for the next run.
fn paced(err: anyhow::Error, have: u64) -> Failed {
    if have > 0 {
        permanent(anyhow!(
            "{err:#}; the partial download is kept: run the same command again to resume"
        ))
    } else {
        permanent(err)
    }
}

/// Downloads into `req.part` (resuming what a previous run left), fsyncs it, and returns the
/// stream's digests. The file ends where the bundle ends: bytes after its end-of-archive
/// marker are not kept. A partial file is kept after network failures and the limits of
/// [`Pace`] (for the next run) and removed when its content was refused or the disk filled
/// up.
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

/// How much more the stream may bring.
enum Room {
    Bytes(u64),
    /// The bundle ended (its end-of-archive marker was read): nothing more is wanted.
    Ended,
}

/// What the stream allows after `have` bytes (see `tarscan.rs`): more bytes, the end of
/// the bundle, or a refusal when the data goes past what the bundle can hold.
fn room(pipe: &mut Pipeline, have: u64) -> Result<Room, Failed> {
    let limit = pipe.limit();
    if have < limit {
        return Ok(Room::Bytes(limit - have));
    }
    // The threads may lag behind: let them catch up before judging.
    if !pipe.drain() {
        return Err(stopped(std::mem::replace(pipe, new_pipe(None)?)));
    }
    if pipe.end().is_some() {
        return Ok(Room::Ended);
    }
    let limit = pipe.limit();
    if have < limit {
        return Ok(Room::Bytes(limit - have));
    }
    Err(bad_content(if pipe.checked_early() {
        anyhow!(
            "the download goes on past the end of the bundle its signed manifest describes (at most {limit} bytes)"
        )
    } else {
        anyhow!("not a hup bundle: no signed manifest in its first {limit} bytes")
    }))
}

/// Feeds the bytes already in the partial file to the pipeline; `Some(end)` when they hold
/// the whole bundle.
fn replay(
    file: &mut File,
    have: u64,
    pipe: &mut Pipeline,
    part: &Path,
) -> Result<Option<u64>, Failed> {
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {}", part.display()))
        .map_err(permanent)?;
    let mut done = 0;
    while done < have {
        let room = match room(pipe, done)? {
            Room::Ended => break,
            Room::Bytes(n) => n,
        };
        let want = (have - done).min(room).min(CHUNK as u64) as usize;
        let mut buf = pipe.buffer();
        file.read_exact(&mut buf[..want])
            .with_context(|| format!("reading {}", part.display()))
            .map_err(permanent)?;
        if pipe.feed(buf, want).is_err() {
            return Err(stopped(std::mem::replace(pipe, new_pipe(None)?)));
        }
        done += want as u64;
    }
    if !pipe.drain() {
        return Err(stopped(std::mem::replace(pipe, new_pipe(None)?)));
    }
    Ok(pipe.end())
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

/// Cuts the file where the bundle ended.
fn cut(file: &File, part: &Path, have: &mut u64, end: u64) -> Result<(), Failed> {
    if *have != end {
        log::info!(
            "the bundle ends at byte {end}: {} bytes after it are not kept",
            have.saturating_sub(end)
        );
        file.set_len(end)
            .with_context(|| format!("truncating {}", part.display()))
            .map_err(permanent)?;
        *have = end;
    }
    Ok(())
}

fn run_inner(req: Request) -> Result<Summary, Failed> {
    let Request {
        origin,
        part,
        early,
        space,
        pace,
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
    let mut complete = false;
    if have > 0 {
        log::info!("resuming {src} at byte {have} ({})", human(have));
        match replay(&mut file, have, &mut pipe, part) {
            Ok(Some(end)) => {
                cut(&file, part, &mut have, end)?;
                complete = true;
            }
            Ok(None) => {}
            Err(f) if !f.keep => {
                // Damaged or refused bytes from an earlier run: they say nothing about the
                // source now, so the download starts over (a refusal comes again after a
                // few KiB).
                log::warn!(
                    "the partial download {} from an earlier run is unusable ({:#}): starting over from byte 0",
                    part.display(),
                    f.err
                );
                discard(part);
                meta = None;
                file = open_part(part)?;
                have = 0;
                pipe = new_pipe(early.clone())?;
            }
            Err(f) => return Err(f),
        }
    }
    let mut progress = Progress::new();
    let mut watch = Watch::new(pace);
    let mut failures = 0u32;
    let mut furthest = have;
    let mut space_checked = false;
    // Already complete when the kept bytes held the whole bundle.
    if !complete {
        loop {
            watch
                .check_deadline(have, meta.as_ref().and_then(|m| m.total), Duration::ZERO)
                .map_err(|e| paced(e, have))?;
            let validator = meta.as_ref().and_then(|m| m.validator.clone());
            let opened = match origin.open(have, validator.as_deref()) {
                Ok(o) => o,
                Err(OpenError::Permanent(e)) => return Err(permanent(e)),
                Err(OpenError::Transient(e)) => {
                    failures += 1;
                    retry_or_give_up(e, failures, have, &watch)?;
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
            watch.restart_window(have);
            let mut sink = Sink {
                file: &mut file,
                pipe: &mut pipe,
                have: &mut have,
                progress: &mut progress,
                watch: &mut watch,
                part,
                total: opened.total,
            };
            let result = sink.body(opened.reader)?;
            // The bundle may have ended before the server stopped sending (or failed).
            if !matches!(result, BodyEnd::Ended) && !pipe.drain() {
                return Err(stopped(std::mem::replace(&mut pipe, new_pipe(None)?)));
            }
            if let Some(end) = pipe.end() {
                cut(&file, part, &mut have, end)?;
                break;
            }
            let of = opened.total.map(|t| format!(" of {t}")).unwrap_or_default();
            let err = match (result, opened.total) {
                (BodyEnd::Eof, Some(t)) if have < t => {
                    anyhow!("the connection closed after {have}{of} bytes")
                }
                (BodyEnd::Eof, Some(t)) if have > t => {
                    return Err(bad_content(anyhow!(
                        "the server sent {have} bytes, more than the announced {t}"
                    )));
                }
                (BodyEnd::Eof | BodyEnd::Ended, _) => break,
                (BodyEnd::Net(e), _) if e.kind() == ErrorKind::UnexpectedEof => {
                    anyhow!("the connection closed after {have}{of} bytes")
                }
                (BodyEnd::Net(e), _) => anyhow!("reading failed after {have}{of} bytes: {e}"),
            };
            progress.interrupt();
            // Progress means getting further than ever before: a server that restarts from
            // byte 0 each time and always breaks at the same place does not count.
            if have > furthest {
                furthest = have;
                failures = 0;
            }
            failures += 1;
            retry_or_give_up(err, failures, have, &watch)?;
        }
    }
    progress.finish(have);
    file.sync_all()
        .with_context(|| format!("syncing {}", part.display()))
        .map_err(permanent)?;
    drop(file);
    pipe.finish().map_err(bad_content)
}

/// Waits before the next attempt, or gives up after [`MAX_ATTEMPTS`] without progress (or
/// when the wait would pass the deadline).
fn retry_or_give_up(
    err: anyhow::Error,
    failures: u32,
    have: u64,
    watch: &Watch,
) -> Result<(), Failed> {
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
    watch
        .check_deadline(have, None, wait)
        .map_err(|e| paced(anyhow!("{err:#}; then {e:#}"), have))?;
    log::warn!("{err:#}; retrying in {:.1} s", wait.as_secs_f64());
    std::thread::sleep(wait);
    Ok(())
}

/// How a response body ended.
enum BodyEnd {
    /// The server closed the body.
    Eof,
    /// The bundle ended; the rest of the body is not read.
    Ended,
    /// A network error, worth a retry.
    Net(std::io::Error),
}

/// Where a response body goes: the partial file and the pipeline.
struct Sink<'a> {
    file: &'a mut File,
    pipe: &'a mut Pipeline,
    have: &'a mut u64,
    progress: &'a mut Progress,
    watch: &'a mut Watch,
    part: &'a Path,
    total: Option<u64>,
}

impl Sink<'_> {
    /// Copies the response body into the file and the pipeline, up to the end of the
    /// bundle. The error ends the download (disk full, content refused, too slow, deadline).
    fn body(&mut self, mut reader: Box<dyn Read + Send>) -> Result<BodyEnd, Failed> {
        loop {
            let room = match room(self.pipe, *self.have)? {
                Room::Ended => return Ok(BodyEnd::Ended),
                Room::Bytes(n) => n,
            };
            let mut buf = self.pipe.buffer();
            // Small chunks first, so that the early check sees the manifest after a few KiB.
            let target = usize::try_from(*self.have)
                .unwrap_or(CHUNK)
                .clamp(16 * 1024, CHUNK)
                .min(usize::try_from(room).unwrap_or(CHUNK));
            let mut filled = 0;
            let mut end = None;
            let mut give_up = None;
            while filled < target {
                match reader.read(&mut buf[filled..target]) {
                    Ok(0) => {
                        end = Some(BodyEnd::Eof);
                        break;
                    }
                    Ok(n) => {
                        filled += n;
                        self.progress.update(*self.have + filled as u64);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        end = Some(BodyEnd::Net(e));
                        break;
                    }
                }
                if let Err(e) = self.watch.check(*self.have + filled as u64, self.total) {
                    give_up = Some(e);
                    break;
                }
            }
            if filled > 0 {
                self.store(buf, filled)?;
            } else {
                self.pipe.give_back(buf);
            }
            if let Some(e) = give_up {
                return Err(paced(e, *self.have));
            }
            if let Some(r) = end {
                return Ok(r);
            }
        }
    }

    /// Writes the first `filled` bytes of `buf` to the file and feeds them to the pipeline.
    fn store(&mut self, buf: Vec<u8>, filled: usize) -> Result<(), Failed> {
        if let Err(e) = self.file.write_all(&buf[..filled]) {
            let full = e.raw_os_error() == Some(nix::libc::ENOSPC);
            let err = anyhow!("writing {}: {e}", self.part.display());
            return Err(if full {
                bad_content(err.context("the data partition is full"))
            } else {
                permanent(err)
            });
        }
        if self.pipe.feed(buf, filled).is_err() {
            let p = std::mem::replace(self.pipe, new_pipe(None)?);
            return Err(stopped(p));
        }
        *self.have += filled as u64;
        Ok(())
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
