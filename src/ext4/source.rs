//! The tar stream of the ext4 writer: read-ahead (and zstd decompression) in a separate
//! thread. What each member's header means is read by [`crate::archive::member`].

use std::io::{self, Cursor, Read};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use anyhow::{Context, Result};

const CHUNK: usize = 1 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Wraps `r` in a zstd decoder when the stream starts with the zstd magic number.
pub fn maybe_decompress<R: Read + Send + 'static>(mut r: R) -> Result<Box<dyn Read + Send>> {
    let mut head = Vec::with_capacity(4);
    (&mut r)
        .take(4)
        .read_to_end(&mut head)
        .context("reading the start of the tar stream")?;
    let is_zstd = head == ZSTD_MAGIC;
    let chained = Cursor::new(head).chain(r);
    if is_zstd {
        let d = zstd::stream::read::Decoder::new(chained).context("starting zstd decompression")?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(chained))
    }
}

/// Reads `r` on its own thread, one MiB ahead at most four times over.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    pub fn spawn<R: Read + Send + 'static>(mut r: R) -> Result<ReadAhead> {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
        let (recycle, spare) = sync_channel::<Vec<u8>>(4);
        std::thread::Builder::new()
            .name("hup-tar-read".into())
            .spawn(move || fill_loop(&mut r, &tx, &spare))
            .context("starting the tar reader thread")?;
        Ok(ReadAhead {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
        })
    }
}

fn fill_loop(r: &mut dyn Read, tx: &SyncSender<io::Result<Vec<u8>>>, spare: &Receiver<Vec<u8>>) {
    loop {
        let mut buf = match spare.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty) => Vec::new(),
            Err(TryRecvError::Disconnected) => return,
        };
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < CHUNK {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        if n == 0 {
            return; // end of stream: dropping tx reports EOF
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            return; // the consumer stopped
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_and_zstd_detection() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let z = zstd::encode_all(&data[..], 3).unwrap();
        for input in [data.clone(), z] {
            let r = maybe_decompress(Cursor::new(input)).unwrap();
            let mut ra = ReadAhead::spawn(r).unwrap();
            let mut out = Vec::new();
            ra.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        let mut tiny = maybe_decompress(Cursor::new(vec![1u8, 2])).unwrap();
        let mut out = Vec::new();
        tiny.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![1, 2]);
    }
}
