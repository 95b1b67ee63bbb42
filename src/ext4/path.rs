//! Archive member names: split into components that stay inside the filesystem.

use anyhow::{Result, bail};

/// Longest name of one directory entry.
pub const NAME_MAX: usize = 255;

/// A member name for messages (lossy UTF-8). Callers name the member in their error context.
pub fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Splits a member name into its components: leading `/` are stripped, empty and `.`
/// components dropped; `..`, names over 255 bytes and a NUL byte anywhere are refused (a
/// directory entry cannot hold a NUL, and `/` only ever separates components). An empty
/// result is the root.
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>> {
    if raw.contains(&0) {
        bail!("the name contains a NUL byte; refused");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("a \"..\" component would leave the filesystem; refused"),
            _ if c.len() > NAME_MAX => bail!(
                "a name component is {} bytes long (at most {NAME_MAX})",
                c.len()
            ),
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn normalizes() {
        assert_eq!(
            components(b"./usr/bin/").unwrap(),
            vec![&b"usr"[..], b"bin"]
        );
        assert_eq!(
            components(b"/etc/passwd").unwrap(),
            vec![&b"etc"[..], b"passwd"]
        );
        assert_eq!(components(b"//a//./b").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"/").unwrap().is_empty());
    }

    #[test]
    fn refuses_escapes() {
        assert!(components(b"../x").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"a/..").is_err());
        assert!(components(&[b'a'; 256]).is_err());
        assert!(components(&[b'a'; 255]).is_ok());
        assert!(components(b"etc/pass\0wd").is_err());
        assert!(components(b"\0").is_err());
    }
}
