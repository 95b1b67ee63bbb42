//! The HTTP responses `hup stage` handles: a local server answers every request with the
//! input (after its first byte), and `HttpOrigin::open` reads it at an offset the first
//! byte chooses (status handling, Content-Range, Content-Length, validators), then the body
//! as far as it goes. Also `parse_content_range` on the input as text. Responses naming a
//! `Location` are skipped: redirects are ureq's, and would leave the machine.
#![no_main]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hup::stage::http::{HttpOrigin, parse_content_range};
use hup::stage::origin::Origin;
use libfuzzer_sys::fuzz_target;

static RESPONSE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A server on 127.0.0.1 answering each connection with [`RESPONSE`] and closing it.
fn server() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                answer(c);
            }
        });
        port
    })
}

fn answer(mut c: TcpStream) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let resp = RESPONSE.lock().unwrap().clone();
    let _ = c.write_all(&resp);
    let _ = c.shutdown(std::net::Shutdown::Both);
}

/// A CA file for `HttpOrigin::new`: one PEM block (never used: the server is plain http).
fn ca_file() -> &'static std::path::Path {
    static CA: OnceLock<tempfile::NamedTempFile> = OnceLock::new();
    CA.get_or_init(|| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        f
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_content_range(s);
    }
    let Some((&sel, response)) = data.split_first() else {
        return;
    };
    if response
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"location"))
    {
        return;
    }
    let port = server();
    *RESPONSE.lock().unwrap() = response.to_vec();
    let offset = u64::from(sel & 0x7f) * 100;
    let validator = (sel & 0x80 != 0).then_some("\"v1\"");
    let mut origin = HttpOrigin::new(&format!("http://127.0.0.1:{port}/b.hup"), Some(ca_file()))
        .expect("an origin for a local URL");
    if let Ok(mut opened) = origin.open(offset, validator) {
        assert!(
            opened.start == offset || opened.start == 0,
            "start {}",
            opened.start
        );
        let mut body = Vec::new();
        let _ = (&mut opened.reader).take(1 << 20).read_to_end(&mut body);
    }
});
