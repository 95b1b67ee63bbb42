//! File names of a boot payload, checked against what FAT stores faithfully (docs/bundle-format.md).
//!
//! FAT compares names without regard to case, keeps an 8.3 short name next to each long one
//! (fatfs also matches a lookup against the short name), and other FAT implementations drop
//! trailing dots and spaces. Two payload names FAT would take as one would make the second
//! file overwrite the first, so a payload is refused unless every name is stored as given
//! and names a file of its own. [`BootNames`] checks one directory's names as they come (the
//! apply's preflight reads the payload's tar headers through it before any write).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Most files one boot payload may hold.
pub const MAX_BOOT_FILES: usize = 1024;
/// Longest FAT long name, in UTF-16 code units.
const MAX_NAME_UNITS: usize = 255;

/// Characters FAT long names may hold, as fatfs 0.3.6 accepts them (ASCII letters and digits,
/// this punctuation and the space, and the Basic Multilingual Plane above U+009F).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || " $%'-_@~`!(){}.+,;=[]^#&".contains(c)
        || ('\u{a0}'..='\u{fffd}').contains(&c)
}

/// True for a name of the 8.3 shape (base of 1-8, extension of 0-3 ASCII characters).
fn is_8_3(name: &str) -> bool {
    let (base, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    name.is_ascii() && !base.contains('.') && (1..=8).contains(&base.len()) && ext.len() <= 3
}

/// Checks one file name of a boot payload: a name FAT stores unchanged.
pub fn check_fat_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("empty file name");
    }
    if name == "." || name == ".." {
        bail!("file name {name:?} is not allowed");
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == '\\') {
        bail!("file name {name:?} contains {c:?}: boot payloads are flat");
    }
    if name.chars().any(|c| c.is_control()) {
        bail!("file name {name:?} contains NUL or another control character");
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        bail!("file name {name:?} contains {c:?}, which FAT does not allow");
    }
    if name.ends_with(['.', ' ']) || name.starts_with(' ') {
        bail!(
            "file name {name:?} starts with a space or ends with a dot or space, which FAT drops"
        );
    }
    if name.encode_utf16().count() > MAX_NAME_UNITS {
        bail!("file name {name:?} is longer than FAT's {MAX_NAME_UNITS} characters");
    }
    if name.contains('~') && is_8_3(name) {
        bail!(
            "file name {name:?} has the form of a FAT short name (8.3 with '~') and may equal another file's"
        );
    }
    Ok(())
}

/// Most directory rescans fatfs may spend, over a whole payload, on finding free short names:
/// at most twice the two scans per file a create costs anyway. (The bulk writer replays
/// the search in memory; the bound keeps the directory one fatfs can add to.) (1021 names
/// `overlay-0000.dtbo`... take 687.)
const MAX_SHORT_NAME_RESCANS: usize = 2 * MAX_BOOT_FILES;

/// The short (8.3) names fatfs 0.3.6 generates for the files of one new directory, replayed
/// in memory to count its rescans. A long name gets `BASE~N.EXT` (6-character prefix, N 1-4)
/// when free, else `BA1A2B~N.EXT` (2 characters, a 16-bit checksum of the long name, N 1-9);
/// when all nine are taken fatfs rescans the whole directory with the checksum plus one.
/// Similar long names can have equal checksums, and a payload made of them would cost up to
/// N/9 directory scans per file: such a payload is refused instead.
#[derive(Debug, Default)]
struct ShortNames {
    taken: HashSet<[u8; 11]>,
    rescans: usize,
}

/// A long name's short form as fatfs builds it: (11 bytes, base length, fits 8.3, lossy).
fn short_form(name: &str) -> ([u8; 11], usize, bool, bool) {
    fn part(dst: &mut [u8], src: &str) -> (usize, bool, bool) {
        let mut n = 0;
        let mut lossy = false;
        for c in src.chars() {
            if n == dst.len() {
                return (n, false, lossy);
            }
            let fixed = match c {
                ' ' | '.' => {
                    lossy = true;
                    continue;
                }
                c if c.is_ascii_alphanumeric() || "!#$%&'()-@^_`{}~".contains(c) => c,
                _ => '_',
            };
            lossy |= fixed != c;
            dst[n] = fixed.to_ascii_uppercase() as u8;
            n += 1;
        }
        (n, true, lossy)
    }
    let mut short = [b' '; 11];
    let (base_len, fits, lossy) = match name.rfind('.') {
        Some(i) => {
            let (b, bf, bl) = part(&mut short[..8], &name[..i]);
            let (_, ef, el) = part(&mut short[8..], &name[i + 1..]);
            (b, bf && ef, bl || el)
        }
        None => part(&mut short[..8], name),
    };
    (short, base_len, fits, lossy)
}

