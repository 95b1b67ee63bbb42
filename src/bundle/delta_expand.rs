//! Expanding a delta stream into the full rootfs tar, and the preflight check of the base
//! files it names (docs/delta.md, "The apply").
//!
//! [`Expander`] is a `Read` of the expanded tar: the apply puts it where a full bundle's
//! decompressed rootfs stream goes, so the slot is written by the same code from the same
//! bytes. It reports the end of the stream only after the `E` record, nothing after it, and
//! the size of everything it gave matching the manifest's `tar_size`. The preflight's
//! [`dry_run`] checks each record (a copied or patched file whose bytes do not have the
//! sha256 the stream names stops it with an error naming the file; the base files are
//! hashed by `delta_check`'s threads meanwhile). Populate hashes nothing here: the files it
//! writes are hashed once anyway, for the slot's fingerprint record, and that record must
//! give the manifest's `fingerprint` (`apply::slotfs`).

use std::io::{self, Read};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use super::delta::{BaseFiles, BaseRef, PIECE, Record, read_piece, read_record, unpatch};
use super::delta_check::{OpenBase, Queue, show, with_checkers};
use crate::data::fingerprint::KnownDigests;

const CHUNK: u64 = 1 << 20;

enum State {
    Next,
    Raw(u64),
    Copy {
        base: BaseRef,
        done: u64,
    },
    Patch {
        base: BaseRef,
        sha256: [u8; 32],
        size: u64,
        pieces: u32,
        done: u64,
        hash: Sha256,
    },
    Ended,
}

/// The expanded rootfs tar of a delta stream `inner` (decompressed) over `base`.
pub struct Expander<R> {
    inner: R,
    base: Box<dyn BaseFiles>,
    state: State,
    out: Vec<u8>,
    pos: usize,
    reference: Vec<u8>,
    patch: Vec<u8>,
    total: u64,
    tar_size: u64,
    /// Populate: where each copied file's data starts in the tar, with its size and the
    /// sha256 preflight checked, for the fingerprint to take instead of hashing it again.
    known: Option<KnownDigests>,
    /// Preflight: check every record (each copied file and each patched file's base file
    /// whole, on the queue's threads; each patch's result here). Else (populate): only the
    /// records' form and the tar's size.
    preflight: Option<Queue>,
}

