//! Hashing while downloading, so that verification needs no second read of the bundle.
//!
//! Every chunk written to the partial file also goes to two threads: one follows the outer
//! tar stream and hashes each member's data separately, then hands the chunk on to the
//! other, which hashes the whole file (for `--sha256` and state.json) up to the end of the
//! archive and no further. The first also publishes how far the stream may go
//! ([`Pipeline::limit`]) and where the bundle ended ([`Pipeline::end`]), so that the
//! download stops there. As soon as `manifest.json` and its signature have
//! streamed in, an early check runs (signature, manifest, compatibility), so a bundle that
//! cannot be staged is refused after a few kilobytes instead of after the whole download.
//!
//! The member table recorded here is only an optimisation: the final verification opens
//! the finished file with the bundle reader and uses a streamed digest only for a member
//! whose offset and size match the reader's exactly (`verify.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use sha2::{Digest, Sha256};

use super::tarscan::Scanner;
pub use super::tarscan::{Captured, EarlyCheck, StreamMember};

/// Size of one chunk handed to the hashing threads.
pub const CHUNK: usize = 256 * 1024;
/// Chunks in existence: bounds the memory of the pipeline at `BUFFERS * CHUNK`.
const BUFFERS: usize = 8;

/// What the stream showed.
#[derive(Debug, Clone)]
pub struct Summary {
    /// SHA-256 of the whole file.
    pub sha256: String,
    pub len: u64,
    /// The members with their digests; `None` when the tar stream could not be followed.
    pub members: Option<Vec<StreamMember>>,
    /// The early check ran (and passed).
    pub checked_early: bool,
}

struct Chunk {
    buf: Vec<u8>,
    len: usize,
    pool: Sender<Vec<u8>>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let _ = self.pool.send(std::mem::take(&mut self.buf));
    }
}

/// The tar thread's result: the member table (if followed) and whether the early check ran.
type Members = (Option<Vec<StreamMember>>, bool);

/// What goes to the tar thread: data, or a request to answer once all earlier data is
/// processed.
enum Msg {
    Data(Arc<Chunk>),
    Flush(SyncSender<()>),
}

/// What the tar thread publishes after each chunk.
struct Bounds {
    limit: AtomicU64,
    /// `u64::MAX` until the end-of-archive marker was seen.
    end: AtomicU64,
    checked_early: AtomicBool,
}

/// The hashing threads of one download.
pub struct Pipeline {
    tar_tx: Option<SyncSender<Msg>>,
    whole: Option<JoinHandle<(String, u64)>>,
    tar: Option<JoinHandle<Result<Members>>>,
    pool_tx: Sender<Vec<u8>>,
    pool_rx: Receiver<Vec<u8>>,
    bounds: Arc<Bounds>,
}

/// The tar thread stopped with an error; [`Pipeline::finish`] returns it.
#[derive(Debug)]
pub struct Stopped;

