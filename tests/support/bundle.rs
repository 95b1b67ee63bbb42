//! The one way the integration tests make a bundle: `hup pack` of a rootfs (a tree or a
//! tar, plain or zstd) and an optional boot payload, with the manifest fields, layout and
//! migrations a test asks for, signed with a secret key.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::runner::Hup;

/// The `compatible` string of the test devices.
pub const COMPATIBLE: &str = "qemu-x86_64";

/// What to pack; [`BundleBuilder::pack`] runs `hup pack` and checks it succeeded,
/// [`BundleBuilder::command`] leaves the checking to the test (refusals).
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    rootfs: PathBuf,
    boot: Option<PathBuf>,
    version: String,
    compatible: String,
    min_from_version: Option<String>,
    key: PathBuf,
    level: Option<u32>,
    /// More `hup pack` arguments (`--layout FILE`, `--migration ID`, ...), after the others.
    extra: Vec<String>,
}

impl BundleBuilder {
    /// `rootfs`: a directory or a tar (`.tar`, `.tar.zst`); `key`: the secret key that signs.
    pub fn new(rootfs: &Path, version: &str, key: &Path) -> BundleBuilder {
        BundleBuilder {
            rootfs: rootfs.to_path_buf(),
            boot: None,
            version: version.to_string(),
            compatible: COMPATIBLE.to_string(),
            min_from_version: None,
            key: key.to_path_buf(),
            level: None,
            extra: Vec::new(),
        }
    }

    /// The boot payload: a directory of boot files.
    pub fn boot(mut self, dir: &Path) -> BundleBuilder {
        self.boot = Some(dir.to_path_buf());
        self
    }

    pub fn compatible(mut self, c: &str) -> BundleBuilder {
        self.compatible = c.to_string();
        self
    }

    pub fn min_from_version(mut self, v: &str) -> BundleBuilder {
        self.min_from_version = Some(v.to_string());
        self
    }

    /// zstd level (`hup pack`'s default when unset).
    pub fn level(mut self, n: u32) -> BundleBuilder {
        self.level = Some(n);
        self
    }

    /// `--layout FILE`: the partition layout the bundle needs.
    pub fn layout(self, file: &Path) -> BundleBuilder {
        self.args(["--layout", file.to_str().unwrap()])
    }

    /// `--migration ID`.
    pub fn migration(self, id: &str) -> BundleBuilder {
        self.args(["--migration", id])
    }

    /// More arguments, passed after the others.
    pub fn args<'a>(mut self, extra: impl IntoIterator<Item = &'a str>) -> BundleBuilder {
        self.extra.extend(extra.into_iter().map(str::to_string));
        self
    }

    /// `hup pack ... -o OUT`, not run yet.
    pub fn command(&self, out: &Path) -> Hup {
        let mut h = Hup::new().args(["pack", "--rootfs"]).arg(&self.rootfs);
        if let Some(boot) = &self.boot {
            h = h.arg("--boot").arg(boot);
        }
        h = h
            .args(["--version", &self.version, "--compatible", &self.compatible])
            .args(
                self.min_from_version
                    .iter()
                    .flat_map(|v| ["--min-from-version", v.as_str()]),
            )
            .arg("--key")
            .arg(&self.key);
        if let Some(l) = self.level {
            h = h.args(["--level", &l.to_string()]);
        }
        h.arg("-o").arg(out).args(&self.extra)
    }

    /// Packs into `out`, panicking with hup's output unless it succeeds; returns `out`.
    pub fn pack(&self, out: &Path) -> PathBuf {
        self.command(out).ok();
        out.to_path_buf()
    }
}
