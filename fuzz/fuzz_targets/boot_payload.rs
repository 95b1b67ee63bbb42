//! The boot payload (a plain tar) into a slot directory of the FAT boot partition, as an
//! apply writes it: a disk image with a 4 MiB `hup-boot` partition, made and formatted
//! once per process (copied back before each input), the partition found by label, the
//! slot directory emptied, the files written, the partition closed. With
//! HUP_FUZZ_FSCK=1, `fsck.vfat -n` checks every image after a successful write.
#![no_main]

#[path = "common.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use hup::disk::{Disk, Esp, PartIo, format_esp};
use hup::fuzz_api::{empty_slot_dir, write_payload};
use libfuzzer_sys::fuzz_target;

/// 4 MiB of FAT from sector 2048, and room for the backup GPT.
const PART_SECTORS: u64 = 8192;
const SIZE: u64 = (2048 + PART_SECTORS + 2048) * 512;

fn open(path: &std::path::Path) -> PartIo {
    Disk::open(path)
        .and_then(|d| d.open_partition("hup-boot"))
        .expect("the hup-boot partition of the image")
}

fn formatted() -> &'static Vec<u8> {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let p = common::scratch().join("empty-esp.img");
        std::fs::File::create(&p).unwrap().set_len(SIZE).unwrap();
        let last = 2048 + PART_SECTORS - 1;
        let out = std::process::Command::new("sgdisk")
            .args([
                "-n",
                &format!("1:2048:{last}"),
                "-c",
                "1:hup-boot",
                "-t",
                "1:ef00",
            ])
            .arg(&p)
            .output()
            .expect("running sgdisk");
        assert!(out.status.success(), "sgdisk: {out:?}");
        format_esp(open(&p), "HUP-BOOT", 512).expect("formatting the FAT image");
        // an old slot directory with a file, as after an earlier apply
        let esp = Esp::open(open(&p)).unwrap();
        esp.create_dir_all("hup/b").unwrap();
        esp.write_bytes("hup/b/vmlinuz", b"old kernel").unwrap();
        esp.close().unwrap();
        std::fs::read(&p).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let image = formatted();
    let path = common::scratch().join("esp.img");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(SIZE).unwrap();
    f.write_all_at(image, 0).unwrap();
    drop(f);
    let Ok(esp) = Esp::open(open(&path)) else {
        panic!("the formatted image does not open");
    };
    empty_slot_dir(&esp, "hup/b").expect("emptying the slot directory");
    let written = write_payload(&esp, "hup/b", data);
    let closed = esp.close();
    if written.is_ok() && closed.is_ok() {
        let esp = Esp::open(open(&path)).expect("the boot partition opens after a write");
        let (n, _) = written.unwrap();
        let listed = esp.list("hup/b").expect("listing the slot directory");
        assert!(
            listed.len() as u64 <= n,
            "more files than written: {listed:?}"
        );
        if std::env::var_os("HUP_FUZZ_FSCK").is_some() {
            let disk = std::fs::read(&path).unwrap();
            let fat = common::scratch().join("fat.img");
            std::fs::write(
                &fat,
                &disk[2048 * 512..((2048 + PART_SECTORS) * 512) as usize],
            )
            .unwrap();
            let out = std::process::Command::new("fsck.vfat")
                .arg("-n")
                .arg(&fat)
                .output()
                .expect("running fsck.vfat");
            assert!(
                out.status.success(),
                "the write succeeded but fsck.vfat fails:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
});
