//! GNU tar's PAX sparse members (what `tar --sparse` writes in POSIX format, which GNU tar
//! picks with `--xattrs`): their `GNU.sparse.*` records, formats 1.0 (map at the start of
//! the data) and 0.1 (map in the `GNU.sparse.map` record). The old GNU 'S' headers are read
//! by the tar crate, or rewritten as format 0.1 where holes must not be read
//! ([`super::gnu_sparse`]).

use std::io::Read;

use anyhow::{Context, Result, bail};

use super::io::read_exact;

/// Where a sparse member's map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Map {
    /// Format 1.0: decimal lines at the start of the data, padded to 512 bytes.
    InData,
    /// Format 0.1: (offset, length) pairs from the PAX header.
    Listed(Vec<(u64, u64)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    /// Apparent size of the file.
    pub realsize: u64,
    pub map: Map,
}

/// Most regions we accept in one map (bounds memory on hostile input).
const MAX_REGIONS: u64 = 1 << 20;

fn read_number(r: &mut dyn Read, used: &mut u64) -> Result<u64> {
    let mut v: u64 = 0;
    let mut digits = 0;
    loop {
        let mut b = [0u8; 1];
        read_exact(r, &mut b).context("reading the sparse map")?;
        *used += 1;
        match b[0] {
            b'\n' if digits > 0 => return Ok(v),
            d @ b'0'..=b'9' if digits < 20 => {
                v = v
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    .context("number in the sparse map overflows")?;
                digits += 1;
            }
            _ => bail!("malformed sparse map (byte {:#04x})", b[0]),
        }
    }
}

/// Reads a format 1.0 map from the member data; returns the regions and the bytes it took.
pub fn read_map(r: &mut dyn Read) -> Result<(Vec<(u64, u64)>, u64)> {
    let mut used = 0;
    let n = read_number(r, &mut used)?;
    if n > MAX_REGIONS {
        bail!("sparse map with {n} regions (at most {MAX_REGIONS})");
    }
    let mut map = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let off = read_number(r, &mut used)?;
        let len = read_number(r, &mut used)?;
        map.push((off, len));
    }
    let pad = (512 - used % 512) % 512;
    let mut skip = vec![0u8; pad as usize];
    read_exact(r, &mut skip).context("reading the sparse map padding")?;
    Ok((map, used + pad))
}

