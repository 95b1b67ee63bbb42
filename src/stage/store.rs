//! Storing the staged bundle on the data partition: free-space checks, the atomic move from
//! `staging/` into `staged/` and its record in state.json. Where it lives, and `hup
//! cancel`, are in [`crate::device::staged`].
//!
//! Order of a commit: the verified `staging/NAME.part` is fsynced (by the download), renamed
//! over `staged/bundle.hup` (atomic: the previous staged bundle stays whole until this
//! instant), both directories are fsynced, then state.json records it (atomic write).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::download::discard;
use super::stream::Summary;
use crate::device::staged::{STAGED_FILE, staged_path};
use crate::fsutil::{DataDir, now, sync_dir};
use crate::model::state::{Staged, State};

/// Free space kept on the data partition beyond the bundle itself.
pub const SPACE_MARGIN: u64 = 16 << 20;

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("reading free space of {}", dir.display()))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Fails, naming both numbers, unless `bundle` bytes plus [`SPACE_MARGIN`] are free in `dir`.
pub fn ensure_space(dir: &Path, bundle: u64) -> Result<()> {
    let free = free_bytes(dir)?;
    let needed = bundle.saturating_add(SPACE_MARGIN);
    if free < needed {
        bail!(
            "not enough free space on the data partition: {free} bytes free in {}, {needed} bytes needed \
             ({bundle} for the bundle + {SPACE_MARGIN} margin)",
            dir.display()
        );
    }
    Ok(())
}

/// The manifest bytes of the staged bundle, if one is staged and readable.
pub fn staged_manifest(data: &DataDir, state: &State) -> Option<Vec<u8>> {
    let staged = state.staged.as_ref()?;
    let path = data.staged_dir().join(&staged.file);
    crate::bundle::reader::scan(&path)
        .ok()
        .map(|s| s.manifest_bytes)
}

/// True when the staged bundle is byte-for-byte the one with this sha256 (by its record).
pub fn is_staged(data: &DataDir, state: &State, sha256: &str) -> bool {
    state.staged.as_ref().is_some_and(|s| {
        s.sha256.eq_ignore_ascii_case(sha256) && data.staged_dir().join(&s.file).is_file()
    })
}

/// Moves the verified `part` into `staged/` and records it in `state` (saved). The previous
/// staged bundle is replaced atomically.
pub fn commit(
    data: &DataDir,
    state: &mut State,
    part: &Path,
    summary: &Summary,
    version: &str,
) -> Result<Staged> {
    let dir = data.staged_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = staged_path(data);
    std::fs::rename(part, &dest)
        .with_context(|| format!("moving {} to {}", part.display(), dest.display()))?;
    sync_dir(&dir)?;
    if let Some(src_dir) = part.parent() {
        sync_dir(src_dir)?;
    }
    let staged = Staged {
        file: STAGED_FILE.to_string(),
        sha256: summary.sha256.clone(),
        size: summary.len,
        version: version.to_string(),
        staged_at: now(),
    };
    let previous = state.staged.replace(staged.clone());
    data.save_state(state)?;
    if let Some(old) = previous
        && old.file != STAGED_FILE
    {
        let p = dir.join(&old.file);
        if let Err(e) = std::fs::remove_file(&p) {
            log::warn!("removing the previous staged bundle {}: {e}", p.display());
        }
    }
    discard(part);
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::staged::{cancel, clean_staging};
    use crate::model::slot::Slot;

    fn summary(content: &[u8]) -> Summary {
        Summary {
            sha256: crate::bundle::verified::sha256_of(content).unwrap().0,
            len: content.len() as u64,
            members: None,
            checked_early: false,
        }
    }

    #[test]
    fn commit_replaces_and_cancel_drops() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path().join("hup"));
        d.create().unwrap();
        let mut state = State::new(Slot::A, "1.0", 1);
        d.save_state(&state).unwrap();
        for (i, content) in [b"first".as_slice(), b"second"].iter().enumerate() {
            let part = d.staging_dir().join("x.hup.part");
            std::fs::write(&part, content).unwrap();
            std::fs::write(super::super::download::meta_path(&part), b"{}").unwrap();
            let s = commit(&d, &mut state, &part, &summary(content), &format!("2.{i}")).unwrap();
            assert_eq!(std::fs::read(staged_path(&d)).unwrap(), *content);
            assert_eq!(d.load_state().unwrap().staged, Some(s));
            assert!(is_staged(&d, &state, &summary(content).sha256));
            assert_eq!(std::fs::read_dir(d.staging_dir()).unwrap().count(), 0);
        }
        std::fs::write(d.staging_dir().join("y.part"), b"p").unwrap();
        assert_eq!(
            clean_staging(&d, "z.part").unwrap(),
            vec!["y.part".to_string()]
        );
        let c = cancel(&d).unwrap();
        assert_eq!(c.staged.unwrap().version, "2.1");
        assert!(!staged_path(&d).exists());
        assert_eq!(d.load_state().unwrap().staged, None);
        let again = cancel(&d).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&again),
            crate::error::code::NOTHING_TO_DO
        );
    }

    #[test]
    fn space_check_names_both_numbers() {
        let t = tempfile::tempdir().unwrap();
        assert!(ensure_space(t.path(), 1).is_ok());
        let e = ensure_space(t.path(), u64::MAX / 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bytes free in") && e.contains("bytes needed"),
            "{e}"
        );
    }
}
