//! boot: the grub backend on disk images. GRUB's own countdown (its script decrements one
//! `<S>_LEFT` with `save_env`) is simulated with the real `grub-editenv FILE set` on the
//! block copied out of the image with mtools and copied back; every block hup writes is read
//! back with `grub-editenv FILE list`, and blocks `grub-editenv` wrote are read by
//! `hup status --disk`. The real loader runs in the QEMU tests.

use std::path::{Path, PathBuf};

use crate::support::disk::*;
use crate::support::runner::Hup;
use hup::boot::BootBackend;
use hup::boot::grub::GrubBackend;
use hup::boot::grubenv::{BLOCK_SIZE, EnvBlock};
use hup::disk::Disk;
use hup::model::slot::{Slot, SlotStatus};
use serde_json::Value;

const ENV: &str = "/EFI/hup/grubenv";

struct Fixture {
    dir: tempfile::TempDir,
    img: PathBuf,
    off: u64,
    b: GrubBackend,
}

impl Fixture {
    fn new(ss: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let img = hup_image_with_esp(dir.path(), ss);
        let off = esp_offset(&img);
        let b = GrubBackend::new(&img);
        // The slots' kernels, where GRUB's script boots them from.
        let esp = hup::disk::Esp::open(
            Disk::open(&img)
                .unwrap()
                .open_partition("hup-boot")
                .unwrap(),
        )
        .unwrap();
        for s in Slot::ALL {
            esp.write_bytes(&hup::boot::order::kernel_path(s), b"kernel")
                .unwrap();
        }
        esp.close().unwrap();
        Fixture { dir, img, off, b }
    }

    /// Slot A good (as provisioning leaves it), slot B on trial with 3 tries.
    fn a_good_b_trying(ss: u64) -> Fixture {
        let f = Fixture::new(ss);
        f.b.mark_good(Slot::A).unwrap();
        f.b.mark_bad(Slot::B).unwrap();
        f.b.set_try_next(Slot::B, 3).unwrap();
        f
    }

    fn spec(&self) -> String {
        format!("{}@@{}", self.img.display(), self.off)
    }

    /// The block copied out of the image with mcopy.
    fn block_file(&self) -> PathBuf {
        let dest = self.dir.path().join("grubenv");
        let _ = std::fs::remove_file(&dest);
        let bytes = mcopy_out(&self.img, self.off, ENV, &dest);
        assert_eq!(bytes.len(), BLOCK_SIZE);
        dest
    }

    /// `grub-editenv FILE list` of the block in the image, one `name=value` per line.
    fn list(&self) -> Vec<String> {
        editenv_list(&self.block_file())
    }

    /// What GRUB's script does when it boots a slot on trial: `<S>_LEFT` one less, with
    /// `grub-editenv set` on the block, copied back into the image.
    fn grub_sets(&self, assignment: &str) {
        let f = self.block_file();
        ok("grub-editenv", &[p(&f), "set", assignment]);
        self.put_block(&f);
    }

    fn put_block(&self, file: &Path) {
        ok(
            "mcopy",
            &["-o", "-i", &self.spec(), p(file), &format!("::{ENV}")],
        );
    }

    fn status(&self, s: Slot) -> (SlotStatus, Option<u32>) {
        let st = self.b.state().unwrap();
        let s = st.slot(s);
        (s.status, s.tries_left)
    }
}

