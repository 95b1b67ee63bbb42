//! A power cut in the middle of a U-Boot environment write: the test runs itself again (this
//! test binary, this one test) with `HUP_FAILPOINT` set and `CHILD` naming its directory; the
//! child does the write through `boot::fw_env_config::EnvStore` and is stopped dead at the
//! failpoint (exit 99, no cleanup). The parent then checks with hup and with `fw_printenv`
//! that the environment is the old or the new one (or, for the documented risk of a single
//! copy written in place, that the cut shows as a bad CRC), and that the next write works.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::boot_ubootenv::*;
use crate::support::disk::*;
use hup::boot::fw_env_config::{
    EnvStore, FP_FRESH_FIRST, FP_TMP_WRITTEN, FP_WRITE_MIDDLE, FwEnvConfig,
};
use hup::boot::ubootenv::UbootEnvError;

/// Set in the child: the test's directory.
const CHILD: &str = "HUP_UBOOTENV_CUT_CHILD";

/// In the child: the directory to work in. In the parent: `None`.
fn child() -> Option<PathBuf> {
    std::env::var_os(CHILD).map(PathBuf::from)
}

/// Runs the test `name` of this module again in a child process stopped at `failpoint`.
fn cut(name: &str, failpoint: &str, dir: &Path) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("boot_ubootenv_power::{name}"),
            "--exact",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD, dir)
        .env("HUP_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(99),
        "{name} at {failpoint}: {out:?}"
    );
}

/// Two files, redundant.
fn redundant_files(dir: &Path) -> PathBuf {
    config(
        dir,
        "fw_env.config",
        &[
            format!("{} 0 4000", p(&dir.join("uboot.env"))),
            format!("{} 0 4000", p(&dir.join("uboot-redund.env"))),
        ],
    )
}

fn set_new(s: &EnvStore) {
    s.update(None, |e| Ok(e.set("v", "new")?)).unwrap();
}

/// `v=new` and a value that reaches past the middle of the copy, so that a write cut half way
/// tears the variables (with a small environment both halves of the padding are the same).
fn set_new_big(s: &EnvStore) {
    s.update(None, |e| {
        e.set("v", "new")?;
        Ok(e.set("big", &"n".repeat(SIZE / 2 + 0x100))?)
    })
    .unwrap();
}

fn value(cfg: &Path) -> Vec<String> {
    let (good, vars) = fw_printenv(cfg);
    assert!(good, "fw_printenv {}", cfg.display());
    vars.into_iter().filter(|l| l.starts_with("v=")).collect()
}

#[test]
fn single_file_cut_before_the_rename_keeps_the_old() {
    if let Some(dir) = child() {
        return set_new(&store(&dir.join("fw_env.config")));
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uboot.env");
    let cfg = config(dir.path(), "fw_env.config", &[format!("{} 0 4000", p(&f))]);
    let s = store(&cfg);
    s.create(None, &env(&[("keep", "1"), ("v", "old")]))
        .unwrap();
    cut(
        "single_file_cut_before_the_rename_keeps_the_old",
        FP_TMP_WRITTEN,
        dir.path(),
    );
    // The whole new file waits beside the old one, which is untouched.
    assert!(dir.path().join(".uboot.env.hup-new").exists());
    assert_eq!(value(&cfg), ["v=old"]);
    assert_eq!(s.read(None).unwrap().env.get("v"), Some("old"));
    set_new(&s);
    assert_eq!(value(&cfg), ["v=new"]);
    assert_eq!(fw_printenv(&cfg).1, ["keep=1", "v=new"]);
    assert!(!dir.path().join(".uboot.env.hup-new").exists());
}

#[test]
fn redundant_cut_in_the_middle_of_a_copy_keeps_the_old() {
    if let Some(dir) = child() {
        return set_new_big(&store(&dir.join("fw_env.config")));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = redundant_files(dir.path());
    let s = store(&cfg);
    s.create(None, &env(&[("keep", "1"), ("v", "old")]))
        .unwrap();
    cut(
        "redundant_cut_in_the_middle_of_a_copy_keeps_the_old",
        FP_WRITE_MIDDLE,
        dir.path(),
    );
    // Copy 1 is torn (half new, half old): a bad CRC, so copy 0 is used.
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.flags), (0, Some([Some(1), None])));
    assert_eq!(i.env.get("v"), Some("old"));
    assert_eq!(value(&cfg), ["v=old"]);
    set_new(&s);
    assert_eq!(s.read(None).unwrap().current, 1);
    assert_eq!(fw_printenv(&cfg).1, ["keep=1", "v=new"]);
}

#[test]
fn redundant_cut_in_a_raw_image_keeps_the_old() {
    if let Some(dir) = child() {
        return set_new_big(&store(&dir.join("fw_env.config")));
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0; 1 << 20]).unwrap();
    let cfg = config(
        dir.path(),
        "fw_env.config",
        &[
            format!("{} 0x10000 0x4000", p(&img)),
            format!("{} 0x14000 0x4000", p(&img)),
        ],
    );
    let s = store(&cfg);
    s.create(None, &env(&[("v", "older")])).unwrap();
    // Copy 1 in use: the cut tears copy 0.
    s.update(None, |e| Ok(e.set("v", "old")?)).unwrap();
    assert_eq!(s.read(None).unwrap().current, 1);
    cut(
        "redundant_cut_in_a_raw_image_keeps_the_old",
        FP_WRITE_MIDDLE,
        dir.path(),
    );
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.env.get("v")), (1, Some("old")));
    assert_eq!(value(&cfg), ["v=old"]);
    set_new(&s);
    assert_eq!(value(&cfg), ["v=new"]);
}

