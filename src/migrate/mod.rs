//! Configuration migrations named by a bundle's manifest (`migrations`), run after the new
//! slot is written (docs/migrations.md). A migration reads the old system's files from
//! plain directories and writes what the new OS needs to hup's directory on the data
//! partition, so it runs (and is tested) without any disk.

pub mod connman;
pub mod keyfile;
mod migration;
pub mod nm;
mod wifi;

use anyhow::{Result, bail};

pub use migration::{CONNECTIONS_DIR, Check, Migration, MigrationContext, Report};
pub use wifi::WifiToNetworkManager;

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
