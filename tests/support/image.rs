//! Disk-image helpers for the apply and provision tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::bundle::BundleBuilder;
pub use super::bundle::COMPATIBLE;
use super::{hup_ok, keygen, make_rootfs, p, sh};

/// Keys, bundles v1..v3 and a scratch directory.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub pubkey: PathBuf,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (key, pubkey) = keygen(&dir, "release");
        World {
            tmp,
            dir,
            key,
            pubkey,
        }
    }

    /// `hup apply --disk IMG --bundle BUNDLE --key` this world's public key.
    pub fn apply_args<'a>(&'a self, img: &'a Path, bundle: &'a Path) -> Vec<&'a str> {
        vec![
            "apply",
            "--disk",
            p(img),
            "--bundle",
            p(bundle),
            "--key",
            p(&self.pubkey),
        ]
    }

    /// Packs version `v` (rootfs from make_rootfs, a small boot payload) unless already packed.
    pub fn bundle(&self, v: &str) -> PathBuf {
        self.bundle_with(v, COMPATIBLE, &[])
    }

    pub fn bundle_with(&self, v: &str, compatible: &str, extra: &[&str]) -> PathBuf {
        let out = self.dir.join(format!("{compatible}-{v}.hup"));
        if out.exists() {
            return out;
        }
        let root = self.dir.join(format!("rootfs-{v}"));
        if !root.exists() {
            make_rootfs(&root, v);
        }
        let boot = self.dir.join(format!("boot-{v}"));
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz"), format!("kernel {v}").repeat(1000)).unwrap();
        std::fs::write(boot.join("initrd"), format!("initrd {v}").repeat(500)).unwrap();
        std::fs::write(boot.join("cmdline"), "console=ttyS0").unwrap();
        BundleBuilder::new(&root, v, &self.key)
            .boot(&boot)
            .compatible(compatible)
            .level(1)
            .args(extra.iter().copied())
            .pack(&out)
    }

    /// Provisions `name` with version `v` in slot A.
    pub fn provision(&self, name: &str, v: &str, backend: &str, extra: &[&str]) -> PathBuf {
        let img = self.dir.join(name);
        let bundle = self.bundle(v);
        let mut args = vec![
            "provision",
            "--bundle",
            p(&bundle),
            "--key",
            p(&self.pubkey),
            "--size",
            "300M",
            "--slot-size",
            "64M",
            "--boot-size",
            "40M",
            "--boot-backend",
            backend,
        ];
        args.extend_from_slice(extra);
        args.push(p(&img));
        hup_ok(&args);
        img
    }
}

/// (start, len) in bytes of the partition labelled `label`.
pub fn part(img: &Path, label: &str) -> (u64, u64) {
    let d = hup::disk::Disk::open_read_only(img).unwrap();
    let part = d.partition(label).unwrap();
    (part.start, part.len)
}

/// sha256 of a byte range of a file.
pub fn range_sha(img: &Path, (start, len): (u64, u64)) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    hup::bundle::verified::sha256_of(f.by_ref().take(len))
        .unwrap()
        .0
}

pub fn file_sha(path: &Path) -> String {
    hup::bundle::verified::sha256_of(std::fs::File::open(path).unwrap())
        .unwrap()
        .0
}

/// Copies a partition out of the image into its own file.
pub fn extract(img: &Path, label: &str, out: &Path) {
    let (start, len) = part(img, label);
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} status=none",
        p(img),
        p(out),
        start >> 20,
        len >> 20
    ));
}

/// A listing of a tree: path, type, mode, owner, size, link count, content sha256, link target.
pub fn listing(root: &Path) -> String {
    sh(&format!(
        "cd {} && find . -mindepth 1 ! -name lost+found ! -path './lost+found/*' ! -path ./etc/hup/fingerprint.json -printf '%p %y %m %U:%G %s %n %l\\n' | sort && \
         find . -type f ! -path './lost+found/*' ! -path ./etc/hup/fingerprint.json -exec sha256sum {{}} + | sort -k2",
        p(root)
    ))
}

/// Checks an ext4 partition of the image with `e2fsck -fn`, mounts it read-only (loop) and
/// returns `f(mount point)`.
pub fn with_ext4<T>(img: &Path, label: &str, f: impl FnOnce(&Path) -> T) -> T {
    let work = tempfile::tempdir().unwrap();
    let part_img = work.path().join("part.img");
    extract(img, label, &part_img);
    sh(&format!("e2fsck -fn {} >/dev/null", p(&part_img)));
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -o loop,ro,noload {} {}",
        p(&part_img),
        p(&mnt)
    ));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mnt)));
    sh(&format!("umount {}", p(&mnt)));
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The listing of an ext4 partition of the image (see [`listing`]).
pub fn ext4_listing(img: &Path, label: &str) -> String {
    with_ext4(img, label, listing)
}
