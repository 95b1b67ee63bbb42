//! `hup provision --boot-backend uboot --fw-env-config FILE` with the real `hup` binary: the
//! boot script on the boot partition, the initial environment where FILE says (a plain
//! file, or a file on the FAT boot partition), FILE in the device's system.json, then
//! `hup apply --disk`, `hup status --disk` and `hup mark-good --disk`. Every environment is
//! read back with the real `fw_printenv -c CONFIG` (Debian's libubootenv-tool), directly or
//! from a copy taken out of the image with mtools. U-Boot itself does not run here.

use std::path::{Path, PathBuf};

use super::boot_ubootenv::{config, fat_out, fw_printenv, p};
use crate::support::disk::{assert_fsck_fat_clean, esp_offset, mcopy_out, mdir_tree};
use crate::support::hup_ok;
use crate::support::image::World;
use crate::support::runner::Hup;
use crate::support::status_schema::{assert_valid, doc_blocks};
use serde_json::Value;

/// `fw_printenv` of `cfg`, which must succeed.
pub fn printenv(cfg: &Path) -> Vec<String> {
    let (ok, vars) = fw_printenv(cfg);
    assert!(ok, "fw_printenv -c {}: {vars:?}", cfg.display());
    vars
}

pub fn has(vars: &[String], want: &[&str]) {
    for w in want {
        assert!(vars.iter().any(|v| v == w), "{w} not in {vars:?}");
    }
}

/// The device's system.json, as provision wrote it.
pub fn system_json(img: &Path) -> PathBuf {
    PathBuf::from(format!("{}.data/system.json", p(img)))
}

/// Provisions `name` with the uboot backend and `--fw-env-config cfg`.
pub fn provision(w: &World, name: &str, cfg: &Path) -> PathBuf {
    w.provision(name, "1.0.0", "uboot", &["--fw-env-config", p(cfg)])
}

/// `hup status --json --disk` with the device's system.json, valid against the schema of
/// docs/status.md.
pub fn status(img: &Path) -> Value {
    let out = Hup::new()
        .args(["status", "--json", "--config"])
        .arg(system_json(img))
        .args(["--disk", p(img)])
        .ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    let (schema, _) = doc_blocks();
    assert_valid(&schema, &v);
    v
}

/// A `fw_env.config` for the host tools reading copies of the FAT files `names`, taken out
/// of `img` into `dir`.
fn fat_copies(img: &Path, dir: &Path, names: &[&str]) -> PathBuf {
    let lines: Vec<String> = names
        .iter()
        .map(|n| format!("{} 0 0x4000", p(&fat_out(img, dir, n))))
        .collect();
    config(dir, "host-fw_env.config", &lines)
}

#[test]
fn provision_writes_a_plain_environment_file_that_does_not_exist_yet() {
    let w = World::new();
    let env = w.dir.join("uboot.env");
    let cfg = config(&w.dir, "fw_env.config", &[format!("{} 0 0x4000", p(&env))]);
    assert!(!env.exists());
    let img = provision(&w, "uboot.img", &cfg);
    assert_eq!(std::fs::metadata(&env).unwrap().len(), 0x4000);
    has(
        &printenv(&cfg),
        &["BOOT_ORDER=A B", "BOOT_A_LEFT=3", "BOOT_B_LEFT=0"],
    );
    // FILE is recorded in the device's configuration.
    let sys: Value = serde_json::from_slice(&std::fs::read(system_json(&img)).unwrap()).unwrap();
    assert_eq!(sys["boot_backend"], "uboot");
    assert_eq!(sys["fw_env_config"], p(&cfg));
    // The compiled script is on the boot partition, with the slot's files.
    let off = esp_offset(&img);
    let tree = mdir_tree(&img, off).join("\n");
    for f in [
        "boot.scr",
        "hup/a/vmlinuz",
        "hup/a/initrd",
        "hup/a/cmdline.env",
    ] {
        assert!(tree.contains(f), "{f} missing:\n{tree}");
    }
    let scr = mcopy_out(&img, off, "/boot.scr", &w.dir.join("boot.scr"));
    assert_eq!(
        &scr[..4],
        &[0x27, 0x05, 0x19, 0x56],
        "a U-Boot script image"
    );
    let text = String::from_utf8_lossy(&scr);
    assert!(text.contains("setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1"));
    let cmdline = mcopy_out(&img, off, "/hup/a/cmdline.env", &w.dir.join("c.env"));
    assert_eq!(cmdline, b"hup_cmdline=console=ttyS0\n");
    let st = status(&img);
    assert_eq!(st["boot"]["backend"], "uboot");
    assert_eq!(st["boot"]["next"], "a");
    assert_eq!(st["boot"]["slots"][0]["status"], "good");
    assert_eq!(st["boot"]["slots"][1]["status"], "bad");
    assert_fsck_fat_clean(&img, &w.dir);
}

