//! U-Boot's environment image, as U-Boot's `saveenv` and libubootenv (`fw_printenv`,
//! `fw_setenv`) read and write it (docs/boot-backends.md, "U-Boot environment").
//!
//! One copy is `size` bytes (the size in `fw_env.config`): a CRC32 (zlib's, little-endian
//! u32) over the data area, for a redundant environment one flags byte, then the data area:
//! `name=value\0` strings, the last followed by one more `\0`. The rest of the area is
//! padding and is covered by the CRC: U-Boot's `saveenv` pads with 0x00 and so does hup,
//! `mkenvimage` pads with 0xFF, and libubootenv 0.3.2 leaves whatever its buffer held. A
//! reader stops at the empty string and accepts any padding.
//!
//! A redundant environment has two copies; the copy whose CRC is valid wins, and when both
//! are valid the flags decide ([`choose`]). Writing one copy ([`Image::next`]) gives it the
//! flag that makes it win over the other, so the old copy stays valid until the new one is
//! whole.

use thiserror::Error;

/// Bytes of the CRC at the start of every copy.
pub const CRC_LEN: usize = 4;

/// The CRC32 U-Boot and libubootenv use (zlib's `crc32(0, ...)`).
pub fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

/// Why an environment is refused or cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UbootEnvError {
    #[error("U-Boot environment copy has {len} bytes, not the {size} bytes of its configuration")]
    Size { len: usize, size: usize },
    #[error("U-Boot environment size {0} is too small for its header")]
    TooSmall(usize),
    #[error("U-Boot environment has a bad CRC (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc { stored: u32, computed: u32 },
    #[error("both copies of the redundant U-Boot environment are bad (bad CRC or missing)")]
    BothBad,
    #[error("U-Boot environment data has no end marker (an empty string) inside its area")]
    Unterminated,
    #[error(
        "U-Boot environment variables take {need} bytes, more than the {room} bytes of its area"
    )]
    TooBig { need: usize, room: usize },
    #[error(
        "invalid U-Boot environment variable name {0:?}: it is empty, starts with '#' or has '=' or NUL"
    )]
    Name(String),
    #[error("invalid value for U-Boot environment variable {0}: it has a NUL byte")]
    Value(String),
}

/// Single copy, or one copy of a redundant pair (with its flags byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    Redundant,
}

impl Layout {
    /// Bytes before the data area: the CRC, and the flags byte when redundant.
    pub fn header_len(self) -> usize {
        match self {
            Layout::Single => CRC_LEN,
            Layout::Redundant => CRC_LEN + 1,
        }
    }
}

/// How the flags bytes of a redundant pair say which copy is newer. libubootenv chooses the
/// style by device: `Boolean` for NOR flash (`/dev/mtdN` of type NOR), `Incremental` for
/// everything else (files, block devices, NAND, UBI); U-Boot itself counts up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagStyle {
    /// The new copy gets the other's flag + 1 (255 wraps to 0).
    Incremental,
    /// The new copy gets 1 ("active"); the old copy's flag is then set to 0 ("obsolete").
    /// An erased NOR sector reads 0xFF, which wins.
    Boolean,
}

impl FlagStyle {
    /// The flag of the copy written next, when the copy in use has `current`.
    pub fn next(self, current: u8) -> u8 {
        match self {
            FlagStyle::Incremental => current.wrapping_add(1),
            FlagStyle::Boolean => 1,
        }
    }

    /// With `Boolean` style, the flag the old copy gets after the new one is written.
    pub const OBSOLETE: u8 = 0;
}

/// Which copy (0 or 1) of a redundant pair is in use, from `flags` of the copies whose CRC
/// is valid (`None`: bad CRC), the way libubootenv 0.3.2 decides (`libuboot_load`):
/// - only one valid: that one; none valid: [`UbootEnvError::BothBad`];
/// - both valid: the higher flag wins, copy 0 on a tie; then `Boolean`: a copy with 0xFF
///   wins (copy 1 first); `Incremental`: 0xFF against 0 is a wrap-around, so 0 wins.
///
/// U-Boot's own rule (`env_check_redund`) is the `Incremental` one.
pub fn choose(flags: [Option<u8>; 2], style: FlagStyle) -> Result<usize, UbootEnvError> {
    let (f0, f1) = match flags {
        [None, None] => return Err(UbootEnvError::BothBad),
        [Some(_), None] => return Ok(0),
        [None, Some(_)] => return Ok(1),
        [Some(a), Some(b)] => (a, b),
    };
    let mut current = usize::from(f1 > f0);
    match style {
        FlagStyle::Boolean => {
            if f1 == 0xFF {
                current = 1;
            } else if f0 == 0xFF {
                current = 0;
            }
        }
        FlagStyle::Incremental => {
            if f0 == 0xFF && f1 == 0 {
                current = 1;
            } else if f1 == 0xFF && f0 == 0 {
                current = 0;
            }
        }
    }
    Ok(current)
}

