//! A power cut in the middle of the environment write of `switch-boot`: `hup apply --disk`
//! is stopped dead by a failpoint (`HUP_FAILPOINT`, exit 99, no cleanup) inside the write.
//! `fw_printenv` then reads a whole environment, the old one; the resumed apply writes the
//! new one. Single environment file (temporary file not yet renamed), redundant files (the
//! copy not in use half written), and a file on the FAT boot partition.

use super::super::boot_ubootenv::fat_out;
use super::*;
use crate::support::disk::{esp_offset, mcopy_out};

fn cut_then_resume(w: &World, img: &Path, cfg: &Path, failpoint: &str) {
    let o = Hup::with(w.apply_args(img, &w.bundle("2.0.0")))
        .env("HUP_FAILPOINT", failpoint)
        .run();
    assert_eq!(o.status.code(), Some(99), "{failpoint}: {o:?}");
    // The cut came in switch-boot: slot b's boot files are in place already.
    let off = esp_offset(img);
    let k = mcopy_out(img, off, "/hup/b/vmlinuz", &w.dir.join("k"));
    assert!(k.starts_with(b"kernel 2.0.0"));
    has(
        &printenv(cfg),
        &["BOOT_ORDER=A B", "BOOT_A_LEFT=3", "BOOT_B_LEFT=0"],
    );
    assert_eq!(status(img)["boot"]["next"], "a");
    let out = hup_ok(&w.apply_args(img, &w.bundle("2.0.0")));
    assert!(out.contains("applied 2.0.0 to slot b"), "{out}");
    has(
        &printenv(cfg),
        &["BOOT_ORDER=B A", "BOOT_B_LEFT=3", "HUP_TRIAL=B"],
    );
}

#[test]
fn cut_in_a_single_file_write_keeps_the_old_environment() {
    let (w, img, cfg) = provisioned(false);
    cut_then_resume(&w, &img, &cfg, "ubootenv-tmp-written");
}

#[test]
fn cut_in_a_redundant_write_keeps_the_old_environment() {
    let (w, img, cfg) = provisioned(true);
    // A variable that spans the middle of the copy: the half written copy has a bad CRC
    // (with a small environment the second half is padding, the same in both).
    fw_setenv(&cfg, "filler", Some(&"x".repeat(0x3000)));
    cut_then_resume(&w, &img, &cfg, "ubootenv-write-middle");
    // The copies alternate: the next write goes to the other file, and both stay readable.
    let one = std::fs::read(w.dir.join("uboot.env")).unwrap();
    let two = std::fs::read(w.dir.join("uboot-redund.env")).unwrap();
    assert_ne!(one, two);
}

#[test]
fn cut_in_a_write_on_the_boot_partition_keeps_the_old_environment() {
    let w = World::new();
    let cfg = config(
        &w.dir,
        "fw_env.config",
        &["/boot/uboot.env 0 0x4000".into()],
    );
    let img = provision(&w, "uboot.img", &cfg);
    // The host tools read a copy taken out of the image.
    let host = w.dir.join("host");
    std::fs::create_dir(&host).unwrap();
    let host_cfg = config(
        &host,
        "fw_env.config",
        &[format!("{} 0 0x4000", p(&host.join("uboot.env")))],
    );
    let copy_out = || {
        fat_out(&img, &host, "uboot.env");
    };
    let o = Hup::with(w.apply_args(&img, &w.bundle("2.0.0")))
        .env("HUP_FAILPOINT", "esp-replace-written")
        .run();
    assert_eq!(o.status.code(), Some(99), "{o:?}");
    copy_out();
    has(&printenv(&host_cfg), &["BOOT_ORDER=A B", "BOOT_B_LEFT=0"]);
    hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    copy_out();
    has(&printenv(&host_cfg), &["BOOT_ORDER=B A", "BOOT_B_LEFT=3"]);
}
