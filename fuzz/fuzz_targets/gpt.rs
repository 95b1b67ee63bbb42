//! The GPT reader: a disk image opened read-only as `hup status` and the initramfs open
//! it, then what hup asks of the table (partitions by label, byte ranges, reads inside
//! each partition).
#![no_main]

#[path = "common.rs"]
mod common;

use hup::disk::Disk;
use libfuzzer_sys::fuzz_target;

const LABELS: [&str; 4] = ["hup-boot", "hup-root-a", "hup-root-b", "hup-data"];

fuzz_target!(|data: &[u8]| {
    let path = common::scratch().join("disk.img");
    std::fs::write(&path, data).unwrap();
    let Ok(disk) = Disk::open_read_only(&path) else {
        return;
    };
    let _ = disk.health();
    let _ = disk.disk_guid();
    for p in disk.partitions() {
        let _ = p.end();
        if let Ok(io) = disk.part_io(&p) {
            let mut buf = [0u8; 512];
            let _ = io.read_exact_at(&mut buf, 0);
        }
    }
    for l in LABELS {
        let _ = disk.find_partition(l);
    }
    let _ = disk.distinct_partitions("hup-root-a", "hup-root-b");
});
