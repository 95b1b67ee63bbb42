//! `Esp::replace_file` under a power cut at every write (fatfs's and the raw ones), on
//! FAT12, FAT16 and FAT32: the file is whole with its old or new content, no two entries
//! share a cluster, and the next replace succeeds and leaves no temporary file.

use std::path::Path;
use std::process::Command;

use super::*;
use crate::disk::PartIo;

const PATH: &str = "EFI/hup/grubenv";

fn open_part(p: &Path) -> PartIo {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let len = f.metadata().unwrap().len();
    PartIo::new(f, 0, len, "test")
}

/// Copies an image keeping its holes (the FAT32 image is 300 MiB, mostly holes).
fn copy_sparse(from: &Path, to: &Path) {
    let cp = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(cp.success());
}

fn block(fill: u8) -> Vec<u8> {
    let mut b = b"# GRUB Environment Block\n".to_vec();
    b.resize(1024, fill);
    b
}

/// `fsck.fat -n` output; panics when two entries share clusters.
fn fsck_no_cross_links(img: &Path, what: &str) -> String {
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("share clusters"), "{what}:\n{text}");
    text
}

#[test]
fn a_power_cut_at_any_write_leaves_the_old_or_the_new_file() {
    let work = tempfile::tempdir().unwrap();
    for (mib, fat) in [(4, "FAT12"), (16, "FAT16"), (300, "FAT32")] {
        let base = work.path().join(format!("{fat}.img"));
        let f = std::fs::File::create(&base).unwrap();
        f.set_len(mib << 20).unwrap();
        format_esp(open_part(&base), "HUP-BOOT", 512).unwrap();
        let esp = Esp::open(open_part(&base)).unwrap();
        assert_eq!(esp.fat_type(), fat);
        esp.write_bytes("EFI/hup/other", b"a neighbour").unwrap();
        esp.replace_file(PATH, &block(b'1')).unwrap();
        esp.close().unwrap();
        let (old, new, next) = (block(b'1'), block(b'2'), block(b'3'));
        let mut k = 0;
        loop {
            let what = format!("{fat}: cut after {k} writes");
            let img = work.path().join("cut.img");
            copy_sparse(&base, &img);
            let esp = Esp::open(open_part(&img)).unwrap();
            esp.raw_io().cut_after(k);
            esp.raw_io().arm_cut();
            let done = esp.replace_file(PATH, &new).is_ok();
            let cut = esp.raw_io().cut_reached();
            drop(esp);
            let esp = Esp::open(open_part(&img)).unwrap();
            let got = esp.read_file(PATH).unwrap();
            assert!(got == old || got == new, "{what}: torn: {:?}", &got[..40]);
            if done && !cut {
                assert_eq!(got, new, "{what}");
            }
            assert_eq!(esp.read_file("EFI/hup/other").unwrap(), b"a neighbour");
            drop(esp);
            fsck_no_cross_links(&img, &what);
            let esp = Esp::open(open_part(&img)).unwrap();
            esp.replace_file(PATH, &next)
                .unwrap_or_else(|e| panic!("{what}: the next replace: {e:#}"));
            assert_eq!(esp.read_file(PATH).unwrap(), next, "{what}");
            let names: Vec<String> = esp
                .list("EFI/hup")
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            // A cut inside fatfs's own create of the temporary entry may leave a half-written
            // entry of it (fatfs's window, not this function's); never a `.new` file.
            assert!(
                names.contains(&"grubenv".to_string())
                    && names.contains(&"other".to_string())
                    && !names.iter().any(|n| n.ends_with(".new")),
                "{what}: {names:?}"
            );
            esp.close().unwrap();
            let text = fsck_no_cross_links(&img, &what);
            // At most the one chain the cut left unreferenced.
            assert!(
                !text.contains("grubenv") && !text.contains("GRUBENV"),
                "{what}:\n{text}"
            );
            if !cut {
                break;
            }
            k += 1;
        }
        assert!(k > 5, "{fat}: only {k} cut points");
    }
}

#[test]
fn a_power_cut_while_the_file_is_first_created_is_cleaned_up() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base.img");
    let f = std::fs::File::create(&base).unwrap();
    f.set_len(16 << 20).unwrap();
    format_esp(open_part(&base), "HUP-BOOT", 512).unwrap();
    // The directory is there (provisioning makes it); the file is created.
    let esp = Esp::open(open_part(&base)).unwrap();
    esp.create_dir_all("EFI/hup").unwrap();
    esp.close().unwrap();
    let (new, next) = (block(b'2'), block(b'3'));
    let mut k = 0;
    loop {
        let what = format!("cut after {k} writes");
        let img = work.path().join("cut.img");
        copy_sparse(&base, &img);
        let esp = Esp::open(open_part(&img)).unwrap();
        esp.raw_io().cut_after(k);
        esp.raw_io().arm_cut();
        let _ = esp.replace_file(PATH, &new);
        let cut = esp.raw_io().cut_reached();
        drop(esp);
        let esp = Esp::open(open_part(&img)).unwrap();
        if esp.exists(PATH).unwrap() {
            assert_eq!(esp.read_file(PATH).unwrap(), new, "{what}");
        }
        esp.replace_file(PATH, &next)
            .unwrap_or_else(|e| panic!("{what}: the next replace: {e:#}"));
        assert_eq!(esp.read_file(PATH).unwrap(), next, "{what}");
        let names: Vec<String> = esp
            .list("EFI/hup")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(
            names.contains(&"grubenv".to_string()) && !names.iter().any(|n| n.ends_with(".new")),
            "{what}: {names:?}"
        );
        esp.close().unwrap();
        fsck_no_cross_links(&img, &what);
        if !cut {
            break;
        }
        k += 1;
    }
    assert!(k > 5, "only {k} cut points");
}
