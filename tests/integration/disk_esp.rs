//! disk: the FAT boot partition through fatfs, checked with mtools and fsck.fat.

use crate::support::disk::*;
use hup::disk::{self, Disk, Esp};

fn esp_of(img: &std::path::Path) -> (Esp, u64) {
    let d = Disk::open(img).unwrap();
    let part = d.partition("hup-boot").unwrap();
    (Esp::open(d.part_io(&part).unwrap()).unwrap(), part.start)
}

fn files_roundtrip(ss: u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image_with_esp(dir.path(), ss);
    let (esp, off) = esp_of(&img);
    assert_eq!(esp.fat_type(), "FAT16", "40 MiB is FAT16");
    assert_eq!(esp.volume_label(), "HUP-BOOT");
    let free0 = esp.free_bytes().unwrap();
    assert!(free0 > 38 * MIB, "{free0}");

    let kernel: Vec<u8> = (0..3 * MIB as usize + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    esp.write_bytes("/hup/a/vmlinuz.new", &kernel).unwrap();
    esp.rename("hup/a/vmlinuz.new", "/hup/a/vmlinuz").unwrap();
    esp.write_bytes("hup/a/initrd", b"initrd-a").unwrap();
    esp.write_bytes("loader/loader.conf", b"timeout 0\n")
        .unwrap();
    // Rename over an existing file replaces it.
    esp.write_bytes("loader/x.tmp", b"timeout 3\n").unwrap();
    esp.rename("loader/x.tmp", "loader/loader.conf").unwrap();
    esp.write_bytes("junk", b"x").unwrap();
    esp.remove("junk").unwrap();
    assert!(esp.remove("junk").is_err());
    assert!(!esp.remove_if_exists("junk").unwrap());

    assert!(esp.exists("HUP/A/VMLINUZ").unwrap(), "lookups ignore case");
    assert_eq!(esp.read_file("hup/a/vmlinuz").unwrap(), kernel);
    let names: Vec<(String, bool, u64)> = esp
        .list("hup/a")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.is_dir, e.len))
        .collect();
    assert_eq!(
        names,
        [
            ("initrd".to_string(), false, 8),
            ("vmlinuz".to_string(), false, kernel.len() as u64)
        ]
    );
    let used = free0 - esp.free_bytes().unwrap();
    assert!(
        used >= esp.allocation(kernel.len() as u64),
        "free space accounts for the kernel"
    );
    assert!(esp.ensure_room(30 * MIB).is_ok());
    let err = esp.ensure_room(64 * MIB).unwrap_err().to_string();
    assert!(
        err.contains("bytes free") && err.contains("needed"),
        "{err}"
    );
    esp.close().unwrap();

    // mtools sees the same files, with the same content.
    let tree = mdir_tree(&img, off);
    for want in [
        "::/hup/a/vmlinuz",
        "::/hup/a/initrd",
        "::/loader/loader.conf",
    ] {
        assert!(tree.iter().any(|l| l == want), "{want} not in {tree:?}");
    }
    assert!(
        !tree
            .iter()
            .any(|l| l.contains("junk") || l.contains(".new")),
        "{tree:?}"
    );
    assert_eq!(mtype(&img, off, "/loader/loader.conf"), "timeout 3\n");
    let out = dir.path().join("k");
    assert_eq!(mcopy_out(&img, off, "/hup/a/vmlinuz", &out), kernel);
    assert_fsck_fat_clean(&img, dir.path());

    // And files written by mtools are read back.
    let host = dir.path().join("from-mtools.txt");
    std::fs::write(&host, b"written by mcopy").unwrap();
    let spec = format!("{}@@{off}", img.display());
    ok(
        "mcopy",
        &["-i", &spec, host.to_str().unwrap(), "::/hup/m.txt"],
    );
    let (esp, _) = esp_of(&img);
    assert_eq!(esp.read_file("hup/m.txt").unwrap(), b"written by mcopy");
}

#[test]
fn esp_files_512() {
    files_roundtrip(512);
}

#[test]
fn esp_files_4096() {
    files_roundtrip(4096);
}

#[test]
fn large_esp_is_fat32() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.img");
    let specs = disk::hup_layout(300 * MIB, 8 * MIB, Some(8 * MIB));
    let d = disk::create_layout(&img, 512, 400 * MIB, &specs).unwrap();
    disk::format_esp(d.open_partition("hup-boot").unwrap(), "hup-boot", 512).unwrap();
    let part = d.partition("hup-boot").unwrap();
    let esp = Esp::open(d.part_io(&part).unwrap()).unwrap();
    assert_eq!(esp.fat_type(), "FAT32");
    assert_eq!(esp.cluster_size(), 4096);
    esp.write_bytes("EFI/BOOT/BOOTX64.EFI", b"MZ").unwrap();
    esp.close().unwrap();
    let tree = mdir_tree(&img, part.start);
    assert!(
        tree.iter().any(|l| l == "::/EFI/BOOT/BOOTX64.EFI"),
        "{tree:?}"
    );
    let spec = format!("{}@@{}", img.display(), part.start);
    let info = ok("minfo", &["-i", &spec, "::"]);
    assert!(info.contains("FAT32"), "{info}");
    assert_fsck_fat_clean(&img, dir.path());
}

#[test]
fn format_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = hup_image(dir.path(), 512);
    let d = Disk::open(&img).unwrap();
    let io = || d.open_partition("hup-boot").unwrap();
    assert!(disk::format_esp(io(), "A-LABEL-TOO-LONG", 512).is_err());
    assert!(disk::format_esp(io(), "HUP", 1024).is_err());
    // Not formatted yet: opening fails with a message naming the partition.
    let err = Esp::open(io()).err().unwrap();
    assert!(format!("{err:#}").contains("hup-boot"), "{err:#}");
}
