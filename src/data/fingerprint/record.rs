//! The fingerprint record: its entries, their kinds, the JSON document and path escaping
//! (docs/fingerprint.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The format number written in a fingerprint document without `sparse_sha256` entries
/// (byte-identical with the documents hup wrote before sparse digests existed).
pub const FORMAT: u32 = 1;
/// The format number of a document with at least one `sparse_sha256` entry (readers of
/// format 1 only refuse it with a clear message instead of misreading it).
pub const FORMAT_SPARSE: u32 = 2;
/// The path of the root directory's own record.
pub const ROOT: &str = ".";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One entry of the tree. Paths are relative to the root, without a leading `/` or `./`
/// (the root itself is [`ROOT`]), escaped with [`escape_path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Permission bits (07777), written as 4 octal digits.
    #[serde(with = "octal")]
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: the size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Regular files: lowercase hex SHA-256 of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Regular files recorded from a sparse archive member, instead of `sha256`: the
    /// content digest in which holes cost nothing (docs/fingerprint.md, [`SparseHasher`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_sha256: Option<String>,
    /// Symlinks: the target, escaped like paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Character and block devices: `[major, minor]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<[u32; 2]>,
}

impl Entry {
    /// An entry of `kind` with the metadata every entry has.
    pub fn new(path: String, kind: Kind, mode: u32, uid: u32, gid: u32) -> Entry {
        Entry {
            path,
            kind,
            mode: mode & 0o7777,
            uid,
            gid,
            size: None,
            sha256: None,
            sparse_sha256: None,
            target: None,
            rdev: None,
        }
    }
}

mod octal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        match u32::from_str_radix(&s, 8) {
            Ok(m) if m <= 0o7777 && !s.is_empty() => Ok(m),
            _ => Err(D::Error::custom(format!(
                "mode {s:?} is not octal permission bits (0000-7777)"
            ))),
        }
    }
}

/// A whole tree: entries by path, in byte order of their paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub entries: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: u32,
    entries: Vec<Entry>,
}

impl Fingerprint {
    /// Adds or replaces the entry at its path.
    pub fn insert(&mut self, e: Entry) {
        self.entries.insert(e.path.clone(), e);
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The document: `{"format":1,"entries":[` (format 2 when an entry has a
    /// `sparse_sha256`) then one entry per line, sorted by path. The same tree always gives
    /// the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64 + self.entries.len() * 160);
        let format = if self.entries.values().any(|e| e.sparse_sha256.is_some()) {
            FORMAT_SPARSE
        } else {
            FORMAT
        };
        let _ = write!(out, "{{\"format\":{format},\"entries\":[");
        for (i, e) in self.entries.values().enumerate() {
            out.push_str(if i == 0 { "\n" } else { ",\n" });
            out.push_str(&serde_json::to_string(e).expect("an entry serializes"));
        }
        out.push_str("\n]}\n");
        out.into_bytes()
    }

    /// Parses a document; refuses another format, unknown fields and a path listed twice.
    pub fn from_json(bytes: &[u8]) -> Result<Fingerprint> {
        // One pass straight into the document; only a document that does not parse (or has
        // another format) is looked at again as plain JSON, for a precise error.
        let doc = match serde_json::from_slice::<Document>(bytes) {
            Ok(doc) if doc.format == FORMAT || doc.format == FORMAT_SPARSE => doc,
            parsed => {
                let raw: serde_json::Value =
                    serde_json::from_slice(bytes).context("invalid JSON")?;
                match raw.get("format").and_then(|f| f.as_u64()) {
                    Some(f) if f == u64::from(FORMAT) || f == u64::from(FORMAT_SPARSE) => {}
                    Some(f) => bail!(
                        "unknown fingerprint format {f} (this hup reads formats {FORMAT} and {FORMAT_SPARSE})"
                    ),
                    None => bail!("missing or non-numeric \"format\""),
                }
                parsed.context("invalid fingerprint")?
            }
        };
        let format = u64::from(doc.format);
        let mut fp = Fingerprint::default();
        for e in doc.entries {
            if e.sparse_sha256.is_some() && format == u64::from(FORMAT) {
                bail!(
                    "path {:?} has a sparse_sha256 in a format {FORMAT} document",
                    e.path
                );
            }
            if fp.entries.contains_key(&e.path) {
                bail!("path {:?} is listed twice", e.path);
            }
            fp.insert(e);
        }
        Ok(fp)
    }

    /// Reads a fingerprint file.
    pub fn load(path: &Path) -> Result<Fingerprint> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading fingerprint {}", path.display()))?;
        Fingerprint::from_json(&bytes)
            .with_context(|| format!("parsing fingerprint {}", path.display()))
    }

