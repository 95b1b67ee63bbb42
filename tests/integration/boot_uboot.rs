//! boot: the uboot backend on disk images made by `hup provision --boot-backend uboot`, with
//! the environment in plain files. U-Boot's script countdown is simulated with the real
//! `fw_setenv -c CONFIG` (what `setexpr` + `saveenv` leave); everything hup writes is read
//! back with `fw_printenv -c CONFIG`. Power cuts in the middle of the environment write of
//! `switch-boot`, single and redundant: boot_uboot_power.rs.

use std::path::{Path, PathBuf};

use super::boot_ubootenv::{config, fw_setenv, p};
use super::provision_uboot::{has, printenv, provision, status, system_json};
use crate::support::hup_ok;
use crate::support::image::World;
use crate::support::runner::Hup;
use hup::boot::BootBackend;
use hup::boot::uboot::UbootBackend;
use hup::model::config::Labels;
use hup::model::slot::Slot;

/// A world with an image provisioned with the environment in `uboot.env` (and
/// `uboot-redund.env` when `redundant`), and its `fw_env.config`.
pub fn provisioned(redundant: bool) -> (World, PathBuf, PathBuf) {
    let w = World::new();
    let mut lines = vec![format!("{} 0 0x4000", p(&w.dir.join("uboot.env")))];
    if redundant {
        lines.push(format!("{} 0 0x4000", p(&w.dir.join("uboot-redund.env"))));
    }
    let cfg = config(&w.dir, "fw_env.config", &lines);
    let img = provision(&w, "uboot.img", &cfg);
    (w, img, cfg)
}

/// `hup CMD --disk` as the OS booted from slot b runs it.
fn on_b(img: &Path, cmd: &str) -> String {
    Hup::new()
        .args([cmd, "--config"])
        .arg(system_json(img))
        .args(["--data-dir", &format!("{}.data", p(img)), "--disk", p(img)])
        .env("HUP_BOOTED_SLOT", "b")
        .ok()
}

#[test]
fn countdown_then_fallback_keeps_the_other_variables() {
    let (w, img, cfg) = provisioned(false);
    fw_setenv(&cfg, "bootdelay", Some("5"));
    hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    has(
        &printenv(&cfg),
        &["BOOT_ORDER=B A", "BOOT_B_LEFT=3", "bootdelay=5"],
    );
    // Three boots of b, each counted down by U-Boot's script.
    for left in ["2", "1", "0"] {
        assert_eq!(status(&img)["boot"]["next"], "b");
        fw_setenv(&cfg, "BOOT_B_LEFT", Some(left));
    }
    let st = status(&img);
    assert_eq!(st["boot"]["next"], "a", "used up: falls back to a");
    assert_eq!(st["boot"]["slots"][1]["status"], "bad");
    assert_eq!(st["boot"]["slots"][1]["tries_left"], 0);
    assert_eq!(st["boot"]["slots"][1]["tries_done"], 3);
    assert_eq!(st["boot"]["slots"][0]["status"], "good");
    has(&printenv(&cfg), &["BOOT_A_LEFT=3", "bootdelay=5"]);
}

#[test]
fn refund_then_commit_with_the_hup_binary() {
    let (w, img, cfg) = provisioned(true);
    hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    assert_eq!(
        on_b(&img, "refund-try").trim_end(),
        "slot b: this boot used no try: nothing to give back"
    );
    fw_setenv(&cfg, "BOOT_B_LEFT", Some("2"));
    assert_eq!(
        on_b(&img, "refund-try").trim_end(),
        "slot b: the try of this boot is given back (2 refunds left)"
    );
    has(&printenv(&cfg), &["BOOT_B_LEFT=3", "HUP_REFUNDS=2"]);
    fw_setenv(&cfg, "BOOT_B_LEFT", Some("2"));
    let st = status(&img);
    assert_eq!(st["boot"]["slots"][1]["refunds_left"], 2);
    assert_eq!(st["boot"]["slots"][1]["tries_done"], 1);
    assert!(on_b(&img, "mark-good").contains("slot b"));
    let vars = printenv(&cfg);
    has(&vars, &["BOOT_ORDER=B A", "BOOT_B_LEFT=3", "BOOT_A_LEFT=3"]);
    assert!(!vars.iter().any(|v| v.starts_with("HUP_")), "{vars:?}");
}

#[test]
fn mark_bad_and_a_cancelled_trial_read_back_with_fw_printenv() {
    let (w, img, cfg) = provisioned(true);
    hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    let b = UbootBackend::with_labels(&img, Labels::default(), &cfg, Path::new("/boot"));
    // The running a commits while b's trial is pending: the trial is cancelled.
    b.mark_good(Slot::A).unwrap();
    has(&printenv(&cfg), &["BOOT_ORDER=A B", "BOOT_B_LEFT=0"]);
    assert_eq!(b.active().unwrap(), Slot::A);
    // A new trial, given up.
    b.set_try_next(Slot::B, 2).unwrap();
    has(&printenv(&cfg), &["BOOT_ORDER=B A", "BOOT_B_LEFT=2"]);
    b.mark_bad(Slot::B).unwrap();
    let vars = printenv(&cfg);
    has(&vars, &["BOOT_ORDER=A B", "BOOT_B_LEFT=0", "BOOT_A_LEFT=3"]);
    assert!(
        !vars.iter().any(|v| v.starts_with("HUP_TRIAL=")),
        "{vars:?}"
    );
    // U-Boot's script cannot count past 9 (setexpr is hexadecimal).
    assert!(b.set_try_next(Slot::B, 10).is_err());
}

#[cfg(feature = "failpoints")]
#[path = "boot_uboot_power.rs"]
mod power;
