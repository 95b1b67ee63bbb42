//! Where a bundle comes from: a local file or an `http://` / `https://` URL, opened at a byte
//! offset so that an interrupted download resumes.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use super::http::HttpOrigin;
use super::origin::{OpenError, Opened, Origin};

/// A bundle source as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    /// `http://` and `https://` are URLs (any other scheme is refused); anything else is a path.
    pub fn parse(s: &str) -> Result<Source> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Source::Url(s.to_string()));
        }
        if let Some((scheme, _)) = s.split_once("://")
            && !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            anyhow::bail!(
                "unsupported source {s:?}: use a local path, an http:// or an https:// URL"
            );
        }
        Ok(Source::File(PathBuf::from(s)))
    }

    /// A safe file name for the partial download: the last path segment (query and fragment
    /// removed), characters outside `[A-Za-z0-9._-]` replaced by `_`; `bundle.hup` if none.
    pub fn file_name(&self) -> String {
        let raw = match self {
            Source::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Source::Url(u) => {
                let no_query = u.split(['?', '#']).next().unwrap_or("");
                let path = no_query.split_once("://").map_or(no_query, |(_, r)| r);
                match path.split_once('/') {
                    Some((_host, p)) => p.rsplit('/').next().unwrap_or("").to_string(),
                    None => String::new(),
                }
            }
        };
        let clean: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        if clean.is_empty() || clean.chars().all(|c| c == '.') {
            "bundle.hup".into()
        } else {
            clean
        }
    }

    /// The source for the downloader; `authorization`: a header value for http(s).
    pub fn origin(
        &self,
        ca: Option<&Path>,
        authorization: Option<&str>,
    ) -> Result<Box<dyn Origin>> {
        Ok(match self {
            Source::File(p) => Box::new(FileOrigin { path: p.clone() }),
            Source::Url(u) => Box::new(HttpOrigin::new(u, ca)?.with_authorization(authorization)),
        })
    }
}

/// A local file (a USB stick, a file copied by other means).
struct FileOrigin {
    path: PathBuf,
}

impl Origin for FileOrigin {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&mut self, offset: u64, validator: Option<&str>) -> Result<Opened, OpenError> {
        let name = self.path.display().to_string();
        let mut f = File::open(&self.path)
            .with_context(|| format!("opening {name}"))
            .map_err(OpenError::Permanent)?;
        let meta = f
            .metadata()
            .with_context(|| format!("reading {name}"))
            .map_err(OpenError::Permanent)?;
        if !meta.is_file() {
            return Err(OpenError::Permanent(anyhow!(
                "{name} is not a regular file"
            )));
        }
        let total = meta.len();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let this = format!("file:{total}:{mtime}");
        let start = if offset <= total && validator == Some(this.as_str()) {
            offset
        } else {
            0
        };
        f.seek(SeekFrom::Start(start))
            .with_context(|| format!("seeking in {name}"))
            .map_err(OpenError::Permanent)?;
        Ok(Opened {
            reader: Box::new(f),
            start,
            total: Some(total),
            validator: Some(this),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn parse_and_name() {
        assert_eq!(
            Source::parse("https://h:8/a/v2.hup?x=1").unwrap(),
            Source::Url("https://h:8/a/v2.hup?x=1".into())
        );
        assert!(Source::parse("ftp://h/x.hup").is_err());
        assert_eq!(
            Source::parse("/tmp/v2.hup").unwrap(),
            Source::File("/tmp/v2.hup".into())
        );
        let name = |s: &str| Source::parse(s).unwrap().file_name();
        assert_eq!(name("https://h:8/a/v2.hup?x=1#f"), "v2.hup");
        assert_eq!(name("http://h"), "bundle.hup");
        assert_eq!(name("http://h/"), "bundle.hup");
        assert_eq!(name("http://h/a/b%20c d.hup"), "b_20c_d.hup");
        assert_eq!(name("/x/../up.hup"), "up.hup");
        assert_eq!(name("http://h/.."), "bundle.hup");
    }

    #[test]
    fn file_origin_resumes_only_the_same_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.hup");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut o = Source::File(p.clone()).origin(None, None).unwrap();
        let first = o.open(0, None).unwrap();
        assert_eq!((first.start, first.total), (0, Some(10)));
        let v = first.validator.unwrap();
        let mut again = o.open(4, Some(&v)).unwrap();
        assert_eq!(again.start, 4);
        let mut s = String::new();
        again.reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "456789");
        assert_eq!(o.open(4, Some("file:1:2")).unwrap().start, 0);
        assert!(matches!(
            Source::File(t.path().join("nope"))
                .origin(None, None)
                .unwrap()
                .open(0, None),
            Err(OpenError::Permanent(_))
        ));
    }
}
