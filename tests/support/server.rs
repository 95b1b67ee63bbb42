//! The test HTTP/1.1 server: Range requests, ETag/If-Range, a cut-off and a stall switch,
//! throttling, no-Content-Length mode, optional TLS; counts the body bytes it serves. And
//! misbehaviours: junk after the file, a lying Content-Length, a slow drip, a 206 from
//! another start than asked, redirects.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;

/// What the server does; tests change it between runs.
#[derive(Default)]
pub struct Shared {
    pub files: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// Honour `Range: bytes=N-` (else always 200 with the whole file).
    pub range: AtomicBool,
    /// Close the connection when the body reaches this absolute offset.
    pub cut_at: Mutex<Option<u64>>,
    /// Stop sending (but keep the connection open for 5 s) at this absolute offset.
    pub stall_at: Mutex<Option<u64>>,
    /// Sleep after every 16 KiB of body.
    pub throttle: Mutex<Option<Duration>>,
    /// Send no Content-Length (the body ends when the connection closes).
    pub no_length: AtomicBool,
    /// Body bytes written, all requests together.
    pub served: AtomicU64,
    /// One line per request: `GET /path range=<Range header or ->`.
    pub requests: Mutex<Vec<String>>,
    /// After the file, send this many more bytes of 0xEE (part of the body).
    pub junk_after: Mutex<Option<u64>>,
    /// Announce this Content-Length instead of the true one.
    pub lie_length: Mutex<Option<u64>>,
    /// Send this many bytes, then sleep this long, over and over.
    pub drip: Mutex<Option<(usize, Duration)>>,
    /// Answer a Range request with a 206 that starts at this offset instead.
    pub range_start: Mutex<Option<u64>>,
    /// Path -> Location: answered with a 302.
    pub redirects: Mutex<HashMap<String, String>>,
}

pub struct Server {
    pub base: String,
    pub shared: Arc<Shared>,
}

type Tls = Option<Arc<rustls::ServerConfig>>;

impl Server {
    pub fn http() -> Server {
        Server::start(None)
    }

    /// An https server with a certificate for 127.0.0.1 signed by the CA of `pki`.
    pub fn https(pki: &Pki) -> Server {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server_der.clone().into()], pki.key_der())
            .unwrap();
        Server::start(Some(Arc::new(cfg)))
    }

    fn start(tls: Tls) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        shared.range.store(true, Ordering::SeqCst);
        let s2 = shared.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (shared, tls) = (s2.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared, tls);
                });
            }
        });
        Server {
            base: format!("{scheme}://127.0.0.1:{port}"),
            shared,
        }
    }

    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        self.shared
            .files
            .lock()
            .unwrap()
            .insert(path.to_string(), Arc::new(bytes));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.shared.served.store(0, Ordering::SeqCst);
        self.shared.requests.lock().unwrap().clear();
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn set_cut(&self, at: Option<u64>) {
        *self.shared.cut_at.lock().unwrap() = at;
    }

    pub fn set_stall(&self, at: Option<u64>) {
        *self.shared.stall_at.lock().unwrap() = at;
    }

    pub fn set_range(&self, on: bool) {
        self.shared.range.store(on, Ordering::SeqCst);
    }

    pub fn set_throttle(&self, d: Option<Duration>) {
        *self.shared.throttle.lock().unwrap() = d;
    }

    pub fn set_junk_after(&self, n: Option<u64>) {
        *self.shared.junk_after.lock().unwrap() = n;
    }

    pub fn set_lie_length(&self, n: Option<u64>) {
        *self.shared.lie_length.lock().unwrap() = n;
    }

    pub fn set_no_length(&self, on: bool) {
        self.shared.no_length.store(on, Ordering::SeqCst);
    }

    pub fn set_drip(&self, d: Option<(usize, Duration)>) {
        *self.shared.drip.lock().unwrap() = d;
    }

    pub fn set_range_start(&self, at: Option<u64>) {
        *self.shared.range_start.lock().unwrap() = at;
    }

    pub fn redirect(&self, path: &str, location: &str) {
        self.shared
            .redirects
            .lock()
            .unwrap()
            .insert(path.to_string(), location.to_string());
    }
}

