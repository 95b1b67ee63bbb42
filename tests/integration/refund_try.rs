//! `hup refund-try` (the OS's clean shutdown path gives back the try of this boot) on
//! provisioned disk images with v2 applied to slot b, for both boot backends. Boots are
//! simulated the way each backend counts them: gpt with `GptBackend::choose` (what the
//! initramfs runs), systemd-boot with mtools renaming the entry (what the loader does).

use std::path::PathBuf;
use std::process::Output;

use crate::support::image::*;
use crate::support::runner::Hup;
use crate::support::*;
use hup::boot::gpt::GptBackend;
use hup::fsutil::DataDir;
use hup::model::slot::Slot;
use serde_json::Value;

/// A provisioned image (1.0.0 in slot a, good) with 2.0.0 applied to slot b (on trial, 3
/// tries), and a device configuration and data directory on the host.
struct Dev {
    img: PathBuf,
    config: PathBuf,
    data: PathBuf,
}

impl Dev {
    fn new(w: &World, name: &str, backend: &str) -> Dev {
        let img = w.provision(&format!("{name}.img"), "1.0.0", backend, &[]);
        let out = hup_ok(&[
            "apply",
            "--disk",
            p(&img),
            "--bundle",
            p(&w.bundle("2.0.0")),
            "--key",
            p(&w.pubkey),
        ]);
        assert!(out.contains("applied 2.0.0 to slot b"), "{out}");
        let config = w.dir.join(format!("{name}.json"));
        let cfg = serde_json::json!({
            "compatible": COMPATIBLE,
            "boot_backend": backend,
            "keys_dir": w.dir.join("keys"),
            "data_mount": w.dir.join(format!("{name}-data")),
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let data = w.dir.join(format!("{name}-data/hup"));
        Dev { img, config, data }
    }

    /// Runs `hup CMD --config --data-dir --disk` as if `booted` were the booted slot.
    fn cmd(&self, cmd: &str, booted: &str) -> Output {
        Hup::new()
            .args([
                cmd,
                "--config",
                p(&self.config),
                "--data-dir",
                p(&self.data),
                "--disk",
                p(&self.img),
            ])
            .env("HUP_BOOTED_SLOT", booted)
            // A held state lock is waited for briefly, not the default 10 s.
            .env("HUP_LOCK_WAIT_MS", "200")
            .run()
    }

    /// `hup refund-try` in slot `booted`: exit 0 and its one line.
    fn refund(&self, booted: &str) -> String {
        let o = self.cmd("refund-try", booted);
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(
            o.status.success(),
            "refund-try failed ({}): {out}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(out.lines().count(), 1, "one line: {out:?}");
        out.trim_end().to_string()
    }

    /// The boot backend's state of `slot` from `hup status --json --disk` on the host.
    fn boot_slot(&self, slot: &str) -> Value {
        let out = hup_ok(&[
            "status",
            "--json",
            "--config",
            p(&self.config),
            "--data-dir",
            p(&self.data),
            "--disk",
            p(&self.img),
        ]);
        let st: Value = serde_json::from_str(&out).unwrap();
        st["boot"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slot"] == slot)
            .unwrap_or_else(|| panic!("no slot {slot} in {st:#}"))
            .clone()
    }

    /// (tries_left, refunds_left) of `slot`.
    fn tries(&self, slot: &str) -> (u64, u64) {
        let s = self.boot_slot(slot);
        (
            s["tries_left"].as_u64().unwrap(),
            s["refunds_left"].as_u64().unwrap(),
        )
    }

    /// One power-on with the gpt backend: the initramfs's choice; returns the booted slot.
    fn gpt_boot(&self) -> Slot {
        GptBackend::new(&self.img).choose().unwrap().slot
    }

    /// The systemd-boot entries, sorted.
    fn entries(&self) -> String {
        let (start, _) = part(&self.img, "hup-boot");
        sh(&format!(
            "mdir -i {}@@{} -b ::/loader/entries | sed 's#.*/##' | sort",
            p(&self.img),
            start
        ))
    }

    /// What systemd-boot does when it boots an entry with a counter: rename it.
    fn firmware_boots(&self, from: &str, to: &str) {
        let (start, _) = part(&self.img, "hup-boot");
        sh(&format!(
            "mren -i {}@@{} ::/loader/entries/{from} ::/loader/entries/{to}",
            p(&self.img),
            start
        ));
    }
}

/// Exit code and stderr of a failed command; asserts one error line.
fn failed(o: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    (o.status.code().unwrap(), err)
}

#[test]
fn gpt_clean_reboots_give_the_try_back_three_times_per_trial() {
    let w = World::new();
    let dev = Dev::new(&w, "gpt", "gpt");
    assert_eq!(dev.tries("b"), (3, 3));

    // Slot a is committed: a clean shutdown there has nothing to give back.
    assert_eq!(
        dev.refund("a"),
        "slot a is not on trial: nothing to give back"
    );
    assert_eq!(dev.tries("b"), (3, 3));
    assert_eq!(dev.boot_slot("a")["status"], "good");

    // Three clean reboots of slot b: each boot uses a try, each shutdown gives it back.
    for left in [2, 1, 0] {
        assert_eq!(dev.gpt_boot(), Slot::B);
        assert_eq!(dev.tries("b"), (2, left + 1));
        let plural = if left == 1 { "refund" } else { "refunds" };
        assert_eq!(
            dev.refund("b"),
            format!("slot b: the try of this boot is given back ({left} {plural} left)")
        );
        assert_eq!(dev.tries("b"), (3, left));
        assert_eq!(dev.boot_slot("b")["status"], "trying");
    }

    // The budget is used up: from now on every boot counts, clean or not.
    for tries in [2, 1, 0] {
        assert_eq!(dev.gpt_boot(), Slot::B);
        assert_eq!(
            dev.refund("b"),
            "slot b: no refunds left in this trial: this boot counts"
        );
        assert_eq!(dev.tries("b"), (tries, 0));
    }
    // The tries are gone: the next boot falls back to slot a.
    assert_eq!(dev.boot_slot("b")["status"], "bad");
    assert_eq!(dev.gpt_boot(), Slot::A);
    assert_eq!(
        dev.refund("a"),
        "slot a is not on trial: nothing to give back"
    );
    assert_eq!(dev.tries("b"), (0, 0));
}

#[test]
fn gpt_refund_after_mark_good_or_mark_bad_and_its_errors() {
    let w = World::new();
    let dev = Dev::new(&w, "gpt", "gpt");
    assert_eq!(dev.gpt_boot(), Slot::B);

    // The lock is taken as by mark-good: another holder makes it exit 3, changing nothing.
    {
        let _held = hup::device::lock::acquire(&DataDir::new(&dev.data), "test").unwrap();
        let (code, err) = failed(&dev.cmd("refund-try", "b"));
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("holds") && err.contains("lock"), "{err}");
    }
    assert_eq!(dev.tries("b"), (2, 3));

    // No disk: exit 1 with one line naming it.
    let o = Hup::new()
        .args(["refund-try", "--config", p(&dev.config), "--data-dir"])
        .arg(&dev.data)
        .args(["--disk", "/nonexistent/disk.img"])
        .env("HUP_BOOTED_SLOT", "b")
        .run();
    let (code, err) = failed(&o);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/disk.img"), "{err}");

    // A slot marked bad is given up, not on trial: a refund must not revive it.
    let o = dev.cmd("mark-bad", "b");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        dev.refund("b"),
        "slot b is not on trial: nothing to give back"
    );
    assert_eq!(dev.boot_slot("b")["status"], "bad");
    assert_eq!(dev.gpt_boot(), Slot::A);

    // A committed slot is not on trial either.
    let dev = Dev::new(&w, "gpt2", "gpt");
    assert_eq!(dev.gpt_boot(), Slot::B);
    let o = dev.cmd("mark-good", "b");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        dev.refund("b"),
        "slot b is not on trial: nothing to give back"
    );
    assert_eq!(dev.boot_slot("b")["status"], "good");
}

#[test]
fn systemd_boot_refunds_rename_the_entry_back() {
    let w = World::new();
    let dev = Dev::new(&w, "sdb", "systemd-boot");
    let b_entries = |dev: &Dev| {
        dev.entries()
            .lines()
            .filter(|l| l.starts_with("hup-b"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(b_entries(&dev), "hup-b+3-0.conf");
    assert_eq!(dev.boot_slot("b")["refunds_left"], 3);

    // The loader has not counted a boot of slot b yet: nothing to give back.
    assert_eq!(
        dev.refund("b"),
        "slot b: this boot used no try: nothing to give back"
    );
    assert_eq!(b_entries(&dev), "hup-b+3-0.conf");
    assert_eq!(
        dev.refund("a"),
        "slot a is not on trial: nothing to give back"
    );

    for left in [2, 1, 0] {
        dev.firmware_boots("hup-b+3-0.conf", "hup-b+2-1.conf");
        let plural = if left == 1 { "refund" } else { "refunds" };
        assert_eq!(
            dev.refund("b"),
            format!("slot b: the try of this boot is given back ({left} {plural} left)")
        );
        assert_eq!(b_entries(&dev), "hup-b+3-0.conf");
        let s = dev.boot_slot("b");
        assert_eq!(s["tries_left"], 3, "{s:#}");
        assert_eq!(s["tries_done"], 0, "{s:#}");
        assert_eq!(s["refunds_left"], left, "{s:#}");
    }
    dev.firmware_boots("hup-b+3-0.conf", "hup-b+2-1.conf");
    assert_eq!(
        dev.refund("b"),
        "slot b: no refunds left in this trial: this boot counts"
    );
    assert_eq!(b_entries(&dev), "hup-b+2-1.conf");
    // The last try: still counted, and the entry stays exhausted.
    dev.firmware_boots("hup-b+2-1.conf", "hup-b+1-2.conf");
    dev.firmware_boots("hup-b+1-2.conf", "hup-b+0-3.conf");
    assert_eq!(
        dev.refund("b"),
        "slot b: no refunds left in this trial: this boot counts"
    );
    assert_eq!(b_entries(&dev), "hup-b+0-3.conf");
    assert_eq!(dev.boot_slot("b")["status"], "bad");
}

#[test]
fn systemd_boot_refund_does_not_revive_a_slot_marked_bad() {
    let w = World::new();
    let dev = Dev::new(&w, "sdb", "systemd-boot");
    dev.firmware_boots("hup-b+3-0.conf", "hup-b+2-1.conf");
    let o = dev.cmd("mark-bad", "b");
    assert!(o.status.success(), "{o:?}");
    assert!(
        dev.entries().contains("hup-b+0-1.conf"),
        "{}",
        dev.entries()
    );
    assert_eq!(dev.boot_slot("b")["refunds_left"], 0);
    // The refund budget went with the trial: the shutdown after mark-bad changes nothing.
    assert_eq!(
        dev.refund("b"),
        "slot b: no refunds left in this trial: this boot counts"
    );
    assert!(
        dev.entries().contains("hup-b+0-1.conf"),
        "{}",
        dev.entries()
    );
    assert_eq!(dev.boot_slot("b")["status"], "bad");
    assert_eq!(dev.boot_slot("a")["status"], "good");
}
