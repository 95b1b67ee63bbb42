//! Old GNU sparse members ('S' headers) rewritten, for the fingerprint, as the GNU PAX sparse
//! format 0.1 they are equivalent to (a PAX `GNU.sparse.map` and a regular header over the
//! same stored data): the tar reader fills an 'S' member's holes with zeros itself and does
//! not expose its map, so a hole of terabytes would be read byte by byte; as PAX 0.1 the
//! holes are counted from the map (docs/fingerprint.md).
//!
//! The filter follows the stream header by header. Anything it does not follow with
//! certainty (a PAX header too large to hold, a malformed number) makes it pass the rest of
//! the stream on unchanged: the tar reader then handles it as before.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::header::{BLOCK, number, set_checksum};
use super::io::read_full;
use super::pax;

/// Largest PAX header data held back to merge with a following 'S' header.
const MAX_PAX: u64 = 1 << 20;
/// Most map entries rewritten (more: passed on unchanged).
const MAX_ENTRIES: usize = 1 << 20;

/// A `Read` of a tar stream with its old GNU sparse members rewritten as PAX 0.1.
#[derive(Debug)]
pub struct GnuSparseFilter<R> {
    inner: R,
    out: Vec<u8>,
    pos: usize,
    /// Bytes of member data (padded) still to pass on unchanged.
    data: u64,
    /// Pass everything on unchanged from here.
    raw: bool,
    /// A PAX 'x' member (header and data) held back until the next header is seen.
    pax: Option<(Vec<u8>, Vec<u8>)>,
    eof: bool,
    /// Set once a member was rewritten: from there on, offsets in the output are not the
    /// input's.
    shifted: Arc<AtomicBool>,
}

impl<R: Read> GnuSparseFilter<R> {
    pub fn new(inner: R) -> Self {
        GnuSparseFilter {
            inner,
            out: Vec::new(),
            pos: 0,
            data: 0,
            raw: false,
            pax: None,
            eof: false,
            shifted: Arc::default(),
        }
    }

    /// Whether a member was rewritten so far (then offsets after it differ from the
    /// input's); readable while the filter is read by someone else.
    pub fn shifted(&self) -> Arc<AtomicBool> {
        self.shifted.clone()
    }

    /// Gives up following: what was held back goes out as it came.
    fn go_raw(&mut self) {
        if let Some((h, d)) = self.pax.take() {
            self.out.extend_from_slice(&h);
            self.out.extend_from_slice(&d);
        }
        self.raw = true;
    }

