//! Checking a root tree against its recorded fingerprint: `hup fingerprint check`, `hup
//! stage` of a bundle with `requires_unmodified_base`, and the apply preflight.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Fingerprint;
use super::compare::{DEFAULT_IGNORE, Diff, compare};
use super::embed::EMBED_PATH;
use super::scan::scan_dir_for;

/// The recorded fingerprint to compare with does not exist (a system not installed by hup,
/// or installed before hup recorded fingerprints).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no recorded fingerprint: {} does not exist", .path.display())]
pub struct MissingFingerprint {
    pub path: PathBuf,
}

/// What [`check_tree`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeCheck {
    /// The differences left after the ignore list and the mount points.
    pub diff: Diff,
    /// Entries on other filesystems below the root: neither entered nor compared.
    pub mountpoints: Vec<String>,
    /// Entries in the recorded fingerprint.
    pub recorded: usize,
}

/// Compares the tree at `root` with the fingerprint in the file `record`, leaving out the
/// paths `ignore` matches and the mount points found below `root`. Fails with
/// [`MissingFingerprint`] when `record` does not exist.
pub fn check_tree<S: AsRef<str>>(root: &Path, record: &Path, ignore: &[S]) -> Result<TreeCheck> {
    if !record.try_exists().unwrap_or(true) {
        return Err(MissingFingerprint {
            path: record.to_path_buf(),
        }
        .into());
    }
    let expected = Fingerprint::load(record)?;
    let scan = scan_dir_for(root, Some(&expected))
        .with_context(|| format!("scanning {}", root.display()))?;
    let mut all: Vec<&str> = ignore.iter().map(AsRef::as_ref).collect();
    all.extend(scan.mountpoints.iter().map(String::as_str));
    Ok(TreeCheck {
        diff: compare(&expected, &scan.fingerprint, &all),
        mountpoints: scan.mountpoints,
        recorded: expected.entries.len(),
    })
}

/// Compares a running root (`/`, or a slot mounted at `root`) with the fingerprint embedded
/// in it (`ROOT/etc/hup/fingerprint.json`), ignoring [`DEFAULT_IGNORE`], `extra_ignore` and
/// the mount points below `root`, as `hup fingerprint check` does. An empty [`Diff`] means
/// unmodified. Fails with [`MissingFingerprint`] when the root has no embedded fingerprint.
pub fn check_root(root: &Path, extra_ignore: &[String]) -> Result<Diff> {
    let mut ignore: Vec<&str> = DEFAULT_IGNORE.to_vec();
    ignore.extend(extra_ignore.iter().map(String::as_str));
    Ok(check_tree(root, &root.join(EMBED_PATH), &ignore)?.diff)
}

impl Diff {
    /// The non-zero counts, for one-line messages: `2 modified, 1 added`
    /// (`no differences` when empty).
    pub fn counts(&self) -> String {
        let parts: Vec<String> = [
            (self.modified.len(), "modified"),
            (self.added.len(), "added"),
            (self.missing.len(), "missing"),
            (
                self.changed_metadata.len(),
                "with changed permissions or owner",
            ),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "no differences".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_check_and_counts() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/hup")).unwrap();
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        std::fs::write(root.join("etc/a"), b"a").unwrap();
        std::fs::write(root.join("etc/b"), b"b").unwrap();
        let e = check_root(root, &[]).unwrap_err();
        let missing = e.downcast_ref::<MissingFingerprint>().expect("missing");
        assert_eq!(missing.path, root.join(EMBED_PATH));

        super::super::fingerprint_of_dir(root)
            .unwrap()
            .save(&root.join(EMBED_PATH))
            .unwrap();
        let d = check_root(root, &[]).unwrap();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.counts(), "no differences");

        std::fs::write(root.join("var/log/messages"), b"ignored").unwrap();
        std::fs::write(root.join("etc/a"), b"changed").unwrap();
        std::fs::write(root.join("etc/c"), b"new").unwrap();
        std::fs::write(root.join("etc/d"), b"new").unwrap();
        std::fs::remove_file(root.join("etc/b")).unwrap();
        let d = check_root(root, &[]).unwrap();
        assert_eq!(d.counts(), "1 modified, 2 added, 1 missing");
        let d = check_root(root, &["etc/c".to_string(), "etc/d".to_string()]).unwrap();
        assert_eq!(d.counts(), "1 modified, 1 missing");
    }
}
