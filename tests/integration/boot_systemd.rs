//! boot: the systemd-boot backend on disk images. systemd-boot's own renames (boot counting)
//! are simulated with mtools' `mren`; the real loader runs in the QEMU tests.

use std::path::{Path, PathBuf};

use crate::support::disk::*;
use hup::boot::BootBackend;
use hup::boot::systemd_boot::{LOADER_CONF, SystemdBootBackend};
use hup::disk::{Disk, Esp};
use hup::model::slot::{Slot, SlotStatus};

const EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

struct Fixture {
    _dir: tempfile::TempDir,
    img: PathBuf,
    off: u64,
    b: SystemdBootBackend,
}

impl Fixture {
    fn new(ss: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let img = hup_image_with_esp(dir.path(), ss);
        let off = esp_offset(&img);
        let b = SystemdBootBackend::new(&img);
        b.install_loader(Path::new(EFI)).unwrap();
        Fixture {
            _dir: dir,
            img,
            off,
            b,
        }
    }

    fn entries(&self) -> Vec<String> {
        self.b.entry_files().unwrap()
    }

    fn entry(&self, name: &str) -> String {
        mtype(&self.img, self.off, &format!("/loader/entries/{name}"))
    }

    /// What systemd-boot does when it boots an entry with a counter.
    fn firmware_boots(&self, from: &str, to: &str) {
        let spec = format!("{}@@{}", self.img.display(), self.off);
        ok(
            "mren",
            &[
                "-i",
                &spec,
                &format!("::/loader/entries/{from}"),
                &format!("::/loader/entries/{to}"),
            ],
        );
    }

    fn version(&self, name: &str) -> u64 {
        let text = self.entry(name);
        text.lines()
            .find_map(|l| l.strip_prefix("version "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Slot A installed and good, slot B installed and on trial with 3 tries.
    fn a_good_b_trying(ss: u64) -> Fixture {
        let f = Fixture::new(ss);
        f.b.install_bytes(Slot::A, b"kernel-a", b"initrd-a", "console=ttyS0")
            .unwrap();
        f.b.mark_good(Slot::A).unwrap();
        f.b.install_bytes(Slot::B, b"kernel-b", b"initrd-b", "console=ttyS0")
            .unwrap();
        f.b.set_try_next(Slot::B, 3).unwrap();
        f
    }
}

fn layout(ss: u64) {
    let f = Fixture::new(ss);
    let tree = mdir_tree(&f.img, f.off);
    for want in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        "::/loader/entries/",
    ] {
        assert!(tree.iter().any(|l| l == want), "{want} not in {tree:?}");
    }
    let dest = f._dir.path().join("BOOTX64.EFI");
    assert_eq!(
        mcopy_out(&f.img, f.off, "/EFI/BOOT/BOOTX64.EFI", &dest),
        std::fs::read(EFI).unwrap()
    );
    assert_eq!(mtype(&f.img, f.off, "/loader/loader.conf"), LOADER_CONF);
    assert!(LOADER_CONF.contains("timeout 0"));

    let kernel: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    f.b.install_bytes(Slot::A, &kernel, b"initrd-a", "console=ttyS0")
        .unwrap();
    assert_eq!(
        f.entries(),
        ["hup-a+0-0.conf"],
        "installed, not yet bootable"
    );
    assert_eq!(f.b.state().unwrap().slot(Slot::A).status, SlotStatus::Bad);
    f.b.mark_good(Slot::A).unwrap();
    assert_eq!(f.entries(), ["hup-a.conf"]);
    let entry = f.entry("hup-a.conf");
    for line in [
        "title hup slot a",
        "sort-key hup",
        "linux /hup/a/vmlinuz",
        "initrd /hup/a/initrd",
        "options root=PARTLABEL=hup-root-a hup.slot=a console=ttyS0",
    ] {
        assert!(
            entry.lines().any(|l| l == line),
            "{line:?} not in:\n{entry}"
        );
    }
    let dest = f._dir.path().join("vmlinuz");
    assert_eq!(mcopy_out(&f.img, f.off, "/hup/a/vmlinuz", &dest), kernel);
    assert_eq!(mtype(&f.img, f.off, "/hup/a/initrd"), "initrd-a");

    f.b.install_bytes(Slot::B, b"kernel-b", b"initrd-b", "")
        .unwrap();
    f.b.set_try_next(Slot::B, 3).unwrap();
    assert_eq!(f.entries(), ["hup-a.conf", "hup-b+3-0.conf"]);
    assert!(
        f.version("hup-b+3-0.conf") > f.version("hup-a.conf"),
        "the try entry sorts first"
    );
    assert!(
        f.entry("hup-b+3-0.conf")
            .contains("options root=PARTLABEL=hup-root-b hup.slot=b\n")
    );
    assert_eq!(f.b.active().unwrap(), Slot::B);
    let tree = mdir_tree(&f.img, f.off);
    assert!(
        !tree
            .iter()
            .any(|l| l.ends_with(".new") || l.ends_with(".tmp")),
        "{tree:?}"
    );
    assert_fsck_fat_clean(&f.img, f._dir.path());
}

#[test]
fn loader_files_and_entries_512() {
    layout(512);
}

#[test]
fn loader_files_and_entries_4096() {
    layout(4096);
}

#[test]
fn boot_counting_falls_back_to_the_good_entry() {
    let f = Fixture::a_good_b_trying(512);
    f.firmware_boots("hup-b+3-0.conf", "hup-b+2-1.conf");
    let st = f.b.state().unwrap();
    let b = st.slot(Slot::B);
    assert_eq!(
        (b.status, b.tries_left, b.tries_done),
        (SlotStatus::Trying, Some(2), Some(1))
    );
    assert_eq!(b.entry.as_deref(), Some("hup-b+2-1.conf"));
    assert_eq!(st.next, Some(Slot::B));
    f.firmware_boots("hup-b+2-1.conf", "hup-b+1-2.conf");
    f.firmware_boots("hup-b+1-2.conf", "hup-b+0-3.conf");
    assert_eq!(f.b.active().unwrap(), Slot::A, "exhausted entry sorts last");
    let st = f.b.state().unwrap();
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Bad);
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Good);
    // The fallback OS commits itself again: it now has the highest version too.
    f.b.mark_good(Slot::A).unwrap();
    assert_eq!(f.entries(), ["hup-a.conf", "hup-b+0-3.conf"]);
    assert!(f.version("hup-a.conf") > f.version("hup-b+0-3.conf"));
    assert_eq!(f.b.active().unwrap(), Slot::A);
}

