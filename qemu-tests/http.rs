//! A tiny HTTP/1.1 file server for the guests: serves one directory on the host's
//! 127.0.0.1 (the guest reaches it at 10.0.2.2 through QEMU user networking).
//!
//! GET and HEAD, `Range: bytes=N-` / `bytes=N-M` (206), one request per connection
//! (`Connection: close`). Every request is recorded so that tests can check what the
//! guest fetched. One server per test process, started on first use.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

/// Where the guest finds the host's loopback.
pub const GUEST_HOST: &str = "10.0.2.2";

/// A running server.
pub struct Server {
    pub root: PathBuf,
    pub port: u16,
    requests: Mutex<Vec<String>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The process's server, serving `root` (created if needed); `root` counts on first use only.
pub fn server(root: &Path) -> &'static Server {
    SERVER.get_or_init(|| start(root).expect("starting the test HTTP server"))
}

fn start(root: &Path) -> Result<Server> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let port = listener.local_addr().context("local address")?.port();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let s = SERVER.get().expect("server registered before serving");
                if let Err(e) = handle(s, conn) {
                    eprintln!("test http server: {e:#}");
                }
            });
        }
    });
    Ok(Server {
        root,
        port,
        requests: Mutex::new(Vec::new()),
    })
}

impl Server {
    /// The URL of `rel` (a path under the root) as the guest sees it.
    pub fn guest_url(&self, rel: &str) -> String {
        format!(
            "http://{GUEST_HOST}:{}/{}",
            self.port,
            rel.trim_start_matches('/')
        )
    }

    /// The host path of `rel`, its parent directory created.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.root.join(rel.trim_start_matches('/'));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(p)
    }

    /// Writes `rel` atomically (a guest may be fetching the old content).
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.path(rel)?;
        let tmp = p.with_extension("tmp-put");
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))?;
        Ok(p)
    }

    /// Request lines served so far with their status (`GET /a/b 200`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `/a/b` -> ROOT/a/b, refusing anything but plain components.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split('?').next()?.trim_start_matches('/');
    let rel = Path::new(path);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

/// `bytes=N-` or `bytes=N-M` -> (first, last inclusive) within `len`.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = a.trim().parse().ok()?;
    let last: u64 = match b.trim() {
        "" => len.checked_sub(1)?,
        n => n.parse::<u64>().ok()?.min(len.checked_sub(1)?),
    };
    (first <= last).then_some((first, last))
}

fn handle(s: &Server, conn: TcpStream) -> Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = conn;
    let file = resolve(&s.root, target)
        .filter(|p| p.is_file())
        .and_then(|p| std::fs::File::open(p).ok());
    let status = match (method, file) {
        ("GET" | "HEAD", Some(mut f)) => {
            let len = f.metadata()?.len();
            let (code, first, last) = match range.as_deref().map(|r| parse_range(r, len)) {
                None => (200, 0, len.saturating_sub(1)),
                Some(Some((a, b))) => (206, a, b),
                Some(None) => {
                    write!(
                        out,
                        "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )?;
                    record(s, method, target, 416);
                    return Ok(());
                }
            };
            let body = if len == 0 { 0 } else { last - first + 1 };
            let mut head = format!(
                "HTTP/1.1 {code} {}\r\nContent-Length: {body}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
                if code == 200 { "OK" } else { "Partial Content" }
            );
            if code == 206 {
                head.push_str(&format!("Content-Range: bytes {first}-{last}/{len}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            if method == "GET" && body > 0 {
                f.seek(SeekFrom::Start(first))?;
                std::io::copy(&mut f.take(body), &mut out)?;
            }
            code
        }
        ("GET" | "HEAD", None) => {
            out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            404
        }
        _ => {
            out.write_all(
                b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            405
        }
    };
    out.flush()?;
    record(s, method, target, status);
    Ok(())
}

fn record(s: &Server, method: &str, target: &str, status: u16) {
    s.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{method} {target} {status}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_paths() {
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 19)));
        assert_eq!(parse_range("bytes=10-500", 100), Some((10, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=1-2", 100), None);
        let root = Path::new("/srv");
        assert_eq!(
            resolve(root, "/a/b.hup?x=1"),
            Some(PathBuf::from("/srv/a/b.hup"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
    }
}
