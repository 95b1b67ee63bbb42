//! A reader that checks what passes through it: at most `size` bytes, exactly `size`
//! bytes by the end, and the SHA-256 of them equal to the expected digest.
//!
//! End of stream is reported to the consumer only after the checks pass, so whoever
//! reads to the end has read verified bytes. Consumers that stop early (a decompressor
//! at the end of its frame) call [`VerifyingReader::finish`] to drain and check the rest.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Why a payload stream failed its checks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("{name}: truncated: {got} of {expected} bytes")]
    Truncated {
        name: String,
        got: u64,
        expected: u64,
    },
    #[error("{name}: longer than the expected {expected} bytes")]
    TooLong { name: String, expected: u64 },
    #[error("{name}: sha256 mismatch: expected {expected}, got {got}")]
    Digest {
        name: String,
        expected: String,
        got: String,
    },
}

#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    name: String,
    expected_size: u64,
    expected_sha256: String,
    hasher: Sha256,
    read: u64,
    verified: bool,
    /// Most bytes the payload may decompress to (the manifest's `unpacked_size`).
    unpacked_limit: Option<u64>,
}

impl<R: Read> VerifyingReader<R> {
    /// `name` appears in every error; `sha256` is lowercase hex.
    pub fn new(inner: R, name: &str, size: u64, sha256: &str) -> Self {
        VerifyingReader {
            inner,
            name: name.to_string(),
            expected_size: size,
            expected_sha256: sha256.to_ascii_lowercase(),
            hasher: Sha256::new(),
            read: 0,
            verified: false,
            unpacked_limit: None,
        }
    }

    /// Bounds what a decompressor may make of this member (the manifest's signed
    /// `unpacked_size`); [`crate::bundle::stream::zstd_stream`] stops past it.
    pub fn with_unpacked_limit(mut self, limit: u64) -> Self {
        self.unpacked_limit = Some(limit);
        self
    }

    /// The bound set by [`VerifyingReader::with_unpacked_limit`].
    pub fn unpacked_limit(&self) -> Option<u64> {
        self.unpacked_limit
    }

    /// The name given to [`VerifyingReader::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes passed through so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    /// Reads and hashes whatever the consumer left, then checks size and digest.
    pub fn finish(mut self) -> Result<(), VerifyError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    return Err(match e.into_inner().map(|i| i.downcast::<VerifyError>()) {
                        Some(Ok(v)) => *v,
                        Some(Err(other)) => VerifyError::Truncated {
                            name: format!("{}: {other}", self.name),
                            got: self.read,
                            expected: self.expected_size,
                        },
                        None => VerifyError::Truncated {
                            name: self.name.clone(),
                            got: self.read,
                            expected: self.expected_size,
                        },
                    });
                }
            }
        }
    }

    fn check_end(&mut self) -> Result<(), VerifyError> {
        if self.read < self.expected_size {
            return Err(VerifyError::Truncated {
                name: self.name.clone(),
                got: self.read,
                expected: self.expected_size,
            });
        }
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if got != self.expected_sha256 {
            return Err(VerifyError::Digest {
                name: self.name.clone(),
                expected: self.expected_sha256.clone(),
                got,
            });
        }
        self.verified = true;
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        // Ask for one byte more than allowed at the end, to notice a longer stream.
        let remaining = self.expected_size - self.read;
        let want = (buf.len() as u64).min(remaining.saturating_add(1)) as usize;
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n as u64 > remaining {
            return Err(io::Error::other(VerifyError::TooLong {
                name: self.name.clone(),
                expected: self.expected_size,
            }));
        }
        if n == 0 {
            self.check_end().map_err(io::Error::other)?;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Lowercase hex SHA-256 of everything `r` yields, and its length.
pub fn sha256_of(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok((hex::encode(h.finalize()), n));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> String {
        sha256_of(b).unwrap().0
    }

    fn read_all(mut r: impl Read) -> Result<Vec<u8>, String> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v).map_err(|e| e.to_string())
    }

    #[test]
    fn passes_good_stream() {
        let data = vec![7u8; 300_000];
        let r = VerifyingReader::new(&data[..], "p", 300_000, &digest(&data));
        assert_eq!(read_all(r).unwrap(), data);
    }

    #[test]
    fn refuses_bad_streams() {
        let data = b"hello world".to_vec();
        let d = digest(&data);
        let e = read_all(VerifyingReader::new(&data[..5], "p", 11, &d)).unwrap_err();
        assert_eq!(e, "p: truncated: 5 of 11 bytes");
        let e = read_all(VerifyingReader::new(&data[..], "p", 10, &d)).unwrap_err();
        assert_eq!(e, "p: longer than the expected 10 bytes");
        let e = read_all(VerifyingReader::new(&b"hello World"[..], "p", 11, &d)).unwrap_err();
        assert!(e.starts_with("p: sha256 mismatch: expected"), "{e}");
    }

    #[test]
    fn finish_checks_the_rest() {
        let data = b"hello world".to_vec();
        let mut r = VerifyingReader::new(&data[..], "p", 11, &digest(&data));
        let mut four = [0u8; 4];
        r.read_exact(&mut four).unwrap();
        assert!(r.finish().is_ok());
        let mut r = VerifyingReader::new(&b"hello World"[..], "p", 11, &digest(&data));
        r.read_exact(&mut four).unwrap();
        assert!(matches!(r.finish(), Err(VerifyError::Digest { .. })));
    }
}
