//! Finding partitions by GPT label without udev: `/sys/class/block/*/uevent` carries
//! `PARTNAME=` (the GPT partition name), `MAJOR`/`MINOR` and `DEVNAME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One block device as its uevent file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub major: u32,
    pub minor: u32,
    pub devname: String,
    /// `disk` or `partition`.
    pub devtype: String,
    /// GPT partition name (PARTLABEL), partitions only.
    pub partname: Option<String>,
    /// Partition number, partitions only.
    pub partn: Option<u32>,
}

/// Parses the text of a block device's `uevent` file.
pub fn parse_uevent(text: &str) -> Result<Uevent> {
    let mut kv = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            kv.insert(k.trim(), v.to_string());
        }
    }
    let num = |k: &str| -> Result<u32> {
        kv.get(k)
            .with_context(|| format!("uevent has no {k}="))?
            .trim()
            .parse()
            .with_context(|| format!("uevent {k}= is not a number"))
    };
    Ok(Uevent {
        major: num("MAJOR")?,
        minor: num("MINOR")?,
        devname: kv.get("DEVNAME").context("uevent has no DEVNAME=")?.clone(),
        devtype: kv.get("DEVTYPE").cloned().unwrap_or_default(),
        partname: kv.get("PARTNAME").cloned(),
        partn: kv.get("PARTN").and_then(|v| v.trim().parse().ok()),
    })
}

/// A partition found by its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub label: String,
    /// Device node, e.g. `/dev/vda3`.
    pub node: PathBuf,
    /// Whole-disk device node holding it, e.g. `/dev/vda` (None if sysfs did not tell).
    pub disk: Option<PathBuf>,
    /// Partition number (1-based), when known.
    pub number: Option<u32>,
}

/// The partitions found, by label.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub by_label: BTreeMap<String, Partition>,
}

impl Devices {
    pub fn get(&self, label: &str) -> Option<&Partition> {
        self.by_label.get(label)
    }
}

/// Scans `sys_block` (normally `/sys/class/block`) once. Returns all devices
/// (name -> uevent) and the whole disk of each partition (from the sysfs path).
fn scan(sys_block: &Path) -> Result<Vec<(Uevent, Option<String>)>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(sys_block).with_context(|| format!("listing {}", sys_block.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        let Ok(text) = std::fs::read_to_string(p.join("uevent")) else {
            continue;
        };
        let Ok(ev) = parse_uevent(&text) else {
            continue;
        };
        // /sys/class/block/vda1 -> ../../devices/.../block/vda/vda1: the parent is the disk.
        let disk = if ev.devtype == "partition" {
            std::fs::canonicalize(&p).ok().and_then(|c| {
                c.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
        } else {
            None
        };
        out.push((ev, disk));
    }
    out.sort_by(|a, b| a.0.devname.cmp(&b.0.devname));
    Ok(out)
}

/// Makes sure `/dev/NAME` exists (devtmpfs normally creates it), creating the node if needed.
fn ensure_node(dev: &Path, ev: &Uevent) -> Result<PathBuf> {
    let node = dev.join(&ev.devname);
    if !node.exists() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        if let Some(parent) = node.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        mknod(
            &node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(ev.major.into(), ev.minor.into()),
        )
        .with_context(|| {
            format!(
                "creating block node {} ({}:{})",
                node.display(),
                ev.major,
                ev.minor
            )
        })?;
        log::debug!("created {} ({}:{})", node.display(), ev.major, ev.minor);
    }
    Ok(node)
}

/// Waits until every label in `required` is found (polling every 50 ms) or
/// `timeout` passes. Labels in `optional` are reported when present but not waited
/// for. On timeout the error names the missing labels and the devices seen.
pub fn wait_for_labels(
    sys_block: &Path,
    dev: &Path,
    required: &[&str],
    optional: &[&str],
    timeout: Duration,
) -> Result<Devices> {
    let start = Instant::now();
    loop {
        let seen = scan(sys_block)?;
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|l| !seen.iter().any(|(e, _)| e.partname.as_deref() == Some(*l)))
            .collect();
        if missing.is_empty() {
            let mut devices = Devices::default();
            for label in required.iter().chain(optional) {
                let hits: Vec<_> = seen
                    .iter()
                    .filter(|(e, _)| e.partname.as_deref() == Some(*label))
                    .collect();
                let Some((ev, disk)) = hits.first() else {
                    continue;
                };
                if hits.len() > 1 {
                    log::warn!(
                        "{} partitions are labelled {label}: {}; using {}",
                        hits.len(),
                        hits.iter()
                            .map(|(e, _)| e.devname.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        ev.devname
                    );
                }
                let node = ensure_node(dev, ev)?;
                let disk = match disk {
                    Some(d) => {
                        let dev_ev = seen.iter().find(|(e, _)| &e.devname == d);
                        match dev_ev {
                            Some((e, _)) => Some(ensure_node(dev, e)?),
                            None => Some(dev.join(d)),
                        }
                    }
                    None => None,
                };
                log::debug!("partition {label} is {}", node.display());
                devices.by_label.insert(
                    label.to_string(),
                    Partition {
                        label: label.to_string(),
                        node,
                        disk,
                        number: ev.partn,
                    },
                );
            }
            return Ok(devices);
        }
        if start.elapsed() >= timeout {
            let seen: Vec<String> = seen
                .iter()
                .map(|(e, _)| match &e.partname {
                    Some(p) => format!("{} (PARTNAME={p})", e.devname),
                    None => e.devname.clone(),
                })
                .collect();
            bail!(
                "timed out after {} s waiting for partitions labelled {}; block devices seen: {} \
                 (missing driver module? wrong labels in system.json? raise hup.rootwait=)",
                timeout.as_secs(),
                missing.join(", "),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partition_uevent() {
        let e = parse_uevent(
            "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=3\nPARTNAME=hup root b\n",
        )
        .unwrap();
        assert_eq!((e.major, e.minor), (254, 3));
        assert_eq!(e.devname, "vda3");
        assert_eq!(e.devtype, "partition");
        assert_eq!(e.partname.as_deref(), Some("hup root b"));
        assert_eq!(e.partn, Some(3));
    }

    #[test]
    fn parses_disk_uevent_and_rejects_garbage() {
        let e = parse_uevent("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=9\n").unwrap();
        assert_eq!(e.partname, None);
        assert_eq!(e.devtype, "disk");
        assert!(parse_uevent("MINOR=0\nDEVNAME=vda\n").is_err());
        assert!(parse_uevent("MAJOR=x\nMINOR=0\nDEVNAME=vda\n").is_err());
    }

    #[test]
    fn waits_on_a_fake_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let dev = t.path().join("dev");
        std::fs::create_dir_all(sys.join("vda1")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(
            sys.join("vda1/uevent"),
            "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=hup-data\n",
        )
        .unwrap();
        // The node already exists (as devtmpfs would have made it): no mknod needed.
        std::fs::write(dev.join("vda1"), "").unwrap();
        let d = wait_for_labels(&sys, &dev, &["hup-data"], &["hup-boot"], Duration::ZERO).unwrap();
        let p = d.get("hup-data").unwrap();
        assert_eq!(p.node, dev.join("vda1"));
        assert_eq!(p.number, Some(1));
        assert!(d.get("hup-boot").is_none());
        let err = wait_for_labels(&sys, &dev, &["hup-root-a"], &[], Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hup-root-a"), "{err}");
        assert!(err.contains("vda1 (PARTNAME=hup-data)"), "{err}");
    }
}