/// Parses a format 0.1 `GNU.sparse.map` value: `offset,length,offset,length...`.
pub fn parse_map(v: &str) -> Result<Vec<(u64, u64)>> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    let nums: Vec<u64> = v
        .split(',')
        .map(|s| {
            s.parse::<u64>()
                .with_context(|| format!("bad number {s:?} in GNU.sparse.map"))
        })
        .collect::<Result<_>>()?;
    if !nums.len().is_multiple_of(2) || nums.len() as u64 > 2 * MAX_REGIONS {
        bail!("GNU.sparse.map has {} numbers", nums.len());
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Checks a map against the member: regions in order, inside the file, and their data adds
/// up to what the archive stores (`stored` bytes, of which `map_bytes` are the map itself).
pub fn check(map: &[(u64, u64)], realsize: u64, stored: u64, map_bytes: u64) -> Result<()> {
    let mut end = 0u64;
    let mut data = 0u64;
    for &(off, len) in map {
        let e = off.checked_add(len).context("sparse region overflows")?;
        if off < end || e > realsize {
            bail!("sparse region {off}+{len} is out of order or beyond the file size {realsize}");
        }
        end = e;
        data += len;
    }
    if data + map_bytes != stored {
        bail!(
            "sparse map describes {} bytes but the archive stores {stored}",
            data + map_bytes
        );
    }
    Ok(())
}

/// The `GNU.sparse.*` PAX records of a member.
#[derive(Debug, Default)]
pub struct Records {
    any: bool,
    major: Option<String>,
    minor: Option<String>,
    name: Option<Vec<u8>>,
    realsize: Option<String>,
    size: Option<String>,
    map: Option<String>,
    old: bool,
}

impl Records {
    /// Takes one record; `key` without its `GNU.sparse.` prefix.
    pub fn record(&mut self, key: &str, value: &[u8]) {
        self.any = true;
        let text = || String::from_utf8_lossy(value).into_owned();
        match key {
            "major" => self.major = Some(text()),
            "minor" => self.minor = Some(text()),
            "name" => self.name = Some(value.to_vec()),
            "realsize" => self.realsize = Some(text()),
            "size" => self.size = Some(text()),
            "map" => self.map = Some(text()),
            "offset" | "numbytes" => self.old = true,
            _ => {}
        }
    }

    /// Whether the member had any `GNU.sparse.*` record.
    pub fn any(&self) -> bool {
        self.any
    }

    /// The sparse file the records describe, and the member's real name when they give it
    /// (`GNU.sparse.name`). Only a regular file may be sparse (`is_file`).
    pub fn resolve(self, is_file: bool) -> Result<(Sparse, Option<Vec<u8>>)> {
        if !is_file {
            bail!("GNU.sparse records on a member that is not a regular file");
        }
        let num = |v: Option<String>, what: &str| -> Result<u64> {
            let v = v.with_context(|| format!("missing GNU.sparse.{what}"))?;
            v.trim()
                .parse()
                .with_context(|| format!("bad GNU.sparse.{what} {v:?}"))
        };
        let version = (self.major.as_deref(), self.minor.as_deref());
        let sparse = match version {
            (Some("1"), Some("0")) => Sparse {
                realsize: num(self.realsize, "realsize")?,
                map: Map::InData,
            },
            (None, None) | (Some("0"), Some("1")) if !self.old && self.map.is_some() => Sparse {
                realsize: num(self.size, "size")?,
                map: Map::Listed(parse_map(self.map.as_deref().unwrap_or(""))?),
            },
            _ => bail!("unsupported GNU sparse format (only 1.0 and 0.1 are)"),
        };
        Ok((sparse, self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_v1() {
        let mut data = b"2\n0\n4096\n1048576\n10\n".to_vec();
        let used = data.len();
        data.resize(512, 0);
        data.extend_from_slice(b"payload");
        let mut r = &data[..];
        let (map, n) = read_map(&mut r).unwrap();
        assert_eq!(map, vec![(0, 4096), (1 << 20, 10)]);
        assert_eq!(n, 512);
        assert!(used < 512);
        assert_eq!(r, b"payload");
        assert!(read_map(&mut &b"2\n0\nx\n"[..]).is_err());
        assert!(read_map(&mut &b"99999999999999999999999\n"[..]).is_err());
        assert!(check(&map, 2 << 20, 4106 + 512, 512).is_ok());
        assert!(check(&map, 1 << 20, 4106 + 512, 512).is_err());
        assert!(check(&[(10, 5), (0, 5)], 100, 10, 0).is_err());
    }

    #[test]
    fn map_v01() {
        assert_eq!(parse_map("0,10,100,5").unwrap(), vec![(0, 10), (100, 5)]);
        assert!(parse_map("0,10,100").is_err());
        assert!(parse_map("a,1").is_err());
    }

    fn records(recs: &[(&str, &str)]) -> Records {
        let mut r = Records::default();
        for (k, v) in recs {
            r.record(k, v.as_bytes());
        }
        r
    }

    #[test]
    fn records_give_the_format_the_size_and_the_name() {
        assert!(!Records::default().any());
        let (sp, name) = records(&[
            ("major", "1"),
            ("minor", "0"),
            ("name", "dir/f"),
            ("realsize", "1048576"),
            ("size", "7"),
        ])
        .resolve(true)
        .unwrap();
        assert_eq!(
            sp,
            Sparse {
                realsize: 1 << 20,
                map: Map::InData
            }
        );
        assert_eq!(name.as_deref(), Some(&b"dir/f"[..]));
        // 0.1 takes `size`, not `realsize`
        let (sp, name) = records(&[("size", "100"), ("realsize", "5"), ("map", "0,10")])
            .resolve(true)
            .unwrap();
        assert_eq!(
            sp,
            Sparse {
                realsize: 100,
                map: Map::Listed(vec![(0, 10)])
            }
        );
        assert_eq!(name, None);
        let err = |r: Records, file| format!("{:#}", r.resolve(file).unwrap_err());
        assert_eq!(
            err(records(&[("map", "0,10"), ("size", "9")]), false),
            "GNU.sparse records on a member that is not a regular file"
        );
        assert_eq!(
            err(records(&[("major", "1"), ("minor", "0")]), true),
            "missing GNU.sparse.realsize"
        );
        // format 0.0 (offset/numbytes pairs) and unknown versions are refused
        for r in [
            records(&[
                ("offset", "0"),
                ("numbytes", "1"),
                ("map", "0,1"),
                ("size", "1"),
            ]),
            records(&[("major", "2"), ("minor", "0"), ("realsize", "1")]),
            records(&[("size", "1")]),
        ] {
            assert_eq!(
                err(r, true),
                "unsupported GNU sparse format (only 1.0 and 0.1 are)"
            );
        }
    }
}