fn checksum(name: &str) -> u16 {
    name.chars().fold(0u16, |s, c| {
        (s >> 1).wrapping_add(s << 15).wrapping_add(c as u16)
    })
}

fn prefixed(short: &[u8; 11], base_len: usize, num: u8, chksum: Option<u16>) -> [u8; 11] {
    let mut b = [b' '; 11];
    let p = match chksum {
        Some(sum) => {
            let p = base_len.min(2);
            b[..p].copy_from_slice(&short[..p]);
            b[p..p + 4].copy_from_slice(format!("{sum:04X}").as_bytes());
            p + 4
        }
        None => {
            let p = base_len.min(6);
            b[..p].copy_from_slice(&short[..p]);
            p
        }
    };
    b[p] = b'~';
    b[p + 1] = b'0' + num;
    b[8..].copy_from_slice(&short[8..]);
    b
}

impl ShortNames {
    /// Gives `name` the short name fatfs would; counts the rescans that took.
    fn add(&mut self, name: &str) -> Result<[u8; 11]> {
        let (short, base_len, fits, lossy) = short_form(name);
        let pick = if fits && !lossy && !self.taken.contains(&short) {
            Some(short)
        } else {
            (1..5)
                .map(|i| prefixed(&short, base_len, i, None))
                .find(|c| !self.taken.contains(c))
        };
        let pick = match pick {
            Some(p) => p,
            None => {
                let mut sum = checksum(name);
                loop {
                    if let Some(c) = (1..10)
                        .map(|i| prefixed(&short, base_len, i, Some(sum)))
                        .find(|c| !self.taken.contains(c))
                    {
                        break c;
                    }
                    self.rescans += 1;
                    if self.rescans > MAX_SHORT_NAME_RESCANS {
                        bail!(
                            "file name {name:?}: too many names of this payload get the same FAT short name pattern ({}), which makes writing them slow: vary the names' first characters or extensions",
                            String::from_utf8_lossy(&prefixed(&short, base_len, 1, Some(sum)))
                                .trim_end()
                        );
                    }
                    sum = sum.wrapping_add(1);
                }
            }
        };
        self.taken.insert(pick);
        Ok(pick)
    }
}

/// The 8.3 short name [`BootNames::add`] gave a file: the one fatfs would have chosen when
/// creating the files of one new directory in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortName(pub(crate) [u8; 11]);

/// The names of one boot directory: each checked, none FAT would take for another, at most
/// [`MAX_BOOT_FILES`], and not so many alike that fatfs's short-name search would rescan the
/// directory more than [`MAX_SHORT_NAME_RESCANS`] times in all.
#[derive(Debug, Default)]
pub struct BootNames {
    /// Upper-cased name (as FAT compares) -> name as given.
    seen: HashMap<String, String>,
    short: ShortNames,
}

impl BootNames {
    pub fn new() -> BootNames {
        BootNames::default()
    }

    /// Adds one file name; refuses a bad name, a name equal to an earlier one on FAT, and
    /// the file after the [`MAX_BOOT_FILES`]th. Returns the file's short name.
    pub fn add(&mut self, name: &str) -> Result<ShortName> {
        check_fat_name(name)?;
        let key: String = name.chars().flat_map(char::to_uppercase).collect();
        if let Some(first) = self.seen.get(&key) {
            if first == name {
                bail!("file {name:?} appears twice");
            }
            bail!("file names {first:?} and {name:?} are the same name on FAT (it ignores case)");
        }
        if self.seen.len() >= MAX_BOOT_FILES {
            bail!(
                "more than {MAX_BOOT_FILES} files: the boot partition takes at most {MAX_BOOT_FILES}"
            );
        }
        let short = self.short.add(name)?;
        self.seen.insert(key, name.to_string());
        Ok(ShortName(short))
    }

