//! Computing a fingerprint from a tar stream while something else reads or writes it: the
//! bytes are copied to a worker thread that runs [`fingerprint_of_tar`]. The worker hands
//! the chunk buffers it has read back to the feeder, which fills them again (a fresh 256 KiB
//! buffer per chunk would be mapped and unmapped by the allocator each time).

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};

use super::known::KnownDigests;
use super::record::Fingerprint;
use super::scan::fingerprint_of_tar_with;

/// Bytes collected before they are handed to the worker.
const CHUNK: usize = 256 << 10;
/// Chunks in flight (bounds the memory to about 2 MiB).
const IN_FLIGHT: usize = 8;

/// The feeding side of the worker.
pub(super) struct Feeder {
    pending: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    /// Buffers the worker is done with.
    spare: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<Result<Fingerprint>>>,
}

impl Feeder {
    /// The worker, taking the digests `known` has instead of hashing those members' data.
    pub(super) fn spawn(known: Option<KnownDigests>) -> Result<Feeder> {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (recycle, spare) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
        let worker = std::thread::Builder::new()
            .name("hup-fingerprint".into())
            .spawn(move || {
                let mut r = ChannelReader {
                    rx,
                    recycle,
                    cur: Vec::new(),
                    pos: 0,
                };
                let fp = fingerprint_of_tar_with(&mut r, known.as_ref());
                // Let the feeder finish even when the archive ended before its data did.
                io::copy(&mut r, &mut io::sink()).ok();
                fp
            })
            .context("starting the fingerprint thread")?;
        Ok(Feeder {
            pending: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            spare,
            worker: Some(worker),
        })
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHUNK {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let next = match self.spare.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        };
        let chunk = std::mem::replace(&mut self.pending, next);
        if let Some(tx) = &self.tx
            && tx.send(chunk).is_err()
        {
            // The worker stopped (it failed): finish() reports why.
            self.tx = None;
        }
    }

    /// Ends the stream and returns the worker's fingerprint.
    pub(super) fn finish(&mut self) -> Result<Fingerprint> {
        self.send();
        self.tx = None;
        let worker = self
            .worker
            .take()
            .context("the fingerprint was already taken")?;
        worker
            .join()
            .map_err(|_| anyhow!("the fingerprint thread panicked"))?
            .context("computing the fingerprint of the tar stream")
    }
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    /// Buffers read to the end, back to the feeder.
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    // Full (the feeder has spares) or gone: the buffer is freed.
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader or writer of a tar stream that computes the stream's fingerprint on the side.
/// Wrap the writer `hup pack` writes the rootfs tar into (or the reader the installer reads
/// it from), then call [`TarTap::finish`] once the whole stream went through.
pub struct TarTap<T> {
    inner: T,
    feeder: Feeder,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl<T> std::fmt::Debug for TarTap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarTap").finish_non_exhaustive()
    }
}

impl<T> TarTap<T> {
    pub fn new(inner: T) -> Result<TarTap<T>> {
        Ok(TarTap {
            inner,
            feeder: Feeder::spawn(None)?,
        })
    }

    /// The wrapped reader or writer and the fingerprint of everything that went through.
    pub fn finish(mut self) -> Result<(T, Fingerprint)> {
        let fp = self.feeder.finish()?;
        Ok((self.inner, fp))
    }
}

impl<W: Write> Write for TarTap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.feeder.feed(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for TarTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feeder.feed(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes: a buffer reused with stale contents would show.
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn many_chunks_through_recycled_buffers() {
        // About 40 chunks, the last one short: the worker hands buffers back and the feeder
        // fills them again many times over.
        let mut b = tar::Builder::new(Vec::new());
        for (i, len) in [1_500_000usize, 700_017, 3 << 20, 5, 4_000_001]
            .iter()
            .enumerate()
        {
            let data = noise(*len, i as u32 + 1);
            let mut h = tar::Header::new_ustar();
            h.set_size(*len as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, format!("d/f{i}"), &data[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let direct = crate::data::fingerprint::fingerprint_of_tar(&bytes[..]).unwrap();

        let mut tap = TarTap::new(&bytes[..]).unwrap();
        let mut through = Vec::new();
        let mut buf = vec![0u8; 100_003];
        loop {
            let n = tap.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            through.extend_from_slice(&buf[..n]);
        }
        let (_, fp) = tap.finish().unwrap();
        assert!(through == bytes, "the bytes read through the tap changed");
        assert_eq!(fp.entries.len(), direct.entries.len());
        assert_eq!(fp, direct);
        let f2 = &fp.entries["d/f2"];
        assert_eq!(f2.size, Some(3 << 20));
    }
}
