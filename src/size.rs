//! Sizes: parsing arguments (bytes, or a number with a K/M/G/T suffix, powers of 1024) and
//! writing them in messages ([`human`], and [`mib`] for partition tables).

use anyhow::{Context, Result, bail};

/// Parses `768M`, `1G`, `4096`, `16KiB`... into bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        bail!("invalid size {s:?}: expected bytes or a number with K/M/G/T suffix");
    }
    let n: u64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => bail!("invalid size {s:?}: unknown suffix {suffix:?} (use K, M, G or T)"),
    };
    n.checked_mul(1u64 << shift)
        .with_context(|| format!("size {s:?} is too large"))
}

const MIB: u64 = 1 << 20;

/// `1536` -> `1.5 KiB`: sizes in messages, in the largest unit that keeps the number at
/// least 1, with one decimal (whole bytes below 1 KiB).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `256 MiB`, `1.5 MiB`, `2048 MiB`: sizes and places on a partition table (1 MiB aligned),
/// always in MiB, without a decimal when whole.
pub fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// argh adapter for size options.
pub fn from_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::{MIB, human, mib, parse_size};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("768M").unwrap(), 768 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("2t").unwrap(), 2 << 40);
        assert_eq!(parse_size("16KiB").unwrap(), 16 << 10);
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn human_picks_the_unit() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(36 * MIB), "36.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(5 << 40), "5.0 TiB");
        assert_eq!(human(5 << 50), "5120.0 TiB");
    }

    #[test]
    fn mib_stays_in_mib() {
        assert_eq!(mib(0), "0 MiB");
        assert_eq!(mib(32 * MIB), "32 MiB");
        assert_eq!(mib(3 << 30), "3072 MiB");
        assert_eq!(mib(MIB + MIB / 2), "1.5 MiB");
        assert_eq!(mib(33 * MIB + 1), "33.0 MiB");
        assert_eq!(mib(512), "0.0 MiB");
    }
}