fn serve(tcp: TcpStream, shared: &Shared, tls: Tls) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    match tls {
        None => {
            let mut s = tcp;
            respond(&mut s, shared)?;
            let _ = s.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            respond(&mut s, shared)?;
            s.flush()?;
            // No close_notify when cut: the client sees the connection drop.
            if shared.cut_at.lock().unwrap().is_none() {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            Ok(())
        }
    }
}

fn respond(s: &mut (impl Read + Write), shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let range = header("range");
    shared.requests.lock().unwrap().push(format!(
        "GET {path} range={}",
        range.clone().unwrap_or_else(|| "-".into())
    ));
    if let Some(to) = shared.redirects.lock().unwrap().get(&path) {
        let msg = format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(msg.as_bytes())?;
        return Ok(());
    }
    let Some(file) = shared.files.lock().unwrap().get(&path).cloned() else {
        s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        )?;
        return Ok(());
    };
    let len = file.len() as u64;
    let etag = format!(
        "\"{}\"",
        &hex::encode(sha2::Sha256::digest(&file[..]))[..16]
    );
    let mut start = 0u64;
    let mut status = "200 OK".to_string();
    let mut extra = String::new();
    if shared.range.load(Ordering::SeqCst)
        && let Some(r) = &range
        && header("if-range").is_none_or(|v| v == etag)
    {
        let from: u64 = r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        if from >= len {
            let msg = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(msg.as_bytes())?;
            return Ok(());
        }
        let from = shared.range_start.lock().unwrap().unwrap_or(from);
        start = from;
        status = "206 Partial Content".into();
        extra = format!("Content-Range: bytes {from}-{}/{len}\r\n", len - 1);
    }
    let junk = shared.junk_after.lock().unwrap().unwrap_or(0);
    let length = if shared.no_length.load(Ordering::SeqCst) {
        String::new()
    } else {
        let n = shared.lie_length.lock().unwrap().unwrap_or(len - start);
        format!("Content-Length: {n}\r\n")
    };
    let accept = if shared.range.load(Ordering::SeqCst) {
        "Accept-Ranges: bytes\r\n"
    } else {
        ""
    };
    let msg = format!(
        "HTTP/1.1 {status}\r\n{length}{extra}{accept}ETag: {etag}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(msg.as_bytes())?;
    let cut = *shared.cut_at.lock().unwrap();
    let stall = *shared.stall_at.lock().unwrap();
    let throttle = *shared.throttle.lock().unwrap();
    let drip = *shared.drip.lock().unwrap();
    let mut pos = start;
    while pos < len {
        let step = drip.map_or(16 * 1024, |(n, _)| n as u64);
        let mut end = (pos + step).min(len);
        if let Some(c) = cut.or(stall) {
            end = end.min(c.max(pos));
        }
        if end == pos {
            if stall.is_some() {
                s.flush()?;
                std::thread::sleep(Duration::from_secs(5));
            }
            break; // the cut: close here
        }
        s.write_all(&file[pos as usize..end as usize])?;
        shared.served.fetch_add(end - pos, Ordering::SeqCst);
        pos = end;
        if let Some(d) = throttle.or(drip.map(|(_, d)| d)) {
            s.flush()?;
            std::thread::sleep(d);
        }
    }
    let mut left = if pos == len { junk } else { 0 };
    let block = [0xEEu8; 16 * 1024];
    while left > 0 {
        let n = left.min(block.len() as u64);
        s.write_all(&block[..n as usize])?;
        shared.served.fetch_add(n, Ordering::SeqCst);
        left -= n;
    }
    s.flush()
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub server_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "hup test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    fn key_der(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}