#[test]
fn fresh_redundant_cut_between_the_copies_leaves_a_whole_one() {
    const NAME: &str = "fresh_redundant_cut_between_the_copies_leaves_a_whole_one";
    if let Some(dir) = child() {
        let s = store(&dir.join("fw_env.config"));
        return s.create(None, &env(&[("v", "new")])).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = redundant_files(dir.path());
    let s = store(&cfg);
    s.create(None, &env(&[("v", "old")])).unwrap();
    cut(NAME, FP_FRESH_FIRST, dir.path());
    // Copy 1 (flag 0) holds the new environment, copy 0 (flag 1) still the old one, which
    // wins until copy 0 is written too.
    assert_eq!(value(&cfg), ["v=old"]);
    assert_eq!(s.read(None).unwrap().env.get("v"), Some("old"));
    // Over blank copies (a first provisioning), the cut leaves the new one in copy 1.
    for f in ["uboot.env", "uboot-redund.env"] {
        std::fs::write(dir.path().join(f), vec![0; SIZE]).unwrap();
    }
    cut(NAME, FP_FRESH_FIRST, dir.path());
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.env.get("v")), (1, Some("new")));
    assert_eq!(value(&cfg), ["v=new"]);
}

/// The documented risk: a single copy at a raw offset is written in place, so a cut in the
/// middle leaves a bad CRC (U-Boot then boots with its built-in environment).
#[test]
fn single_raw_cut_in_the_middle_is_a_bad_crc() {
    if let Some(dir) = child() {
        return set_new_big(&store(&dir.join("fw_env.config")));
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0; 1 << 20]).unwrap();
    let cfg = config(
        dir.path(),
        "fw_env.config",
        &[format!("{} 0x10000 0x4000", p(&img))],
    );
    let s = store(&cfg);
    s.create(None, &env(&[("v", "old")])).unwrap();
    cut(
        "single_raw_cut_in_the_middle_is_a_bad_crc",
        FP_WRITE_MIDDLE,
        dir.path(),
    );
    let e = s.read(None).unwrap_err();
    assert!(
        matches!(
            e.downcast_ref::<UbootEnvError>(),
            Some(UbootEnvError::BadCrc { .. })
        ),
        "{e:#}"
    );
    assert!(!fw_printenv(&cfg).0);
    // Recovery is a fresh environment (what provisioning writes).
    s.create(None, &env(&[("v", "new")])).unwrap();
    assert_eq!(value(&cfg), ["v=new"]);
}

/// On the FAT boot partition, a single `uboot.env` is switched by `Esp::replace_file`.
fn fat_cut(name: &str, failpoint: &str, expect: &str) {
    let device_cfg = FwEnvConfig::parse("/boot/uboot.env 0 4000").unwrap();
    let s = EnvStore::new(&device_cfg, Some(Path::new("/boot"))).unwrap();
    if let Some(dir) = child() {
        let esp = boot_esp(&dir.join("disk.img"));
        return s.update(Some(&esp), |e| Ok(e.set("v", "new")?)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image_with_esp(dir.path(), 512);
    std::fs::rename(&img, dir.path().join("disk.img")).unwrap();
    let img = dir.path().join("disk.img");
    let esp = boot_esp(&img);
    s.create(Some(&esp), &env(&[("keep", "1"), ("v", "old")]))
        .unwrap();
    esp.close().unwrap();
    cut(name, failpoint, dir.path());
    let out = tempfile::tempdir().unwrap();
    let f = fat_out(&img, out.path(), "uboot.env");
    let cfg = config(out.path(), "fw_env.config", &[format!("{} 0 4000", p(&f))]);
    assert_eq!(
        fw_printenv(&cfg),
        (true, vec!["keep=1".into(), format!("v={expect}")])
    );
    let esp = boot_esp(&img);
    assert_eq!(s.read(Some(&esp)).unwrap().env.get("v"), Some(expect));
    s.update(Some(&esp), |e| Ok(e.set("v", "newer")?)).unwrap();
    esp.close().unwrap();
    let f = fat_out(&img, out.path(), "uboot.env");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 0x4000);
    assert_eq!(value(&cfg), ["v=newer"]);
}

#[test]
fn fat_single_cut_after_the_new_file_is_written_keeps_the_old() {
    fat_cut(
        "fat_single_cut_after_the_new_file_is_written_keeps_the_old",
        "esp-replace-written",
        "old",
    );
}

#[test]
fn fat_single_cut_after_the_switch_has_the_new() {
    fat_cut(
        "fat_single_cut_after_the_switch_has_the_new",
        "esp-replace-switched",
        "new",
    );
}