impl Pipeline {
    /// Starts the two threads.
    pub fn start(early: Option<EarlyCheck>) -> Result<Pipeline> {
        let (pool_tx, pool_rx) = channel();
        for _ in 0..BUFFERS {
            pool_tx.send(vec![0u8; CHUNK]).expect("receiver is alive");
        }
        let (whole_tx, whole_rx) = sync_channel::<(Arc<Chunk>, usize)>(BUFFERS);
        let (tar_tx, tar_rx) = sync_channel::<Msg>(BUFFERS);
        let whole = std::thread::Builder::new()
            .name("hup-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                let mut n = 0u64;
                for (c, len) in whole_rx {
                    h.update(&c.buf[..len]);
                    n += len as u64;
                }
                (hex::encode(h.finalize()), n)
            })
            .context("starting the hashing thread")?;
        let scanner = Scanner::new(early);
        let bounds = Arc::new(Bounds {
            limit: AtomicU64::new(scanner.limit()),
            end: AtomicU64::new(u64::MAX),
            checked_early: AtomicBool::new(false),
        });
        let published = bounds.clone();
        let tar = std::thread::Builder::new()
            .name("hup-members".into())
            .spawn(move || {
                let mut s = scanner;
                let mut at = 0u64;
                for msg in tar_rx {
                    let c = match msg {
                        Msg::Data(c) => c,
                        Msg::Flush(done) => {
                            let _ = done.send(());
                            continue;
                        }
                    };
                    let pushed = s.push(&c.buf[..c.len]);
                    published.limit.store(s.limit(), Ordering::SeqCst);
                    published
                        .end
                        .store(s.end().unwrap_or(u64::MAX), Ordering::SeqCst);
                    published
                        .checked_early
                        .store(s.checked_early(), Ordering::SeqCst);
                    pushed?;
                    // Only the bytes up to the end of the archive belong to the bundle.
                    let keep = match s.end() {
                        Some(end) => usize::try_from(end.saturating_sub(at))
                            .unwrap_or(usize::MAX)
                            .min(c.len),
                        None => c.len,
                    };
                    at += c.len as u64;
                    if keep > 0 && whole_tx.send((c, keep)).is_err() {
                        break;
                    }
                }
                Ok(s.finish())
            })
            .context("starting the member hashing thread")?;
        Ok(Pipeline {
            tar_tx: Some(tar_tx),
            whole: Some(whole),
            tar: Some(tar),
            pool_tx,
            pool_rx,
            bounds,
        })
    }

    /// Waits until the tar thread processed everything fed so far, so that
    /// [`Pipeline::limit`] and [`Pipeline::end`] are up to date. False when it stopped (it
    /// refused the content; [`Pipeline::finish`] says why).
    pub fn drain(&self) -> bool {
        let (done_tx, done_rx) = sync_channel(1);
        let Some(tx) = &self.tar_tx else {
            return false;
        };
        tx.send(Msg::Flush(done_tx)).is_ok() && done_rx.recv().is_ok()
    }

    /// Bytes the stream may hold, as far as the tar thread got (see `tarscan.rs`).
    pub fn limit(&self) -> u64 {
        self.bounds.limit.load(Ordering::SeqCst)
    }

    /// Where the bundle ended (just after its end-of-archive marker), once seen.
    pub fn end(&self) -> Option<u64> {
        Some(self.bounds.end.load(Ordering::SeqCst)).filter(|e| *e != u64::MAX)
    }

    /// The early check ran and passed.
    pub fn checked_early(&self) -> bool {
        self.bounds.checked_early.load(Ordering::SeqCst)
    }

    /// A free buffer of [`CHUNK`] bytes (waits while all are being hashed).
    pub fn buffer(&self) -> Vec<u8> {
        let mut b = self.pool_rx.recv().unwrap_or_default();
        b.resize(CHUNK, 0);
        b
    }

    /// Returns a buffer that was not fed.
    pub fn give_back(&self, buf: Vec<u8>) {
        let _ = self.pool_tx.send(buf);
    }

    /// Hands the first `len` bytes of `buf` to the threads.
    pub fn feed(&mut self, buf: Vec<u8>, len: usize) -> Result<(), Stopped> {
        let chunk = Arc::new(Chunk {
            buf,
            len,
            pool: self.pool_tx.clone(),
        });
        let tar = self.tar_tx.as_ref().ok_or(Stopped)?;
        tar.send(Msg::Data(chunk)).map_err(|_| Stopped)
    }

    /// Waits for both threads; the tar thread's error if it stopped.
    pub fn finish(mut self) -> Result<Summary> {
        self.tar_tx = None;
        let tar = self
            .tar
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow!("the member hashing thread panicked"))?;
        let (sha256, len) = self
            .whole
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow!("the hashing thread panicked"))?;
        let (members, checked_early) = tar?;
        Ok(Summary {
            sha256,
            len,
            members,
            checked_early,
        })
    }
}

impl Drop for Pipeline {
    /// A pipeline given up (a failed or restarted download) still waits for its threads, so
    /// that nothing they log comes after the caller's own messages.
    fn drop(&mut self) {
        self.tar_tx = None;
        if let Some(t) = self.tar.take() {
            let _ = t.join();
        }
        if let Some(w) = self.whole.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pipeline_hashes_everything() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("a", vec![3u8; 700_000]), ("b", vec![4u8; 10])] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut p = Pipeline::start(None).unwrap();
        for c in bytes.chunks(100_000) {
            let mut b = p.buffer();
            b[..c.len()].copy_from_slice(c);
            p.feed(b, c.len()).unwrap();
        }
        let s = p.finish().unwrap();
        assert_eq!(s.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(s.len, bytes.len() as u64);
        assert_eq!(s.members.unwrap().len(), 2);
    }
}
