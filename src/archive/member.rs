//! One tar member's header as hup reads it from a root filesystem stream (the ext4 writer
//! and the fingerprint of the same stream): ustar, GNU long names, and the PAX records hup
//! takes (times, `SCHILY.xattr.*`, `GNU.sparse.*`), resolved into what the member creates.
//! What a root filesystem cannot store as the archive says (ext4's limits, which every slot
//! hup writes has) is refused here, so the fingerprint refuses what the writer would.

use std::io::Read;

use anyhow::{Context, Result, bail};
use tar::EntryType;

use super::sparse::{self, Sparse};

/// Seconds since the epoch (may be negative) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(_) => Timestamp::default(),
        }
    }
}

/// A member name for messages (lossy UTF-8).
fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// What a member creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One archive member's header, resolved (long names, PAX overrides).
#[derive(Debug, Clone)]
pub struct Member {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (07777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    pub atime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    /// Size of the data that follows (regular files).
    pub size: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// A GNU PAX sparse file: its apparent size and map.
    pub sparse: Option<Sparse>,
}

impl Member {
    pub fn show(&self) -> String {
        show(&self.path)
    }
}

/// Parses a PAX time: decimal seconds, optionally negative, optionally with a fraction.
pub fn parse_pax_time(v: &str) -> Option<Timestamp> {
    let (neg, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nsec: u32 = 0;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nsec = nsec * 10 + u32::from(b - b'0');
    }
    Some(if !neg {
        Timestamp { secs, nsec }
    } else if nsec == 0 {
        Timestamp {
            secs: -secs,
            nsec: 0,
        }
    } else {
        Timestamp {
            secs: -secs - 1,
            nsec: 1_000_000_000 - nsec,
        }
    })
}

/// Reads the header of `entry`. `None` for members that create nothing (PAX global headers).
/// Times outside ext4's range are clamped to it, with a warning.
pub fn member<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Member>> {
    read_member(entry, TimeClamp::Warn)
}

/// Whether a time clamped into ext4's range is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeClamp {
    Warn,
    Quiet,
}

fn read_member<R: Read>(entry: &mut tar::Entry<'_, R>, clamp: TimeClamp) -> Result<Option<Member>> {
    let header = entry.header();
    let etype = header.entry_type();
    if etype == EntryType::XGlobalHeader {
        return Ok(None);
    }
    let path = entry.path_bytes().into_owned();
    let name = show(&path);
    let header = entry.header();
    let link = || -> Result<Vec<u8>> {
        match entry.link_name_bytes() {
            Some(l) if !l.is_empty() => Ok(l.into_owned()),
            _ => bail!("{name:?}: link member without a link target"),
        }
    };
    let dev = || -> Result<(u32, u32)> {
        let major = header.device_major().ok().flatten();
        let minor = header.device_minor().ok().flatten();
        match (major, minor) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => bail!("{name:?}: device member without a valid device number"),
        }
    };
    let kind = match etype {
        // old archives mark directories with a trailing slash only
        EntryType::Regular if path.ends_with(b"/") => Kind::Dir,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink(link()?),
        EntryType::Link => Kind::HardLink(link()?),
        EntryType::Char => {
            let (a, b) = dev()?;
            Kind::Char(a, b)
        }
        EntryType::Block => {
            let (a, b) = dev()?;
            Kind::Block(a, b)
        }
        EntryType::Fifo => Kind::Fifo,
        other => bail!(
            "{name:?}: tar member type {:?} cannot be stored in the filesystem; refused",
            char::from(other.as_byte())
        ),
    };
    let mode = header
        .mode()
        .with_context(|| format!("{name:?}: bad mode field"))?;
    let uid = header
        .uid()
        .with_context(|| format!("{name:?}: bad uid field"))?;
    let gid = header
        .gid()
        .with_context(|| format!("{name:?}: bad gid field"))?;
    let mtime = header
        .mtime()
        .with_context(|| format!("{name:?}: bad mtime field"))?;
    let mut m = Member {
        path,
        kind,
        perm: (mode & 0o7777) as u16,
        uid: u32::try_from(uid)
            .with_context(|| format!("{name:?}: uid {uid} does not fit 32 bits"))?,
        gid: u32::try_from(gid)
            .with_context(|| format!("{name:?}: gid {gid} does not fit 32 bits"))?,
        mtime: Timestamp {
            secs: i64::try_from(mtime).unwrap_or(i64::MAX),
            nsec: 0,
        },
        atime: None,
        ctime: None,
        size: entry.size(),
        xattrs: Vec::new(),
        sparse: None,
    };
    let mut gnu = sparse::Records::default();
    if let Some(pax) = entry
        .pax_extensions()
        .with_context(|| format!("{name:?}: reading PAX records"))?
    {
        for ext in pax {
            let ext = ext.with_context(|| format!("{name:?}: malformed PAX record"))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let time = || std::str::from_utf8(value).ok().and_then(parse_pax_time);
            match key {
                "mtime" => m.mtime = time().with_context(|| format!("{name:?}: bad PAX mtime"))?,
                "atime" => m.atime = time(),
                "ctime" => m.ctime = time(),
                k => {
                    if let Some(xname) = k.strip_prefix("SCHILY.xattr.") {
                        m.xattrs.push((xname.to_string(), value.to_vec()));
                    } else if let Some(g) = k.strip_prefix("GNU.sparse.") {
                        gnu.record(g, value);
                    }
                }
            }
        }
    }
    if gnu.any() {
        let (sp, real_name) = gnu
            .resolve(m.kind == Kind::File)
            .with_context(|| format!("{name:?}: GNU sparse member"))?;
        if let Some(real_name) = real_name {
            m.path = real_name;
        }
        m.sparse = Some(sp);
    }
    check(&m).with_context(|| format!("{:?}", m.show()))?;
    clamp_times(&mut m, clamp);
    Ok(Some(m))
}

