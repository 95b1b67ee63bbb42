//! The bundle tests' fixture: two key pairs and a bundle of a rootfs and a boot tree, signed
//! by one of them.
#![allow(dead_code)]

use std::path::PathBuf;

use crate::support::*;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub pubkey: PathBuf,
    pub other_pub: PathBuf,
    pub bundle: PathBuf,
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
    let bundle = dir.join("v2.hup");
    hup_ok(&[
        "pack",
        "--rootfs",
        p(&root),
        "--boot",
        p(&boot),
        "--version",
        "2.0.0",
        "--compatible",
        "qemu-x86_64",
        "--min-from-version",
        "1.0.0",
        "--key",
        p(&key),
        "--level",
        "3",
        "-o",
        p(&bundle),
    ]);
    Fixture {
        _dir: tmp,
        dir,
        key,
        pubkey,
        other_pub,
        bundle,
    }
}
