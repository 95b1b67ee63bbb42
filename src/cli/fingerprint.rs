use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use argh::FromArgs;
use serde::Serialize;

use crate::data::fingerprint::{self as fp, DEFAULT_IGNORE, Diff, EMBED_PATH};
use crate::device;
use crate::model::config::{Labels, SYSTEM_JSON, SystemConfig};
use crate::model::slot::Slot;

/// Fingerprints of root filesystems: record one, or check a slot against its record.
#[derive(FromArgs)]
#[argh(subcommand, name = "fingerprint")]
pub struct Fingerprint {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Sub {
    Check(Check),
    Create(Create),
}

/// Compare a root filesystem with its recorded fingerprint: exit 0 when identical (after
/// the ignore list), 1 when anything was modified, added or removed, or changed owner or mode.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {
    /// slot to check, a or b (default: the booted slot, checked at /; another slot must be
    /// mounted by you and given with --root)
    #[argh(option)]
    slot: Option<String>,
    /// root directory to check instead of the booted slot
    #[argh(option)]
    root: Option<PathBuf>,
    /// the recorded fingerprint (default ROOT/etc/hup/fingerprint.json)
    #[argh(option)]
    fingerprint: Option<PathBuf>,
    /// print the result as JSON on stdout
    #[argh(switch)]
    json: bool,
    /// also ignore this path or pattern and what is below it (repeatable)
    #[argh(option)]
    ignore: Vec<String>,
    /// do not use the default ignore list (docs/fingerprint.md)
    #[argh(switch)]
    no_default_ignore: bool,
    /// device configuration, for the partition labels (default /etc/hup/system.json)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Write the fingerprint of a directory tree or of a tar / tar.zst file.
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct Create {
    /// directory tree to fingerprint
    #[argh(option)]
    root: Option<PathBuf>,
    /// tar or tar.zst file to fingerprint
    #[argh(option)]
    tar: Option<PathBuf>,
    /// output file
    #[argh(option, short = 'o')]
    output: PathBuf,
}

#[derive(Serialize)]
struct Output<'a> {
    root: String,
    fingerprint: String,
    identical: bool,
    summary: String,
    mountpoints_ignored: &'a [String],
    #[serde(flatten)]
    diff: &'a Diff,
}

impl Fingerprint {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Sub::Check(c) => c.run(),
            Sub::Create(c) => c.run(),
        }
    }
}

impl Check {
    fn run(self) -> anyhow::Result<()> {
        let (root, what) = self.target()?;
        let record = self
            .fingerprint
            .clone()
            .unwrap_or_else(|| root.join(EMBED_PATH));
        let mut ignore: Vec<String> = Vec::new();
        if !self.no_default_ignore {
            ignore.extend(DEFAULT_IGNORE.iter().map(|s| s.to_string()));
        }
        ignore.extend(self.ignore.iter().cloned());
        let checked = fp::check_tree(&root, &record, &ignore)?;
        let diff = checked.diff;
        if self.json {
            let out = Output {
                root: root.display().to_string(),
                fingerprint: record.display().to_string(),
                identical: diff.is_empty(),
                summary: diff.summary(),
                mountpoints_ignored: &checked.mountpoints,
                diff: &diff,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else if diff.is_empty() {
            println!(
                "{what}: identical to {} ({} entries)",
                record.display(),
                checked.recorded
            );
        } else {
            print!("{}", diff.render());
        }
        if !diff.is_empty() {
            bail!(
                "{what} differs from {}: {}",
                record.display(),
                diff.summary()
            );
        }
        Ok(())
    }

    /// The directory to scan and how to name it in messages.
    fn target(&self) -> anyhow::Result<(PathBuf, String)> {
        if let Some(root) = &self.root {
            if self.slot.is_some() {
                bail!("give either --slot or --root, not both");
            }
            return Ok((root.clone(), root.display().to_string()));
        }
        let labels = self.labels()?;
        let booted = device::booted_slot(&labels)?.slot;
        let slot = match &self.slot {
            Some(s) => Slot::parse(s).with_context(|| format!("--slot {s:?}: expected a or b"))?,
            None => booted,
        };
        if slot != booted {
            bail!(
                "slot {slot} is not the booted slot ({booted}) and hup mounts nothing: mount its \
                 partition {} read-only and run `hup fingerprint check --root MOUNTPOINT`",
                slot.label(&labels)
            );
        }
        Ok((PathBuf::from("/"), format!("slot {slot} (/)")))
    }

    fn labels(&self) -> anyhow::Result<Labels> {
        match &self.config {
            Some(c) => Ok(SystemConfig::load(c)?.labels),
            None if Path::new(SYSTEM_JSON).exists() => {
                Ok(SystemConfig::load(Path::new(SYSTEM_JSON))?.labels)
            }
            None => Ok(Labels::default()),
        }
    }
}

impl Create {
    fn run(self) -> anyhow::Result<()> {
        let print = match (&self.root, &self.tar) {
            (Some(root), None) => {
                let scan = fp::scan_dir(root)?;
                for m in &scan.mountpoints {
                    log::warn!("{m} is a mount point: left out");
                }
                scan.fingerprint
            }
            (None, Some(tar)) => {
                let f = std::fs::File::open(tar)
                    .with_context(|| format!("opening {}", tar.display()))?;
                let stream = crate::ext4::maybe_decompress(f)
                    .with_context(|| format!("reading {}", tar.display()))?;
                fp::fingerprint_of_tar(stream).with_context(|| format!("tar {}", tar.display()))?
            }
            _ => bail!("give one of --root DIR or --tar FILE"),
        };
        print.save(&self.output)?;
        println!("{}: {} entries", self.output.display(), print.entries.len());
        Ok(())
    }
}