fn editenv_list(file: &Path) -> Vec<String> {
    ok("grub-editenv", &[p(file), "list"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn has(list: &[String], want: &[&str]) {
    for w in want {
        assert!(list.iter().any(|l| l == w), "{w} not in {list:?}");
    }
}

fn countdown(ss: u64) {
    let f = Fixture::a_good_b_trying(ss);
    has(
        &f.list(),
        &["ORDER=B A", "A_OK=1", "A_LEFT=", "B_OK=1", "B_LEFT=3"],
    );
    assert_eq!(f.b.active().unwrap(), Slot::B);
    assert_eq!(f.status(Slot::B), (SlotStatus::Trying, Some(3)));
    for left in [2u32, 1, 0] {
        f.grub_sets(&format!("B_LEFT={left}"));
        let st = f.b.state().unwrap();
        let b = st.slot(Slot::B);
        assert_eq!(b.tries_done, Some(3 - left));
        if left > 0 {
            assert_eq!((b.status, b.tries_left), (SlotStatus::Trying, Some(left)));
            assert_eq!(st.next, Some(Slot::B), "tries left: B boots");
        } else {
            assert_eq!(b.status, SlotStatus::Bad, "trial used up");
            assert_eq!(st.next, Some(Slot::A), "falls back at 0");
        }
        assert_eq!(st.order, Some(vec![Slot::B, Slot::A]));
    }
    assert_eq!(f.b.active().unwrap(), Slot::A);
    assert_eq!(f.status(Slot::A), (SlotStatus::Good, None));
    // The fallback OS commits itself again: ORDER puts it first.
    f.b.mark_good(Slot::A).unwrap();
    has(&f.list(), &["ORDER=A B", "A_OK=1", "A_LEFT=", "B_LEFT=0"]);
    assert_eq!(f.b.active().unwrap(), Slot::A);
    assert_fsck_fat_clean(&f.img, f.dir.path());
    assert!(
        !mdir_tree(&f.img, f.off).iter().any(|l| l.ends_with(".new")),
        "no temporary file left"
    );
}

#[test]
fn tries_count_down_with_a_fallback_at_zero_512() {
    countdown(512);
}

#[test]
fn tries_count_down_with_a_fallback_at_zero_4096() {
    countdown(4096);
}

#[test]
fn mark_good_stops_the_countdown() {
    let f = Fixture::a_good_b_trying(512);
    f.grub_sets("B_LEFT=2");
    f.b.mark_good(Slot::B).unwrap();
    let list = f.list();
    has(
        &list,
        &["ORDER=B A", "B_OK=1", "B_LEFT=", "A_OK=1", "A_LEFT="],
    );
    let st = f.b.state().unwrap();
    assert_eq!(st.next, Some(Slot::B));
    assert!(st.slots.iter().all(|s| s.status == SlotStatus::Good));
    assert!(st.slots.iter().all(|s| s.ok == Some(true) && s.successful));
    // The script does not count a committed slot: nothing changes it any more.
    assert_eq!(f.b.active().unwrap(), Slot::B);
    // A trial of the other slot that is still pending is cancelled by mark_good.
    f.b.set_try_next(Slot::A, 2).unwrap();
    f.grub_sets("A_LEFT=1");
    f.b.mark_good(Slot::B).unwrap();
    has(&f.list(), &["ORDER=B A", "A_LEFT=0", "B_LEFT="]);
    assert_eq!(f.status(Slot::A), (SlotStatus::Bad, Some(0)));
    assert_eq!(f.b.active().unwrap(), Slot::B);
    assert!(
        !f.b.refund_try(Slot::A).unwrap(),
        "a cancelled trial is not refunded"
    );
}

#[test]
fn mark_bad_gives_a_slot_up() {
    let f = Fixture::a_good_b_trying(4096);
    f.grub_sets("B_LEFT=2");
    f.b.mark_bad(Slot::B).unwrap();
    has(&f.list(), &["ORDER=A B", "B_OK=0", "B_LEFT=0", "A_OK=1"]);
    let st = f.b.state().unwrap();
    assert_eq!(st.next, Some(Slot::A));
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Bad);
    assert_eq!(st.slot(Slot::B).ok, Some(false));
    assert!(
        !f.b.refund_try(Slot::B).unwrap(),
        "a given-up slot is not revived"
    );
    assert_eq!(f.b.active().unwrap(), Slot::A);
}

#[test]
fn clean_shutdown_refund() {
    let f = Fixture::a_good_b_trying(512);
    assert!(!f.b.refund_try(Slot::B).unwrap(), "no boot counted yet");
    assert!(
        !f.b.refund_try(Slot::A).unwrap(),
        "a committed slot has no counter"
    );
    for refunds_left in [2u32, 1, 0] {
        f.grub_sets("B_LEFT=2");
        assert!(f.b.refund_try(Slot::B).unwrap());
        has(
            &f.list(),
            &["B_LEFT=3", &format!("B_REFUNDS={refunds_left}")],
        );
        assert_eq!(
            f.b.state().unwrap().slot(Slot::B).refunds_left,
            Some(refunds_left)
        );
    }
    f.grub_sets("B_LEFT=2");
    assert!(!f.b.refund_try(Slot::B).unwrap(), "budget used up");
    has(&f.list(), &["B_LEFT=2", "B_REFUNDS=0"]);
    // The last try's boot is refunded too (the counter went to 0 when it started).
    let f = Fixture::a_good_b_trying(512);
    f.grub_sets("B_LEFT=0");
    assert_eq!(f.b.active().unwrap(), Slot::A);
    assert!(f.b.refund_try(Slot::B).unwrap());
    assert_eq!(f.b.active().unwrap(), Slot::B);
}

#[test]
fn a_slot_being_written_never_boots() {
    let f = Fixture::a_good_b_trying(512);
    f.b.mark_good(Slot::B).unwrap();
    // The next apply targets A: it is marked bad before its first byte is written.
    f.b.mark_bad(Slot::A).unwrap();
    has(&f.list(), &["ORDER=B A", "A_OK=0"]);
    assert_eq!(f.b.active().unwrap(), Slot::B);
    // Even first in ORDER (a device's own edit), a slot with A_OK=0 is skipped.
    f.grub_sets("ORDER=A B");
    assert_eq!(f.b.active().unwrap(), Slot::B);
    assert_eq!(f.status(Slot::A).0, SlotStatus::Bad);
    // Only set_try_next, the last write of an apply, makes it bootable.
    f.b.set_try_next(Slot::A, 2).unwrap();
    assert_eq!(f.b.active().unwrap(), Slot::A);
}

#[test]
fn no_block_yet_and_refused_blocks() {
    let f = Fixture::new(512);
    // A slot without its kernel is not tried.
    let esp = hup::disk::Esp::open(
        Disk::open(&f.img)
            .unwrap()
            .open_partition("hup-boot")
            .unwrap(),
    )
    .unwrap();
    esp.remove("/hup/b/vmlinuz").unwrap();
    esp.close().unwrap();
    let e = f.b.set_try_next(Slot::B, 3).unwrap_err();
    assert!(
        format!("{e:#}").contains("no kernel /hup/b/vmlinuz"),
        "{e:#}"
    );
    let st = f.b.state().unwrap();
    assert_eq!(st.next, None);
    assert!(st.slots.iter().all(|s| s.status == SlotStatus::Missing));
    let e = f.b.active().unwrap_err();
    assert!(
        format!("{e:#}").contains("no GRUB environment block"),
        "{e:#}"
    );
    // The first write creates the block as `grub-editenv create` would, plus hup's variables.
    f.b.mark_good(Slot::A).unwrap();
    let raw = std::fs::read(f.block_file()).unwrap();
    assert!(raw.starts_with(b"# GRUB Environment Block\n# WARNING"));
    // A block that is not 1024 bytes is refused, not overwritten.
    let short = f.dir.path().join("short");
    std::fs::write(&short, &raw[..512]).unwrap();
    f.put_block(&short);
    let e = f.b.mark_good(Slot::B).unwrap_err();
    assert!(format!("{e:#}").contains("512 bytes, not 1024"), "{e:#}");
    let back = mcopy_out(&f.img, f.off, ENV, &f.dir.path().join("back"));
    assert_eq!(back.len(), 512, "the refused block is left as it is");
}

/// A device configuration naming the grub backend, for `hup status --disk`.
fn grub_config(dir: &Path) -> PathBuf {
    let c = dir.join("system.json");
    std::fs::write(&c, r#"{"compatible":"pc","boot_backend":"grub"}"#).unwrap();
    c
}

fn status_json(f: &Fixture) -> Value {
    let out = Hup::new()
        .args(["status", "--json", "--disk", p(&f.img), "--config"])
        .arg(grub_config(f.dir.path()))
        .ok();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn grub_editenv_lists_what_hup_writes() {
    let f = Fixture::a_good_b_trying(512);
    let env = f.b.env().unwrap().unwrap();
    let hup: Vec<String> = env.vars().iter().map(|(n, v)| format!("{n}={v}")).collect();
    assert_eq!(f.list(), hup, "same variables, same values, same order");
    // A value with the characters grub-editenv escapes.
    let mut env = env.clone();
    env.set("note", "a\\b\nc").unwrap();
    f.b.write_env(&env).unwrap();
    let list = f.list();
    assert_eq!(list[list.len() - 2..], ["note=a\\b", "c"]);
}

#[test]
fn hup_status_reads_what_grub_editenv_writes() {
    // A fresh block from grub-editenv.
    let f = Fixture::new(512);
    let file = f.dir.path().join("fresh");
    ok("grub-editenv", &[p(&file), "create"]);
    ok(
        "grub-editenv",
        &[
            p(&file),
            "set",
            "ORDER=B A",
            "A_OK=1",
            "B_OK=1",
            "B_LEFT=2",
            "B_TRIES=3",
            "B_REFUNDS=3",
        ],
    );
    f.b.mark_good(Slot::A).unwrap(); // creates /EFI/hup/
    f.put_block(&file);
    let st = status_json(&f);
    assert_eq!(st["boot"]["backend"], "grub");
    assert_eq!(st["boot"]["next"], "b");
    assert_eq!(st["boot"]["order"], serde_json::json!(["b", "a"]));
    let b = &st["boot"]["slots"][1];
    assert_eq!(
        (
            &b["status"],
            &b["ok"],
            &b["tries_left"],
            &b["tries_done"],
            &b["refunds_left"]
        ),
        (
            &Value::from("trying"),
            &Value::from(true),
            &Value::from(2),
            &Value::from(1),
            &Value::from(3)
        )
    );
    assert_eq!(st["boot"]["slots"][0]["status"], "good");

    // A used block: hup's, changed by grub-editenv (padding consumed, a variable of the
    // device's own added, one removed), read by hup; hup's next write keeps the device's.
    let used = f.block_file();
    ok(
        "grub-editenv",
        &[p(&used), "set", "saved_entry=rescue", "B_LEFT=0"],
    );
    ok("grub-editenv", &[p(&used), "unset", "B_TRIES"]);
    f.put_block(&used);
    let st = status_json(&f);
    assert_eq!(st["boot"]["next"], "a", "B's trial is used up");
    assert_eq!(st["boot"]["slots"][1]["status"], "bad");
    f.b.mark_good(Slot::A).unwrap();
    let list = f.list();
    has(&list, &["saved_entry=rescue", "ORDER=A B", "B_LEFT=0"]);
    let st = status_json(&f);
    assert_eq!(st["boot"]["order"], serde_json::json!(["a", "b"]));
    assert!(st["errors"].as_array().unwrap().is_empty(), "{st:#}");
}

#[test]
fn a_block_at_another_path() {
    let f = Fixture::new(512);
    let b = GrubBackend::with_labels(&f.img, Default::default(), "/boot/grub/grubenv");
    b.mark_good(Slot::A).unwrap();
    b.set_try_next(Slot::B, 2).unwrap();
    let dest = f.dir.path().join("other");
    mcopy_out(&f.img, f.off, "/boot/grub/grubenv", &dest);
    has(&editenv_list(&dest), &["ORDER=B A", "B_LEFT=2"]);
    assert!(f.b.env().unwrap().is_none(), "nothing at the default path");
    let parsed = EnvBlock::parse(&std::fs::read(&dest).unwrap()).unwrap();
    assert_eq!(parsed.get("A_OK"), Some("1"));
}

#[cfg(feature = "failpoints")]
#[path = "boot_grub_power.rs"]
mod power;

/// The whole path with the real `hup` binary: `hup provision --boot-backend grub`, an apply
/// of 2.0.0 (slot b on trial with `max_tries` tries), GRUB's countdown, the OS's
/// `hup refund-try` and `hup mark-good`, each read back with `grub-editenv` and
/// `hup status --disk`.
#[test]
fn provision_apply_countdown_refund_and_commit_with_the_hup_binary() {
    use crate::support::image::{COMPATIBLE, World, part};
    let w = World::new();
    let img = w.provision("grub.img", "1.0.0", "grub", &[]);
    let (off, _) = part(&img, "hup-boot");
    let f = Fixture {
        dir: tempfile::tempdir().unwrap(),
        img: img.clone(),
        off,
        b: GrubBackend::new(&img),
    };
    has(&f.list(), &["ORDER=A B", "A_OK=1", "A_LEFT=", "B_OK=0"]);
    let out = crate::support::hup_ok(&w.apply_args(&img, &w.bundle("2.0.0")));
    assert!(out.contains("applied 2.0.0 to slot b"), "{out}");
    has(
        &f.list(),
        &[
            "ORDER=B A",
            "B_OK=1",
            "B_LEFT=3",
            "B_TRIES=3",
            "B_REFUNDS=3",
        ],
    );
    let config = w.dir.join("dev.json");
    let cfg = serde_json::json!({
        "compatible": COMPATIBLE,
        "boot_backend": "grub",
        "keys_dir": w.dir.join("keys"),
        "data_mount": w.dir.join("dev-data"),
    });
    std::fs::write(&config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let data = w.dir.join("dev-data/hup");
    let cmd = |c: &str| -> String {
        Hup::new()
            .args([
                c,
                "--config",
                p(&config),
                "--data-dir",
                p(&data),
                "--disk",
                p(&img),
            ])
            .env("HUP_BOOTED_SLOT", "b")
            .ok()
            .trim_end()
            .to_string()
    };
    let status = || -> Value {
        let out = Hup::new()
            .args([
                "status",
                "--json",
                "--config",
                p(&config),
                "--disk",
                p(&img),
            ])
            .ok();
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(
        cmd("refund-try"),
        "slot b: this boot used no try: nothing to give back"
    );
    f.grub_sets("B_LEFT=2");
    assert_eq!(
        cmd("refund-try"),
        "slot b: the try of this boot is given back (2 refunds left)"
    );
    has(&f.list(), &["B_LEFT=3", "B_REFUNDS=2"]);
    f.grub_sets("B_LEFT=2");
    let st = status();
    assert_eq!(st["boot"]["next"], "b");
    assert_eq!(st["boot"]["slots"][1]["tries_left"], 2);
    assert_eq!(st["boot"]["slots"][1]["tries_done"], 1);
    let text = Hup::new()
        .args(["status", "--config", p(&config), "--disk", p(&img)])
        .ok();
    assert!(
        text.contains("grub backend, next boot: slot b, order: b a"),
        "{text}"
    );
    assert!(
        text.contains("slot b: trying, ok 1, tries left 2"),
        "{text}"
    );
    let out = cmd("mark-good");
    assert!(out.contains("slot b"), "{out}");
    has(&f.list(), &["ORDER=B A", "B_OK=1", "B_LEFT=", "A_OK=1"]);
    let st = status();
    assert_eq!(st["boot"]["slots"][1]["status"], "good");
    assert_eq!(st["boot"]["order"], serde_json::json!(["b", "a"]));
    assert_fsck_fat_clean(&img, f.dir.path());
}
