use std::path::PathBuf;

use argh::FromArgs;

use crate::ext4::{MkfsOptions, mkfs_image, parse_uuid};

/// Create an ext4 filesystem from a tar or tar.zst (no mount, no root needed).
#[derive(FromArgs)]
#[argh(subcommand, name = "mkfs")]
pub struct Mkfs {
    /// root filesystem archive: tar or tar.zst ("-" reads stdin)
    #[argh(option)]
    from: PathBuf,
    /// filesystem size (bytes or K/M/G/T): an image file is created or truncated to it;
    /// default: the size of the existing file or block device
    #[argh(option, from_str_fn(crate::size::from_arg))]
    size: Option<u64>,
    /// volume label (at most 16 bytes)
    #[argh(option)]
    label: Option<String>,
    /// filesystem UUID (default: random)
    #[argh(option)]
    uuid: Option<String>,
    /// number of inodes (default: one per 16 KiB, one per 4 KiB below 512 MiB)
    #[argh(option)]
    inodes: Option<u64>,
    /// image file or block device
    #[argh(positional)]
    target: PathBuf,
}

impl Mkfs {
    pub fn run(self) -> anyhow::Result<()> {
        let opts = MkfsOptions {
            label: self.label,
            uuid: self.uuid.as_deref().map(parse_uuid).transpose()?,
            inodes: self.inodes,
        };
        let stats = mkfs_image(&self.target, self.size, &opts, &self.from)?;
        println!("{}: {stats}", self.target.display());
        Ok(())
    }
}
