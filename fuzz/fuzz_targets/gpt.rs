//! The GPT reader: a disk image opened read-only as `hup status` and the initramfs open
//! it, then what hup asks of the table (partitions by label, byte ranges, reads inside
//! each partition). Every partition hup reports must lie inside the disk and overlap no
//! other.
//!
//! When the first byte of the image (unused MBR boot code) is odd, the CRCs of both
//! headers and their entry arrays are recomputed before the image is written, so that the
//! fuzzer reaches the checks behind the CRCs (entry ranges, overlaps) instead of stopping
//! at a CRC mismatch.
#![no_main]

#[path = "common.rs"]
mod common;

use hup::disk::Disk;
use libfuzzer_sys::fuzz_target;

const LABELS: [&str; 4] = ["hup-boot", "hup-root-a", "hup-root-b", "hup-data"];
const SECTOR: usize = 512;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn u32_at(d: &[u8], o: usize) -> usize {
    u32::from_le_bytes(d[o..o + 4].try_into().unwrap()) as usize
}

/// Recomputes the entry array CRC and the header CRC of the header at `hdr`, where they fit.
fn fix_crcs(img: &mut [u8], hdr: usize) {
    if hdr + SECTOR > img.len() || &img[hdr..hdr + 8] != b"EFI PART" {
        return;
    }
    let h = &img[hdr..hdr + SECTOR];
    let entries_lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
    let (count, size) = (u32_at(h, 80), u32_at(h, 84));
    let start = usize::try_from(entries_lba)
        .ok()
        .and_then(|l| l.checked_mul(SECTOR));
    let len = count.checked_mul(size);
    if let (Some(start), Some(len)) = (start, len)
        && let Some(end) = start.checked_add(len)
        && end <= img.len()
    {
        let c = crc32(&img[start..end]);
        img[hdr + 88..hdr + 92].copy_from_slice(&c.to_le_bytes());
    }
    let hsize = u32_at(img, hdr + 12);
    if (92..=SECTOR).contains(&hsize) {
        img[hdr + 16..hdr + 20].fill(0);
        let c = crc32(&img[hdr..hdr + hsize]);
        img[hdr + 16..hdr + 20].copy_from_slice(&c.to_le_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut img = data.to_vec();
    if img.first().is_some_and(|b| b & 1 == 1) && img.len() >= 2 * SECTOR {
        fix_crcs(&mut img, SECTOR);
        let last = (img.len() / SECTOR - 1) * SECTOR;
        fix_crcs(&mut img, last);
    }
    let path = common::scratch().join("disk.img");
    std::fs::write(&path, &img).unwrap();
    let Ok(disk) = Disk::open_read_only(&path) else {
        return;
    };
    let _ = disk.health();
    let _ = disk.disk_guid();
    let parts = disk.partitions();
    for (i, p) in parts.iter().enumerate() {
        let end = p.start.checked_add(p.len);
        assert!(
            end.is_some_and(|e| e <= disk.size()),
            "partition {:?} at {}+{} is outside the {}-byte disk",
            p.label,
            p.start,
            p.len,
            disk.size()
        );
        for q in &parts[i + 1..] {
            assert!(!p.overlaps(q), "partitions overlap: {p:?} and {q:?}");
        }
        if let Ok(io) = disk.part_io(p) {
            let mut buf = [0u8; SECTOR];
            let _ = io.read_exact_at(&mut buf, 0);
        }
    }
    for l in LABELS {
        let _ = disk.find_partition(l);
    }
    let _ = disk.distinct_partitions("hup-root-a", "hup-root-b");
});
