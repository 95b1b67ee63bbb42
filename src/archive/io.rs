//! Byte plumbing of tar streams: reading a block whole, reading exactly what a member holds,
//! and counting what a stream writes.

use std::io::{self, Read, Write};

use anyhow::Result;

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The stream ended inside a member.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the tar stream ends {missing} bytes before the end of the member")]
pub struct Truncated {
    pub missing: u64,
}

/// Reads exactly `buf.len()` bytes of a member, or fails with [`Truncated`].
pub fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    let n =
        read_full(r, buf).map_err(|e| anyhow::Error::new(e).context("reading the tar stream"))?;
    if n < buf.len() {
        return Err(Truncated {
            missing: (buf.len() - n) as u64,
        }
        .into());
    }
    Ok(())
}

/// A writer that counts the bytes written through it (tar and zstd stream sizes).
#[derive(Debug)]
pub struct Counting<W> {
    pub inner: W,
    pub n: u64,
}

impl<W> Counting<W> {
    pub fn new(inner: W) -> Counting<W> {
        Counting { inner, n: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields one byte per read, and an interruption before each.
    struct Trickle<'a>(&'a [u8], bool);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn reads_whole_blocks_through_short_reads() {
        let mut buf = [0u8; 4];
        assert_eq!(
            read_full(&mut Trickle(b"abcdef", false), &mut buf).unwrap(),
            4
        );
        assert_eq!(&buf, b"abcd");
        assert_eq!(read_full(&mut Trickle(b"ab", false), &mut buf).unwrap(), 2);
        read_exact(&mut Trickle(b"wxyz", false), &mut buf).unwrap();
        assert_eq!(&buf, b"wxyz");
        let e = read_exact(&mut Trickle(b"ab", false), &mut buf).unwrap_err();
        assert_eq!(
            e.downcast_ref::<Truncated>(),
            Some(&Truncated { missing: 2 })
        );
        assert_eq!(
            e.to_string(),
            "the tar stream ends 2 bytes before the end of the member"
        );
    }

    #[test]
    fn counts_what_it_writes() {
        let mut c = Counting::new(Vec::new());
        c.write_all(b"hello").unwrap();
        c.write_all(b"!").unwrap();
        assert_eq!((c.n, &c.inner[..]), (6, &b"hello!"[..]));
    }
}
