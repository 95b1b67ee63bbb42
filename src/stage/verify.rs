//! Final verification of a finished download, before anything is marked staged.
//!
//! The bundle reader opens the file (structure, signature by a trusted key, member list
//! against the manifest; no payload data is read). Each payload's digest then comes from
//! the stream (`stream.rs`) when the streamed member has exactly the reader's offset and
//! size; otherwise, or when the stream could not be followed, the payload is read again.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::stream::Summary;
use crate::bundle::reader::Bundle;
use crate::bundle::sign::TrustedKeys;

/// Checks `--sha256` (when given) against the whole file's digest.
pub fn check_sha256(expected: Option<&str>, summary: &Summary) -> Result<()> {
    if let Some(want) = expected
        && !want.eq_ignore_ascii_case(&summary.sha256)
    {
        bail!(
            "sha256 mismatch: --sha256 expects {}, the download is {}",
            want.to_ascii_lowercase(),
            summary.sha256
        );
    }
    Ok(())
}

/// A `--sha256` argument: 64 hex digits, returned in lowercase.
pub fn parse_sha256(s: &str) -> Result<String> {
    let t = s.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--sha256 {s:?}: expected 64 hexadecimal digits");
    }
    Ok(t.to_ascii_lowercase())
}

/// Opens and verifies the downloaded bundle at `path`. Returns the bundle and how many
/// payloads had to be read again (0 when every digest came from the stream).
pub fn verify(path: &Path, summary: &Summary, keys: &TrustedKeys) -> Result<(Bundle, usize)> {
    let bundle = Bundle::open(path, keys)?;
    let mut reread = 0;
    for p in &bundle.manifest.payloads {
        let member = bundle
            .scan
            .payload_members
            .iter()
            .find(|m| m.name == p.name)
            .with_context(|| format!("member {}: missing", p.name))?;
        let streamed = summary.members.as_ref().and_then(|ms| {
            ms.iter()
                .find(|s| s.offset == member.offset && s.size == member.size)
        });
        match streamed {
            Some(s) => {
                if s.size != p.size || s.sha256 != p.sha256 {
                    bail!(
                        "member {}: sha256 mismatch: expected {}, got {}",
                        p.name,
                        p.sha256,
                        s.sha256
                    );
                }
            }
            None => {
                log::debug!(
                    "member {}: not followed in the stream; reading it again",
                    p.name
                );
                bundle
                    .payload_reader(p)?
                    .finish()
                    .with_context(|| path.display().to_string())?;
                reread += 1;
            }
        }
    }
    Ok((bundle, reread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_argument() {
        let h = "AB".repeat(32);
        assert_eq!(parse_sha256(&h).unwrap(), "ab".repeat(32));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
        let s = Summary {
            sha256: "ab".repeat(32),
            len: 1,
            members: None,
            checked_early: false,
        };
        assert!(check_sha256(Some(&h), &s).is_ok());
        assert!(check_sha256(None, &s).is_ok());
        let e = check_sha256(Some(&"cd".repeat(32)), &s)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sha256 mismatch: --sha256 expects cdcd"),
            "{e}"
        );
    }
}