/// [`member`] without the warnings, for other readers of the same stream (the
/// fingerprint): they refuse what the ext4 writer would refuse, so `hup pack` refuses
/// early, and take a sparse member's map as the writer does.
pub fn check_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Member>> {
    read_member(entry, TimeClamp::Quiet)
}

/// Brings the member's times into ext4's range (as the kernel clamps what it cannot store):
/// a time the inode cannot hold would wrap to another date, or be taken by e2fsck for a
/// mis-encoded one. Times are not part of a fingerprint, and a data partition's backup may
/// legitimately hold such a time (the kernel stores up to 2446), so this is not refused.
fn clamp_times(m: &mut Member, clamp: TimeClamp) {
    let name = m.show();
    for (what, t) in [
        ("mtime", Some(&mut m.mtime)),
        ("atime", m.atime.as_mut()),
        ("ctime", m.ctime.as_mut()),
    ] {
        let Some(t) = t else { continue };
        if (TIME_MIN..=TIME_MAX).contains(&t.secs) {
            continue;
        }
        let to = t.secs.clamp(TIME_MIN, TIME_MAX);
        if clamp == TimeClamp::Warn {
            log::warn!(
                "{name:?}: {what} {} is outside ext4's time range (1901-12-13..2310-04-04); \
                 stored as {to}",
                t.secs
            );
        }
        *t = Timestamp { secs: to, nsec: 0 };
    }
}

/// Largest file: ext4's logical block numbers are 32 bits, and e2fsck refuses an
/// extent-mapped file whose size reaches 2^32 blocks of 4096 bytes (16 TiB).
pub const MAX_FILE_SIZE: u64 = (1u64 << 32) * 4096 - 1;
/// Earliest time ext4 stores: the signed 32-bit seconds with epoch bits 0 (1901-12-13).
pub const TIME_MIN: i64 = -(1 << 31);
/// Latest time ext4 stores unambiguously (2310-04-04): beyond it the epoch bits are 3 with
/// the sign bit set, which e2fsck reads as a mis-encoded pre-1970 date and "repairs".
pub const TIME_MAX: i64 = 3 * (1 << 32) - (1 << 31) - 1;
/// Largest major and minor device numbers of ext4's (the kernel's) encoding.
pub const MAJOR_MAX: u32 = 0xfff;
pub const MINOR_MAX: u32 = 0xf_ffff;
/// The xattr namespaces a member may use (ext4 stores each under its own index).
const XATTR_PREFIXES: [&str; 3] = ["user.", "trusted.", "security."];
/// Whole xattr names of the `system.` namespace a member may use (POSIX ACLs).
const XATTR_SYSTEM: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

