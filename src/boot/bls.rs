//! Boot Loader Specification type #1 entries as hup writes them, and systemd-boot's ordering.
//!
//! File name: `hup-<slot>[+LEFT[-DONE]].conf` (boot counting in the name). Content:
//! ```text
//! # hup-refunds-left 3
//! title hup slot b
//! sort-key hup
//! version 7
//! linux /hup/b/vmlinuz
//! initrd /hup/b/initrd
//! options root=PARTLABEL=hup-root-b hup.slot=b console=ttyS0
//! ```
//! systemd-boot (v252) sorts entries: no tries left last; then (both having a sort-key) by
//! sort-key, machine-id, `version` newest first; then by file name, newest first. It boots the
//! first. hup gives every entry the same sort-key and raises `version` when it prefers a slot,
//! so the version decides.

use std::cmp::Ordering;

use crate::model::slot::Slot;

/// Entry files live here on the ESP.
pub(crate) const ENTRIES_DIR: &str = "loader/entries";
/// Common sort-key of hup's entries.
const SORT_KEY: &str = "hup";
const REFUNDS_KEY: &str = "# hup-refunds-left ";

/// A parsed entry file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryName {
    pub slot: Slot,
    /// (left, done); `None` for an entry without boot counting (a good slot).
    pub counter: Option<(u32, u32)>,
}

impl EntryName {
    pub fn parse(file: &str) -> Option<EntryName> {
        let stem = file.strip_suffix(".conf")?;
        let rest = stem.strip_prefix("hup-")?;
        let (slot, counter) = match rest.split_once('+') {
            None => (rest, None),
            Some((s, c)) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l, d),
                    None => (c, "0"),
                };
                let num = |x: &str| {
                    (!x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| x.parse::<u32>().ok())
                        .flatten()
                };
                (s, Some((num(left)?, num(done)?)))
            }
        };
        Some(EntryName {
            slot: Slot::parse(slot).filter(|s| s.name() == slot)?,
            counter,
        })
    }

    pub fn file_name(&self) -> String {
        match self.counter {
            None => format!("hup-{}.conf", self.slot),
            Some((l, d)) => format!("hup-{}+{l}-{d}.conf", self.slot),
        }
    }

    pub fn path(&self) -> String {
        format!("{ENTRIES_DIR}/{}", self.file_name())
    }

    /// The counter says no tries are left.
    pub fn exhausted(&self) -> bool {
        matches!(self.counter, Some((0, _)))
    }
}

/// The fields of an entry that hup reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryBody {
    pub title: String,
    pub version: u64,
    pub linux: String,
    pub initrd: String,
    pub options: String,
    pub refunds_left: u32,
}

impl EntryBody {
    pub fn render(&self) -> String {
        let initrd = if self.initrd.is_empty() {
            String::new()
        } else {
            format!("initrd {}\n", self.initrd)
        };
        format!(
            "# Written by hup. Boot counting is in the file name; see docs/boot-backends.md.\n\
             {REFUNDS_KEY}{}\n\
             title {}\n\
             sort-key {SORT_KEY}\n\
             version {}\n\
             linux {}\n\
             {initrd}\
             options {}\n",
            self.refunds_left, self.title, self.version, self.linux, self.options
        )
    }

    /// Parses what [`EntryBody::render`] writes (unknown lines are ignored).
    pub fn parse(text: &str) -> EntryBody {
        let mut b = EntryBody {
            title: String::new(),
            version: 0,
            linux: String::new(),
            initrd: String::new(),
            options: String::new(),
            refunds_left: 0,
        };
        for line in text.lines() {
            if let Some(n) = line.strip_prefix(REFUNDS_KEY) {
                b.refunds_left = n.trim().parse().unwrap_or(0);
                continue;
            }
            let line = line.trim();
            let (key, value) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let value = value.trim().to_string();
            match key {
                "title" => b.title = value,
                "version" => b.version = value.parse().unwrap_or(0),
                "linux" => b.linux = value,
                "initrd" => b.initrd = value,
                "options" if b.options.is_empty() => b.options = value,
                "options" => b.options = format!("{} {value}", b.options),
                _ => {}
            }
        }
        b
    }
}

/// systemd-boot's order between two hup entries (both with sort-key `hup`): `Less` boots first.
pub(crate) fn boot_order(a: (&EntryName, u64), b: (&EntryName, u64)) -> Ordering {
    let (na, va) = a;
    let (nb, vb) = b;
    na.exhausted()
        .cmp(&nb.exhausted())
        .then(vb.cmp(&va))
        .then_with(|| nb.file_name().cmp(&na.file_name()))
        .then_with(|| match (na.counter, nb.counter) {
            (Some((la, da)), Some((lb, db))) => lb.cmp(&la).then(da.cmp(&db)),
            _ => Ordering::Equal,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = EntryName::parse("hup-b+3-0.conf").unwrap();
        assert_eq!(n.slot, Slot::B);
        assert_eq!(n.counter, Some((3, 0)));
        assert_eq!(n.file_name(), "hup-b+3-0.conf");
        assert_eq!(
            EntryName::parse("hup-a+2.conf").unwrap().counter,
            Some((2, 0))
        );
        let good = EntryName::parse("hup-a.conf").unwrap();
        assert_eq!((good.slot, good.counter), (Slot::A, None));
        assert!(EntryName::parse("hup-a+0-3.conf").unwrap().exhausted());
        for bad in [
            "hup-c.conf",
            "hup-A.conf",
            "debian.conf",
            "hup-a+x.conf",
            "hup-a+1-.conf",
            "hup-a.tmp",
        ] {
            assert_eq!(EntryName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn body_round_trip() {
        let b = EntryBody {
            title: "hup slot b".into(),
            version: 12,
            linux: "/hup/b/vmlinuz".into(),
            initrd: "/hup/b/initrd".into(),
            options: "root=PARTLABEL=hup-root-b hup.slot=b quiet".into(),
            refunds_left: 2,
        };
        let text = b.render();
        assert!(text.contains("\nsort-key hup\n"));
        assert!(text.contains("\nversion 12\n"));
        assert_eq!(EntryBody::parse(&text), b);
        let no_initrd = EntryBody {
            initrd: String::new(),
            ..b
        };
        let text = no_initrd.render();
        assert!(!text.contains("initrd"), "{text}");
        assert_eq!(EntryBody::parse(&text), no_initrd);
    }

    #[test]
    fn order_follows_systemd_boot() {
        let e = |s: &str| EntryName::parse(s).unwrap();
        let (try_b, good_a) = (e("hup-b+3-0.conf"), e("hup-a.conf"));
        // Higher version first, whatever the names.
        assert_eq!(boot_order((&try_b, 2), (&good_a, 1)), Ordering::Less);
        let (try_a, good_b) = (e("hup-a+3-0.conf"), e("hup-b.conf"));
        assert_eq!(boot_order((&try_a, 3), (&good_b, 2)), Ordering::Less);
        // Exhausted last even with the higher version.
        let spent = e("hup-a+0-3.conf");
        assert_eq!(boot_order((&spent, 3), (&good_b, 2)), Ordering::Greater);
        // Same version: file name, newest (b) first.
        assert_eq!(boot_order((&good_b, 1), (&good_a, 1)), Ordering::Less);
    }
}