    /// Writes the fingerprint to `path` atomically (mode 0644).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.to_json(), 0o644)
            .with_context(|| format!("writing fingerprint {}", path.display()))
    }
}

/// A path (or symlink target) as a JSON string: UTF-8 is kept, a backslash is doubled and
/// every byte that is not part of valid UTF-8 is written `\xNN` (two lowercase hex digits).
pub fn escape_path(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes of an escaped path (the inverse of [`escape_path`]).
pub fn unescape_path(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') if i + 4 <= b.len() => {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                let v = u8::from_str_radix(hex, 16)
                    .with_context(|| format!("bad escape \\x{hex} in {s:?}"))?;
                out.push(v);
                i += 4;
            }
            _ => bail!("bad escape at byte {i} in {s:?}"),
        }
    }
    Ok(out)
}

/// Normalizes an archive member name or a relative path: leading `/`, empty and `.`
/// components are dropped, `..` is refused (as the ext4 writer does). The root is [`ROOT`].
pub fn normalize(raw: &[u8]) -> Result<String> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!(
                "{:?}: a \"..\" component leaves the root; refused",
                escape_path(raw)
            ),
            _ => comps.push(c),
        }
    }
    if comps.is_empty() {
        return Ok(ROOT.to_string());
    }
    Ok(escape_path(&comps.join(&b'/')))
}

/// The parent of a normalized path (`None` for the root).
pub fn parent(path: &str) -> Option<&str> {
    if path == ROOT {
        return None;
    }
    Some(path.rsplit_once('/').map_or(ROOT, |(p, _)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        for raw in [
            &b"usr/bin/ls"[..],
            b"caf\xc3\xa9",
            b"odd\xffname",
            b"back\\slash",
            b"\\x41",
        ] {
            let e = escape_path(raw);
            assert_eq!(unescape_path(&e).unwrap(), raw, "{e}");
        }
        assert_eq!(escape_path(b"odd\xffname"), "odd\\xffname");
        assert_eq!(escape_path(b"back\\slash"), "back\\\\slash");
        assert!(unescape_path("a\\q").is_err());
    }

    #[test]
    fn normalizes_members() {
        assert_eq!(normalize(b"./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(normalize(b"/etc//passwd").unwrap(), "etc/passwd");
        assert_eq!(normalize(b"./").unwrap(), ROOT);
        assert!(normalize(b"a/../../x").is_err());
        assert_eq!(parent("usr/bin"), Some("usr"));
        assert_eq!(parent("usr"), Some(ROOT));
        assert_eq!(parent(ROOT), None);
    }

    #[test]
    fn json_is_deterministic_and_strict() {
        let mut fp = Fingerprint::default();
        let mut f = Entry::new("b".into(), Kind::File, 0o100644, 0, 0);
        f.size = Some(3);
        f.sha256 = Some("ab".repeat(32));
        fp.insert(f);
        fp.insert(Entry::new(ROOT.into(), Kind::Dir, 0o755, 0, 0));
        let text = String::from_utf8(fp.to_json()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"format\":1,\"entries\":[\n\
                 {{\"path\":\".\",\"type\":\"dir\",\"mode\":\"0755\",\"uid\":0,\"gid\":0}},\n\
                 {{\"path\":\"b\",\"type\":\"file\",\"mode\":\"0644\",\"uid\":0,\"gid\":0,\"size\":3,\"sha256\":\"{}\"}}\n]}}\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(Fingerprint::from_json(text.as_bytes()).unwrap(), fp);
        assert!(Fingerprint::from_json(br#"{"format":3,"entries":[]}"#).is_err());
        assert!(Fingerprint::from_json(br#"{"format":1,"entries":[],"x":1}"#).is_err());
        let dup = r#"{"format":1,"entries":[
            {"path":"a","type":"dir","mode":"0755","uid":0,"gid":0},
            {"path":"a","type":"dir","mode":"0755","uid":0,"gid":0}]}"#;
        assert!(Fingerprint::from_json(dup.as_bytes()).is_err());
        let bad_mode =
            r#"{"format":1,"entries":[{"path":"a","type":"dir","mode":"999","uid":0,"gid":0}]}"#;
        assert!(Fingerprint::from_json(bad_mode.as_bytes()).is_err());
    }
}
