//! What every configuration migration is: the places it reads and writes, what it would do
//! and what it did. Its own file so that migrations import it without importing the registry.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

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
