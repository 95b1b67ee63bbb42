use std::path::PathBuf;

use argh::FromArgs;

use crate::bundle::reader::Bundle;

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
}

impl Inspect {
    pub fn run(self) -> anyhow::Result<()> {
        let b = Bundle::open_unverified(&self.bundle)?;
        let m = &b.manifest;
        if self.json {
            let v = serde_json::json!({
                "bundle": self.bundle,
                "size": b.scan.file_len,
                "manifest": m,
                "signature_checked": false,
            });
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
        Ok(())
    }
}
