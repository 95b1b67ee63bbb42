//! Loading the kernel modules listed in `/etc/hup/modules`, in order.

use std::path::Path;

use nix::errno::Errno;

use crate::model::initramfs::parse_module_list;
use crate::sys::kmod::{LoadError, finit_module};

/// What happened to each module.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub loaded: Vec<String>,
    pub already: Vec<String>,
    pub failed: Vec<String>,
}

/// Loads every module of the list file `list` from `dir/NAME.ko`. A missing list
/// means no modules. EEXIST (already loaded or built in) is fine; ENODEV (no such
/// hardware) and any other failure are logged and the next module is tried:
/// a missing driver shows up later as a clear "partition not found" error.
pub fn load_all(list: &Path, dir: &Path) -> Loaded {
    let mut r = Loaded::default();
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::debug!("no {}: no modules to load", list.display());
            return r;
        }
        Err(e) => {
            log::error!("reading module list {}: {e}", list.display());
            return r;
        }
    };
    for name in parse_module_list(&text) {
        let path = dir.join(format!("{name}.ko"));
        match finit_module(&path) {
            Ok(()) => {
                log::debug!("loaded module {name}");
                r.loaded.push(name);
            }
            Err(LoadError::Init {
                errno: Errno::EEXIST,
                ..
            }) => {
                log::debug!("module {name} already loaded");
                r.already.push(name);
            }
            Err(LoadError::Init {
                errno: Errno::ENODEV,
                ..
            }) => {
                log::info!("module {name}: no such device (ENODEV), skipped");
                r.failed.push(name);
            }
            Err(e) => {
                log::error!("module {name}: {e}");
                r.failed.push(name);
            }
        }
    }
    log::info!(
        "modules: {} loaded, {} already present, {} failed",
        r.loaded.len(),
        r.already.len(),
        r.failed.len()
    );
    r
}