    /// Number of names added.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no name was added.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Checks a directory of boot files before `hup pack` archives it: plain files only, at the
/// top level, under names [`BootNames`] accepts.
pub fn check_boot_dir(dir: &Path) -> Result<()> {
    let mut names = BootNames::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let raw = e.file_name();
        let name = raw
            .to_str()
            .with_context(|| format!("boot file name {raw:?} is not UTF-8"))?;
        if !e.file_type()?.is_file() {
            bail!(
                "boot file {name:?}: only plain files at the top level can go to the boot partition"
            );
        }
        names
            .add(name)
            .with_context(|| format!("boot files {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "vmlinuz",
            "initrd.img-6.1",
            "bcm2711-rpi-4-b.dtb",
            "grüße",
            "a b",
            "x~y.conf.d",
            "LONGNAME~1.TXT",
        ] {
            check_fat_name(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "a:b",
            "a*",
            "a?",
            "a\"",
            "<a>",
            "a|b",
            "a.",
            "a ",
            " a",
            "\u{7f}",
            "\u{85}",
            "\u{1f600}",
            "\u{ffff}",
            "VMLINU~1",
            "ab~1.txt",
        ] {
            assert!(check_fat_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_fat_name(&"n".repeat(255)).is_ok());
        assert!(check_fat_name(&"n".repeat(256)).is_err());
    }

    #[test]
    fn collisions_and_count() {
        let mut n = BootNames::new();
        n.add("vmlinuz").unwrap();
        let e = n.add("VMLINUZ").unwrap_err().to_string();
        assert!(e.contains("same name on FAT"), "{e}");
        assert!(n.add("vmlinuz").unwrap_err().to_string().contains("twice"));
        n.add("straße").unwrap();
        assert!(n.add("STRASSE").is_err(), "fatfs upper-cases ß to SS");
        let mut n = BootNames::new();
        for i in 0..MAX_BOOT_FILES {
            n.add(&format!("f{i}")).unwrap();
        }
        assert!(
            n.add("one-more")
                .unwrap_err()
                .to_string()
                .contains("more than 1024")
        );
    }

    #[test]
    fn short_names_as_fatfs_makes_them() {
        // fatfs 0.3.6's own test cases.
        let (short, len, _, _) = short_form("TextFile.Mine.txt");
        assert_eq!(&prefixed(&short, len, 1, None), b"TEXTFI~1TXT");
        assert_eq!(
            &prefixed(&short, len, 1, Some(checksum("TextFile.Mine.txt"))),
            b"TE527D~1TXT"
        );
        let (short, len, _, _) = short_form("x.txt");
        assert_eq!(
            &prefixed(&short, len, 1, Some(checksum("x.txt"))),
            b"X40DA~1 TXT"
        );
        assert_eq!(short_form("Foo.baR").0, *b"FOO     BAR");
        assert!(short_form("Foo+1.baR").3, "lossy");
    }

    #[test]
    fn natural_names_pass_and_colliding_ones_are_refused() {
        let mut n = BootNames::new();
        for name in ["vmlinuz", "initrd", "cmdline"] {
            n.add(name).unwrap();
        }
        for i in 0..1021 {
            n.add(&format!("overlay-{i:04}.dtbo")).unwrap();
        }
        assert_eq!(n.short.rescans, 687);
        // Names with one checksum: every ninth needs one more rescan.
        let target = checksum("zzzzzz-aaaa.dtb");
        let mut same = Vec::new();
        let alnum: Vec<char> = ('a'..='z').chain('0'..='9').collect();
        'search: for a in &alnum {
            for b in &alnum {
                for c in &alnum {
                    for d in &alnum {
                        let name = format!("zzzzzz-{a}{b}{c}{d}.dtb");
                        if checksum(&name) == target {
                            same.push(name);
                            if same.len() == 400 {
                                break 'search;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(same.len(), 400);
        let mut n = BootNames::new();
        let e = same
            .iter()
            .find_map(|name| n.add(name).err())
            .expect("refused")
            .to_string();
        assert!(e.contains("same FAT short name pattern (ZZ"), "{e}");
    }
}
