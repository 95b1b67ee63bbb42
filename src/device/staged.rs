//! The staged bundle's place on the data partition (`DATA/hup/staged/`), what downloads
//! leave in `DATA/hup/staging/`, and `hup cancel`, which drops both. `hup stage` fills
//! them (`crate::stage::store`); the init applies what is staged.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::error::Exit;
use crate::fsutil::{DataDir, sync_dir};
use crate::model::state::Staged;

/// The staged bundle's file name in `DATA/hup/staged/`.
pub const STAGED_FILE: &str = "bundle.hup";

/// Where the staged bundle lives.
pub fn staged_path(data: &DataDir) -> PathBuf {
    data.staged_dir().join(STAGED_FILE)
}

/// Removes what earlier runs left in `staging/`, except the files of `keep` (`NAME.part`
/// and `NAME.part.meta`). Runs under the download lock, so nothing else is writing there.
pub fn clean_staging(data: &DataDir, keep: &str) -> Result<Vec<String>> {
    let dir = data.staging_dir();
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let keep_meta = format!("{keep}.meta");
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == keep || name == keep_meta || !e.path().is_file() {
            continue;
        }
        std::fs::remove_file(e.path())
            .with_context(|| format!("removing {}", e.path().display()))?;
        removed.push(name);
    }
    Ok(removed)
}

/// What `hup cancel` removed.
#[derive(Debug, Default)]
pub struct Cancelled {
    pub staged: Option<Staged>,
    /// Partial downloads removed from `staging/`.
    pub partial: Vec<String>,
}

/// Drops the staged bundle (file and record) and any partial download;
/// [`Exit::NothingToDo`] when there is neither.
pub fn cancel(data: &DataDir) -> Result<Cancelled> {
    let mut out = Cancelled {
        partial: clean_staging(data, "")?,
        ..Cancelled::default()
    };
    let state_exists = data.state_path().exists();
    let mut state = if state_exists {
        Some(data.load_state()?)
    } else {
        None
    };
    let mut files: Vec<PathBuf> = vec![staged_path(data)];
    if let Some(s) = state.as_ref().and_then(|s| s.staged.as_ref()) {
        files.push(data.staged_dir().join(&s.file));
    }
    let mut removed_file = false;
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => removed_file = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    if removed_file {
        sync_dir(&data.staged_dir())?;
    }
    if let Some(st) = state.as_mut()
        && let Some(old) = st.staged.take()
    {
        data.save_state(st)?;
        out.staged = Some(old);
    }
    if out.staged.is_none() && out.partial.is_empty() && !removed_file {
        return Err(Exit::NothingToDo("nothing is staged".into()).into());
    }
    Ok(out)
}
