//! Test disk images built without root: `sgdisk` on a file, `mkfs.ext4 -d TREE -E offset=`
//! for the ext4 partitions, `mkfs.vfat --offset` for the boot partition.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// Partition sizes in MiB (hup-boot, hup-root-a/b, hup-data), in that disk order.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub boot_mib: u64,
    pub root_mib: u64,
    pub data_mib: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            boot_mib: 16,
            root_mib: 48,
            data_mib: 32,
        }
    }
}

/// What to put on the disk.
#[derive(Debug, Clone, Default)]
pub struct DiskSpec<'a> {
    pub layout: Layout,
    /// Tree for hup-root-a (None: an empty ext4).
    pub root_a: Option<&'a Path>,
    /// Tree for hup-root-b (None: an empty ext4).
    pub root_b: Option<&'a Path>,
    /// Tree for hup-data (None: an empty ext4).
    pub data: Option<&'a Path>,
    /// Mark slot A good with priority 2 in its GPT attribute bits (gpt backend).
    pub a_good: bool,
}

/// One partition of a built image.
#[derive(Debug, Clone)]
pub struct Part {
    pub number: u32,
    pub label: &'static str,
    /// Byte offset in the image.
    pub start: u64,
    pub size: u64,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub parts: Vec<Part>,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the GPT image at `path` (hup-boot, hup-root-a, hup-root-b, hup-data).
pub fn build(path: &Path, spec: &DiskSpec) -> Result<Disk> {
    let l = spec.layout;
    let sizes = [
        (1, "hup-boot", l.boot_mib, "ef00"),
        (2, "hup-root-a", l.root_mib, "8304"),
        (3, "hup-root-b", l.root_mib, "8304"),
        (4, "hup-data", l.data_mib, "8300"),
    ];
    let mut parts = Vec::new();
    let mut start = MIB;
    let mut sg = Command::new("sgdisk");
    for (number, label, mib, code) in sizes {
        let size = mib * MIB;
        let (first, last) = (start / SECTOR, (start + size) / SECTOR - 1);
        sg.arg(format!("--new={number}:{first}:{last}"))
            .arg(format!("--change-name={number}:{label}"))
            .arg(format!("--typecode={number}:{code}"));
        parts.push(Part {
            number,
            label,
            start,
            size,
        });
        start += size;
    }
    if spec.a_good {
        // priority 2 (bit 49), successful (bit 56)
        let n = parts[1].number;
        sg.arg(format!("--attributes={n}:set:49"))
            .arg(format!("--attributes={n}:set:56"));
    }
    let total = start + MIB;
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(total)
        .with_context(|| format!("sizing {}", path.display()))?;
    drop(f);
    run(sg.arg(path))?;

    let disk = Disk {
        path: path.to_path_buf(),
        parts,
    };
    let boot = disk.part("hup-boot");
    run(Command::new("mkfs.vfat")
        .args([
            "--offset",
            &(boot.start / SECTOR).to_string(),
            "-n",
            "HUPBOOT",
        ])
        .arg(path)
        .arg((boot.size / 1024).to_string()))?;
    for (label, tree) in [
        ("hup-root-a", spec.root_a),
        ("hup-root-b", spec.root_b),
        ("hup-data", spec.data),
    ] {
        let p = disk.part(label);
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args(["-q", "-F", "-L", label, "-E"])
            .arg(format!("offset={}", p.start));
        if let Some(t) = tree {
            cmd.arg("-d").arg(t);
        }
        run(cmd.arg(path).arg(format!("{}k", p.size / 1024)))?;
    }
    Ok(disk)
}

impl Disk {
    /// The partition labelled `label`.
    pub fn part(&self, label: &str) -> &Part {
        self.parts
            .iter()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("no partition {label} in the test layout"))
    }

    /// Copies partition `label` out of the image into `to`.
    pub fn extract(&self, label: &str, to: &Path) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let p = self.part(label);
        let mut f = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(p.start))?;
        let mut out =
            std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
        std::io::copy(&mut f.take(p.size), &mut out)
            .with_context(|| format!("copying {label} to {}", to.display()))?;
        Ok(())
    }

    /// Reads `file` from the ext4 partition `label` (extracted next to the image;
    /// the journal is replayed with e2fsck first, as after an unclean stop).
    pub fn read_ext4_file(&self, label: &str, file: &str) -> Result<Vec<u8>> {
        let part = self.path.with_extension(format!("{label}.img"));
        self.extract(label, &part)?;
        // e2fsck exits 1 when it fixed something (a replayed journal): fine here.
        let st = Command::new("e2fsck")
            .args(["-fy"])
            .arg(&part)
            .output()
            .context("running e2fsck")?;
        if !matches!(st.status.code(), Some(0 | 1)) {
            bail!(
                "e2fsck of {label} failed: {}",
                String::from_utf8_lossy(&st.stdout)
            );
        }
        let out = self.path.with_extension(format!("{label}.dump"));
        let _ = std::fs::remove_file(&out);
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {file} {}", out.display()))
            .arg(&part))?;
        let bytes = std::fs::read(&out)
            .with_context(|| format!("{file} not found on {label} (debugfs dump)"))?;
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&part);
        Ok(bytes)
    }
}
