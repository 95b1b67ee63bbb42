//! Unit tests of the bulk writer: its entries are the bytes fatfs writes, and a power cut at
//! any of its raw writes, or of the gathering, leaves a FAT the next emptying repairs.

use std::path::Path;
use std::process::Command;

use super::super::fat_raw::{ENTRY, geometry, parse};
use super::super::{BootNames, Esp, PartIo, format_esp};
use super::*;

const DIR: &str = "hup/b";

fn formatted(dir: &Path, mib: u64) -> std::path::PathBuf {
    let p = dir.join(format!("fat-{mib}.img"));
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib << 20).unwrap();
    format_esp(open_part(&p), "HUP-BOOT", 512).unwrap();
    p
}

fn open_part(p: &Path) -> PartIo {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let len = f.metadata().unwrap().len();
    PartIo::new(f, 0, len, "test")
}

fn files(n: usize, salt: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = match i % 3 {
                0 => format!("k{i}"),
                1 => format!("overlay-{i:04}-{salt}.dtbo"),
                _ => format!("Grüße {i}.conf"),
            };
            (name, vec![(i + salt) as u8; (i * 301 + salt) % 1500])
        })
        .collect()
}

/// The emptying the apply does (`empty_slot_dir`): gather, remove what is left, make sure the
/// directory exists.
fn empty(esp: &Esp) -> Result<()> {
    if esp.exists(DIR)? {
        esp.gather_dir(DIR)?;
        for e in esp.list(DIR)? {
            esp.remove(&format!("{DIR}/{}", e.name))?;
        }
    }
    esp.create_dir_all(DIR)
}

fn bulk(esp: &Esp, files: &[(String, Vec<u8>)]) -> Result<()> {
    let mut names = BootNames::new();
    let mut w = esp.bulk_writer(DIR)?;
    for (name, data) in files {
        let short = names.add(name)?;
        w.add(name, short, &mut &data[..])?;
    }
    w.finish()
}

/// Clears the dirty bit (fatfs keeps a bit it found set; fsck's business) and runs fsck.fat.
fn fsck_clean(img: &Path, what: &str) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, 0).unwrap();
    let at = if u16::from_le_bytes([bs[22], bs[23]]) == 0 {
        0x41
    } else {
        0x25
    };
    f.write_all_at(&[bs[at] & !1], at as u64).unwrap();
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: fsck.fat -n:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn read_back(img: &Path, files: &[(String, Vec<u8>)], what: &str) {
    let esp = Esp::open(open_part(img)).unwrap();
    assert_eq!(esp.list(DIR).unwrap().len(), files.len(), "{what}");
    for (name, data) in files {
        assert!(
            esp.read_file(&format!("{DIR}/{name}")).unwrap() == *data,
            "{what}: {name}"
        );
    }
    esp.close().unwrap();
}

/// The live entries of the slot directory, raw, with the cluster fields zeroed.
fn raw_entries(esp: &Esp) -> Vec<Vec<u8>> {
    let io = esp.raw_io();
    let g = geometry(io).unwrap();
    let (Some(first), _) = g.dir_at(io, DIR).unwrap() else {
        panic!("no {DIR}")
    };
    let buf = read_dir(&g, io, &g.chain(io, first).unwrap()).unwrap();
    parse(&buf, g.bits == 32)
        .into_iter()
        .filter(|(e, _)| !e.is_dot())
        .map(|(e, _)| {
            let mut v = buf[e.first_slot * ENTRY..(e.short_slot + 1) * ENTRY].to_vec();
            let n = v.len();
            v[n - 12..n - 10].fill(0);
            v[n - 6..n - 4].fill(0);
            v
        })
        .collect()
}

#[test]
fn entries_are_the_bytes_fatfs_writes() {
    let work = tempfile::tempdir().unwrap();
    let mut set = files(30, 7);
    set.push(("x".repeat(255), vec![1; 3]));
    set.push(("VMLINUZ".to_string(), Vec::new()));
    set.push(("TextFile.Mine.txt".to_string(), vec![2; 4096]));
    for mib in [4, 64, 300] {
        let by_fatfs = formatted(work.path(), mib);
        let esp = Esp::open(open_part(&by_fatfs)).unwrap();
        esp.create_dir_all(DIR).unwrap();
        for (name, data) in &set {
            esp.write_new_file(&format!("{DIR}/{name}"), &mut &data[..])
                .unwrap();
        }
        let want = raw_entries(&esp);
        esp.close().unwrap();
        let by_bulk = work.path().join("bulk.img");
        std::fs::copy(formatted(work.path(), mib), &by_bulk).unwrap();
        let esp = Esp::open(open_part(&by_bulk)).unwrap();
        empty(&esp).unwrap();
        bulk(&esp, &set).unwrap();
        let got = raw_entries(&esp);
        esp.close().unwrap();
        assert_eq!(got.len(), set.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{mib} MiB: entry of {:?}", set[i].0);
        }
        fsck_clean(&by_bulk, "bulk");
    }
}

/// Writes `new` over `old` with a power cut after `k` writes of the phase `cut_in`; then
/// the next apply's emptying and a full write must give a clean FAT with `new` in it.
/// Returns false when the phase ended before the cut.
fn cut_at(
    base: &Path,
    work: &Path,
    new: &[(String, Vec<u8>)],
    cut_in_gather: bool,
    k: u64,
) -> bool {
    let img = work.join("cut.img");
    std::fs::copy(base, &img).unwrap();
    let esp = Esp::open(open_part(&img)).unwrap();
    esp.raw_io().cut_after(k);
    let what = format!(
        "cut after {k} writes of the {}",
        if cut_in_gather {
            "gathering"
        } else {
            "bulk write"
        }
    );
    if cut_in_gather {
        esp.raw_io().arm_cut();
        let _ = esp.gather_dir(DIR);
    } else {
        empty(&esp).unwrap();
        let _ = bulk(&esp, new);
    }
    let cut = esp.raw_io().cut_reached();
    drop(esp);
    let esp = Esp::open(open_part(&img)).unwrap();
    empty(&esp).unwrap_or_else(|e| panic!("{what}: emptying: {e:#}"));
    bulk(&esp, new).unwrap_or_else(|e| panic!("{what}: writing: {e:#}"));
    esp.close().unwrap();
    fsck_clean(&img, &what);
    read_back(&img, new, &what);
    cut
}

#[test]
fn a_power_cut_at_any_raw_write_is_repaired_by_the_next_emptying() {
    let work = tempfile::tempdir().unwrap();
    for (mib, fat) in [(4, "FAT12"), (16, "FAT16")] {
        // A directory of old files, then new files that fit its clusters or need room.
        let base = formatted(work.path(), mib);
        let esp = Esp::open(open_part(&base)).unwrap();
        assert_eq!(esp.fat_type(), fat);
        empty(&esp).unwrap();
        bulk(&esp, &files(6, 1)).unwrap();
        esp.close().unwrap();
        for (new, cut_in_gather) in [
            (files(4, 2), false),
            (files(45, 3), false),
            (files(4, 2), true),
        ] {
            let mut k = 0;
            while cut_at(&base, work.path(), &new, cut_in_gather, k) {
                k += 1;
            }
            assert!(k > 3, "{fat}: only {k} cut points");
        }
    }
}
