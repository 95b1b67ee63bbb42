//! Durable file operations: atomic replace, directory fsync, the state file and the data layout.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::model::state::State;

/// fsyncs a directory so that renames and creations in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Replaces `path` with `bytes` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. After a power cut the file is either old or new, never partial.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)
}

/// hup's directory on the data partition: `DATA/hup/` and its parts.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// `DATA/hup/` for a data partition mounted at `mount`.
    pub fn under_mount(mount: &Path) -> DataDir {
        DataDir::new(mount.join("hup"))
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn staged_dir(&self) -> PathBuf {
        self.root.join("staged")
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// Creates `hup/` and its subdirectories.
    pub fn create(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.staged_dir(),
            self.staging_dir(),
            self.log_dir(),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    /// Reads state.json.
    pub fn load_state(&self) -> Result<State> {
        let p = self.state_path();
        let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        State::from_json(&bytes).with_context(|| format!("parsing {}", p.display()))
    }

    /// Writes state.json atomically.
    pub fn save_state(&self, state: &State) -> Result<()> {
        write_atomic(&self.state_path(), &state.to_json(), 0o644)
    }
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::slot::Slot;

    #[test]
    fn atomic_state_roundtrip() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path().join("hup"));
        d.create().unwrap();
        let s = State::new(Slot::A, "1.0", 1);
        d.save_state(&s).unwrap();
        assert_eq!(d.load_state().unwrap(), s);
        let names: Vec<_> = fs::read_dir(&d.root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!names.iter().any(|n| n.to_string_lossy().ends_with(".tmp")));
    }
}
