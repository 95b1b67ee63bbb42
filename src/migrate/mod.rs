//! Configuration migrations named by a bundle's manifest (`migrations`), run after the new
//! slot is written (docs/migrations.md). A migration reads the old system's files from
//! plain directories and writes what the new OS needs to hup's directory on the data
//! partition, so it runs (and is tested) without any disk.

pub mod connman;
pub mod keyfile;
pub mod nm;
mod wifi;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

pub use wifi::WifiToNetworkManager;

/// Where, under the data partition's root, migrated NetworkManager connections are kept:
/// the new OS copies or bind-mounts this directory as its
/// `/etc/NetworkManager/system-connections/`.
pub const CONNECTIONS_DIR: &str = "hup/migrated/system-connections";

/// The places a migration reads and writes, as directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationContext {
    /// The root of the old data partition (mounted, or a copy).
    pub data_root: PathBuf,
    /// The root of the old boot partition (mounted, or a directory holding the files to
    /// read from it: the WiFi migration reads only `config.json`). May be absent.
    pub boot_root: PathBuf,
    /// Where NetworkManager keyfiles for the new OS go (normally
    /// `data_root/`[`CONNECTIONS_DIR`]).
    pub connections_dir: PathBuf,
}

impl MigrationContext {
    /// The usual context: outputs under `data_root/`[`CONNECTIONS_DIR`].
    pub fn new(data_root: &Path, boot_root: &Path) -> MigrationContext {
        MigrationContext {
            data_root: data_root.to_path_buf(),
            boot_root: boot_root.to_path_buf(),
            connections_dir: data_root.join(CONNECTIONS_DIR),
        }
    }
}

/// What a migration would do, found without writing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The input files found (and read).
    pub sources: Vec<PathBuf>,
    /// The files `run` would write.
    pub outputs: Vec<PathBuf>,
    /// Why `run` would refuse, each naming a file and what is wrong with it. `run` writes
    /// nothing while this is not empty.
    pub problems: Vec<String>,
    /// Things worth knowing that do not stop the migration (settings left out, files ignored).
    pub notes: Vec<String>,
}

impl Check {
    /// `run` would succeed.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// No input found: `run` would succeed and write nothing.
    pub fn nothing_to_do(&self) -> bool {
        self.is_ok() && self.outputs.is_empty()
    }
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub id: String,
    pub sources: Vec<PathBuf>,
    /// Files written (complete, mode 0600).
    pub written: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// A configuration migration. `check` and `run` must agree: `run` does what `check`
/// describes, and refuses (writing nothing) when `check` finds problems. `run` may run
/// again after an interruption and then writes the same files.
pub trait Migration: Send + Sync {
    /// The id a manifest names it by.
    fn id(&self) -> &'static str;
    /// Reads the inputs and says what `run` would write. Errors only when an input cannot
    /// be read at all (I/O); unusable content is a problem in the [`Check`].
    fn check(&self, ctx: &MigrationContext) -> Result<Check>;
    /// Writes the outputs: every one to a temporary name first, renamed only when all of
    /// them were written. Missing inputs are not an error: nothing is written.
    fn run(&self, ctx: &MigrationContext) -> Result<Report>;
}

/// Every migration this hup has.
pub fn registry() -> Vec<Box<dyn Migration>> {
    vec![Box::new(WifiToNetworkManager)]
}

/// The migration named `id`.
pub fn get(id: &str) -> Option<Box<dyn Migration>> {
    registry().into_iter().find(|m| m.id() == id)
}

/// Whether this hup can run the migration `id`.
pub fn is_known(id: &str) -> bool {
    get(id).is_some()
}

/// Checks the migrations `ids` (in a manifest's order): an unknown id or a migration with
/// problems is an error naming them all, so that an update can be refused before writing.
pub fn check_all(ids: &[String], ctx: &MigrationContext) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let mut problems = Vec::new();
    for id in ids {
        let Some(m) = get(id) else {
            problems.push(format!("unknown migration {id:?}"));
            continue;
        };
        let c = m.check(ctx)?;
        problems.extend(c.problems.iter().map(|p| format!("{id}: {p}")));
        checks.push(c);
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(checks)
}

/// Runs the migrations `ids` in order; stops at the first that fails.
pub fn run_all(ids: &[String], ctx: &MigrationContext) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    for id in ids {
        let Some(m) = get(id) else {
            bail!("unknown migration {id:?}");
        };
        reports.push(m.run(ctx)?);
    }
    Ok(reports)
}
