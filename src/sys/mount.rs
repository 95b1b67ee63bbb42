//! Mounting for the initramfs: plain mounts, moves, unmounts and the switch into a new root.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};

/// Mounts `source` (a device or a pseudo filesystem name) of type `fstype` on `target`;
/// `MsFlags::MS_RDONLY` in `flags` mounts it read-only.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(Some(source), target, Some(fstype), flags, data).with_context(|| {
        format!(
            "mounting {source} ({fstype}, {}) on {}",
            if flags.contains(MsFlags::MS_RDONLY) {
                "ro"
            } else {
                "rw"
            },
            target.display()
        )
    })
}

/// Moves the mount at `from` to `to` (`mount --move`); `to` must be an existing directory.
pub fn move_mount(from: &Path, to: &Path) -> Result<()> {
    nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .with_context(|| format!("moving mount {} to {}", from.display(), to.display()))
}

/// Unmounts `target`.
pub fn umount(target: &Path) -> Result<()> {
    umount2(target, MntFlags::empty())
}

/// Detaches the mount at `target` now and unmounts it when it is no longer busy (`umount -l`).
pub fn umount_lazy(target: &Path) -> Result<()> {
    umount2(target, MntFlags::MNT_DETACH)
}

fn umount2(target: &Path, flags: MntFlags) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The read-only flag shows in the error as it did when it was a separate argument.
    #[test]
    fn errors_say_ro_or_rw() {
        let target = Path::new("/nonexistent/hup-mount-test");
        for (flags, mode) in [
            (MsFlags::MS_RDONLY, "ro"),
            (MsFlags::MS_NODEV, "rw"),
            (MsFlags::MS_RDONLY | MsFlags::MS_NODEV, "ro"),
        ] {
            let e = mount("/nonexistent/dev", target, "ext4", flags, None).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("mounting /nonexistent/dev (ext4, {mode}) on /nonexistent/hup-mount-test")
            );
        }
        let e = umount(target).unwrap_err();
        assert_eq!(e.to_string(), "unmounting /nonexistent/hup-mount-test");
        let e = umount_lazy(target).unwrap_err();
        assert_eq!(e.to_string(), "unmounting /nonexistent/hup-mount-test");
    }
}
