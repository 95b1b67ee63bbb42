//! PAX extended header records (POSIX.1-2001 `pax`): `LEN KEY=VALUE\n`, where LEN is the
//! decimal length of the whole record, its own digits and the newline included.
//!
//! [`encode`] writes them (the tree walker, the data backup, the GNU sparse filter);
//! [`parse`] reads the data of an `x` header where hup follows a raw stream (the download
//! follower, the GNU sparse filter). Members read through the tar crate get their records
//! from it (it applies `path`, `linkpath` and `size` from the same records itself), and
//! [`super::member`] reads what hup takes from them.

/// Encodes PAX records: "LEN key=value\n" where LEN counts the whole record.
pub fn encode(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// One record: its key and its value (which may hold any byte, newlines and NULs included:
/// an xattr value is binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Why PAX data is malformed; `at` is the offset of the record in the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaxError {
    #[error("PAX record at byte {at}: no decimal length followed by a space")]
    NoLength { at: usize },
    #[error("PAX record at byte {at}: length {len} is too short or runs past the data")]
    BadLength { at: usize, len: String },
    #[error("PAX record at byte {at}: does not end with a newline")]
    NoNewline { at: usize },
    #[error("PAX record at byte {at}: no '=' after the key")]
    NoEquals { at: usize },
    #[error("PAX record at byte {at}: the key is empty or holds a NUL byte")]
    BadKey { at: usize },
}

/// The records of PAX data, in order. The iterator ends after the first error.
pub fn parse(data: &[u8]) -> Records<'_> {
    Records {
        data,
        at: 0,
        failed: false,
    }
}