/// The variables of an environment, in their order in the data area. Variables hup does not
/// change keep their place and their bytes; a new variable goes where libubootenv puts it
/// (before the first variable whose name sorts after it), so on a sorted environment (what
/// U-Boot and libubootenv write) hup writes the same bytes as `fw_setenv`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UbootEnv {
    vars: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A name U-Boot can import: not empty, no `=` or NUL, and not starting with `#` (U-Boot's
/// import skips such a string as a comment).
fn check_name(name: &str) -> Result<(), UbootEnvError> {
    if name.is_empty() || name.starts_with('#') || name.contains(['=', '\0']) {
        return Err(UbootEnvError::Name(name.to_string()));
    }
    Ok(())
}

impl UbootEnv {
    /// An environment without variables.
    pub fn new() -> UbootEnv {
        UbootEnv::default()
    }

    /// Parses a data area (after the header): strings up to the first empty one. A string
    /// without `=` is skipped; a name seen twice keeps its first place and its last value
    /// (both as libubootenv loads them). Fails without an empty string inside `data`.
    pub fn parse_data(data: &[u8]) -> Result<UbootEnv, UbootEnvError> {
        let mut env = UbootEnv::new();
        let mut rest = data;
        loop {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(UbootEnvError::Unterminated)?;
            if end == 0 {
                return Ok(env);
            }
            let s = &rest[..end];
            if let Some(eq) = s.iter().position(|&b| b == b'=') {
                let (name, value) = (&s[..eq], &s[eq + 1..]);
                match env.vars.iter_mut().find(|(n, _)| n == name) {
                    Some((_, v)) => *v = value.to_vec(),
                    None => env.vars.push((name.to_vec(), value.to_vec())),
                }
            }
            rest = &rest[end + 1..];
        }
    }

    /// The data area of `room` bytes: the strings, the end marker, 0x00 padding (as
    /// U-Boot's `saveenv` pads).
    pub fn render_data(&self, room: usize) -> Result<Vec<u8>, UbootEnvError> {
        let need = self.data_len();
        if need > room {
            return Err(UbootEnvError::TooBig { need, room });
        }
        let mut out = Vec::with_capacity(room);
        for (n, v) in &self.vars {
            out.extend_from_slice(n);
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(0);
        }
        out.resize(room, 0);
        Ok(out)
    }

    /// Bytes the strings and the end marker take.
    pub fn data_len(&self) -> usize {
        1 + self
            .vars
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum::<usize>()
    }

    /// The value of `name` as text (`None` when unset or not UTF-8; see [`Self::get_bytes`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `name`, byte for byte.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Sets `name` to `value`: in place when set, else inserted where libubootenv inserts.
    /// An empty value unsets the variable, as `fw_setenv name` and U-Boot's `setenv name`
    /// do (U-Boot drops a stored `name=` when it imports the environment).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), UbootEnvError> {
        check_name(name)?;
        if value.contains('\0') {
            return Err(UbootEnvError::Value(name.to_string()));
        }
        if value.is_empty() {
            self.unset(name)?;
            return Ok(());
        }
        let (n, v) = (name.as_bytes(), value.as_bytes());
        if let Some((_, old)) = self.vars.iter_mut().find(|(k, _)| k == n) {
            *old = v.to_vec();
            return Ok(());
        }
        let at = self
            .vars
            .iter()
            .position(|(k, _)| k.as_slice() > n)
            .unwrap_or(self.vars.len());
        self.vars.insert(at, (n.to_vec(), v.to_vec()));
        Ok(())
    }

    /// Removes `name`; returns whether it was set.
    pub fn unset(&mut self, name: &str) -> Result<bool, UbootEnvError> {
        check_name(name)?;
        let before = self.vars.len();
        self.vars.retain(|(n, _)| n != name.as_bytes());
        Ok(self.vars.len() != before)
    }

    /// All variables in order, as text (values that are not UTF-8 shown lossily).
    pub fn vars(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

/// One copy as read: CRC checked, flags byte when redundant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCopy {
    /// The flags byte (redundant copies only).
    pub flags: Option<u8>,
    /// The variables, or why the copy is bad.
    pub env: Result<UbootEnv, UbootEnvError>,
}

impl EnvCopy {
    /// Reads one copy of `layout` from `buf` (exactly the configured size).
    pub fn parse(buf: &[u8], layout: Layout) -> Result<EnvCopy, UbootEnvError> {
        let h = layout.header_len();
        if buf.len() <= h {
            return Err(UbootEnvError::TooSmall(buf.len()));
        }
        let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let data = &buf[h..];
        let computed = crc32(data);
        let env = if stored == computed {
            UbootEnv::parse_data(data)
        } else {
            Err(UbootEnvError::BadCrc { stored, computed })
        };
        Ok(EnvCopy {
            flags: (layout == Layout::Redundant).then(|| buf[CRC_LEN]),
            env,
        })
    }

    /// The flags byte (0 when single) when the CRC is valid: what [`choose`] compares. A copy
    /// with a valid CRC but no end marker was not torn by a cut; it counts, and is refused
    /// when chosen (as libubootenv does).
    fn valid_flag(&self) -> Option<u8> {
        match self.env {
            Err(UbootEnvError::BadCrc { .. }) => None,
            _ => Some(self.flags.unwrap_or(0)),
        }
    }
}

/// Renders one copy of `size` bytes: CRC, the flags byte when `flags` is given, data.
pub fn render(env: &UbootEnv, size: usize, flags: Option<u8>) -> Result<Vec<u8>, UbootEnvError> {
    let h = if flags.is_some() {
        Layout::Redundant.header_len()
    } else {
        Layout::Single.header_len()
    };
    if size <= h {
        return Err(UbootEnvError::TooSmall(size));
    }
    let data = env.render_data(size - h)?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&crc32(&data).to_le_bytes());
    out.extend(flags);
    out.extend_from_slice(&data);
    Ok(out)
}