impl<R> std::fmt::Debug for Expander<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expander")
            .field("total", &self.total)
            .field("tar_size", &self.tar_size)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Expander<R> {
    /// `tar_size`: the manifest's `delta` field.
    pub fn new(inner: R, base: Box<dyn BaseFiles>, tar_size: u64) -> Self {
        Expander {
            inner,
            base,
            state: State::Next,
            out: Vec::new(),
            pos: 0,
            reference: Vec::new(),
            patch: Vec::new(),
            total: 0,
            tar_size,
            known: None,
            preflight: None,
        }
    }

    /// Records in `known` where each copied file's data starts in the output, with its size
    /// and sha256 (checked in preflight).
    pub fn with_known(mut self, known: KnownDigests) -> Self {
        self.known = Some(known);
        self
    }

    /// Makes the next bytes of output; an empty `out` after it is the end.
    fn produce(&mut self) -> Result<()> {
        self.out.clear();
        self.pos = 0;
        loop {
            match std::mem::replace(&mut self.state, State::Ended) {
                State::Ended => return Ok(()),
                State::Next => self.state = self.next_record()?,
                State::Raw(rem) => {
                    let n = rem.min(CHUNK);
                    self.out.resize(n as usize, 0);
                    self.inner.read_exact(&mut self.out).map_err(|e| {
                        anyhow::Error::new(e).context("the delta stream ends inside raw bytes")
                    })?;
                    self.state = if rem > n {
                        State::Raw(rem - n)
                    } else {
                        State::Next
                    };
                    return self.emit();
                }
                State::Copy { base, done } => {
                    let n = (base.size - done).min(CHUNK);
                    self.out.resize(n as usize, 0);
                    self.base.read_at(&base.path, done, &mut self.out)?;
                    if done + n == base.size {
                        self.state = State::Next;
                    } else {
                        self.state = State::Copy {
                            base,
                            done: done + n,
                        };
                    }
                    return self.emit();
                }
                State::Patch {
                    base,
                    sha256,
                    size,
                    pieces,
                    done,
                    mut hash,
                } => {
                    if pieces == 0 {
                        ensure!(
                            done == size,
                            "the patch of {} gives {done} of its {size} bytes",
                            show(&base.path)
                        );
                        if self.preflight.is_some() {
                            check_sha(&base.path, hash, &sha256, "patched file")?;
                        }
                        self.state = State::Next;
                        continue;
                    }
                    let p = read_piece(&mut self.inner, done, size, base.size)?;
                    self.reference.resize(p.ref_len as usize, 0);
                    self.base
                        .read_at(&base.path, p.ref_offset, &mut self.reference)?;
                    self.patch.resize(p.patch_len as usize, 0);
                    self.inner.read_exact(&mut self.patch).map_err(|e| {
                        anyhow::Error::new(e).context("the delta stream ends inside a patch")
                    })?;
                    self.out.resize(p.out_len as usize, 0);
                    unpatch(&self.reference, &self.patch, &mut self.out)
                        .with_context(|| format!("patching {}", show(&base.path)))?;
                    if self.preflight.is_some() {
                        hash.update(&self.out);
                    }
                    self.state = State::Patch {
                        base,
                        sha256,
                        size,
                        pieces: pieces - 1,
                        done: done + u64::from(p.out_len),
                        hash,
                    };
                    return self.emit();
                }
            }
        }
    }

    fn next_record(&mut self) -> Result<State> {
        match read_record(&mut self.inner)? {
            None => bail!("the delta stream ends without its end record (truncated)"),
            Some(Record::Raw(n)) => Ok(State::Raw(n)),
            Some(Record::Copy(base)) => {
                if let Some(q) = &self.preflight {
                    // checked whole on the queue's threads, not read here
                    let size = base.size;
                    q.check(base)?;
                    self.advance(size)?;
                    return Ok(State::Next);
                }
                self.check_size(&base)?;
                if let Some(k) = &self.known {
                    k.insert(self.total, base.size, base.sha256);
                }
                Ok(State::Copy { base, done: 0 })
            }
            Some(Record::Patch {
                base,
                sha256,
                size,
                pieces,
            }) => {
                self.check_size(&base)?;
                ensure!(
                    u64::from(pieces) == size.div_ceil(PIECE),
                    "a patch of {size} bytes in {pieces} pieces"
                );
                if let Some(q) = &self.preflight {
                    q.check(base.clone())?;
                }
                Ok(State::Patch {
                    base,
                    sha256,
                    size,
                    pieces,
                    done: 0,
                    hash: Sha256::new(),
                })
            }
            Some(Record::End) => {
                let mut b = [0u8; 1];
                ensure!(
                    self.inner
                        .read(&mut b)
                        .context("reading the delta stream")?
                        == 0,
                    "bytes after the end record of the delta stream"
                );
                ensure!(
                    self.total == self.tar_size,
                    "the delta expands to {} bytes, not the {} bytes the manifest signs",
                    self.total,
                    self.tar_size
                );
                Ok(State::Ended)
            }
        }
    }

    fn check_size(&mut self, base: &BaseRef) -> Result<()> {
        let size = self.base.size(&base.path)?;
        ensure!(
            size == Some(base.size),
            "base file {} has {} on the running slot, the delta needs {} bytes",
            show(&base.path),
            size.map_or("no file".into(), |s| format!("{s} bytes")),
            base.size
        );
        Ok(())
    }

    fn emit(&mut self) -> Result<()> {
        self.advance(self.out.len() as u64)
    }

    /// Counts `n` more bytes of output.
    fn advance(&mut self, n: u64) -> Result<()> {
        self.total += n;
        ensure!(
            self.total <= self.tar_size,
            "the delta expands to more than the {} bytes the manifest signs",
            self.tar_size
        );
        Ok(())
    }
}

