//! The `hup.*` options of the kernel command line (`/proc/cmdline`), the one parser of
//! them: the init reads all of them; the running OS reads `hup.slot=` to tell the booted
//! slot (crate::device::booted_slot). The systemd-boot backend writes `hup.slot=` into its
//! boot entries.

use std::time::Duration;

use crate::model::slot::Slot;

/// Options the init understands; everything else on the command line is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `hup.debug`: log debug messages.
    pub debug: bool,
    /// `hup.shell`: run /bin/sh (if the initramfs has one) before choosing a slot, and on a fatal error.
    pub shell: bool,
    /// `hup.failpoint=NAME`: armed like `HUP_FAILPOINT` (builds with the `failpoints` feature).
    pub failpoint: Option<String>,
    /// `hup.slot=a|b`: the slot of the boot entry (systemd-boot backend).
    pub slot: Option<Slot>,
    /// `hup.rootwait=SECONDS`: how long to wait for the partitions (default 10).
    pub rootwait: Duration,
    /// `hup.rebootdelay=SECONDS`: wait before rebooting after a fatal error (default 10).
    pub reboot_delay: Duration,
    /// `hup.*` words that were not understood (logged as warnings).
    pub unknown: Vec<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            debug: false,
            shell: false,
            failpoint: None,
            slot: None,
            rootwait: Duration::from_secs(10),
            reboot_delay: Duration::from_secs(10),
            unknown: Vec::new(),
        }
    }
}

/// Splits a kernel command line into words; double quotes group spaces (`a="b c"`).
pub fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// A boolean flag: present without value, or `=1/yes/on/true` vs `=0/no/off/false`.
fn flag(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("1" | "yes" | "on" | "true" | "y") => Some(true),
        Some("0" | "no" | "off" | "false" | "n") => Some(false),
        Some(_) => None,
    }
}

fn seconds(value: Option<&str>) -> Option<Duration> {
    let v: u64 = value?.parse().ok()?;
    Some(Duration::from_secs(v.min(3600)))
}

/// Parses the text of `/proc/cmdline`; later words override earlier ones.
pub fn parse(line: &str) -> Cmdline {
    let mut c = Cmdline::default();
    for word in split(line) {
        let Some(rest) = word.strip_prefix("hup.") else {
            continue;
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        let ok = match key {
            "debug" => flag(value).map(|b| c.debug = b).is_some(),
            "shell" => flag(value).map(|b| c.shell = b).is_some(),
            "failpoint" => match value {
                Some(v) if !v.is_empty() => {
                    c.failpoint = Some(v.to_string());
                    true
                }
                _ => false,
            },
            "slot" => value
                .and_then(Slot::parse)
                .map(|s| c.slot = Some(s))
                .is_some(),
            "rootwait" => seconds(value).map(|d| c.rootwait = d).is_some(),
            "rebootdelay" => seconds(value).map(|d| c.reboot_delay = d).is_some(),
            // Read by the test OS, not by the init.
            "test" => true,
            _ => false,
        };
        if !ok {
            c.unknown.push(word.clone());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_quotes() {
        assert_eq!(
            split("  console=ttyS0 a=\"b c\"  quiet\n"),
            ["console=ttyS0", "a=b c", "quiet"]
        );
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split("x=\"\""), [String::from("x=")]);
    }

    #[test]
    fn parses_hup_options() {
        let c = parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 hup.debug hup.shell=0 hup.failpoint=after-format \
             hup.slot=b hup.rootwait=3 hup.rebootdelay=1 quiet\n",
        );
        assert!(c.debug);
        assert!(!c.shell);
        assert_eq!(c.failpoint.as_deref(), Some("after-format"));
        assert_eq!(c.slot, Some(Slot::B));
        assert_eq!(c.rootwait, Duration::from_secs(3));
        assert_eq!(c.reboot_delay, Duration::from_secs(1));
        assert!(c.unknown.is_empty());
    }

    /// The last valid `hup.slot=` counts, as for the kernel; an invalid one is ignored.
    #[test]
    fn the_last_valid_slot_counts() {
        assert_eq!(parse("quiet hup.slot=b console=ttyS0").slot, Some(Slot::B));
        assert_eq!(parse("hup.slot=a hup.slot=b").slot, Some(Slot::B));
        assert_eq!(parse("hup.slot=b hup.slot=c").slot, Some(Slot::B));
        assert_eq!(parse("hup.slot=c root=/dev/vda2").slot, None);
        assert_eq!(parse("root=/dev/vda2 \"hup.slot=a\"").slot, Some(Slot::A));
    }

    #[test]
    fn defaults_and_unknown_words() {
        let c = parse("console=ttyS0 hup.slot=c hup.rootwait=x hup.bogus hup.shell");
        assert_eq!(c.slot, None);
        assert_eq!(c.rootwait, Duration::from_secs(10));
        assert!(c.shell);
        assert!(!c.debug);
        assert_eq!(c.unknown, ["hup.slot=c", "hup.rootwait=x", "hup.bogus"]);
        assert_eq!(parse(""), Cmdline::default());
    }
}
