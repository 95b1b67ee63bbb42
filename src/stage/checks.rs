//! Whether a bundle may be staged on this device: compatible, newer than the running
//! version (unless downgrades are allowed), `min_from_version`, the rootfs fits the spare
//! slot, the boot files fit the boot partition.
//!
//! The device side is gathered once into [`Facts`]; [`check`] is then a pure function, run
//! both early (as soon as the manifest streamed in) and after the download. The sizes use
//! the same rules as the apply pipeline's preflight, so a staged bundle passes it.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::disk::{Disk, Esp};
use crate::error::Exit;
use crate::model::config::SystemConfig;
use crate::model::manifest::{Manifest, PayloadKind};
use crate::model::slot::Slot;
use crate::model::version::Version;

/// Clusters added to the boot payload's size for rounding (as the apply pipeline does).
pub const BOOT_SLACK_CLUSTERS: u64 = 64;

/// What the checks compare a manifest with.
#[derive(Debug, Clone)]
pub struct Facts {
    pub compatible: String,
    pub booted: Slot,
    pub running: String,
    pub allow_downgrade: bool,
    /// The slot the update goes to.
    pub spare: Slot,
    pub spare_label: String,
    pub spare_size: u64,
    pub boot_label: String,
    /// Free bytes on the boot partition plus what the spare slot's boot files occupy.
    pub boot_room: u64,
    pub boot_cluster: u64,
    /// The running slot's base digest, which a delta bundle must name (docs/delta.md);
    /// `None` when it has no fingerprint record or it could not be read.
    pub base_digest: Option<String>,
}

/// Reads the sizes from the disk: the spare slot's partition and the boot partition's room.
pub fn gather(
    config: &SystemConfig,
    disk: &Path,
    booted: Slot,
    running: &str,
    allow_downgrade: bool,
    hup_dir: Option<&Path>,
) -> Result<Facts> {
    let labels = &config.labels;
    let spare = booted.other();
    let d = Disk::open_read_only(disk)?;
    let (_, spare_part) = d.distinct_partitions(booted.label(labels), spare.label(labels))?;
    let esp = Esp::open(d.open_partition(&labels.boot)?)
        .with_context(|| format!("boot partition {} on {}", labels.boot, disk.display()))?;
    let dir = format!("hup/{spare}");
    let mut reusable = 0;
    if esp.exists(&dir)? {
        for e in esp.list(&dir)? {
            reusable += esp.allocation(e.len);
        }
    }
    // Only a delta bundle needs it: a slot hup cannot read is no reason to refuse a full one.
    let base_digest = crate::ext4::ReadFs::open_partition(&d, booted.label(labels))
        .and_then(|mut fs| crate::bundle::delta_base::slot_digest(&mut fs, hup_dir))
        .unwrap_or_else(|e| {
            log::debug!("the running slot's fingerprint: {e:#}");
            None
        });
    Ok(Facts {
        base_digest,
        compatible: config.compatible.clone(),
        booted,
        running: running.to_string(),
        allow_downgrade,
        spare,
        spare_label: spare.label(labels).to_string(),
        spare_size: spare_part.len,
        boot_label: labels.boot.clone(),
        boot_room: esp.free_bytes()? + reusable,
        boot_cluster: esp.cluster_size(),
    })
}

