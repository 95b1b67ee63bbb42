//! HTTP and HTTPS downloads (ureq over rustls with the `ring` provider): Range requests to
//! resume, `If-Range` so that a changed file restarts cleanly, connect and per-read
//! timeouts, and the system CA bundle or `--ca FILE` for https.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::origin::{OpenError, Opened, Origin};

/// TCP (and TLS) connection setup limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for any single read (headers or body) before the attempt counts as failed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Test and debug override of [`READ_TIMEOUT`] in milliseconds.
pub const READ_TIMEOUT_ENV: &str = "HUP_READ_TIMEOUT_MS";
/// Redirects followed for one request before giving up.
pub const MAX_REDIRECTS: u32 = 10;
/// Where the system CA bundle is looked for when `SSL_CERT_FILE` is not set, first found wins.
pub const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// An http(s) URL to download.
#[derive(Debug)]
pub struct HttpOrigin {
    url: String,
    agent: ureq::Agent,
    read_timeout: Duration,
    /// An `Authorization` header value, sent only to the source URL's scheme and authority.
    authorization: Option<String>,
}

/// The response body, with ureq's timeout errors turned into a `TimedOut` error that says
/// what happened.
struct TimeoutNamed<R> {
    inner: R,
    timeout: Duration,
}

impl<R: std::io::Read> std::io::Read for TimeoutNamed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let ureq_timeout = e
                .get_ref()
                .and_then(|x| x.downcast_ref::<ureq::Error>())
                .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
            if ureq_timeout || e.kind() == std::io::ErrorKind::TimedOut {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no data for {:.1} s (read timeout)",
                        self.timeout.as_secs_f64()
                    ),
                )
            } else {
                e
            }
        })
    }
}

impl HttpOrigin {
    /// `ca`: trust only the certificates of this PEM file instead of the system CA bundle.
    pub fn new(url: &str, ca: Option<&Path>) -> Result<HttpOrigin> {
        let tls = tls_config(url, ca)?;
        let read_timeout = read_timeout();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed here (`open`), so that one to another scheme is
            // refused by name.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(read_timeout))
            .timeout_recv_response(Some(read_timeout * 2))
            .user_agent(concat!("hup/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Ok(HttpOrigin {
            url: url.to_string(),
            agent,
            read_timeout,
            authorization: None,
        })
    }

    /// Sends `Authorization: value` with requests to this URL's scheme and authority.
    pub fn with_authorization(mut self, value: Option<&str>) -> HttpOrigin {
        self.authorization = value.map(str::to_string);
        self
    }
}

/// [`READ_TIMEOUT`], or [`READ_TIMEOUT_ENV`] when set.
pub fn read_timeout() -> Duration {
    std::env::var(READ_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(READ_TIMEOUT, Duration::from_millis)
}

/// `scheme://authority` of a URL (lower case), to tell whether a redirect left the host.
pub fn origin_of(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").unwrap_or(("", &lower));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{authority}")
}

/// The TLS settings for `url`: the certificates of `ca`, else the system CA bundle (which
/// plain http may lack).
pub fn tls_config(url: &str, ca: Option<&Path>) -> Result<TlsConfig> {
    // Process-wide default for rustls; an error only means it is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = url.to_ascii_lowercase().starts_with("https://");
    let roots = match ca {
        Some(f) => load_pem_certs(f)?,
        None => match system_ca_bundle() {
            Some(f) => load_pem_certs(&f)?,
            None if https => bail!(
                "no system CA bundle found (SSL_CERT_FILE, {}): use --ca FILE",
                CA_BUNDLES.join(", ")
            ),
            // Plain http: only a redirect to https would need roots, and then fails.
            None => Vec::new(),
        },
    };
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build())
}

/// `SSL_CERT_FILE`, else the first of [`CA_BUNDLES`] that exists.
fn system_ca_bundle() -> Option<std::path::PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        return Some(f.into());
    }
    CA_BUNDLES
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

/// Every certificate of a PEM file; at least one.
pub fn load_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        if let PemItem::Certificate(c) =
            item.map_err(|e| anyhow!("CA file {}: {e}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!("CA file {}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`) -> (first, total).
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let first = match range.trim() {
        "*" => return Some((0, total)),
        r => r.split_once('-')?.0.trim().parse().ok()?,
    };
    Some((first, total))
}

/// The URL a redirect's `Location` names, relative to `base`: absolute, `//host/…`,
/// `/path`, `?query` or a relative path. Only http and https are followed.
pub fn resolve_location(base: &str, location: &str) -> Result<String> {
    let loc = location.trim();
    let scheme = loc.split_once(':').map(|(s, _)| s).filter(|s| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let url = if scheme.is_some() {
        loc.to_string()
    } else {
        let (base_scheme, rest) = base
            .split_once("://")
            .with_context(|| format!("redirect from {base:?}: not a URL"))?;
        let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(cut);
        let path = tail.split(['?', '#']).next().unwrap_or("");
        if loc.starts_with("//") {
            format!("{base_scheme}:{loc}")
        } else if loc.starts_with('/') {
            format!("{base_scheme}://{authority}{}", without_dots(loc))
        } else if loc.starts_with('?') {
            format!("{base_scheme}://{authority}{path}{loc}")
        } else {
            let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
            format!(
                "{base_scheme}://{authority}{}",
                without_dots(&format!("{dir}{loc}"))
            )
        }
    };
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        bail!("the server redirected to {url:?}: only http:// and https:// URLs are followed");
    }
    Ok(url)
}

/// An absolute path (with any query) with its `.` and `..` segments resolved.
fn without_dots(path_query: &str) -> String {
    let cut = path_query.find(['?', '#']).unwrap_or(path_query.len());
    let (path, query) = path_query.split_at(cut);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        if last && matches!(*seg, "." | "..") {
            out.push("");
        }
    }
    format!("/{}{query}", out.join("/"))
}

fn classify(e: ureq::Error) -> OpenError {
    use std::io::ErrorKind;
    let transient = match &e {
        // Refused: nobody listens (as curl, not retried). InvalidData: TLS and protocol
        // errors (a bad certificate does not get better by asking again).
        ureq::Error::Io(io) => !matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::InvalidData
                | ErrorKind::InvalidInput
                | ErrorKind::PermissionDenied
                | ErrorKind::Unsupported
        ),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    };
    let err = anyhow!("request failed: {e}");
    if transient {
        OpenError::Transient(err)
    } else {
        OpenError::Permanent(err)
    }
}

