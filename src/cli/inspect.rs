use std::path::{Path, PathBuf};

use anyhow::Context;
use argh::FromArgs;

use crate::boot::BootBackend;
use crate::bundle::reader::Bundle;
use crate::model::config::{BootBackendKind, Labels, SYSTEM_JSON, SystemConfig};
use crate::model::layout::TargetLayout;
use crate::stage::layout::{LayoutStatus, layout_status};

/// Show a bundle's manifest and payloads (no key needed; nothing is verified).
#[derive(FromArgs)]
#[argh(subcommand, name = "inspect")]
pub struct Inspect {
    /// bundle file
    #[argh(positional)]
    bundle: PathBuf,
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// disk (or image) to plan the bundle's partition layout migration for, read-only
    #[argh(option)]
    disk: Option<PathBuf>,
    /// device configuration for --disk: partition labels and boot backend (default
    /// /etc/hup/system.json if it exists, else the default labels and the gpt backend)
    #[argh(option)]
    config: Option<PathBuf>,
}

impl Inspect {
    pub fn run(self) -> anyhow::Result<()> {
        let b = Bundle::open_unverified(&self.bundle)?;
        let m = &b.manifest;
        let migration = match &self.disk {
            Some(disk) => Some(self.layout_migration(disk, m.layout.as_ref())?),
            None => None,
        };
        if self.json {
            let mut v = serde_json::json!({
                "bundle": self.bundle,
                "size": b.scan.file_len,
                "manifest": m,
                "signature_checked": false,
            });
            if let Some(status) = &migration {
                v["layout_migration"] = match status {
                    LayoutStatus::NotNeeded => serde_json::Value::Null,
                    LayoutStatus::Plan(p) => serde_json::to_value(p)?,
                    LayoutStatus::Refused(e) => serde_json::json!({ "refused": e.to_string() }),
                };
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!(
            "bundle:        {} ({} bytes)",
            self.bundle.display(),
            b.scan.file_len
        );
        println!("compatible:    {}", m.compatible);
        println!("version:       {}", m.version);
        if let Some(v) = &m.min_from_version {
            println!("min from:      {v}");
        }
        if !m.migrations.is_empty() {
            println!("migrations:    {}", m.migrations.join(", "));
        }
        if let Some(l) = &m.layout {
            print_layout(l);
        }
        if m.requires_unmodified_base {
            println!("requires unmodified base: yes");
        }
        if let Some(d) = &m.delta {
            print_delta(d);
        }
        println!("signature:     present, not checked (use hup verify)");
        println!("payloads:");
        println!(
            "  {:<16} {:<7} {:>12} {:>14}  sha256",
            "name", "kind", "size", "unpacked"
        );
        for p in &m.payloads {
            println!(
                "  {:<16} {:<7} {:>12} {:>14}  {}",
                p.name,
                p.kind.as_str(),
                p.size,
                p.unpacked_size,
                p.sha256
            );
        }
        match &migration {
            None => {}
            Some(LayoutStatus::NotNeeded) => println!("layout migration: not needed"),
            Some(LayoutStatus::Plan(p)) => println!("layout migration:\n{p}"),
            Some(LayoutStatus::Refused(e)) => println!("layout migration: impossible: {e}"),
        }
        Ok(())
    }

    /// The layout migration `disk` needs for `layout` (none without a layout), with the
    /// active slot from the boot backend.
    fn layout_migration(
        &self,
        disk: &Path,
        layout: Option<&TargetLayout>,
    ) -> anyhow::Result<LayoutStatus> {
        let Some(layout) = layout else {
            return Ok(LayoutStatus::NotNeeded);
        };
        let (labels, boot) = match &self.config {
            Some(c) => config_parts(c, disk)?,
            None if Path::new(SYSTEM_JSON).exists() => config_parts(Path::new(SYSTEM_JSON), disk)?,
            None => (
                Labels::default(),
                crate::boot::open(BootBackendKind::default(), disk, &Labels::default()),
            ),
        };
        let active = crate::apply::current_slot(boot.as_ref())
            .with_context(|| format!("finding the active slot of {}", disk.display()))?;
        layout_status(disk, layout, &labels, active)
    }
}

fn config_parts(path: &Path, disk: &Path) -> anyhow::Result<(Labels, Box<dyn BootBackend>)> {
    let c = SystemConfig::load(path)?;
    let boot = crate::boot::open_config(&c, disk);
    Ok((c.labels, boot))
}

/// `delta:` with its base, then the counts and bytes of new, copy and patch entries.
fn print_delta(d: &crate::model::manifest::Delta) {
    println!(
        "delta:         from base {} (fingerprint sha256 {})",
        d.base_version, d.base_fingerprint
    );
    println!(
        "  expands to   {} bytes of tar, fingerprint sha256 {}",
        d.tar_size, d.fingerprint
    );
    println!(
        "  {:<6} {:>8} {:>14} {:>14}",
        "entry", "files", "bytes", "sent"
    );
    for (name, c) in [("new", d.new), ("copy", d.copy), ("patch", d.patch)] {
        println!("  {name:<6} {:>8} {:>14} {:>14}", c.files, c.bytes, c.sent);
    }
}

/// `layout:` with the version, then one line per partition.
fn print_layout(l: &TargetLayout) {
    println!("layout:        version {}", l.version);
    for p in &l.partitions {
        let size = match p.size {
            Some(b) => format!("{b} bytes ({})", crate::size::human(b)),
            None => "rest of the disk".into(),
        };
        println!("  {:<16} {:<30} type {}", p.label, size, p.type_guid);
    }
}
