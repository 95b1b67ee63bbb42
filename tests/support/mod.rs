//! The integration tests' support. Every run of the real binary goes through
//! [`runner::Hup`] (the helpers below are one-line shorthands for it), and every bundle a
//! test packs through [`bundle::BundleBuilder`]. The other submodules hold the fixtures of
//! each area: `image` (keys, bundles v1..v3, provisioned images, ext4 listings), `device`
//! (a running device's config, data directory and disk for stage/status), `server` (the
//! HTTP/TLS test server), `disk` and `gpt_edit` (real tools on images, a GPT editor),
//! `ext4` and `tars` (debugfs readback, e2fsck), `hostile_tar` (hand-made tar members),
//! `layout` (v1 images and loop mounts for layout migrations), `bundle_fixture`.
#![allow(dead_code)]

pub mod agent;
pub mod bundle;
pub mod bundle_fixture;
pub mod ddi_mock;
pub mod device;
pub mod disk;
pub mod ext4;
pub mod goosebit;
pub mod gpt_edit;
pub mod hostile_tar;
pub mod image;
pub mod layout;
pub mod runner;
pub mod server;
pub mod status_schema;
pub mod tars;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use self::runner::Hup;

/// Runs hup with `args`; returns the output whatever the exit status.
pub fn hup(args: &[&str]) -> Output {
    Hup::with(args).run()
}

/// Runs hup and panics with its output unless it succeeds; returns stdout.
pub fn hup_ok(args: &[&str]) -> String {
    Hup::with(args).ok()
}

/// Runs hup expecting failure; returns stderr (asserted to be one line).
pub fn hup_err(args: &[&str]) -> String {
    Hup::with(args).err_line()
}

/// Runs a shell command, panicking with its output on failure; returns stdout.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "{cmd} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Creates a key pair `dir/NAME.key` + `dir/NAME.pub`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    hup_ok(&["keygen", "-o", p(&prefix)]);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// A small root filesystem tree with every kind of entry a rootfs has.
/// Needs root for owners, device nodes and security.* xattrs.
pub fn make_rootfs(root: &Path, version: &str) {
    let d = |rel: &str| root.join(rel);
    for dir in ["bin", "etc/hup", "dev", "tmp", "usr/lib/deep/er/and/deeper"] {
        std::fs::create_dir_all(d(dir)).unwrap();
    }
    std::fs::write(
        d("etc/os-release"),
        format!("ID=hup-test\nVERSION_ID={version}\n"),
    )
    .unwrap();
    std::fs::write(d("bin/tool"), vec![0x7fu8; 70_000]).unwrap();
    std::fs::set_permissions(d("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(d("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(d("usr/lib/deep/er/and/deeper/empty"), b"").unwrap();
    std::fs::write(
        d("usr/lib/data.bin"),
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::hard_link(d("usr/lib/data.bin"), d("usr/lib/data-link.bin")).unwrap();
    symlink("../usr/lib/data.bin", d("bin/rel-link")).unwrap();
    symlink("/etc/os-release", d("etc/abs-link")).unwrap();
    let long = "n".repeat(200);
    std::fs::write(d(&format!("usr/lib/deep/{long}")), b"long name").unwrap();
    std::fs::write(d("etc/grüße.txt"), "non-ascii").unwrap();
    sh(&format!(
        "chown 1000:1001 {etc}/os-release && mknod -m 666 {dev}/null c 1 3 && mknod {dev}/vda b 254 0 \
         && mkfifo {dev}/fifo && setfattr -n user.hup -v hello {tool} \
         && setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= {tool}",
        etc = p(&d("etc")),
        dev = p(&d("dev")),
        tool = p(&d("bin/tool"))
    ));
    // Fixed mtimes, so that trees made at different times are equal.
    sh(&format!(
        "find {} -exec touch -h -d @1700000000 {{}} +",
        p(root)
    ));
}