/// Refuses what ext4 cannot store as the archive says, instead of truncating or writing
/// something e2fsck rejects: a NUL in the name or a link target, a file larger than ext4
/// allows, a device number beyond its encoding, an xattr outside the namespaces it stores
/// (or with an empty name, or `system.data`, which is ext4's inline data).
fn check(m: &Member) -> Result<()> {
    if m.path.contains(&0) {
        bail!("the name contains a NUL byte; refused");
    }
    match &m.kind {
        Kind::Symlink(to) | Kind::HardLink(to) if to.contains(&0) => {
            bail!("the link target contains a NUL byte; refused")
        }
        Kind::Char(major, minor) | Kind::Block(major, minor)
            if *major > MAJOR_MAX || *minor > MINOR_MAX =>
        {
            bail!(
                "device number {major}:{minor} does not fit ext4's encoding (major at most \
                 {MAJOR_MAX}, minor at most {MINOR_MAX}); refused"
            )
        }
        _ => {}
    }
    let size = m.sparse.as_ref().map_or(m.size, |s| s.realsize);
    if m.kind == Kind::File && size > MAX_FILE_SIZE {
        bail!("file size {size} is beyond ext4's limit of {MAX_FILE_SIZE} bytes (16 TiB); refused");
    }
    for (name, _) in &m.xattrs {
        check_xattr_name(name)?;
    }
    Ok(())
}

fn check_xattr_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("an xattr with an empty name; refused");
    }
    if name.contains('\0') {
        bail!("xattr name {name:?} contains a NUL byte; refused");
    }
    if name == "system.data" {
        bail!("xattr \"system.data\" is ext4's inline data, not an attribute; refused");
    }
    if XATTR_SYSTEM.contains(&name) {
        return Ok(());
    }
    match XATTR_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
        Some("") => bail!("xattr name {name:?} is empty after its namespace; refused"),
        Some(rest) if rest.len() > 255 => {
            bail!("xattr name {name:?} is longer than 255 bytes after its namespace; refused")
        }
        Some(_) => Ok(()),
        None => bail!(
            "xattr name {name:?} is not in a namespace ext4 stores (user., trusted., security., \
             system.posix_acl_access, system.posix_acl_default); refused"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |s| parse_pax_time(s).unwrap();
        assert_eq!(
            t("1700000000"),
            Timestamp {
                secs: 1_700_000_000,
                nsec: 0
            }
        );
        assert_eq!(
            t("1700000000.5"),
            Timestamp {
                secs: 1_700_000_000,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            t("1.123456789123"),
            Timestamp {
                secs: 1,
                nsec: 123_456_789
            }
        );
        assert_eq!(
            t("-1.25"),
            Timestamp {
                secs: -2,
                nsec: 750_000_000
            }
        );
        assert_eq!(t("-3"), Timestamp { secs: -3, nsec: 0 });
        assert!(parse_pax_time("x").is_none());
        assert!(parse_pax_time("1.2x").is_none());
        assert!(parse_pax_time("").is_none());
    }

    #[test]
    fn xattr_names() {
        for ok in [
            "user.x",
            "trusted.overlay.opaque",
            "security.capability",
            "system.posix_acl_access",
            "system.posix_acl_default",
        ] {
            assert!(check_xattr_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "user.",
            "security.",
            "system.data",
            "system.foo",
            "gnu.x",
            "foo.bar",
            "user.a\0b",
        ] {
            assert!(check_xattr_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_xattr_name(&format!("user.{}", "a".repeat(256))).is_err());
    }

    #[test]
    fn time_range_ends_encode_unambiguously() {
        // (epoch bits, sign bit of the low word) as the inode stores a time
        let enc = |t: i64| (((t - i64::from(t as u32 as i32)) >> 32) & 3, t as u32 >> 31);
        assert_eq!(enc(TIME_MIN), (0, 1));
        assert_eq!(enc(TIME_MIN - 1), (3, 0), "wraps: not storable");
        assert_eq!(enc(TIME_MAX), (2, 0));
        assert_eq!(enc(TIME_MAX + 1), (3, 1), "what e2fsck reads as pre-1970");
    }
}
