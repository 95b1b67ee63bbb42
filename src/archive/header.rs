//! Fields of a raw 512-byte tar header (ustar and GNU), for the readers that follow tar
//! bytes themselves: the download follower (`stage/tarscan.rs`) and the GNU sparse filter
//! ([`super::gnu_sparse`]). Everything else reads headers through the tar crate.

/// Bytes of a header block.
pub const BLOCK: usize = 512;

/// A numeric field: octal, padded with NULs or spaces on either side (empty is 0), or GNU
/// base-256 (big-endian, the first byte's top bit is the marker). `None` when malformed
/// or beyond 64 bits.
pub fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A text field up to its first NUL (lossy UTF-8).
pub fn text(field: &[u8]) -> String {
    let end = field.iter().position(|c| *c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Whether the header's checksum field matches its bytes (the field itself counted as
/// spaces).
pub fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(want) = number(&h[148..156]) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == want
}

/// Writes the checksum field of a header whose other bytes are final.
pub fn set_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(b"00000001750\0"), Some(1000));
        assert_eq!(number(b"0001750 \0"), Some(1000));
        assert_eq!(number(b"  1750\0\0\0"), Some(1000));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(1u64 << 60).to_be_bytes());
        assert_eq!(number(&big), Some(1 << 60));
        let mut over = [0xffu8; 12];
        over[0] = 0x80 | 0x7f;
        assert_eq!(number(&over), None, "beyond 64 bits");
        assert_eq!(number(b"0000000009x\0"), None);
        assert_eq!(number(b"12 34\0"), None);
    }

    #[test]
    fn checksums_agree_with_the_tar_crate() {
        let mut h = tar::Header::new_ustar();
        h.set_path("dir/name").unwrap();
        h.set_size(12345);
        h.set_mode(0o755);
        h.set_cksum();
        let mut raw = *h.as_bytes();
        assert!(checksum_ok(&raw));
        assert_eq!(number(&raw[124..136]), Some(12345));
        assert_eq!(text(&raw[0..100]), "dir/name");
        raw[0] = b'e';
        assert!(!checksum_ok(&raw));
        set_checksum(&mut raw);
        assert!(checksum_ok(&raw));
        let back = tar::Header::from_byte_slice(&raw);
        assert_eq!(
            back.cksum().unwrap(),
            number(&raw[148..156]).unwrap() as u32
        );
    }
}
