use std::path::PathBuf;

use argh::FromArgs;

/// Create a signing key pair: PREFIX.key (secret) and PREFIX.pub (minisign public key).
#[derive(FromArgs)]
#[argh(subcommand, name = "keygen")]
pub struct Keygen {
    /// path prefix of the key files
    #[argh(option, short = 'o')]
    out: PathBuf,
}

impl Keygen {
    pub fn run(self) -> anyhow::Result<()> {
        let id = crate::bundle::sign::keygen(&self.out)?;
        println!(
            "wrote {0}.key (secret, keep it safe) and {0}.pub (key id {id})",
            self.out.display()
        );
        Ok(())
    }
}
