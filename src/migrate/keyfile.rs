//! The GLib key-file format that both connman (its provisioning files) and NetworkManager
//! (its keyfile connections) use: `[group]` lines, `key=value` lines, `#` comments.
//!
//! Reading follows GLib's `g_key_file_get_string`: leading whitespace of a line and of a
//! value is dropped, trailing whitespace of a value is kept, the escapes `\s \n \t \r \\`
//! are decoded and any other escape is an error. A group listed twice is merged; a key
//! listed twice keeps its last value. Quotes have no meaning: they are part of the value.

use anyhow::{Result, bail};

/// A parsed key file: groups in file order, each with its keys (raw, still escaped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// (key, raw value) in file order; a repeated key appears once, with its last value.
    pub entries: Vec<(String, String)>,
}

impl Group {
    /// The raw (escaped) value of `key`.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` with the escapes decoded.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => unescape(v)
                .map(Some)
                .map_err(|e| e.context(format!("[{}] {key}", self.name))),
        }
    }
}

impl KeyFile {
    /// Parses `text`; errors name the line.
    pub fn parse(text: &str) -> Result<KeyFile> {
        let mut kf = KeyFile::default();
        let mut current: Option<usize> = None;
        for (i, line) in text.split('\n').enumerate() {
            let n = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            let line = line.trim_start_matches([' ', '\t', '\x0b', '\x0c']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some((name, after)) = rest.split_once(']') else {
                    bail!("line {n}: a group header without ']'");
                };
                if !after.trim_matches([' ', '\t']).is_empty() {
                    bail!("line {n}: text after the group header [{name}]");
                }
                if name.is_empty() || name.contains('[') || name.chars().any(char::is_control) {
                    bail!("line {n}: invalid group name {name:?}");
                }
                current = Some(match kf.groups.iter().position(|g| g.name == name) {
                    Some(idx) => idx,
                    None => {
                        kf.groups.push(Group {
                            name: name.to_string(),
                            entries: Vec::new(),
                        });
                        kf.groups.len() - 1
                    }
                });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {n}: neither [group], key=value nor a # comment");
            };
            let key = key.trim_end_matches([' ', '\t']);
            if key.is_empty() || key.chars().any(char::is_control) {
                bail!("line {n}: invalid key {key:?}");
            }
            let Some(g) = current else {
                bail!("line {n}: key {key:?} before the first [group]");
            };
            let value = value.trim_start_matches([' ', '\t']).to_string();
            let entries = &mut kf.groups[g].entries;
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(e) => e.1 = value,
                None => entries.push((key.to_string(), value)),
            }
        }
        Ok(kf)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// Decodes a raw value (`\s \n \t \r \\`).
pub fn unescape(raw: &str) -> Result<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => bail!("invalid escape sequence \\{other} in {raw:?}"),
            None => bail!("escape character at the end of {raw:?}"),
        }
    }
    Ok(out)
}

/// Encodes a value so that [`unescape`] (and GLib) read it back exactly: backslash,
/// newline, carriage return and tab are escaped, and so are leading and trailing spaces
/// (`\s`), which a reader would otherwise trim.
pub fn escape(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let first = chars.iter().position(|&c| c != ' ').unwrap_or(chars.len());
    let last = chars.iter().rposition(|&c| c != ' ').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(value.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            ' ' if i < first || i >= last => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// An SSID as NetworkManager's keyfile plugin writes it: when every byte is printable
/// ASCII, a string with `;` written `\;` (then escaped like any value); otherwise a list
/// of decimal bytes, each followed by `;` (which is how non-ASCII SSIDs round-trip exactly).
pub fn ssid_value(ssid: &[u8]) -> String {
    if ssid.iter().all(|b| (0x20..0x7f).contains(b)) {
        let s = String::from_utf8_lossy(ssid).replace(';', "\\;");
        escape(&s)
    } else {
        ssid.iter().map(|b| format!("{b};")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_glib() {
        let kf = KeyFile::parse(
            "# comment\n\n  [global]\nName = x\n[service_a] \r\n  Name = My Net  \nKey=a\\sb\\\\c\\n\n\
             # [not a group]\nName=second\n[global]\nDescription=d=e\n",
        )
        .unwrap();
        assert_eq!(kf.groups.len(), 2);
        let a = kf.group("service_a").unwrap();
        assert_eq!(a.get("Name").unwrap().unwrap(), "second");
        assert_eq!(a.get("Key").unwrap().unwrap(), "a b\\c\n");
        let g = kf.group("global").unwrap();
        assert_eq!(g.raw("Name"), Some("x"));
        assert_eq!(g.raw("Description"), Some("d=e"));
        let kf = KeyFile::parse("[g]\nv= \"quoted\" \n").unwrap();
        assert_eq!(kf.groups[0].get("v").unwrap().unwrap(), "\"quoted\" ");
    }

    #[test]
    fn refuses_what_glib_refuses() {
        for bad in [
            "Name=x\n",
            "[g\n",
            "[g] x\n",
            "[]\n",
            "[g]\njust text\n",
            "[g]\n=value\n",
        ] {
            assert!(KeyFile::parse(bad).is_err(), "{bad:?}");
        }
        let kf = KeyFile::parse("[g]\na=x\\qy\nb=x\\\n").unwrap();
        assert!(kf.groups[0].get("a").is_err());
        assert!(kf.groups[0].get("b").is_err());
    }

    #[test]
    fn escape_round_trips() {
        for v in [
            "plain",
            " lead",
            "trail ",
            "  ",
            "a\\b",
            "multi\nline\r\t",
            "x y z",
            "",
        ] {
            let e = escape(v);
            assert!(!e.starts_with(' ') && !e.ends_with(' '), "{e:?}");
            assert_eq!(unescape(&e).unwrap(), v, "{e:?}");
        }
        assert_eq!(escape(" a b "), "\\sa b\\s");
    }

    #[test]
    fn ssids_as_networkmanager_writes_them() {
        assert_eq!(ssid_value(b"Home"), "Home");
        assert_eq!(ssid_value(b"a;b\\c"), "a\\\\;b\\\\c");
        assert_eq!(ssid_value("Café".as_bytes()), "67;97;102;195;169;");
        assert_eq!(ssid_value(b"tab\there"), "116;97;98;9;104;101;114;101;");
    }
}
