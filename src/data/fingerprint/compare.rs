//! Comparing two fingerprints, with ignore patterns.

use serde::Serialize;

use super::record::{Entry, Fingerprint, Kind, ROOT};

/// Paths that legitimately change on a running device (each also covers everything below
/// it). From the seed's checker, adapted: identity and random seeds written at first boot,
/// logs, network state, shell histories, the `*-` backups of the account files, the
/// filesystem's own `lost+found`, and the recorded fingerprint itself.
pub const DEFAULT_IGNORE: &[&str] = &[
    "lost+found",
    "etc/hup/fingerprint.json",
    "etc/machine-id",
    "var/lib/dbus/machine-id",
    "etc/hostname",
    "etc/timestamp",
    "etc/adjtime",
    "etc/passwd-",
    "etc/shadow-",
    "etc/group-",
    "etc/gshadow-",
    "etc/udev/cache.data",
    "etc/wpa_supplicant/entropy.bin",
    "var/log",
    "var/lib/systemd/random-seed",
    "var/lib/urandom/random-seed",
    "var/lib/connman",
    "var/lib/NetworkManager",
    "home/root",
    ".rnd",
    "**/.bash_history",
    "**/.ash_history",
];

/// One difference: the path and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub detail: String,
}

/// What differs between the expected tree and the actual one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Content, type, symlink target or device number differ.
    pub modified: Vec<Change>,
    /// Present but not expected.
    pub added: Vec<String>,
    /// Expected but absent.
    pub missing: Vec<String>,
    /// Permission bits or owner differ (a path can be in `modified` as well).
    pub changed_metadata: Vec<Change>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.modified.is_empty()
            && self.added.is_empty()
            && self.missing.is_empty()
            && self.changed_metadata.is_empty()
    }

    /// `2 modified, 1 added, 0 missing, 1 with changed permissions or owner`.
    pub fn summary(&self) -> String {
        format!(
            "{} modified, {} added, {} missing, {} with changed permissions or owner",
            self.modified.len(),
            self.added.len(),
            self.missing.len(),
            self.changed_metadata.len()
        )
    }

    /// One line per difference: `modified PATH (detail)`, `added PATH`, `missing PATH`,
    /// `metadata PATH (detail)`, in that order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.modified {
            out.push_str(&format!("modified {} ({})\n", c.path, c.detail));
        }
        for p in &self.added {
            out.push_str(&format!("added {p}\n"));
        }
        for p in &self.missing {
            out.push_str(&format!("missing {p}\n"));
        }
        for c in &self.changed_metadata {
            out.push_str(&format!("metadata {} ({})\n", c.path, c.detail));
        }
        out
    }
}

/// Ignore patterns. A pattern is a path relative to the root (a leading `/` is dropped)
/// whose components may use `*` (any run of characters within a component), `?` (one
/// character) and a whole component `**` (any number of components). A pattern ignores
/// the paths it matches and everything below them: `var/log` ignores `var/log/messages`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreSet {
    patterns: Vec<Vec<String>>,
}

impl IgnoreSet {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> IgnoreSet {
        let patterns = patterns
            .iter()
            .map(|p| {
                p.as_ref()
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.is_empty())
            .collect();
        IgnoreSet { patterns }
    }

