//! Decompressed payload streams: a worker thread reads the verified compressed member,
//! decompresses it and hands the bytes over a bounded channel. After the decompressor ends,
//! the worker reads what is left of the member and checks its size and sha256, so the
//! consumer's final read fails unless the whole member was authentic.
//!
//! The consumer hands every chunk buffer it is done with back to the worker, which fills it
//! again: a fresh 256 KiB buffer per chunk would be mapped and unmapped by the allocator each
//! time (musl maps allocations this large), and its page faults cost about a tenth of an
//! apply's CPU time.
//!
//! The decompressed bytes are bounded by the member's signed `unpacked_size` (set on the
//! [`VerifyingReader`] by the bundle reader): the worker stops with an error as soon as the
//! stream exceeds it, so a small member that expands to gigabytes costs nothing.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use super::verified::VerifyingReader;
use crate::archive::io::read_full;

const CHUNK: usize = 256 * 1024;
/// Chunks in flight: bounds memory at DEPTH * CHUNK.
const DEPTH: usize = 8;

/// A `Read` of the decompressed payload, fed by a worker thread.
#[derive(Debug)]
pub struct Decompressed {
    rx: Receiver<io::Result<Vec<u8>>>,
    /// Buffers handed back to the worker for reuse.
    recycle: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    worker: Option<JoinHandle<()>>,
}

/// Starts decompressing `member` (zstd) in a worker thread. With an unpacked limit on
/// `member` ([`VerifyingReader::with_unpacked_limit`]), more decompressed bytes than that
/// are an error, raised before they are handed over.
pub fn zstd_stream<R: Read + Send + 'static>(member: VerifyingReader<R>) -> Decompressed {
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, spare) = sync_channel(DEPTH + 1);
    let worker = std::thread::Builder::new()
        .name("hup-unzstd".into())
        .spawn(move || work(member, tx, spare))
        .expect("spawning the decompression thread");
    Decompressed {
        rx,
        recycle,
        buf: Vec::new(),
        pos: 0,
        done: false,
        worker: Some(worker),
    }
}

fn work<R: Read>(
    member: VerifyingReader<R>,
    tx: SyncSender<io::Result<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
) {
    let limit = member.unpacked_limit().unwrap_or(u64::MAX);
    let name = member.name().to_string();
    let mut total: u64 = 0;
    let mut dec = match zstd::stream::read::Decoder::new(member) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    loop {
        let mut chunk = match spare.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) => Vec::new(),
            Err(TryRecvError::Disconnected) => return, // the consumer went away
        };
        chunk.resize(CHUNK, 0);
        match read_full(&mut dec, &mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                total = total.saturating_add(n as u64);
                if total > limit {
                    let _ = tx.send(Err(io::Error::other(format!(
                        "{name}: decompresses to more than the {limit} bytes the manifest signs \
                         (unpacked_size); refused"
                    ))));
                    return;
                }
                chunk.truncate(n);
                if tx.send(Ok(chunk)).is_err() {
                    return; // the consumer went away
                }
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::new(e.kind(), format!("decompressing: {e}"))));
                return;
            }
        }
    }
    // The frames ended: the rest of the member must still be checked.
    // Bytes the decoder buffered but did not use are hashed already; the rest is read now.
    let member = dec.finish().into_inner();
    let end = member.finish().map_err(io::Error::other);
    let _ = tx.send(end.map(|()| Vec::new()));
}

impl Read for Decompressed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.buf, chunk);
                    // The worker may not want it (it has enough, or it ended): then it is freed.
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("decompression thread ended unexpectedly"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Decompressed {
    /// Reads to the end (the consumer may have stopped at the tar end marker), which
    /// surfaces a verification failure of the member.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }
}

impl Drop for Decompressed {
    fn drop(&mut self) {
        // Unblock the worker (it sees the closed channel) and wait for it.
        let (_, dead) = sync_channel(0);
        self.rx = dead;
        let (gone, _) = sync_channel(0);
        self.recycle = gone;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::verified::sha256_of;

    fn compressed(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    #[test]
    fn good_and_bad_members() {
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 97) as u8).collect();
        let z = compressed(&data);
        let (sha, len) = sha256_of(&z[..]).unwrap();
        let member = VerifyingReader::new(std::io::Cursor::new(z.clone()), "m", len, &sha);
        let mut out = Vec::new();
        zstd_stream(member).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);

        // Trailing garbage after the frame is not part of a valid member: the digest fails.
        let mut bad = z.clone();
        bad.extend_from_slice(b"junk");
        let member = VerifyingReader::new(std::io::Cursor::new(bad), "m", len + 4, &sha);
        let mut s = zstd_stream(member);
        let mut first = vec![0u8; 1000];
        s.read_exact(&mut first).unwrap();
        let e = s.finish().unwrap_err().to_string();
        assert!(
            e.contains("sha256 mismatch") || e.contains("decompressing"),
            "{e}"
        );
    }

    #[test]
    fn recycled_buffers_keep_the_bytes() {
        // About 20 chunks, the last one short, of bytes that differ everywhere: a buffer
        // handed back and filled again must not keep or lose a byte.
        let mut x: u32 = 0x9e37_79b9;
        let data: Vec<u8> = (0..5_000_123)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        let z = compressed(&data);
        let (sha, len) = sha256_of(&z[..]).unwrap();
        let member = VerifyingReader::new(std::io::Cursor::new(z), "m", len, &sha);
        let mut s = zstd_stream(member);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 100_003];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out.len(), data.len());
        assert!(out == data, "the decompressed bytes differ");
    }

    #[test]
    fn stops_past_the_unpacked_size() {
        // 64 MiB of zeros compress to a few KiB; the manifest says 1 MiB.
        let data = vec![0u8; 64 << 20];
        let z = compressed(&data);
        let (sha, len) = sha256_of(&z[..]).unwrap();
        let member = VerifyingReader::new(std::io::Cursor::new(z.clone()), "member m", len, &sha)
            .with_unpacked_limit(1 << 20);
        let mut s = zstd_stream(member);
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let e = loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("read to the end"),
                Ok(n) => got += n as u64,
                Err(e) => break e.to_string(),
            }
        };
        assert!(got <= 1 << 20, "{got} bytes handed over");
        assert_eq!(
            e,
            "member m: decompresses to more than the 1048576 bytes the manifest signs \
             (unpacked_size); refused"
        );
        // Exactly the limit is fine.
        let member = VerifyingReader::new(std::io::Cursor::new(z), "member m", len, &sha)
            .with_unpacked_limit(64 << 20);
        let mut out = Vec::new();
        zstd_stream(member).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 64 << 20);
    }
}
