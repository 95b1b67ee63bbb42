//! The preflight's check of the base files a delta names (docs/delta.md, "The apply"): each
//! one read whole and its size and sha256 compared with the record's. The dry run hands
//! them to [`with_checkers`]' threads, a few with a reader of the running slot each, and goes on
//! through the stream meanwhile: hashing the base is most of a delta's preflight, and
//! the cores of the device are idle in it otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail, ensure};
use sha2::{Digest, Sha256};

use super::delta::{BaseFiles, BaseRef};

/// Opens a reader of the base files (one per checker thread).
pub type OpenBase<'a> = &'a (dyn Fn() -> Result<Box<dyn BaseFiles>> + Sync);

const CHUNK: usize = 1 << 20;
/// Most checker threads.
const MAX_THREADS: usize = 4;
/// Base files queued for the checkers at most.
const QUEUE: usize = 256;

/// Checks every base file of `bases` on `base`: present, of its size and sha256. The
/// first one that does not match refuses the whole delta.
pub fn check_base_files(bases: &[BaseRef], base: &mut dyn BaseFiles) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for b in bases {
        check_one(b, base, &mut buf)?;
    }
    Ok(())
}

fn check_one(b: &BaseRef, base: &mut dyn BaseFiles, buf: &mut [u8]) -> Result<()> {
    // Two records may name one path with different digests: only one can match.
    let size = base.size(&b.path)?;
    ensure!(
        size == Some(b.size),
        "base file {} has {} on the running slot, the delta needs {} bytes: the running slot differs from the delta's base",
        show(&b.path),
        size.map_or("no file".into(), |s| format!("{s} bytes")),
        b.size
    );
    let mut h = Sha256::new();
    let mut done = 0;
    while done < b.size {
        let n = (b.size - done).min(buf.len() as u64) as usize;
        base.read_at(&b.path, done, &mut buf[..n])?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    let got: [u8; 32] = h.finalize().into();
    if got != b.sha256 {
        bail!(
            "base file {} on the running slot has sha256 {}, the delta needs {}: the running slot was modified",
            show(&b.path),
            hex::encode(got),
            hex::encode(b.sha256)
        );
    }
    Ok(())
}

pub fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// The threads' shared state: the first error, and whether there is one.
#[derive(Debug, Default)]
struct Outcome {
    failed: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
}

impl Outcome {
    fn fail(&self, e: anyhow::Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// The sending side, which the dry run holds: base files to check.
#[derive(Debug)]
pub struct Queue {
    tx: SyncSender<BaseRef>,
    outcome: Arc<Outcome>,
}

impl Queue {
    /// Queues `b` for checking; an error once a checker has found a file that does not
    /// match (the dry run can stop: [`with_checkers`] returns that file's error).
    pub fn check(&self, b: BaseRef) -> Result<()> {
        if self.outcome.failed.load(Ordering::SeqCst) || self.tx.send(b).is_err() {
            bail!("a base file did not check out");
        }
        Ok(())
    }
}

/// Runs `run` with a [`Queue`] whose base files are checked meanwhile on up to as many
/// threads as there are cores (at most 4). Returns `run`'s result once every queued file is
/// checked; the error of a base file that does not match comes first, as the cause of
/// whatever `run` may have stopped at.
pub fn with_checkers<T>(open: OpenBase, run: impl FnOnce(Queue) -> Result<T>) -> Result<T> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let outcome = Arc::new(Outcome::default());
    let (tx, rx) = sync_channel::<BaseRef>(QUEUE);
    let rx = Mutex::new(rx);
    let result = std::thread::scope(|s| -> Result<T> {
        for i in 0..n {
            let (rx, outcome) = (&rx, outcome.clone());
            std::thread::Builder::new()
                .name(format!("hup-base-check-{i}"))
                .spawn_scoped(s, move || checker(open, rx, &outcome))
                .map_err(|e| anyhow::anyhow!("starting a base checker thread: {e}"))?;
        }
        // The queue's sender goes with `run`: when it returns, the checkers drain the
        // queue and end, and the scope waits for them.
        run(Queue {
            tx,
            outcome: outcome.clone(),
        })
    });
    let error = outcome
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match error {
        Some(e) => Err(e),
        None => result,
    }
}

/// One checker thread: checks what comes until the queue closes. After a failure (its own
/// or another's) it only drains the queue, so the sender never blocks.
fn checker(open: OpenBase, rx: &Mutex<Receiver<BaseRef>>, outcome: &Outcome) {
    let mut base = match open() {
        Ok(b) => Some(b),
        Err(e) => {
            outcome.fail(e.context("opening the running slot to check base files"));
            None
        }
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(b) = next else { return };
        if outcome.failed.load(Ordering::SeqCst) {
            continue;
        }
        if let Some(base) = base.as_mut()
            && let Err(e) = check_one(&b, base.as_mut(), &mut buf)
        {
            outcome.fail(e);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Base files in memory: path to bytes (also the expander's tests' base).
    #[derive(Clone)]
    pub(crate) struct Mem(pub(crate) BTreeMap<Vec<u8>, Vec<u8>>);

    impl BaseFiles for Mem {
        fn size(&mut self, path: &[u8]) -> Result<Option<u64>> {
            Ok(self.0.get(path).map(|v| v.len() as u64))
        }
        fn read_at(&mut self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<()> {
            let v = &self.0[path];
            buf.copy_from_slice(&v[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
    }

    /// 2000 files; the refs name them as they are.
    fn world() -> (Mem, Vec<BaseRef>) {
        let mut m = BTreeMap::new();
        let mut refs = Vec::new();
        for i in 0..2000u32 {
            let path = format!("f{i}").into_bytes();
            let data: Vec<u8> = (0..i % 3000).map(|j| (j ^ i) as u8).collect();
            refs.push(BaseRef {
                path: path.clone(),
                size: data.len() as u64,
                sha256: Sha256::digest(&data).into(),
            });
            m.insert(path, data);
        }
        (Mem(m), refs)
    }

    /// Queues every ref, as the dry run does, and returns what `with_checkers` says.
    fn check_all(base: &Mem, refs: &[BaseRef]) -> Result<usize> {
        let open = || -> Result<Box<dyn BaseFiles>> { Ok(Box::new(base.clone())) };
        with_checkers(&open, |q| {
            let mut queued = 0;
            for r in refs {
                q.check(r.clone())?;
                queued += 1;
            }
            Ok(queued)
        })
    }

    #[test]
    fn every_file_is_checked_and_the_bad_one_is_named() {
        let (base, refs) = world();
        assert_eq!(check_all(&base, &refs).unwrap(), refs.len());
        // One modified file among many: its error comes back, whatever the dry run did
        // after it (the queue never blocks on checkers that stopped checking).
        let mut bad = base.clone();
        bad.0.get_mut(&b"f1500"[..]).unwrap()[3] ^= 1;
        let e = format!("{:#}", check_all(&bad, &refs).unwrap_err());
        assert!(
            e.contains("base file /f1500 on the running slot has sha256")
                && e.contains("the running slot was modified"),
            "{e}"
        );
        // A missing one, and one of another size.
        let mut gone = base.clone();
        gone.0.remove(&b"f7"[..]);
        let e = format!("{:#}", check_all(&gone, &refs).unwrap_err());
        assert!(
            e.contains("base file /f7 has no file on the running slot"),
            "{e}"
        );
        let mut longer = base.clone();
        longer.0.get_mut(&b"f9"[..]).unwrap().push(0);
        let e = format!("{:#}", check_all(&longer, &refs).unwrap_err());
        assert!(e.contains("base file /f9 has 10 bytes"), "{e}");
    }

    #[test]
    fn a_base_that_cannot_be_opened_fails_the_check() {
        let (_, refs) = world();
        let open = || -> Result<Box<dyn BaseFiles>> { bail!("no such partition") };
        let e = with_checkers(&open, |q| {
            for r in &refs {
                q.check(r.clone())?;
            }
            Ok(())
        })
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("opening the running slot to check base files: no such partition"),
            "{e}"
        );
    }
}