    /// Whether `path` (normalized, as in a fingerprint) is ignored. The root never is.
    pub fn matches(&self, path: &str) -> bool {
        if path == ROOT {
            return false;
        }
        let comps: Vec<&str> = path.split('/').collect();
        self.patterns
            .iter()
            .any(|p| (1..=comps.len()).any(|k| glob_components(p, &comps[..k])))
    }
}

fn glob_components(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((c, more)) => {
                glob_one(first.as_bytes(), c.as_bytes()) && glob_components(rest, more)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one component (byte-wise; `?` matches one byte).
fn glob_one(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_one(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_one(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob_one(rest, &s[1..]),
    }
}

/// Compares `actual` with `expected`, leaving out the paths `ignore` matches (see
/// [`IgnoreSet`]; pass [`DEFAULT_IGNORE`] for a running device). A root entry missing from
/// either side is not reported (a tar without a root member says nothing about the root).
pub fn compare<S: AsRef<str>>(expected: &Fingerprint, actual: &Fingerprint, ignore: &[S]) -> Diff {
    let ignore = IgnoreSet::new(ignore);
    let mut d = Diff::default();
    for (path, want) in &expected.entries {
        if ignore.matches(path) {
            continue;
        }
        match actual.get(path) {
            None if path == ROOT => {}
            None => d.missing.push(path.clone()),
            Some(have) => {
                if let Some(detail) = content_change(want, have) {
                    d.modified.push(Change {
                        path: path.clone(),
                        detail,
                    });
                }
                if let Some(detail) = metadata_change(want, have) {
                    d.changed_metadata.push(Change {
                        path: path.clone(),
                        detail,
                    });
                }
            }
        }
    }
    for path in actual.entries.keys() {
        if path != ROOT && !expected.entries.contains_key(path) && !ignore.matches(path) {
            d.added.push(path.clone());
        }
    }
    d
}

fn content_change(want: &Entry, have: &Entry) -> Option<String> {
    if want.kind != have.kind {
        return Some(format!(
            "type {} -> {}",
            want.kind.as_str(),
            have.kind.as_str()
        ));
    }
    match want.kind {
        Kind::File
            if want.size != have.size
                || want.sha256 != have.sha256
                || want.sparse_sha256 != have.sparse_sha256 =>
        {
            Some(format!(
                "content: {} bytes {} -> {} bytes {}",
                want.size.unwrap_or(0),
                digest(want),
                have.size.unwrap_or(0),
                digest(have)
            ))
        }
        Kind::Symlink if want.target != have.target => Some(format!(
            "target {} -> {}",
            want.target.as_deref().unwrap_or("?"),
            have.target.as_deref().unwrap_or("?")
        )),
        Kind::Char | Kind::Block if want.rdev != have.rdev => {
            let show = |r: Option<[u32; 2]>| r.map_or("?".into(), |[a, b]| format!("{a}:{b}"));
            Some(format!("device {} -> {}", show(want.rdev), show(have.rdev)))
        }
        _ => None,
    }
}

/// `sha256 0123456789ab` (or `sparse_sha256 …`), shortened.
fn digest(e: &Entry) -> String {
    let short = |s: &str| s[..s.len().min(12)].to_string();
    match (&e.sha256, &e.sparse_sha256) {
        (Some(s), _) => format!("sha256 {}", short(s)),
        (None, Some(s)) => format!("sparse_sha256 {}", short(s)),
        (None, None) => "sha256 ?".into(),
    }
}

fn metadata_change(want: &Entry, have: &Entry) -> Option<String> {
    let mut parts = Vec::new();
    // A symlink's own permission bits mean nothing on Linux.
    if want.mode != have.mode && want.kind != Kind::Symlink && have.kind != Kind::Symlink {
        parts.push(format!("mode {:04o} -> {:04o}", want.mode, have.mode));
    }
    if want.uid != have.uid {
        parts.push(format!("uid {} -> {}", want.uid, have.uid));
    }
    if want.gid != have.gid {
        parts.push(format!("gid {} -> {}", want.gid, have.gid));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let s = IgnoreSet::new(&[
            "var/log",
            "/etc/machine-id",
            "**/.ash_history",
            "home/*/cache",
            "a?c",
        ]);
        assert!(s.matches("var/log"));
        assert!(s.matches("var/log/messages"));
        assert!(!s.matches("var/logs"));
        assert!(!s.matches("var"));
        assert!(s.matches("etc/machine-id"));
        assert!(s.matches(".ash_history"));
        assert!(s.matches("root/.ash_history"));
        assert!(s.matches("home/u/cache/x"));
        assert!(!s.matches("home/u/v/cache"));
        assert!(s.matches("abc") && !s.matches("abbc"));
        assert!(!s.matches(ROOT));
        assert!(!IgnoreSet::new(&["", "/"]).matches("x"));
    }

    #[test]
    fn symlink_modes_are_not_compared() {
        let mut a = Entry::new("l".into(), Kind::Symlink, 0o777, 0, 0);
        a.target = Some("x".into());
        let mut b = a.clone();
        b.mode = 0o755;
        assert_eq!(metadata_change(&a, &b), None);
        b.uid = 5;
        assert_eq!(metadata_change(&a, &b).unwrap(), "uid 0 -> 5");
    }
}