impl<R: Read> Read for Expander<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.out.len()
            && let State::Copy { base, done } = &mut self.state
            && *done < base.size
        {
            // A copied file's bytes go straight into `buf`, not through `out`.
            let n = (base.size - *done).min(buf.len() as u64) as usize;
            let r = self.base.read_at(&base.path, *done, &mut buf[..n]);
            r.map_err(|e| io::Error::other(format!("{e:#}")))?;
            *done += n as u64;
            if *done == base.size {
                self.state = State::Next;
            }
            self.advance(n as u64)
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
            return Ok(n);
        }
        if self.pos == self.out.len() {
            self.produce()
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn check_sha(path: &[u8], hash: Sha256, want: &[u8; 32], what: &str) -> Result<()> {
    let got: [u8; 32] = hash.finalize().into();
    ensure!(
        &got == want,
        "{what} {} has sha256 {}, the delta names {}",
        show(path),
        hex::encode(got),
        hex::encode(want)
    );
    Ok(())
}

/// The preflight of a delta: expands the whole stream into nothing, so that every record,
/// every base file (on threads of their own, each with a base from `open`), every patch's
/// result and the expanded tar's size are checked before anything is written. Returns the
/// expanded size.
pub fn dry_run(stream: impl Read, open: OpenBase, tar_size: u64) -> Result<u64> {
    let base = open()?;
    with_checkers(open, |queue| {
        let mut e = Expander::new(stream, base, tar_size);
        e.preflight = Some(queue);
        io::copy(&mut e, &mut io::sink()).map_err(|e| anyhow::anyhow!("{e}"))?;
        // copied files are counted, not passed through
        Ok(e.total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::delta::Piece;
    use crate::bundle::delta::{
        TAG_COPY, TAG_END, TAG_PATCH, TAG_RAW, patch, write_base, write_piece,
    };
    use crate::bundle::delta_check::tests::Mem;
    use std::collections::BTreeMap;

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    fn base() -> Mem {
        Mem(BTreeMap::from([
            (b"a".to_vec(), b"hello base a".to_vec()),
            (
                b"big".to_vec(),
                (0..5_000_000u32).map(|i| (i % 253) as u8).collect(),
            ),
        ]))
    }

    /// raw "head", copy of a, patch of big (one byte changed in each piece), raw "tail".
    fn stream(new_big: &[u8], named_sha: [u8; 32]) -> (Vec<u8>, Vec<u8>) {
        let b = base();
        let mut s = vec![TAG_RAW];
        s.extend(4u64.to_le_bytes());
        s.extend(b"head");
        s.push(TAG_COPY);
        let a = &b.0[&b"a"[..]];
        write_base(
            &mut s,
            &BaseRef {
                path: b"a".to_vec(),
                size: a.len() as u64,
                sha256: sha(a),
            },
        )
        .unwrap();
        let old = &b.0[&b"big"[..]];
        s.push(TAG_PATCH);
        write_base(
            &mut s,
            &BaseRef {
                path: b"big".to_vec(),
                size: old.len() as u64,
                sha256: sha(old),
            },
        )
        .unwrap();
        s.extend(named_sha);
        s.extend((new_big.len() as u64).to_le_bytes());
        let pieces = (new_big.len() as u64).div_ceil(PIECE);
        s.extend((pieces as u32).to_le_bytes());
        let mut done = 0;
        while done < new_big.len() as u64 {
            let len = (new_big.len() as u64 - done).min(PIECE);
            let (ro, rl) = crate::bundle::delta::ref_range(done, len, old.len() as u64);
            let p = patch(
                &old[ro as usize..(ro + rl) as usize],
                &new_big[done as usize..(done + len) as usize],
                3,
            )
            .unwrap();
            write_piece(
                &mut s,
                &Piece {
                    ref_offset: ro,
                    ref_len: rl as u32,
                    out_len: len as u32,
                    patch_len: p.len() as u32,
                },
            )
            .unwrap();
            s.extend(&p);
            done += len;
        }
        s.push(TAG_RAW);
        s.extend(4u64.to_le_bytes());
        s.extend(b"tail");
        s.push(TAG_END);
        let mut want = b"head".to_vec();
        want.extend(a);
        want.extend(new_big);
        want.extend(b"tail");
        (s, want)
    }

    fn new_big() -> Vec<u8> {
        let mut v = base().0[&b"big"[..]].clone();
        for at in [7, 2_100_000, 4_500_000] {
            v[at] ^= 0xff;
        }
        v
    }

    fn expand(s: &[u8], b: Mem, want: &[u8]) -> Result<Vec<u8>> {
        let mut e = Expander::new(s, Box::new(b), want.len() as u64);
        let mut out = Vec::new();
        e.read_to_end(&mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(out)
    }

    #[test]
    fn expands_and_checks() {
        let nb = new_big();
        let (s, want) = stream(&nb, sha(&nb));
        assert!(s.len() < 10_000, "{}", s.len());
        assert_eq!(expand(&s, base(), &want).unwrap(), want);
        let n = dry(&s, base(), &want).unwrap();
        assert_eq!(n, want.len() as u64);
    }

    fn dry(s: &[u8], b: Mem, want: &[u8]) -> Result<u64> {
        let open = || -> Result<Box<dyn BaseFiles>> { Ok(Box::new(b.clone())) };
        dry_run(s, &open, want.len() as u64)
    }

    #[test]
    fn refuses_what_does_not_check_out() {
        let nb = new_big();
        let (s, want) = stream(&nb, sha(&nb));
        let err = |r: Result<Vec<u8>>| format!("{:#}", r.unwrap_err());
        let dry_err = |r: Result<u64>| format!("{:#}", r.unwrap_err());
        // a patch that does not give the sha256 it names: preflight names the file
        let (bad, _) = stream(&nb, [0; 32]);
        assert!(dry_err(dry(&bad, base(), &want)).contains("patched file /big has sha256"));
        // a modified base file, copied or patched: preflight's checkers find it; populate
        // passes the bytes on (the slot's fingerprint check finds them, apply::slotfs)
        let mut b = base();
        b.0.get_mut(&b"a"[..]).unwrap()[0] = b'H';
        assert!(dry_err(dry(&s, b.clone(), &want)).contains("the running slot was modified"));
        assert_ne!(expand(&s, b, &want).unwrap(), want);
        let mut b = base();
        b.0.get_mut(&b"big"[..]).unwrap()[4_000_000] ^= 1;
        let e = dry_err(dry(&s, b, &want));
        assert!(
            e.contains("base file /big on the running slot has sha256"),
            "{e}"
        );
        // a missing base file
        let mut b = base();
        b.0.remove(&b"a"[..]);
        assert!(err(expand(&s, b, &want)).contains("base file /a has no file"));
        // truncated anywhere, or with bytes after the end
        for cut in [1, 20, s.len() / 2, s.len() - 1] {
            let e = err(expand(&s[..cut], base(), &want));
            assert!(
                e.contains("ends") || e.contains("truncated") || e.contains("patch"),
                "{cut}: {e}"
            );
            assert!(dry(&s[..cut], base(), &want).is_err(), "{cut}");
        }
        let mut more = s.clone();
        more.push(0);
        assert!(err(expand(&more, base(), &want)).contains("bytes after the end record"));
        // another tar size than the manifest signs
        let mut other = want.clone();
        other.push(0);
        assert!(err(expand(&s, base(), &other)).contains("not the"));
        assert!(dry_err(dry(&s, base(), &other)).contains("not the"));
    }
}
