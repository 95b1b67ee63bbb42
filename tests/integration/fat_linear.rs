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

/// Files of a payload: (name, content).
type Files = Vec<(String, Vec<u8>)>;

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

fn overlays(n: usize) -> Files {
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

/// The partition's bytes as a file of its own (for fsck.fat and mtools without offsets).
fn extract(img: &Path, out: &Path) {
    let p = part(img);
    let mut buf = vec![0u8; p.len() as usize];
    p.read_exact_at(&mut buf, 0).unwrap();
    std::fs::write(out, buf).unwrap();
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// fsck.fat finds nothing to fix; fatfs and mtools list exactly `files` in the slot
/// directory, and fatfs reads back every byte.
fn check(img: &Path, files: &[(String, Vec<u8>)], what: &str) {
    let work = tempfile::tempdir().unwrap();
    let fat = work.path().join("fat.img");
    extract(img, &fat);
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: fsck.fat -n:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let esp = Esp::open(part(img)).unwrap();
    let mut want: Vec<(String, u64)> = files
        .iter()
        .map(|(n, d)| (n.clone(), d.len() as u64))
        .collect();
    want.sort();
    let got: Vec<(String, u64)> = esp
        .list(DIR)
        .unwrap()
        .into_iter()
        .map(|e| {
            assert!(!e.is_dir, "{what}: {e:?}");
            (e.name, e.len)
        })
        .collect();
    assert_eq!(got, want, "{what}: fatfs lists other files");
    for (name, data) in files {
        let back = esp.read_file(&format!("{DIR}/{name}")).unwrap();
        assert!(back == *data, "{what}: {name} reads back other bytes");
    }
    esp.close().unwrap();
    let listing = sh(&format!("mdir -i {} -b ::/{DIR}", fat.display()));
    let mut listed: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches(&format!("::/{DIR}/")).to_string())
        .collect();
    listed.sort();
    let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(listed, names, "{what}: mtools lists other names");
}

fn file(name: &str, len: usize) -> (String, Vec<u8>) {
    let data = (0..len).map(|i| (i * 7 + name.len()) as u8).collect();
    (name.to_string(), data)
}

/// Names of every kind: 8.3 in any case, long, unicode, at the 13-character boundaries of
/// long-name entries, needing generated short names; sizes 0, odd, a cluster and around it.
fn mixed() -> Files {
    let mut v = vec![
        file("vmlinuz", 5000),
        file("VMLINUZ.EFI", 4096),
        file("a", 1),
        file("empty", 0),
        file("initrd.img-6.1.0-13-amd64", 100_003),
        file("Straße.dtb", 511),
        file("grüße ünïcödé.conf", 513),
        file("内核.img", 8191),
        file(&"n".repeat(13), 4097),
        file(&"m".repeat(26), 0),
        file(&"l".repeat(255), 12_345),
        file("x~y.conf.d", 2),
        file("TextFile.Mine.txt", 3),
        file("TextFile.Mine2.txt", 0),
        ("cmdline".to_string(), b"console=ttyS0 quiet".to_vec()),
    ];
    v.extend((0..40).map(|i| file(&format!("overlay-{i:04}.dtbo"), 33 * i)));
    v
}

fn write_checked(img: &Path, files: &[(String, Vec<u8>)], what: &str) {
    write(img, files);
    check(img, files, what);
}

#[test]
fn every_kind_of_payload_reads_back_and_fsck_is_clean_on_fat12_fat16_fat32() {
    let work = tempfile::tempdir().unwrap();
    for (mib, fat) in [(4, "FAT12"), (64, "FAT16"), (300, "FAT32")] {
        let img = image(work.path(), mib);
        let esp = Esp::open(part(&img)).unwrap();
        assert_eq!(esp.fat_type(), fat);
        esp.close().unwrap();
        let cases: Vec<(&str, Files)> = vec![
            ("one file", vec![file("vmlinuz", 1234)]),
            ("one empty file", vec![file("empty", 0)]),
            (
                "only empty files",
                (0..30).map(|i| file(&format!("e{i}"), 0)).collect(),
            ),
            ("no file", vec![]),
            ("mixed", mixed()),
            ("one file again", vec![file("initrd", 77)]),
        ];
        // Each case over the one before: the old files are removed by the same emptying.
        for (what, files) in &cases {
            write_checked(&img, files, &format!("{fat} {what}"));
        }
    }
}

#[test]
fn the_maximum_of_files_on_fat16_and_fat32_twice_over() {
    let work = tempfile::tempdir().unwrap();
    for mib in [64, 300] {
        let img = image(work.path(), mib);
        let mut files: Vec<_> = (0..1024)
            .map(|i| file(&format!("module-{i:05}-with-a-longer-name.ko"), i * 5))
            .collect();
        write_checked(&img, &files, &format!("{mib} MiB, 1024 files"));
        files.truncate(1000);
        files.push(file("vmlinuz", 9000));
        write_checked(&img, &files, &format!("{mib} MiB, 1001 files over 1024"));
    }
}
