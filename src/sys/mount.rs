//! Mounting for the initramfs: plain mounts, moves, unmounts and the switch into a new root.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};

/// Mounts `source` (a device or a pseudo filesystem name) of type `fstype` on `target`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    readonly: bool,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let mut flags = flags;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(Some(source), target, Some(fstype), flags, data).with_context(|| {
        format!(
            "mounting {source} ({fstype}, {}) on {}",
            if readonly { "ro" } else { "rw" },
            target.display()
        )
    })
}

/// Moves the mount at `from` to `to` (`mount --move`); `to` must be an existing directory.
pub fn move_mount(from: &Path, to: &Path) -> Result<()> {
    nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .with_context(|| format!("moving mount {} to {}", from.display(), to.display()))
}

/// Unmounts `target`; `detach` makes it lazy (`umount -l`).
pub fn umount(target: &Path, detach: bool) -> Result<()> {
    let flags = if detach {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    nix::mount::umount2(target, flags).with_context(|| format!("unmounting {}", target.display()))
}

/// Makes `new_root` (a mount point) the root of the calling process, the way
/// switch_root(8) does after the old root has been emptied: chdir into it,
/// move it over `/`, chroot into it and chdir to the new `/`.
pub fn switch_root(new_root: &Path) -> Result<()> {
    nix::unistd::chdir(new_root).with_context(|| format!("chdir to {}", new_root.display()))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .with_context(|| format!("moving {} over /", new_root.display()))?;
    nix::unistd::chroot(".").with_context(|| format!("chroot into {}", new_root.display()))?;
    nix::unistd::chdir("/").context("chdir to / of the new root")?;
    Ok(())
}
