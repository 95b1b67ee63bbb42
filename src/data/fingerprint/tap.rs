//! Computing a fingerprint from a tar stream while something else reads or writes it: the
//! bytes are copied to a worker thread that runs [`fingerprint_of_tar`].

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};

use super::record::Fingerprint;
use super::scan::fingerprint_of_tar;

/// Bytes collected before they are handed to the worker.
const CHUNK: usize = 256 << 10;
/// Chunks in flight (bounds the memory to about 2 MiB).
const IN_FLIGHT: usize = 8;

/// The feeding side of the worker.
pub(super) struct Feeder {
    pending: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<Result<Fingerprint>>>,
}

impl Feeder {
    pub(super) fn spawn() -> Result<Feeder> {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("hup-fingerprint".into())
            .spawn(move || {
                let mut r = ChannelReader {
                    rx,
                    cur: Vec::new(),
                    pos: 0,
                };
                let fp = fingerprint_of_tar(&mut r);
                // Let the feeder finish even when the archive ended before its data did.
                io::copy(&mut r, &mut io::sink()).ok();
                fp
            })
            .context("starting the fingerprint thread")?;
        Ok(Feeder {
            pending: Vec::with_capacity(CHUNK),
            tx: Some(tx),
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
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
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
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.cur = next;
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
            feeder: Feeder::spawn()?,
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