#[test]
fn mark_good_keeps_the_other_entry_as_fallback() {
    let f = Fixture::a_good_b_trying(4096);
    f.firmware_boots("hup-b+3-0.conf", "hup-b+2-1.conf");
    f.b.mark_good(Slot::B).unwrap();
    assert_eq!(f.entries(), ["hup-a.conf", "hup-b.conf"]);
    let st = f.b.state().unwrap();
    assert_eq!(st.next, Some(Slot::B));
    assert!(st.slots.iter().all(|s| s.status == SlotStatus::Good));
    // Next update goes to A: it is preferred while on trial, and given up by mark_bad.
    f.b.install_bytes(Slot::A, b"kernel-a2", b"initrd-a2", "")
        .unwrap();
    assert_eq!(f.entries(), ["hup-a+0-0.conf", "hup-b.conf"]);
    assert_eq!(f.b.active().unwrap(), Slot::B);
    f.b.set_try_next(Slot::A, 2).unwrap();
    assert_eq!(f.entries(), ["hup-a+2-0.conf", "hup-b.conf"]);
    assert_eq!(f.b.active().unwrap(), Slot::A);
    assert_eq!(mtype(&f.img, f.off, "/hup/a/vmlinuz"), "kernel-a2");
    f.b.mark_bad(Slot::A).unwrap();
    assert_eq!(f.entries(), ["hup-a+0-0.conf", "hup-b.conf"]);
    assert_eq!(f.b.active().unwrap(), Slot::B);
    // mark_good of the running slot cancels a pending trial of the other.
    f.b.set_try_next(Slot::A, 2).unwrap();
    f.firmware_boots("hup-a+2-0.conf", "hup-a+1-1.conf");
    f.b.mark_good(Slot::B).unwrap();
    assert_eq!(f.entries(), ["hup-a+0-1.conf", "hup-b.conf"]);
    assert_fsck_fat_clean(&f.img, f._dir.path());
}

