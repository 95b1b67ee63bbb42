//! OS versions: dot-separated numbers with an optional `-suffix` (`2.1.0`, `2.1.0-rc1`).
//!
//! Ordering compares the numeric parts (missing parts count as 0), then a version
//! without a suffix ranks above one with a suffix (a release is newer than its candidates),
//! then suffixes compare as strings.

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    parts: Vec<u64>,
    suffix: Option<String>,
    text: String,
}

impl Version {
    /// Parses a version; the text is kept as given for display.
    pub fn parse(s: &str) -> anyhow::Result<Version> {
        let (nums, suffix) = match s.split_once(['-', '+']) {
            Some((n, sfx)) => (n, Some(sfx.to_string())),
            None => (s, None),
        };
        let parts = nums
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    anyhow::bail!(
                        "invalid version {s:?}: expected numbers separated by dots, like 2.1.0"
                    )
                }
                p.parse::<u64>()
                    .map_err(|_| anyhow::anyhow!("invalid version {s:?}: number too large"))
            })
            .collect::<anyhow::Result<Vec<u64>>>()?;
        if s.chars().any(char::is_control) {
            anyhow::bail!("invalid version {s:?}: contains a control character");
        }
        if suffix.as_deref() == Some("") || parts.len() > 8 {
            anyhow::bail!("invalid version {s:?}");
        }
        Ok(Version {
            parts,
            suffix,
            text: s.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.suffix, &other.suffix) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn ordering() {
        assert!(v("2.0.0") > v("1.9.9"));
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("1.0").cmp(&v("1.0.0")), std::cmp::Ordering::Equal);
        assert!(v("2.0.0") > v("2.0.0-rc1"));
        assert!(v("2.0.0-rc2") > v("2.0.0-rc1"));
        assert!(v("3") > v("2.99.99"));
    }

    #[test]
    fn invalid() {
        for s in ["", "a", "1..2", "1.x", "1.0-", "-1", "1.2.3.4.5.6.7.8.9"] {
            assert!(Version::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
