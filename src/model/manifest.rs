//! `manifest.json`: what a bundle holds, signed as a whole (docs/bundle-format.md).

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::version::Version;

/// The only manifest format this hup reads and writes.
pub const FORMAT: u32 = 1;
/// Largest accepted `manifest.json`.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What a payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// `rootfs.tar.zst`: the root filesystem, written into the spare slot.
    Rootfs,
    /// `boot.tar.zst`: files for the slot's directory on the boot partition.
    Boot,
    /// `fingerprint.json`: the rootfs's fingerprint (docs/fingerprint.md), not compressed.
    Fingerprint,
}

impl PayloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Rootfs => "rootfs",
            PayloadKind::Boot => "boot",
            PayloadKind::Fingerprint => "fingerprint",
        }
    }
}

/// One payload member of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Member name in the bundle (a plain file name).
    pub name: String,
    pub kind: PayloadKind,
    /// Exact size of the member in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the member's bytes.
    pub sha256: String,
    /// Size of the decompressed tar stream, for space checks.
    pub unpacked_size: u64,
}

/// The signed description of a bundle. Unknown fields are refused: a field this hup
/// does not understand may carry a requirement it would silently ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// Device type this bundle is for; must equal the device's `compatible`.
    pub compatible: String,
    pub version: String,
    /// Oldest running version this bundle may be applied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_from_version: Option<String>,
    pub payloads: Vec<Payload>,
    /// Ids of the configuration migrations to run after populating the slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<String>,
    /// The partition layout the new system needs; a device with another layout is migrated
    /// offline before the update (docs/layout-migration.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<super::layout::TargetLayout>,
    /// Refuse to update a device whose running slot differs from its recorded fingerprint
    /// (checked when staging and again in preflight; docs/fingerprint.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_unmodified_base: bool,
    /// A delta bundle: the rootfs payload is a delta stream against this base
    /// (docs/bundle-format.md, "Delta bundles").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

/// What a delta bundle needs on the device and what its rootfs payload expands to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The version the running slot must run.
    pub base_version: String,
    /// SHA-256 of the base rootfs's fingerprint record (docs/delta.md).
    pub base_fingerprint: String,
    /// Size of the rootfs tar the delta stream expands to: the full bundle's rootfs tar,
    /// byte for byte.
    pub tar_size: u64,
    /// SHA-256 of that rootfs's fingerprint record, as `base_fingerprint` is of the base's:
    /// the written slot's record must give it (docs/delta.md, "The apply").
    pub fingerprint: String,
    /// Files sent whole, copied from the base, rebuilt with a patch.
    pub new: DeltaCount,
    pub copy: DeltaCount,
    pub patch: DeltaCount,
}

/// Files of one kind of delta entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaCount {
    pub files: u64,
    /// Bytes of the files they give.
    pub bytes: u64,
    /// Bytes the delta stream carries for them (file data or patches, before the
    /// stream's compression).
    pub sent: u64,
}

