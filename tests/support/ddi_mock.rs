//! A scripted hawkBit DDI server for the agent tests: fixed answers per path (JSON, bytes,
//! a status, a redirect, a stall), every request recorded (method, path, Authorization,
//! body). std only: one thread per connection, `Connection: close`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers on a path.
#[derive(Debug, Clone)]
pub enum Reply {
    Json(String),
    Bytes(Vec<u8>),
    Status(u16),
    Redirect(String),
    /// Read the request, then say nothing for this long.
    Stall(Duration),
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub auth: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Reply>,
    requests: Vec<Req>,
}

pub struct Ddi {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl Ddi {
    /// Starts the server on 127.0.0.1 at a free port.
    pub fn start() -> Ddi {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let i2 = inner.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let i3 = i2.clone();
                std::thread::spawn(move || {
                    let _ = serve(s, &i3);
                });
            }
        });
        Ddi { port, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/DEFAULT/controller/v1/ID` + `rest`.
    pub fn base(id: &str) -> String {
        format!("/DEFAULT/controller/v1/{id}")
    }

    pub fn set(&self, path: &str, r: Reply) {
        self.inner
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), r);
    }

    pub fn remove(&self, path: &str) {
        self.inner.lock().unwrap().routes.remove(path);
    }

    pub fn requests(&self) -> Vec<Req> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The bodies POSTed to a path ending in `suffix`, parsed.
    pub fn posted(&self, suffix: &str) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET" && r.path.ends_with(suffix))
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }

    /// The poll answer with these links (`name` -> path on this server).
    pub fn poll_json(&self, sleep: &str, links: &[(&str, &str)]) -> String {
        let l: serde_json::Map<String, serde_json::Value> = links
            .iter()
            .map(|(k, p)| (k.to_string(), serde_json::json!({ "href": self.url(p) })))
            .collect();
        serde_json::json!({ "config": { "polling": { "sleep": sleep } }, "_links": l }).to_string()
    }
}

fn serve(s: TcpStream, inner: &Mutex<Inner>) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    let mut auth = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or("").to_string();
    let reply = {
        let mut i = inner.lock().unwrap();
        i.requests.push(Req {
            method: method.clone(),
            path: path.clone(),
            auth,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        i.routes.get(&path).cloned()
    };
    let mut w = s;
    let (status, ctype, bytes, extra) = match reply {
        _ if method != "GET" => (200, "application/json", b"{}".to_vec(), String::new()),
        None => (404, "text/plain", b"not found".to_vec(), String::new()),
        Some(Reply::Json(j)) => (200, "application/hal+json", j.into_bytes(), String::new()),
        Some(Reply::Bytes(b)) => (200, "application/octet-stream", b, String::new()),
        Some(Reply::Status(c)) => (c, "text/plain", b"status".to_vec(), String::new()),
        Some(Reply::Redirect(to)) => (302, "text/plain", Vec::new(), format!("Location: {to}\r\n")),
        Some(Reply::Stall(d)) => {
            std::thread::sleep(d);
            return Ok(());
        }
    };
    write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        bytes.len()
    )?;
    w.write_all(&bytes)?;
    w.flush()
}
