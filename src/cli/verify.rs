use std::path::PathBuf;

use argh::FromArgs;

use crate::bundle::reader::Bundle;
use crate::bundle::sign::TrustedKeys;

/// Check a bundle: signature by a trusted key, then every payload's size and sha256.
#[derive(FromArgs)]
#[argh(subcommand, name = "verify")]
pub struct Verify {
    /// bundle file
    #[argh(positional)]
    bundle: PathBuf,
    /// trusted public key file (repeatable)
    #[argh(option)]
    key: Vec<PathBuf>,
    /// directory of trusted public keys (*.pub)
    #[argh(option)]
    keys: Option<PathBuf>,
}

impl Verify {
    pub fn run(self) -> anyhow::Result<()> {
        let dirs: Vec<PathBuf> = self.keys.into_iter().collect();
        let keys = TrustedKeys::load(&self.key, &dirs)?;
        let b = Bundle::open(&self.bundle, &keys)?;
        b.verify_payloads()?;
        println!(
            "{}: OK ({} {}, signed by key {}, {} payloads verified)",
            self.bundle.display(),
            b.manifest.compatible,
            b.manifest.version,
            b.signed_by.as_deref().unwrap_or("?"),
            b.manifest.payloads.len()
        );
        Ok(())
    }
}