#[test]
fn provision_apply_status_and_mark_good_on_the_boot_partition() {
    let w = World::new();
    // The device's config: redundant files on the boot partition, mounted at /boot.
    let cfg = config(
        &w.dir,
        "fw_env.config",
        &[
            "/boot/uboot.env 0 0x4000".to_string(),
            "/boot/uboot-redund.env 0 0x4000".to_string(),
        ],
    );
    let img = provision(&w, "uboot.img", &cfg);
    let names = ["uboot.env", "uboot-redund.env"];
    let host = w.dir.join("host");
    std::fs::create_dir(&host).unwrap();
    has(
        &printenv(&fat_copies(&img, &host, &names)),
        &["BOOT_ORDER=A B", "BOOT_A_LEFT=3", "BOOT_B_LEFT=0"],
    );

    let out = hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    assert!(out.contains("applied 2.0.0 to slot b"), "{out}");
    let vars = printenv(&fat_copies(&img, &host, &names));
    has(
        &vars,
        &[
            "BOOT_ORDER=B A",
            "BOOT_B_LEFT=3",
            "BOOT_A_LEFT=3",
            "HUP_TRIAL=B",
            "HUP_TRIES=3",
        ],
    );
    let st = status(&img);
    assert_eq!(st["boot"]["next"], "b");
    assert_eq!(st["boot"]["order"], serde_json::json!(["b", "a"]));
    assert_eq!(st["boot"]["slots"][1]["status"], "trying");
    assert_eq!(st["boot"]["slots"][1]["tries_left"], 3);
    let text = Hup::new()
        .args(["status", "--config"])
        .arg(system_json(&img))
        .args(["--disk", p(&img)])
        .ok();
    assert!(
        text.contains("uboot backend, next boot: slot b, order: b a"),
        "{text}"
    );

    let out = Hup::new()
        .args(["mark-good", "--config"])
        .arg(system_json(&img))
        .args([
            "--data-dir",
            &format!("{}.data", p(&img)),
            "--disk",
            p(&img),
        ])
        .env("HUP_BOOTED_SLOT", "b")
        .ok();
    assert!(out.contains("slot b"), "{out}");
    let vars = printenv(&fat_copies(&img, &host, &names));
    has(&vars, &["BOOT_ORDER=B A", "BOOT_B_LEFT=3", "BOOT_A_LEFT=3"]);
    assert!(
        !vars.iter().any(|v| v.starts_with("HUP_TRIAL=")),
        "{vars:?}"
    );
    assert_eq!(status(&img)["boot"]["slots"][1]["status"], "good");
    assert_fsck_fat_clean(&img, &w.dir);
}

#[test]
fn a_missing_fw_env_config_is_refused_before_the_disk_is_touched() {
    let w = World::new();
    let bundle = w.bundle("1.0.0");
    let img = w.dir.join("x.img");
    let o = Hup::new()
        .args(["provision", "--bundle", p(&bundle), "--key", p(&w.pubkey)])
        .args([
            "--size",
            "300M",
            "--boot-backend",
            "uboot",
            "--fw-env-config",
        ])
        .arg(w.dir.join("absent.config"))
        .arg(&img)
        .run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fw_env.config"), "{err}");
    assert!(!img.exists(), "the disk was made");
}

#[test]
fn fw_env_config_needs_the_uboot_backend() {
    let w = World::new();
    let cfg = config(
        &w.dir,
        "fw_env.config",
        &["/boot/uboot.env 0 0x4000".into()],
    );
    let bundle = w.bundle("1.0.0");
    let img = w.dir.join("x.img");
    let o = Hup::new()
        .args(["provision", "--bundle", p(&bundle), "--key", p(&w.pubkey)])
        .args(["--size", "300M", "--boot-backend", "grub"])
        .args(["--fw-env-config", p(&cfg), p(&img)])
        .run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--fw-env-config needs --boot-backend uboot"),
        "{err}"
    );
    assert!(!img.exists());
}

#[test]
fn the_initial_environment_starts_from_the_boards_defaults() {
    let w = World::new();
    let env = w.dir.join("uboot.env");
    let cfg = config(&w.dir, "fw_env.config", &[format!("{} 0 0x4000", p(&env))]);
    // As U-Boot's `make u-boot-initial-env` writes it; a stale BOOT_ORDER is overridden.
    let defaults = w.dir.join("u-boot-initial-env");
    std::fs::write(
        &defaults,
        "bootcmd=run distro_bootcmd\nbootdelay=0\nkernel_addr_r=0x40400000\nBOOT_ORDER=B A\n",
    )
    .unwrap();
    w.provision(
        "uboot.img",
        "1.0.0",
        "uboot",
        &[
            "--fw-env-config",
            p(&cfg),
            "--uboot-initial-env",
            p(&defaults),
        ],
    );
    has(
        &printenv(&cfg),
        &[
            "bootcmd=run distro_bootcmd",
            "bootdelay=0",
            "kernel_addr_r=0x40400000",
            "BOOT_ORDER=A B",
            "BOOT_A_LEFT=3",
            "BOOT_B_LEFT=0",
        ],
    );
}

#[test]
fn a_default_environment_that_does_not_fit_is_refused_before_the_disk_is_touched() {
    let w = World::new();
    let cfg = config(
        &w.dir,
        "fw_env.config",
        &[format!("{} 0 0x100", p(&w.dir.join("uboot.env")))],
    );
    let defaults = w.dir.join("u-boot-initial-env");
    std::fs::write(&defaults, format!("bootcmd={}\n", "x".repeat(300))).unwrap();
    let bundle = w.bundle("1.0.0");
    let img = w.dir.join("x.img");
    let o = Hup::new()
        .args(["provision", "--bundle", p(&bundle), "--key", p(&w.pubkey)])
        .args(["--size", "300M", "--boot-backend", "uboot"])
        .args(["--fw-env-config", p(&cfg)])
        .args(["--uboot-initial-env", p(&defaults), p(&img)])
        .run();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0x100 bytes"), "{err}");
    assert!(!img.exists(), "the disk was made");
}