/// Iterator of [`parse`].
#[derive(Debug)]
pub struct Records<'a> {
    data: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    fn record(&mut self) -> Result<Record<'a>, PaxError> {
        let at = self.at;
        let rest = &self.data[at..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || rest.get(digits) != Some(&b' ') {
            return Err(PaxError::NoLength { at });
        }
        let text = std::str::from_utf8(&rest[..digits]).expect("ASCII digits");
        // "N k=\n": the shortest record has its digits, a space, a key byte, '=' and '\n'.
        let len = text
            .parse::<usize>()
            .ok()
            .filter(|&len| len >= digits + 4 && len <= rest.len())
            .ok_or_else(|| PaxError::BadLength {
                at,
                len: text.to_string(),
            })?;
        let body = rest[..len]
            .strip_suffix(b"\n")
            .ok_or(PaxError::NoNewline { at })?;
        let body = &body[digits + 1..];
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or(PaxError::NoEquals { at })?;
        let key = &body[..eq];
        if key.is_empty() || key.contains(&0) {
            return Err(PaxError::BadKey { at });
        }
        self.at += len;
        Ok(Record {
            key,
            value: &body[eq + 1..],
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, PaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at == self.data.len() {
            return None;
        }
        let r = self.record();
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type KeyValue = (Vec<u8>, Vec<u8>);

    fn all(data: &[u8]) -> Result<Vec<KeyValue>, PaxError> {
        parse(data)
            .map(|r| r.map(|r| (r.key.to_vec(), r.value.to_vec())))
            .collect()
    }

    fn kv(k: &str, v: &[u8]) -> KeyValue {
        (k.as_bytes().to_vec(), v.to_vec())
    }

    #[test]
    fn lengths_count_themselves() {
        assert_eq!(encode(&[("a".into(), b"b".to_vec())]), b"6 a=b\n");
        let r = encode(&[("k".into(), vec![b'x'; 95])]);
        // body 99 + 3 digits = 102
        assert!(r.starts_with(b"102 k="));
        assert_eq!(r.len(), 102);
        // 9 + 1 digit = 10 would be 2 digits: 11
        let r = encode(&[("k".into(), b"12345".to_vec())]);
        assert_eq!(r, b"11 k=12345\n");
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            ("path".to_string(), b"a/very/long/name".to_vec()),
            ("mtime".to_string(), b"1700000000.5".to_vec()),
            // binary values: newlines, NULs and '=' are part of the value
            ("SCHILY.xattr.user.x".to_string(), b"a\nb\0c=d".to_vec()),
            ("empty".to_string(), Vec::new()),
            ("GNU.sparse.map".to_string(), "1,".repeat(600).into_bytes()),
        ];
        let data = encode(&recs);
        let got = all(&data).unwrap();
        let want: Vec<_> = recs.iter().map(|(k, v)| kv(k, v)).collect();
        assert_eq!(got, want);
        assert_eq!(all(b"").unwrap(), Vec::new());
        assert_eq!(all(b"9 size=5\n").unwrap(), vec![kv("size", b"5")]);
    }

    #[test]
    fn bad_lengths_are_refused() {
        // too short for what follows, longer than the data, shorter than "N k=\n"
        assert_eq!(all(b"10 size=5\n").unwrap(), vec![kv("size", b"5")]);
        assert_eq!(
            all(b"7 size=5\n"),
            Err(PaxError::NoNewline { at: 0 }),
            "the record ends before its newline"
        );
        assert_eq!(
            all(b"11 size=5\n"),
            Err(PaxError::BadLength {
                at: 0,
                len: "11".into()
            })
        );
        assert_eq!(
            all(b"4 =\n"),
            Err(PaxError::BadLength {
                at: 0,
                len: "4".into()
            })
        );
        assert_eq!(
            all(b"0 \n"),
            Err(PaxError::BadLength {
                at: 0,
                len: "0".into()
            })
        );
        // no digits, a sign, no space after the digits
        for bad in [&b" 6 a=b\n"[..], b"+6 a=b\n", b"6a=b\n", b"x", b"6"] {
            assert_eq!(all(bad), Err(PaxError::NoLength { at: 0 }), "{bad:?}");
        }
        // the second record is the bad one; the first is still read
        let mut it = parse(b"6 a=b\n6 c=d");
        assert_eq!(
            it.next(),
            Some(Ok(Record {
                key: b"a",
                value: b"b"
            }))
        );
        assert_eq!(
            it.next(),
            Some(Err(PaxError::BadLength {
                at: 6,
                len: "6".into()
            }))
        );
        assert_eq!(it.next(), None, "ends after an error");
    }

    #[test]
    fn a_missing_newline_is_refused() {
        assert_eq!(all(b"6 a=bc"), Err(PaxError::NoNewline { at: 0 }));
        assert_eq!(all(b"6 a=b\n7 cd=ef"), Err(PaxError::NoNewline { at: 6 }));
        // padding NULs after the last record are not a record
        assert_eq!(all(b"6 a=b\n\0\0\0"), Err(PaxError::NoLength { at: 6 }));
    }

    #[test]
    fn an_overflowing_length_is_refused() {
        let huge = format!("{}0 a=b\n", usize::MAX);
        assert_eq!(
            all(huge.as_bytes()),
            Err(PaxError::BadLength {
                at: 0,
                len: format!("{}0", usize::MAX)
            })
        );
        let big = format!("{} a=b\n", u64::MAX);
        assert!(matches!(
            all(big.as_bytes()),
            Err(PaxError::BadLength { .. })
        ));
    }

    #[test]
    fn keys_need_an_equals_sign_and_no_nul() {
        assert_eq!(all(b"6 abc\n"), Err(PaxError::NoEquals { at: 0 }));
        assert_eq!(all(b"6 =bc\n"), Err(PaxError::BadKey { at: 0 }));
        assert_eq!(all(b"9 a\0b=cd\n"), Err(PaxError::BadKey { at: 0 }));
        // a NUL in the value is data
        assert_eq!(all(b"9 ab=c\0d\n").unwrap(), vec![kv("ab", b"c\0d")]);
        assert!(PaxError::BadKey { at: 3 }.to_string().contains("byte 3"));
    }
}
