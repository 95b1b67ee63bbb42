use std::path::PathBuf;

use argh::FromArgs;

use crate::bundle::delta_pack::pack_delta;
use crate::bundle::pack::{PackOptions, pack, read_layout};

/// Build a signed bundle from a root filesystem (directory, tar or tar.zst) and boot files.
#[derive(FromArgs)]
#[argh(subcommand, name = "pack")]
pub struct Pack {
    /// root filesystem: a directory, a tar or a tar.zst
    #[argh(option)]
    rootfs: PathBuf,
    /// directory of boot files (kernel, initramfs, ...)
    #[argh(option)]
    boot: Option<PathBuf>,
    /// version of the OS in the bundle, e.g. 2.0.0
    #[argh(option)]
    version: String,
    /// device type the bundle is for
    #[argh(option)]
    compatible: String,
    /// oldest running version this bundle may update
    #[argh(option)]
    min_from_version: Option<String>,
    /// secret key file (from hup keygen)
    #[argh(option)]
    key: PathBuf,
    /// zstd compression level (default 19)
    #[argh(option, default = "19")]
    level: i32,
    /// output bundle file
    #[argh(option, short = 'o')]
    out: PathBuf,
    /// JSON file with the partition layout the new system needs (docs/layout-migration.md)
    #[argh(option)]
    layout: Option<PathBuf>,
    /// configuration migration to run after the update (repeatable; docs/migrations.md)
    #[argh(option)]
    migration: Vec<String>,
    /// refuse devices whose running system differs from its recorded fingerprint
    #[argh(switch)]
    requires_unmodified_base: bool,
    /// full bundle of the version on the device: write a delta bundle against it
    /// (docs/delta.md)
    #[argh(option)]
    delta_from: Option<PathBuf>,
}

impl Pack {
    pub fn run(self) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        let layout = self.layout.as_deref().map(read_layout).transpose()?;
        let opts = PackOptions {
            rootfs: self.rootfs,
            boot: self.boot,
            version: self.version,
            compatible: self.compatible,
            min_from_version: self.min_from_version,
            key: self.key,
            out: self.out.clone(),
            level: self.level,
            layout,
            migrations: self.migration,
            requires_unmodified_base: self.requires_unmodified_base,
        };
        let m = match &self.delta_from {
            None => pack(&opts)?,
            Some(base) => {
                let d = pack_delta(&opts, base)?;
                let pct = 100.0 * d.delta_size as f64 / d.full_size.max(1) as f64;
                if d.is_delta {
                    println!(
                        "delta bundle: {} bytes, {pct:.1} % of the full bundle's {} bytes",
                        d.delta_size, d.full_size
                    );
                } else {
                    println!(
                        "the delta ({} bytes) is not smaller than the full bundle ({} bytes): wrote the full bundle",
                        d.delta_size, d.full_size
                    );
                }
                d.manifest
            }
        };
        println!(
            "wrote {} ({} {}) in {:.1} s",
            self.out.display(),
            m.compatible,
            m.version,
            start.elapsed().as_secs_f64()
        );
        for p in &m.payloads {
            println!("  {:<16} {:>12} bytes  sha256 {}", p.name, p.size, p.sha256);
        }
        Ok(())
    }
}
