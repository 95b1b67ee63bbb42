//! The two locks of `DATA/hup/`, both exclusive `flock(2)`s that the kernel drops when the
//! holder exits, however it exits. The lock file holds its holder's pid and command line,
//! so that a refusal names it.
//!
//! - `DATA/hup/lock`, the **state lock**: held only for short read-modify-writes of
//!   state.json and the staged bundle (`hup mark-good`, `mark-bad`, `refund-try`,
//!   `cancel`, and the commit at the end of `hup stage`). A command waits up to
//!   [`STATE_WAIT`] for it, then fails with [`Exit::Locked`] (exit code 3).
//! - `DATA/hup/download.lock`, the **download lock**: held by `hup stage` for its whole
//!   run (download and verification into `staging/`) and by `hup cancel`, taken without
//!   waiting. A second stage fails at once with exit code 3. The state-changing commands
//!   never take it, so a long download does not hold up `hup mark-good`.
//!
//! Order: the download lock before the state lock, never the other way round.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Exit;
use crate::fsutil::DataDir;

/// How long a command waits for the state lock before it gives up with exit code 3.
pub const STATE_WAIT: Duration = Duration::from_secs(10);
/// Test and debug override of [`STATE_WAIT`] in milliseconds.
pub const WAIT_ENV: &str = "HUP_LOCK_WAIT_MS";
/// Pause between two tries while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
    pub path: PathBuf,
}

/// Path of the state lock file.
pub fn lock_path(data: &DataDir) -> PathBuf {
    data.root.join("lock")
}

/// Path of the download lock file.
pub fn download_lock_path(data: &DataDir) -> PathBuf {
    data.root.join("download.lock")
}

fn state_wait() -> Duration {
    std::env::var(WAIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(STATE_WAIT, Duration::from_millis)
}

/// Takes the state lock for `what` (a description such as `hup mark-good`), waiting up to
/// [`STATE_WAIT`]; fails with [`Exit::Locked`] when another process holds it longer.
pub fn acquire(data: &DataDir, what: &str) -> Result<Lock> {
    take(&lock_path(data), data, what, state_wait())
}

/// Takes the download lock for `what` without waiting; fails with [`Exit::Locked`] when
/// another process (a running `hup stage`) holds it.
pub fn download(data: &DataDir, what: &str) -> Result<Lock> {
    take(&download_lock_path(data), data, what, Duration::ZERO)
}

fn take(path: &Path, data: &DataDir, what: &str, wait: Duration) -> Result<Lock> {
    std::fs::create_dir_all(&data.root)
        .with_context(|| format!("creating {}", data.root.display()))?;
    let deadline = Instant::now() + wait;
    let mut file = open(path)?;
    let mut locked = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((f, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(POLL);
            }
            Err((mut f, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another hup process".to_string()
                } else {
                    format!("another hup process ({holder})")
                };
                let waited = if wait.is_zero() {
                    String::new()
                } else {
                    format!(" (waited {:.1} s)", wait.as_secs_f64())
                };
                return Err(Exit::Locked(format!("{who} holds {}{waited}", path.display())).into());
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    };
    let me = format!("pid {}: {what}\n", std::process::id());
    locked
        .set_len(0)
        .and_then(|_| locked.rewind())
        .and_then(|_| locked.write_all(me.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Lock {
        _file: locked,
        path: path.to_path_buf(),
    })
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path().join("hup"));
        let held = download(&d, "hup stage x").unwrap();
        let err = download(&d, "hup cancel").err().unwrap();
        assert_eq!(crate::error::exit_code(&err), crate::error::code::LOCKED);
        let msg = err.to_string();
        assert!(msg.contains("hup stage x") && msg.contains("lock"), "{msg}");
        // The state lock is another lock: free while a download runs.
        let state = acquire(&d, "hup mark-good").unwrap();
        drop(held);
        assert!(download(&d, "hup cancel").is_ok());
        drop(state);
    }

    #[test]
    fn the_state_lock_is_waited_for() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path().join("hup"));
        let held = acquire(&d, "hup stage x").unwrap();
        let started = Instant::now();
        let waiter = {
            let d = d.clone();
            std::thread::spawn(move || acquire(&d, "hup mark-good").map(drop))
        };
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        waiter.join().unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
