//! The bundle tests' fixture: two key pairs and a bundle of a rootfs and a boot tree, signed
//! by one of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::support::bundle::BundleBuilder;
use crate::support::*;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub pubkey: PathBuf,
    pub other_pub: PathBuf,
    pub bundle: PathBuf,
}

/// How the fixture's bundle is packed (v2.0.0 of `rootfs/` and `boot/` in `dir`).
pub fn fixture_bundle(dir: &Path, key: &Path) -> BundleBuilder {
    BundleBuilder::new(&dir.join("rootfs"), "2.0.0", key)
        .boot(&dir.join("boot"))
        .compatible("qemu-x86_64")
        .min_from_version("1.0.0")
        .level(3)
}

pub fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (key, pubkey) = keygen(&dir, "release");
    let (_, other_pub) = keygen(&dir, "other");
    let root = dir.join("rootfs");
    make_rootfs(&root, "2.0.0");
    let boot = dir.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz"), vec![1u8; 5000]).unwrap();
    let bundle = fixture_bundle(&dir, &key).pack(&dir.join("v2.hup"));
    Fixture {
        _dir: tmp,
        dir,
        key,
        pubkey,
        other_pub,
        bundle,
    }
}
