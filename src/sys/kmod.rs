//! Kernel module loading with finit_module(2).

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::ModuleInitFlags;

/// Why a module did not load; callers match on the errno (EEXIST, ENODEV, ...).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("finit_module {path}: {errno}")]
    Init { path: String, errno: Errno },
}

/// Loads the module file at `path` without parameters.
pub fn finit_module(path: &Path) -> Result<(), LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Open {
        path: path.display().to_string(),
        source,
    })?;
    nix::kmod::finit_module(&file, c"", ModuleInitFlags::empty()).map_err(|errno| LoadError::Init {
        path: path.display().to_string(),
        errno,
    })
}