#[test]
fn clean_shutdown_refund() {
    let f = Fixture::a_good_b_trying(512);
    assert!(!f.b.refund_try(Slot::B).unwrap(), "nothing counted yet");
    assert!(
        !f.b.refund_try(Slot::A).unwrap(),
        "a good entry has no counter"
    );
    let mut name = "hup-b+3-0.conf".to_string();
    for refunds_left in [2, 1, 0] {
        f.firmware_boots(&name, "hup-b+2-1.conf");
        assert!(f.b.refund_try(Slot::B).unwrap());
        name = "hup-b+3-0.conf".into();
        assert_eq!(f.entries(), ["hup-a.conf", name.as_str()]);
        assert_eq!(
            f.b.state().unwrap().slot(Slot::B).refunds_left,
            Some(refunds_left)
        );
    }
    f.firmware_boots(&name, "hup-b+2-1.conf");
    assert!(!f.b.refund_try(Slot::B).unwrap(), "budget used up");
    assert_eq!(f.entries(), ["hup-a.conf", "hup-b+2-1.conf"]);
}

#[test]
fn install_checks_room_before_writing() {
    let f = Fixture::a_good_b_trying(512);
    let before = f.entries();
    let tree_before = mdir_tree(&f.img, f.off);
    let mut empty: &[u8] = &[];
    let mut empty2: &[u8] = &[];
    let err =
        f.b.install(
            Slot::B,
            hup::boot::systemd_boot::Payload::new(&mut empty, 64 * MIB),
            hup::boot::systemd_boot::Payload::new(&mut empty2, 0),
            "",
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("bytes free"), "{err:#}");
    assert_eq!(f.entries(), before);
    assert_eq!(mdir_tree(&f.img, f.off), tree_before, "nothing written");
    // A payload shorter than announced is an error.
    let mut short: &[u8] = b"abc";
    let mut i: &[u8] = b"i";
    let err =
        f.b.install(
            Slot::B,
            hup::boot::systemd_boot::Payload::new(&mut short, 10),
            hup::boot::systemd_boot::Payload::new(&mut i, 1),
            "",
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("expected 10"), "{err:#}");
}

#[test]
fn entry_for_files_written_by_the_pipeline() {
    let f = Fixture::new(512);
    let err = f.b.set_try_next(Slot::B, 3).unwrap_err();
    assert!(format!("{err:#}").contains("install it first"), "{err:#}");
    assert!(
        f.b.install_entry(Slot::B, "quiet").is_err(),
        "no kernel yet"
    );
    {
        let d = Disk::open(&f.img).unwrap();
        let esp = Esp::open(d.open_partition("hup-boot").unwrap()).unwrap();
        esp.write_bytes("hup/b/vmlinuz", b"kernel-b").unwrap();
        esp.close().unwrap();
    }
    f.b.install_entry(Slot::B, " quiet ").unwrap();
    assert_eq!(f.entries(), ["hup-b+0-0.conf"]);
    let text = f.entry("hup-b+0-0.conf");
    assert!(
        !text.contains("initrd"),
        "no initrd file, no initrd line:\n{text}"
    );
    assert!(
        text.contains("options root=PARTLABEL=hup-root-b hup.slot=b quiet\n"),
        "{text}"
    );
    f.b.set_try_next(Slot::B, 3).unwrap();
    assert_eq!(f.b.active().unwrap(), Slot::B);
    // Entries that are not hup's are left alone and ignored.
    let host = f._dir.path().join("other.conf");
    std::fs::write(&host, "title other\nlinux /other\n").unwrap();
    let spec = format!("{}@@{}", f.img.display(), f.off);
    ok(
        "mcopy",
        &[
            "-i",
            &spec,
            host.to_str().unwrap(),
            "::/loader/entries/other.conf",
        ],
    );
    f.b.mark_good(Slot::B).unwrap();
    assert_eq!(f.entries(), ["hup-b.conf", "other.conf"]);
    let json = serde_json::to_value(f.b.state().unwrap()).unwrap();
    assert_eq!(json["backend"], "systemd-boot");
    assert_eq!(json["slots"][0]["status"], "missing");
    assert_eq!(json["slots"][1]["entry"], "hup-b.conf");
}