/// Refuses a bundle this device must not stage; [`Exit::NothingToDo`] when it already runs
/// this version.
pub fn check(m: &Manifest, f: &Facts) -> Result<()> {
    if m.compatible != f.compatible {
        bail!(
            "bundle is for device type {:?}, this device is {:?}",
            m.compatible,
            f.compatible
        );
    }
    let new = m.version();
    let running = Version::parse(&f.running)
        .with_context(|| format!("running version of slot {}", f.booted))?;
    // Ordering, not ==: `1.5` and `1.5.0` are the same version.
    if new.cmp(&running).is_eq() {
        return Err(Exit::NothingToDo(format!(
            "version {new} is already running (slot {})",
            f.booted
        ))
        .into());
    }
    if new < running && !f.allow_downgrade {
        bail!(
            "bundle version {new} is older than the running {running} (slot {}): use --allow-downgrade to install it",
            f.booted
        );
    }
    if let Some(min) = m.min_from_version()
        && running < min
    {
        bail!(
            "bundle {new} requires at least version {min} to update from; slot {} runs {running}",
            f.booted
        );
    }
    if let Some(d) = &m.delta
        && let Some(line) =
            crate::bundle::delta_base::mismatch(d, Some(&f.running), f.base_digest.as_deref())
    {
        bail!("{line}");
    }
    let rootfs = m
        .payload(PayloadKind::Rootfs)
        .expect("a validated manifest has a rootfs");
    // A delta's stream is smaller than the tar it expands to.
    let rootfs_tar = m
        .delta
        .as_ref()
        .map_or(rootfs.unpacked_size, |d| d.tar_size);
    if rootfs_tar > f.spare_size {
        bail!(
            "rootfs needs {} bytes, more than slot {}'s partition {} ({} bytes)",
            rootfs_tar,
            f.spare,
            f.spare_label,
            f.spare_size
        );
    }
    if let Some(boot) = m.payload(PayloadKind::Boot) {
        let needed = boot.unpacked_size + BOOT_SLACK_CLUSTERS * f.boot_cluster;
        if needed > f.boot_room {
            bail!(
                "boot partition {} has {} bytes free for slot {}, the boot files need {needed}",
                f.boot_label,
                f.boot_room,
                f.spare
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::Payload;

    fn facts() -> Facts {
        Facts {
            compatible: "qemu-x86_64".into(),
            booted: Slot::A,
            running: "1.5.0".into(),
            allow_downgrade: false,
            spare: Slot::B,
            spare_label: "hup-root-b".into(),
            spare_size: 1000,
            boot_label: "hup-boot".into(),
            boot_room: 10_000,
            boot_cluster: 10,
            base_digest: Some("d".repeat(64)),
        }
    }

    fn manifest(version: &str) -> Manifest {
        let p = |name: &str, kind, unpacked_size| Payload {
            name: name.into(),
            kind,
            size: 1,
            sha256: "0".repeat(64),
            unpacked_size,
        };
        Manifest {
            format: 1,
            compatible: "qemu-x86_64".into(),
            version: version.into(),
            min_from_version: None,
            payloads: vec![
                p("rootfs.tar.zst", PayloadKind::Rootfs, 1000),
                p("boot.tar.zst", PayloadKind::Boot, 9000),
            ],
            migrations: vec![],
            layout: None,
            requires_unmodified_base: false,
            delta: None,
        }
    }

    fn err(m: &Manifest, f: &Facts) -> String {
        format!("{:#}", check(m, f).unwrap_err())
    }

    #[test]
    fn accepts_and_refuses() {
        let f = facts();
        assert!(check(&manifest("2.0"), &f).is_ok());
        let mut m = manifest("2.0");
        m.compatible = "rpi4".into();
        assert!(err(&m, &f).contains("for device type \"rpi4\", this device is \"qemu-x86_64\""));
        assert!(err(&manifest("1.0"), &f).contains("older than the running 1.5.0"));
        let down = Facts {
            allow_downgrade: true,
            ..facts()
        };
        assert!(check(&manifest("1.0"), &down).is_ok());
        let same = check(&manifest("1.5"), &f).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&same),
            crate::error::code::NOTHING_TO_DO
        );
        let mut m = manifest("2.0");
        m.min_from_version = Some("1.6".into());
        assert!(err(&m, &f).contains("requires at least version 1.6"));
        let mut m = manifest("2.0");
        m.payloads[0].unpacked_size = 1001;
        assert!(err(&m, &f).contains(
            "rootfs needs 1001 bytes, more than slot b's partition hup-root-b (1000 bytes)"
        ));
        let mut m = manifest("2.0");
        m.payloads[1].unpacked_size = 9361;
        assert!(err(&m, &f).contains(
            "boot partition hup-boot has 10000 bytes free for slot b, the boot files need 10001"
        ));
        m.payloads.pop();
        assert!(check(&m, &f).is_ok(), "no boot payload, no boot check");
    }

    #[test]
    fn delta_needs_the_running_base() {
        let f = facts();
        let mut m = manifest("2.0");
        m.delta = Some(crate::model::manifest::Delta {
            base_version: "1.5".into(),
            base_fingerprint: "d".repeat(64),
            tar_size: 900,
            fingerprint: "e".repeat(64),
            new: Default::default(),
            copy: Default::default(),
            patch: Default::default(),
        });
        assert!(check(&m, &f).is_ok(), "1.5 and 1.5.0 are one version");
        m.delta.as_mut().unwrap().tar_size = 1001;
        assert!(err(&m, &f).contains("rootfs needs 1001 bytes"));
        m.delta.as_mut().unwrap().tar_size = 900;
        m.delta.as_mut().unwrap().base_version = "1.4".into();
        let e = err(&m, &f);
        assert!(
            e.contains("needs base version 1.4 with fingerprint dddddddddddddddd, the running slot has version 1.5.0 with fingerprint dddddddddddddddd"),
            "{e}"
        );
        m.delta.as_mut().unwrap().base_version = "1.5.0".into();
        let other = Facts {
            base_digest: Some("e".repeat(64)),
            ..facts()
        };
        assert!(err(&m, &other).contains("fingerprint eeeeeeeeeeeeeeee: use the full bundle"));
        let none = Facts {
            base_digest: None,
            ..facts()
        };
        assert!(err(&m, &none).contains("fingerprint none recorded"));
    }
}