impl Origin for HttpOrigin {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn open(&mut self, offset: u64, validator: Option<&str>) -> Result<Opened, OpenError> {
        let mut url = self.url.clone();
        let mut hops = 0;
        let resp = loop {
            let mut req = self.agent.get(&url);
            if let Some(auth) = &self.authorization
                && origin_of(&url) == origin_of(&self.url)
            {
                req = req.header("Authorization", auth);
            }
            if offset > 0 {
                req = req.header("Range", format!("bytes={offset}-"));
                if let Some(v) = validator {
                    req = req.header("If-Range", v);
                }
            }
            let resp = req.call().map_err(classify)?;
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                break resp;
            }
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    OpenError::Permanent(anyhow!("HTTP {status} redirect without a Location"))
                })?;
            let next = resolve_location(&url, location).map_err(OpenError::Permanent)?;
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(OpenError::Permanent(anyhow!(
                    "too many redirects (more than {MAX_REDIRECTS}; the last to {next})"
                )));
            }
            log::debug!("HTTP {status}: redirected to {next}");
            url = next;
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let validator = header("etag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header("last-modified"));
        let length: Option<u64> = header("content-length").and_then(|v| v.trim().parse().ok());
        let (start, total) = match status {
            200 => (0, length),
            206 => {
                let cr = header("content-range").unwrap_or_default();
                let (first, total) = parse_content_range(&cr).ok_or_else(|| {
                    OpenError::Permanent(anyhow!("HTTP 206 with an invalid Content-Range {cr:?}"))
                })?;
                if first != offset {
                    if offset == 0 {
                        return Err(OpenError::Permanent(anyhow!(
                            "HTTP 206 from byte {first} to a request for the whole file"
                        )));
                    }
                    // Not the part asked for: ask for the whole file instead.
                    log::info!(
                        "asked for bytes from {offset}, the server sent from {first}: restarting from byte 0"
                    );
                    return self.open(0, None);
                }
                (offset, total.or(length.map(|l| l + offset)))
            }
            416 if offset > 0 => {
                // Range not satisfiable: complete already, or the file shrank.
                let total = header("content-range").and_then(|v| parse_content_range(&v)?.1);
                if total == Some(offset) {
                    return Ok(Opened {
                        reader: Box::new(std::io::empty()),
                        start: offset,
                        total,
                        validator,
                    });
                }
                log::info!("the server refused to resume at byte {offset}; restarting");
                return self.open(0, None);
            }
            408 | 425 | 429 | 500..=599 => {
                return Err(OpenError::Transient(anyhow!(
                    "HTTP {status} {}",
                    resp.status().canonical_reason().unwrap_or("")
                )));
            }
            _ => {
                return Err(OpenError::Permanent(anyhow!(
                    "HTTP {status} {}",
                    resp.status().canonical_reason().unwrap_or("")
                )));
            }
        };
        let reader = TimeoutNamed {
            inner: resp.into_body().into_reader(),
            timeout: self.read_timeout,
        };
        Ok(Opened {
            reader: Box::new(reader),
            start,
            total,
            validator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */1000"), Some((0, Some(1000))));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

    #[test]
    fn redirect_locations() {
        let base = "http://h:8/a/b/v2.hup?x=1";
        let r = |l: &str| resolve_location(base, l);
        assert_eq!(r("https://o/x.hup").unwrap(), "https://o/x.hup");
        assert_eq!(r("//o/x.hup").unwrap(), "http://o/x.hup");
        assert_eq!(r("/x.hup").unwrap(), "http://h:8/x.hup");
        assert_eq!(r("?y=2").unwrap(), "http://h:8/a/b/v2.hup?y=2");
        assert_eq!(r("c/v3.hup").unwrap(), "http://h:8/a/b/c/v3.hup");
        assert_eq!(r("../v3.hup").unwrap(), "http://h:8/a/v3.hup");
        assert_eq!(r("./../../../v3.hup?q").unwrap(), "http://h:8/v3.hup?q");
        assert_eq!(r("/a/./c/../d/").unwrap(), "http://h:8/a/d/");
        assert_eq!(r("..").unwrap(), "http://h:8/a/");
        assert_eq!(
            resolve_location("http://h", "v.hup").unwrap(),
            "http://h/v.hup"
        );
        for bad in ["file:///etc/passwd", "FILE:/etc/passwd", "ftp://h/x"] {
            let e = r(bad).unwrap_err().to_string();
            assert!(e.contains("only http:// and https://"), "{e}");
        }
    }
}