    fn refill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        if self.raw || self.data > 0 {
            let want = if self.raw {
                64 * BLOCK as u64
            } else {
                self.data.min(64 * BLOCK as u64)
            };
            self.out.resize(want as usize, 0);
            let n = read_full(&mut self.inner, &mut self.out)?;
            self.out.truncate(n);
            self.data -= (n as u64).min(self.data);
            if n == 0 {
                // the end, or a stream that ends inside a member: the tar reader says which
                self.data = 0;
                self.raw = true;
                self.eof = true;
            }
            return Ok(());
        }
        let mut h = [0u8; BLOCK];
        let n = read_full(&mut self.inner, &mut h)?;
        if n < BLOCK || h.iter().all(|&b| b == 0) {
            // the end (or a truncated stream): the rest as it is
            self.go_raw();
            self.out.extend_from_slice(&h[..n]);
            return Ok(());
        }
        let Some(size) = number(&h[124..136]) else {
            self.go_raw();
            self.out.extend_from_slice(&h);
            return Ok(());
        };
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        match h[156] {
            b'x' if self.pax.is_none() && padded <= MAX_PAX => {
                let mut d = vec![0u8; padded as usize];
                let k = read_full(&mut self.inner, &mut d)?;
                d.truncate(k);
                if k as u64 != padded || !mergeable(&d[..(size as usize).min(k)]) {
                    // truncated, malformed, or a PAX size record overriding the header's: not followed
                    self.out.extend_from_slice(&h);
                    self.out.extend_from_slice(&d);
                    self.raw = true;
                    return Ok(());
                }
                self.pax = Some((h.to_vec(), d));
                Ok(())
            }
            b'S' => self.sparse(h, padded),
            _ => {
                if let Some((ph, pd)) = self.pax.take() {
                    self.out.extend_from_slice(&ph);
                    self.out.extend_from_slice(&pd);
                }
                self.out.extend_from_slice(&h);
                self.data = padded;
                Ok(())
            }
        }
    }

    /// An 'S' header: read its map (and extension headers), emit PAX 0.1 and a regular header.
    fn sparse(&mut self, h: [u8; BLOCK], padded: u64) -> io::Result<()> {
        let mut map: Vec<(u64, u64)> = Vec::new();
        let mut headers = h.to_vec();
        let mut ok = entries(&h[386..482], &mut map);
        let realsize = number(&h[483..495]);
        let mut extended = h[482] != 0;
        while ok && extended {
            let mut e = [0u8; BLOCK];
            let n = read_full(&mut self.inner, &mut e)?;
            headers.extend_from_slice(&e[..n]);
            if n < BLOCK || map.len() > MAX_ENTRIES {
                ok = false;
                break;
            }
            ok = entries(&e[..504], &mut map);
            extended = e[504] != 0;
        }
        let (Some(realsize), true) = (realsize, ok) else {
            self.go_raw();
            self.out.extend_from_slice(&headers);
            return Ok(());
        };
        let mut text = String::new();
        for (i, (o, l)) in map.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("{o},{l}"));
        }
        let records = [
            ("GNU.sparse.major".to_string(), b"0".to_vec()),
            ("GNU.sparse.minor".to_string(), b"1".to_vec()),
            (
                "GNU.sparse.size".to_string(),
                realsize.to_string().into_bytes(),
            ),
            ("GNU.sparse.map".to_string(), text.into_bytes()),
        ];
        let (mut ph, mut pd) = match self.pax.take() {
            Some((ph, mut pd)) => {
                pd.truncate(number(&ph[124..136]).unwrap_or(0) as usize);
                (ph, pd)
            }
            None => {
                let mut ph = [0u8; BLOCK];
                ph[..9].copy_from_slice(b"PaxHeader");
                ph[100..108].copy_from_slice(b"0000644\0");
                ph[257..263].copy_from_slice(b"ustar\0");
                ph[263..265].copy_from_slice(b"00");
                (ph.to_vec(), Vec::new())
            }
        };
        pd.extend_from_slice(&pax::encode(&records));
        ph[156] = b'x';
        ph[124..136].copy_from_slice(format!("{:011o}\0", pd.len()).as_bytes());
        set_checksum(&mut ph);
        pd.resize(pd.len().div_ceil(BLOCK) * BLOCK, 0);
        let mut reg = h;
        reg[156] = b'0';
        reg[386..BLOCK].fill(0);
        set_checksum(&mut reg);
        self.out.extend_from_slice(&ph);
        self.out.extend_from_slice(&pd);
        self.out.extend_from_slice(&reg);
        self.data = padded;
        self.shifted.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl<R: Read> Read for GnuSparseFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.eof {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Appends the (offset, length) entries of a GNU sparse area (24 bytes each) until an
/// empty one; false when a number is malformed.
fn entries(area: &[u8], map: &mut Vec<(u64, u64)>) -> bool {
    for e in area.chunks_exact(24) {
        if e[0] == 0 || e[12] == 0 {
            break;
        }
        match (number(&e[..12]), number(&e[12..24])) {
            (Some(o), Some(l)) => map.push((o, l)),
            _ => return false,
        }
    }
    true
}

/// Whether the filter can merge PAX data with a following 'S' header: its records are well
/// formed and none is a `size` record (which would override the header's size).
fn mergeable(d: &[u8]) -> bool {
    pax::parse(d).all(|r| r.is_ok_and(|r| r.key != b"size"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 'S' member: 512 bytes of data at `at`, apparent size `real`.
    pub(crate) fn old_sparse(name: &str, at: u64, real: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(512);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(5);
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(real);
        g.sparse[0].set_offset(at);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(real);
        g.sparse[1].set_length(0);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&[7u8; 512]);
        out
    }

    fn record(k: &str, v: &str) -> Vec<u8> {
        pax::encode(&[(k.to_string(), v.as_bytes().to_vec())])
    }

    #[test]
    fn records_count_their_own_length() {
        assert_eq!(record("a", "b"), b"6 a=b\n");
        let r = record("GNU.sparse.map", &"1".repeat(200));
        let len: usize = std::str::from_utf8(&r)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.len());
    }

    fn filtered(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GnuSparseFilter::new(input).read_to_end(&mut out).unwrap();
        out
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let d: Vec<u8> = records.iter().flat_map(|(k, v)| record(k, v)).collect();
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeader").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(d.len() as u64);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&d);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    #[test]
    fn an_old_sparse_member_becomes_pax_0_1_with_the_records_before_it() {
        let mut input = pax(&[("SCHILY.xattr.user.a", "1"), ("mtime", "7.5")]);
        input.extend(old_sparse("dir/f", 4096, 1 << 40));
        input.extend_from_slice(&[0u8; 1024]);
        let out = filtered(&input);
        let mut a = tar::Archive::new(&out[..]);
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
        assert_eq!(&e.path_bytes()[..], b"dir/f");
        assert_eq!(e.size(), 512);
        let recs: Vec<(String, String)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().to_string(), r.value().unwrap().to_string())
            })
            .collect();
        let want = [
            ("SCHILY.xattr.user.a", "1"),
            ("mtime", "7.5"),
            ("GNU.sparse.major", "0"),
            ("GNU.sparse.minor", "1"),
            ("GNU.sparse.size", "1099511627776"),
            ("GNU.sparse.map", "4096,512,1099511627776,0"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(recs, want);
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 512]);
        drop(e);
        assert!(entries.next().is_none());
    }

    #[test]
    fn what_it_does_not_follow_passes_unchanged() {
        // a PAX size record overrides the header's size: not followed
        let mut input = pax(&[("size", "512")]);
        input.extend(old_sparse("f", 0, 1 << 20));
        input.extend_from_slice(&[0u8; 1024]);
        assert_eq!(filtered(&input), input);
        // no sparse member: the same bytes
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, "a/b", &b"abc"[..]).unwrap();
        let plain = b.into_inner().unwrap();
        assert_eq!(filtered(&plain), plain);
        // truncated inside the map's extension headers: what came, as it came
        let mut cut = old_sparse("f", 0, 1 << 20);
        cut[482] = 1;
        let mut h = tar::Header::from_byte_slice(&cut[..512]).clone();
        h.set_cksum();
        cut[..512].copy_from_slice(h.as_bytes());
        cut.truncate(512 + 100);
        assert_eq!(filtered(&cut), cut);
    }

    #[test]
    fn malformed_pax_data_before_an_old_sparse_member_passes_unchanged() {
        // a record without its newline: not merged (the tar reader decides what it is)
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeader").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(6);
        h.set_cksum();
        let mut input = h.as_bytes().to_vec();
        input.extend_from_slice(b"6 a=bc");
        input.resize(2 * BLOCK, 0);
        input.extend(old_sparse("f", 0, 1 << 20));
        input.extend_from_slice(&[0u8; 1024]);
        assert_eq!(filtered(&input), input);
        // the same member after well-formed records is rewritten
        let mut good = pax(&[("a", "b")]);
        good.extend(old_sparse("f", 0, 1 << 20));
        good.extend_from_slice(&[0u8; 1024]);
        assert_ne!(filtered(&good), good);
    }
}
