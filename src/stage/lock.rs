//! `DATA/hup/lock`: one hup command at a time changes the staged bundle and state.json.
//!
//! An exclusive `flock(2)`, taken without waiting: a second command fails at once with
//! [`Exit::Locked`] (exit code 3), naming the holder (the lock file holds its pid and
//! command line). The kernel drops the lock when the holder exits, however it exits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Exit;
use crate::fsutil::DataDir;

/// A held lock; released when dropped.
pub struct Lock {
    _file: Flock<File>,
    pub path: PathBuf,
}

/// Path of the lock file.
pub fn lock_path(data: &DataDir) -> PathBuf {
    data.root.join("lock")
}

/// Takes the lock for `what` (a description such as `hup stage URL`), or fails with
/// [`Exit::Locked`] when another process holds it.
pub fn acquire(data: &DataDir, what: &str) -> Result<Lock> {
    let path = lock_path(data);
    std::fs::create_dir_all(&data.root)
        .with_context(|| format!("creating {}", data.root.display()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another hup process".to_string()
            } else {
                format!("another hup process ({holder})")
            };
            return Err(Exit::Locked(format!("{who} holds {}", path.display())).into());
        }
        Err((_, e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
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
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path().join("hup"));
        let held = acquire(&d, "hup stage x").unwrap();
        let err = acquire(&d, "hup cancel").err().unwrap();
        assert_eq!(crate::error::exit_code(&err), crate::error::code::LOCKED);
        let msg = err.to_string();
        assert!(msg.contains("hup stage x") && msg.contains("lock"), "{msg}");
        drop(held);
        assert!(acquire(&d, "hup cancel").is_ok());
    }
}
