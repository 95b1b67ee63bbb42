//! Leaving the initramfs: check the new root, move the mounts into it, empty the
//! initramfs (like switch_root(8): recursively, without crossing mounts),
//! make the new root `/` and exec its `/sbin/init`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The init program of an OS root.
pub const INIT: &str = "/sbin/init";

/// Resolves `path` inside `root` as if `root` were `/`: symlinks (absolute or
/// relative, in any component) are followed without escaping `root`.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push_front(n.to_os_string()),
                Component::ParentDir => pending.push_front("..".into()),
                _ => {}
            }
        }
    };
    push_front(&mut pending, path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&c);
        let md = std::fs::symlink_metadata(&candidate)
            .with_context(|| format!("{} (looking up {})", candidate.display(), path.display()))?;
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                bail!("too many symbolic links resolving {}", path.display());
            }
            let target = std::fs::read_link(&candidate)
                .with_context(|| format!("reading link {}", candidate.display()))?;
            if target.is_absolute() {
                resolved.clear();
            }
            push_front(&mut pending, &target);
        } else {
            resolved.push(c);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Checks that `root` has an executable `/sbin/init`.
pub fn check_init(root: &Path) -> Result<()> {
    let p = resolve_in_root(root, Path::new(INIT)).context("the root has no /sbin/init")?;
    let md = std::fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        bail!("/sbin/init ({}) is not an executable file", p.display());
    }
    Ok(())
}

/// Removes everything under `dir` that lives on the device `dev`, leaving other
/// mounts (and the directories holding them) alone. Errors are counted, not fatal.
pub fn delete_contents(dir: &Path, dev: u64) -> usize {
    let mut failures = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            failures += 1;
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            failures += delete_contents(&p, dev);
            // Fails (ENOTEMPTY/EBUSY) for directories holding a mount: expected.
            if std::fs::remove_dir(&p).is_err() {
                failures += 1;
            }
        } else if std::fs::remove_file(&p).is_err() {
            failures += 1;
        }
    }
    failures
}

/// A mount to carry into the new root: `from` (in the initramfs) goes to
/// `new_root/to`; when that directory is missing it is detached instead.
#[derive(Debug)]
pub struct Carry<'a> {
    pub from: &'a Path,
    pub to: &'a str,
}

/// Moves the mounts, empties the initramfs, switches to `new_root` and execs its
/// `/sbin/init` with `env`. Only returns on failure, after the point of no return.
pub fn enter(new_root: &Path, carry: &[Carry], env: &[(&str, &str)]) -> anyhow::Error {
    match enter_inner(new_root, carry, env) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn enter_inner(
    new_root: &Path,
    carry: &[Carry],
    env: &[(&str, &str)],
) -> Result<std::convert::Infallible> {
    use crate::sys::mount::{move_mount, switch_root, umount_lazy};
    let rootfs_dev = std::fs::metadata("/").context("stat /")?.dev();
    let new_dev = std::fs::metadata(new_root)
        .with_context(|| format!("stat {}", new_root.display()))?
        .dev();
    if rootfs_dev == new_dev {
        bail!("{} is not a mount point", new_root.display());
    }
    for c in carry {
        let target = new_root.join(c.to.trim_start_matches('/'));
        if target.is_dir() {
            move_mount(c.from, &target)?;
        } else {
            log::warn!(
                "{} has no {} directory: {} is unmounted instead",
                new_root.display(),
                c.to,
                c.from.display()
            );
            if let Err(e) = umount_lazy(c.from) {
                log::warn!("{e:#}");
            }
        }
    }
    let failures = delete_contents(Path::new("/"), rootfs_dev);
    log::debug!("initramfs emptied ({failures} entries left)");
    switch_root(new_root)?;
    super::bootlog::detach_file();
    let mut cmd = std::process::Command::new(INIT);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("exec {INIT}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), "x").unwrap();
        std::fs::set_permissions(
            r.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // merged /usr: /sbin -> usr/sbin; init is an absolute link to /bin/busybox.
        symlink("usr/sbin", r.join("sbin")).unwrap();
        symlink("/bin/busybox", r.join("usr/sbin/init")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/sbin/init")).unwrap(),
            r.join("bin/busybox")
        );
        check_init(r).unwrap();
        // ".." cannot climb out of the root.
        symlink("../../../../bin/busybox", r.join("usr/sbin/up")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/sbin/up")).unwrap(),
            r.join("bin/busybox")
        );
        // A loop is an error, not a hang.
        symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, Path::new("/loop")).is_err());
    }

    #[test]
    fn check_init_refuses_missing_or_plain_files() {
        let t = tempfile::tempdir().unwrap();
        assert!(check_init(t.path()).is_err());
        std::fs::create_dir_all(t.path().join("sbin")).unwrap();
        std::fs::write(t.path().join("sbin/init"), "x").unwrap();
        let err = format!("{:#}", check_init(t.path()).unwrap_err());
        assert!(err.contains("not an executable"), "{err}");
    }

    #[test]
    fn deletes_contents_on_one_device() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::write(r.join("a/b/c/f"), "x").unwrap();
        symlink("/nonexistent", r.join("a/l")).unwrap();
        std::fs::write(r.join("top"), "y").unwrap();
        let dev = std::fs::metadata(r).unwrap().dev();
        assert_eq!(delete_contents(r, dev), 0);
        assert_eq!(std::fs::read_dir(r).unwrap().count(), 0);
        // Another "device": nothing is touched.
        std::fs::write(r.join("keep"), "z").unwrap();
        assert_eq!(delete_contents(r, dev.wrapping_add(1)), 0);
        assert!(r.join("keep").exists());
    }
}
