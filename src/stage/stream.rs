//! Hashing while downloading, so that verification needs no second read of the bundle.
//!
//! Every chunk written to the partial file also goes to two threads: one hashes the whole
//! file (for `--sha256` and state.json), the other follows the outer tar stream and hashes
//! each member's data separately. As soon as `manifest.json` and its signature have
//! streamed in, an early check runs (signature, manifest, compatibility), so a bundle that
//! cannot be staged is refused after a few kilobytes instead of after the whole download.
//!
//! The member table recorded here is only an optimisation: the final verification opens
//! the finished file with the bundle reader and uses a streamed digest only for a member
//! whose offset and size match the reader's exactly (`verify.rs`).

use std::sync::Arc;
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

/// The hashing threads of one download.
pub struct Pipeline {
    whole_tx: Option<SyncSender<Arc<Chunk>>>,
    tar_tx: Option<SyncSender<Arc<Chunk>>>,
    whole: Option<JoinHandle<(String, u64)>>,
    tar: Option<JoinHandle<Result<Members>>>,
    pool_tx: Sender<Vec<u8>>,
    pool_rx: Receiver<Vec<u8>>,
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
        let (whole_tx, whole_rx) = sync_channel::<Arc<Chunk>>(BUFFERS);
        let (tar_tx, tar_rx) = sync_channel::<Arc<Chunk>>(BUFFERS);
        let whole = std::thread::Builder::new()
            .name("hup-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                let mut n = 0u64;
                for c in whole_rx {
                    h.update(&c.buf[..c.len]);
                    n += c.len as u64;
                }
                (hex::encode(h.finalize()), n)
            })
            .context("starting the hashing thread")?;
        let tar = std::thread::Builder::new()
            .name("hup-members".into())
            .spawn(move || {
                let mut s = Scanner::new(early);
                for c in tar_rx {
                    s.push(&c.buf[..c.len])?;
                }
                Ok(s.finish())
            })
            .context("starting the member hashing thread")?;
        Ok(Pipeline {
            whole_tx: Some(whole_tx),
            tar_tx: Some(tar_tx),
            whole: Some(whole),
            tar: Some(tar),
            pool_tx,
            pool_rx,
        })
    }

    /// A free buffer of [`CHUNK`] bytes (waits while all are being hashed).
    pub fn buffer(&self) -> Vec<u8> {
        let mut b = self.pool_rx.recv().unwrap_or_default();
        b.resize(CHUNK, 0);
        b
    }

    /// Hands the first `len` bytes of `buf` to both threads.
    pub fn feed(&mut self, buf: Vec<u8>, len: usize) -> Result<(), Stopped> {
        let chunk = Arc::new(Chunk {
            buf,
            len,
            pool: self.pool_tx.clone(),
        });
        let tar = self.tar_tx.as_ref().ok_or(Stopped)?;
        tar.send(chunk.clone()).map_err(|_| Stopped)?;
        let whole = self.whole_tx.as_ref().ok_or(Stopped)?;
        whole.send(chunk).map_err(|_| Stopped)
    }

    /// Waits for both threads; the tar thread's error if it stopped.
    pub fn finish(mut self) -> Result<Summary> {
        self.whole_tx = None;
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
        self.whole_tx = None;
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