impl Manifest {
    /// Parses and validates manifest bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        ensure!(
            bytes.len() as u64 <= MAX_MANIFEST_BYTES,
            "{} bytes exceeds the {} byte limit",
            bytes.len(),
            MAX_MANIFEST_BYTES
        );
        // Look at the format first so that a future format gets a precise error.
        let raw = super::json::parse_unique(bytes).context("invalid JSON")?;
        match raw.get("format").and_then(|f| f.as_u64()) {
            Some(f) if f == FORMAT as u64 => {}
            Some(f) => bail!("unknown format {f} (this hup reads format {FORMAT})"),
            None => bail!("missing or non-numeric \"format\""),
        }
        let m: Manifest = serde_json::from_value(raw).context("invalid manifest")?;
        m.validate()?;
        Ok(m)
    }

    /// Serializes deterministically (field order fixed by the struct, two-space indent).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    /// Checks the invariants a reader relies on.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.format == FORMAT, "unknown format {}", self.format);
        ensure!(
            valid_token(&self.compatible),
            "invalid \"compatible\" {:?}: use letters, digits, '.', '_' or '-'",
            self.compatible
        );
        Version::parse(&self.version).context("\"version\"")?;
        if let Some(v) = &self.min_from_version {
            Version::parse(v).context("\"min_from_version\"")?;
        }
        ensure!(!self.payloads.is_empty(), "no payloads");
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.payloads {
            ensure!(
                valid_member_name(&p.name),
                "invalid payload name {:?}: a plain file name of letters, digits, '.', '_' or '-'",
                p.name
            );
            ensure!(
                !matches!(p.name.as_str(), "manifest.json" | "manifest.json.minisig"),
                "payload name {:?} is reserved",
                p.name
            );
            ensure!(
                seen.insert(p.name.as_str()),
                "payload {:?} listed twice",
                p.name
            );
            ensure!(
                is_sha256(&p.sha256),
                "payload {:?}: sha256 must be 64 lowercase hex digits",
                p.name
            );
        }
        for kind in [
            PayloadKind::Rootfs,
            PayloadKind::Boot,
            PayloadKind::Fingerprint,
        ] {
            let n = self.payloads.iter().filter(|p| p.kind == kind).count();
            ensure!(n <= 1, "{n} payloads of kind {}", kind.as_str());
        }
        ensure!(
            self.payload(PayloadKind::Rootfs).is_some(),
            "no rootfs payload"
        );
        let mut migrations = std::collections::BTreeSet::new();
        for m in &self.migrations {
            ensure!(valid_token(m), "invalid migration id {m:?}");
            ensure!(
                migrations.insert(m.as_str()),
                "migration {m:?} listed twice"
            );
        }
        if let Some(l) = &self.layout {
            l.validate().context("\"layout\"")?;
        }
        if let Some(d) = &self.delta {
            Version::parse(&d.base_version).context("\"delta\".\"base_version\"")?;
            ensure!(
                is_sha256(&d.base_fingerprint) && is_sha256(&d.fingerprint),
                "\"delta\": digests must be 64 lowercase hex digits"
            );
        }
        Ok(())
    }

    /// The payload of a kind, if present.
    pub fn payload(&self, kind: PayloadKind) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.kind == kind)
    }

    pub fn version(&self) -> Version {
        Version::parse(&self.version).expect("validated")
    }

    pub fn min_from_version(&self) -> Option<Version> {
        self.min_from_version
            .as_deref()
            .map(|v| Version::parse(v).expect("validated"))
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_member_name(s: &str) -> bool {
    valid_token(s) && s != "." && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            compatible: "qemu-x86_64".into(),
            version: "2.0.0".into(),
            min_from_version: Some("1.0.0".into()),
            payloads: vec![Payload {
                name: "rootfs.tar.zst".into(),
                kind: PayloadKind::Rootfs,
                size: 10,
                sha256: "0".repeat(64),
                unpacked_size: 20,
            }],
            migrations: vec![],
            layout: None,
            requires_unmodified_base: false,
            delta: None,
        }
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(!text.contains("layout") && !text.contains("requires_unmodified_base"));
        let mut m = sample();
        m.requires_unmodified_base = true;
        m.layout = Some(crate::model::layout::TargetLayout {
            version: 2,
            partitions: vec![crate::model::layout::PartitionSpec {
                label: "hup-data".into(),
                size: None,
                type_guid: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
            }],
        });
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        m.layout.as_mut().unwrap().partitions[0].size = Some(0);
        let e = format!("{:#}", Manifest::from_json(&m.to_json()).unwrap_err());
        assert!(e.contains("\"layout\"") && e.contains("size 0"), "{e}");
    }

    #[test]
    fn refusals() {
        let err = |f: &dyn Fn(&mut Manifest)| {
            let mut m = sample();
            f(&mut m);
            format!("{:#}", Manifest::from_json(&m.to_json()).unwrap_err())
        };
        assert!(err(&|m| m.format = 2).contains("unknown format 2"));
        assert!(err(&|m| m.payloads[0].name = "../x".into()).contains("invalid payload name"));
        assert!(err(&|m| m.payloads[0].sha256 = "AB".into()).contains("sha256"));
        assert!(err(&|m| m.payloads.push(m.payloads[0].clone())).contains("listed twice"));
        assert!(err(&|m| m.payloads[0].kind = PayloadKind::Boot).contains("no rootfs"));
        assert!(err(&|m| m.version = "x".into()).contains("version"));
        assert!(err(&|m| m.compatible = "a b".into()).contains("compatible"));
        assert!(err(&|m| m.migrations = vec!["x".into(), "x".into()]).contains("listed twice"));
        assert!(err(&|m| m.version = "2.0-rc\n1".into()).contains("control character"));
        assert!(err(&|m| m.compatible = "qemu\u{1b}[2J".into()).contains("compatible"));
        let mut j = String::from_utf8(sample().to_json()).unwrap();
        j.insert_str(1, "\"version\":\"9.9.9\",");
        let e = format!("{:#}", Manifest::from_json(j.as_bytes()).unwrap_err());
        assert!(e.contains("duplicate key \"version\""), "{e}");
        let e = Manifest::from_json(b"{\"format\":1,").unwrap_err();
        assert!(format!("{e:#}").contains("invalid JSON"));
        let mut j = String::from_utf8(sample().to_json()).unwrap();
        j.insert_str(1, "\"layouts\":2,");
        assert!(
            format!("{:#}", Manifest::from_json(j.as_bytes()).unwrap_err())
                .contains("unknown field")
        );
        assert!(Manifest::from_json(&vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize]).is_err());
    }
}
