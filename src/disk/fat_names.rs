//! File names of a boot payload, checked against what FAT stores faithfully (docs/bundle-format.md).
//!
//! FAT compares names without regard to case, keeps an 8.3 short name next to each long one
//! (fatfs also matches a lookup against the short name), and other FAT implementations drop
//! trailing dots and spaces. Two payload names FAT would take as one would make the second
//! file overwrite the first, so a payload is refused unless every name is stored as given
//! and names a file of its own. [`BootNames`] checks one directory's names as they come (the
//! apply's preflight reads the payload's tar headers through it before any write).

use std::collections::HashMap;
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

/// The names of one boot directory: each checked, none FAT would take for another, at most
/// [`MAX_BOOT_FILES`].
#[derive(Debug, Default)]
pub struct BootNames {
    /// Upper-cased name (as FAT compares) -> name as given.
    seen: HashMap<String, String>,
}

impl BootNames {
    pub fn new() -> BootNames {
        BootNames::default()
    }

    /// Adds one file name; refuses a bad name, a name equal to an earlier one on FAT, and
    /// the file after the [`MAX_BOOT_FILES`]th.
    pub fn add(&mut self, name: &str) -> Result<()> {
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
        self.seen.insert(key, name.to_string());
        Ok(())
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
}
