//! Checking a root tree against its recorded fingerprint: `hup fingerprint check`, and
//! [`check_base`], the `requires_unmodified_base` check of `hup stage` and the apply
//! preflight.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::compare::{DEFAULT_IGNORE, Diff, compare};
use super::embed::EMBED_PATH;
use super::record::Fingerprint;
use super::scan::scan_dir_for;
use crate::model::slot::Slot;

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

/// The `requires_unmodified_base` check: the running slot `slot`, mounted at `root` (`/` on a
/// device), must be identical to the fingerprint embedded in it, as `hup fingerprint check`
/// compares it.
pub fn check_base(root: &Path, slot: Slot) -> Result<()> {
    let what = if root == Path::new("/") {
        format!("slot {slot}")
    } else {
        format!("slot {slot} (at {})", root.display())
    };
    let diff = match check_root(root, &[]) {
        Ok(d) => d,
        Err(e) => {
            if let Some(m) = e.downcast_ref::<MissingFingerprint>() {
                bail!(
                    "bundle requires an unmodified base system, but {what} has no recorded \
                     fingerprint to compare with ({} does not exist)",
                    m.path.display()
                );
            }
            return Err(e).with_context(|| format!("checking {what} against its fingerprint"));
        }
    };
    if !diff.is_empty() {
        bail!(
            "bundle requires an unmodified base system; {what} differs from its fingerprint: {} \
             (run `hup fingerprint check` for the list)",
            diff.counts()
        );
    }
    log::info!("{what} is identical to its fingerprint");
    Ok(())
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

    /// The `requires_unmodified_base` check names the slot (and where it is mounted when
    /// that is not `/`) and says why it refuses: no record, or the counts of differences.
    #[test]
    fn base_check_refuses_a_missing_or_differing_record() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/hup")).unwrap();
        std::fs::write(root.join("etc/a"), b"a").unwrap();
        let e = check_base(root, Slot::B).unwrap_err().to_string();
        assert!(
            e.contains("has no recorded fingerprint")
                && e.contains(&format!("slot b (at {})", root.display())),
            "{e}"
        );
        super::super::fingerprint_of_dir(root)
            .unwrap()
            .save(&root.join(EMBED_PATH))
            .unwrap();
        check_base(root, Slot::B).unwrap();
        std::fs::write(root.join("etc/a"), b"changed").unwrap();
        let e = check_base(root, Slot::A).unwrap_err().to_string();
        assert!(
            e.contains("differs from its fingerprint: 1 modified"),
            "{e}"
        );
    }

    /// A check computes the kind of digest the record holds: a record of today's format 1
    /// (plain sha256) still matches a file with holes, and a sparse_sha256 record matches
    /// the same content written without holes.
    #[test]
    fn the_check_follows_the_recorded_digest() {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/hup")).unwrap();
        let holey = root.join("holey");
        let f = std::fs::File::create(&holey).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"data", 4 << 20).unwrap();
        let mut fp = super::super::fingerprint_of_dir(root).unwrap();
        let e = fp.entries.get_mut("holey").unwrap();
        assert!(e.sparse_sha256.is_some(), "{e:?}");
        // as an older hup recorded it
        e.sparse_sha256 = None;
        e.sha256 = Some(hex::encode(Sha256::digest(std::fs::read(&holey).unwrap())));
        fp.save(&root.join(EMBED_PATH)).unwrap();
        assert!(
            std::fs::read(root.join(EMBED_PATH))
                .unwrap()
                .starts_with(b"{\"format\":1,")
        );
        assert!(check_root(root, &[]).unwrap().is_empty());

        // recorded sparse, now written out in full: the same content
        let sparse = super::super::fingerprint_of_dir(root).unwrap();
        sparse.save(&root.join(EMBED_PATH)).unwrap();
        let content = std::fs::read(&holey).unwrap();
        std::fs::remove_file(&holey).unwrap();
        std::fs::write(&holey, &content).unwrap();
        assert!(check_root(root, &[]).unwrap().is_empty());
        std::fs::File::options()
            .write(true)
            .open(&holey)
            .unwrap()
            .write_all_at(b"x", 1)
            .unwrap();
        assert_eq!(check_root(root, &[]).unwrap().counts(), "1 modified");
    }
}