/// A whole environment as read: one copy, or a redundant pair and the copy in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The variables of the copy in use.
    pub env: UbootEnv,
    /// The copy in use (0 when single).
    pub current: usize,
    /// Flags of both copies when redundant (`None` for a copy with a bad CRC).
    pub flags: Option<[Option<u8>; 2]>,
    /// The size of one copy.
    pub size: usize,
    pub style: FlagStyle,
}

/// What writing one copy means: which copy, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyWrite {
    pub copy: usize,
    pub bytes: Vec<u8>,
    /// `Boolean` style only: after `bytes` is whole, the other copy's flags byte (at offset
    /// [`CRC_LEN`]) is set to [`FlagStyle::OBSOLETE`].
    pub obsolete_other: bool,
}

impl Image {
    /// Reads a single environment from its one copy (exactly `size` bytes).
    pub fn single(buf: &[u8], size: usize) -> Result<Image, UbootEnvError> {
        if buf.len() != size {
            return Err(UbootEnvError::Size {
                len: buf.len(),
                size,
            });
        }
        let env = EnvCopy::parse(buf, Layout::Single)?.env?;
        Ok(Image {
            env,
            current: 0,
            flags: None,
            size,
            style: FlagStyle::Incremental,
        })
    }

    /// Reads a redundant environment from its two copies (`None`: a copy that cannot be read,
    /// such as a missing file, counts as a bad one).
    pub fn redundant(
        copies: [Option<&[u8]>; 2],
        size: usize,
        style: FlagStyle,
    ) -> Result<Image, UbootEnvError> {
        let mut parsed = [None, None];
        for (slot, c) in parsed.iter_mut().zip(copies) {
            if let Some(buf) = c {
                if buf.len() != size {
                    return Err(UbootEnvError::Size {
                        len: buf.len(),
                        size,
                    });
                }
                *slot = Some(EnvCopy::parse(buf, Layout::Redundant)?);
            }
        }
        let flags = [0, 1].map(|i| parsed[i].as_ref().and_then(EnvCopy::valid_flag));
        let current = choose(flags, style)?;
        let env = match parsed[current].take() {
            Some(c) => c.env?,
            None => return Err(UbootEnvError::BothBad),
        };
        Ok(Image {
            env,
            current,
            flags: Some(flags),
            size,
            style,
        })
    }

    /// True for a redundant environment.
    pub fn is_redundant(&self) -> bool {
        self.flags.is_some()
    }

    /// The write that stores `env` so that a cut leaves this image or the new one: single,
    /// the one copy; redundant, the copy not in use, with the flag that makes it win.
    pub fn next(&self, env: &UbootEnv) -> Result<CopyWrite, UbootEnvError> {
        let Some(flags) = self.flags else {
            return Ok(CopyWrite {
                copy: 0,
                bytes: render(env, self.size, None)?,
                obsolete_other: false,
            });
        };
        let cur = flags[self.current].unwrap_or(0);
        Ok(CopyWrite {
            copy: 1 - self.current,
            bytes: render(env, self.size, Some(self.style.next(cur)))?,
            obsolete_other: self.style == FlagStyle::Boolean,
        })
    }

    /// The writes that make a new environment from nothing (provisioning): every copy holds
    /// `env`; redundant, copy 0 gets flag 1 and copy 1 flag 0, so copy 0 is in use.
    pub fn fresh(
        env: &UbootEnv,
        size: usize,
        redundant: bool,
    ) -> Result<Vec<CopyWrite>, UbootEnvError> {
        if !redundant {
            return Ok(vec![CopyWrite {
                copy: 0,
                bytes: render(env, size, None)?,
                obsolete_other: false,
            }]);
        }
        // Copy 1 first: were the write cut before copy 0, copy 1 alone is whole.
        Ok(vec![
            CopyWrite {
                copy: 1,
                bytes: render(env, size, Some(0))?,
                obsolete_other: false,
            },
            CopyWrite {
                copy: 0,
                bytes: render(env, size, Some(1))?,
                obsolete_other: false,
            },
        ])
    }
}

#[cfg(test)]
#[path = "ubootenv_tests.rs"]
mod tests;
