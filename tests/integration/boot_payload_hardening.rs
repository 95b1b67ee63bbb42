//! The boot payload on FAT: names FAT would forbid, alter or take as one, and too many files,
//! are refused before any write (the boot partition and the whole image stay byte-identical);
//! the allowed maximum of files is written in one pass and leaves a clean FAT.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::support::bundle::BundleBuilder;
use crate::support::image::*;
use crate::support::*;
use hup::bundle::sign::SecretKey;
use hup::bundle::writer::{Member, write_bundle};
use hup::model::manifest::{Manifest, PayloadKind};
use sha2::{Digest, Sha256};

/// A boot tar: each file under a PAX `path` (any bytes, NUL included).
fn boot_tar(files: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let pax = hup::archive::pax::encode(&[("path".to_string(), name.clone())]);
        let mut x = tar::Header::new_ustar();
        x.set_path("PaxHeader").unwrap();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(pax.len() as u64);
        x.set_cksum();
        b.append(&x, &pax[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("placeholder").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn files(names: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    names
        .iter()
        .map(|n| (n.to_vec(), [b"content of ", *n].concat()))
        .collect()
}

/// `w`'s bundle 2.0.0 with its boot payload replaced by `tar` (re-signed with `w`'s key).
fn rebundle(w: &World, tar: &[u8], out: &Path) -> PathBuf {
    let base = w.bundle("2.0.0");
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&base).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        members.push((name, data));
    }
    let mut m = Manifest::from_json(&members[0].1).unwrap();
    let boot = zstd::encode_all(tar, 1).unwrap();
    let p = m
        .payloads
        .iter_mut()
        .find(|p| p.kind == PayloadKind::Boot)
        .unwrap();
    p.size = boot.len() as u64;
    p.sha256 = hex::encode(Sha256::digest(&boot));
    p.unpacked_size = tar.len() as u64;
    let boot_name = p.name.clone();
    for (n, d) in members.iter_mut() {
        if *n == boot_name {
            *d = boot.clone();
        }
    }
    let json = m.to_json();
    let sig = SecretKey::load(&w.key)
        .unwrap()
        .sign(&json, "hup bundle qemu-x86_64 2.0.0");
    members[0].1 = json;
    members[1].1 = sig.into_bytes();
    write_bundle(
        out,
        members
            .iter()
            .map(|(n, d)| Member {
                name: n,
                size: d.len() as u64,
                data: Box::new(&d[..]),
            })
            .collect(),
    )
    .unwrap();
    out.to_path_buf()
}

/// `n` names fatfs gives short names of one pattern (`ZZ1A2B~N.DTB`): same first six
/// characters, same extension, same 16-bit checksum of the long name.
fn same_short_name_class(n: usize) -> Vec<String> {
    let sum = |name: &str| {
        name.chars().fold(0u16, |s, c| {
            (s >> 1).wrapping_add(s << 15).wrapping_add(c as u16)
        })
    };
    let target = sum("zzzzzz-aaaa.dtb");
    let alnum: Vec<char> = ('a'..='z').chain('0'..='9').collect();
    let mut out = Vec::new();
    for a in &alnum {
        for b in &alnum {
            for c in &alnum {
                for d in &alnum {
                    let name = format!("zzzzzz-{a}{b}{c}{d}.dtb");
                    if sum(&name) == target {
                        out.push(name);
                        if out.len() == n {
                            return out;
                        }
                    }
                }
            }
        }
    }
    panic!("only {} names", out.len());
}

/// A refused apply: its last stderr line is the one-line error (info lines come before it).
fn apply_err(w: &World, img: &Path, bundle: &Path) -> String {
    let o = hup(&w.apply_args(img, bundle));
    assert!(
        !o.status.success(),
        "apply of {} succeeded",
        bundle.display()
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("hup: error: "), "{err}");
    last
}

#[test]
fn bad_boot_names_are_refused_before_any_write() {
    let w = World::new();
    let img = w.provision("sd.img", "1.0.0", "systemd-boot", &[]);
    let esp_before = range_sha(&img, part(&img, "hup-boot"));
    let img_before = file_sha(&img);
    let many: Vec<Vec<u8>> = (0..1025).map(|i| format!("f{i:04}").into_bytes()).collect();
    let many: Vec<&[u8]> = many.iter().map(|n| &n[..]).collect();
    let alike = same_short_name_class(300);
    let alike: Vec<&[u8]> = alike.iter().map(|n| n.as_bytes()).collect();
    let cases: Vec<(&str, Vec<&[u8]>, &str)> = vec![
        (
            "names equal but for case",
            vec![b"vmlinuz", b"initrd", b"VMLINUZ"],
            "\"vmlinuz\" and \"VMLINUZ\" are the same name on FAT",
        ),
        (
            "trailing space",
            vec![b"vmlinuz", b"initrd "],
            "ends with a dot or space",
        ),
        (
            "trailing dot",
            vec![b"vmlinuz", b"initrd."],
            "ends with a dot or space",
        ),
        ("dot", vec![b"vmlinuz", b"."], "\".\" is not allowed"),
        ("dot dot", vec![b"vmlinuz", b".."], "\"..\" is not allowed"),
        (
            "NUL in a name",
            vec![b"vmlinuz", b"init\0rd"],
            "NUL or another control character",
        ),
        (
            "slash in a name",
            vec![b"vmlinuz", b"sub/initrd"],
            "only plain files",
        ),
        ("colon", vec![b"vmlinuz", b"a:b"], "FAT does not allow"),
        (
            "backslash",
            vec![b"vmlinuz", b"a\\b"],
            "boot payloads are flat",
        ),
        (
            "short-name form",
            vec![b"vmlinuz", b"VMLINU~1"],
            "FAT short name",
        ),
        ("not UTF-8", vec![b"vmlinuz", b"\xff\xfe"], "not UTF-8"),
        (
            "same name twice",
            vec![b"vmlinuz", b"vmlinuz"],
            "appears twice",
        ),
        ("too many files", many, "more than 1024 files"),
        (
            "names whose short names collide",
            alike,
            "same FAT short name pattern",
        ),
    ];
    for (what, names, expect) in cases {
        let bundle = rebundle(&w, &boot_tar(&files(&names)), &w.dir.join("bad.hup"));
        let err = apply_err(&w, &img, &bundle);
        assert!(err.contains(expect), "{what}: {err} lacks {expect}");
        assert_eq!(
            range_sha(&img, part(&img, "hup-boot")),
            esp_before,
            "{what}: the boot partition changed"
        );
        assert_eq!(file_sha(&img), img_before, "{what}: the image changed");
    }
    // The same harness with good names applies: the refusals above are about the names.
    let names: Vec<&[u8]> = vec![b"vmlinuz", b"initrd", b"cmdline", b"Stra\xc3\x9fe.dtb"];
    let bundle = rebundle(&w, &boot_tar(&files(&names)), &w.dir.join("good.hup"));
    hup_ok(&w.apply_args(&img, &bundle));
    let (start, _) = part(&img, "hup-boot");
    let listing = sh(&format!("mdir -i {}@@{start} -b ::/hup/b", p(&img)));
    assert!(listing.contains("Straße.dtb"), "{listing}");
}

/// The boot sector's "volume dirty" bit (FAT16: byte 0x25, FAT32: byte 0x41).
fn fat_dirty(img: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let (start, _) = part(img, "hup-boot");
    let f = std::fs::File::open(img).unwrap();
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, start).unwrap();
    let fat32 = u16::from_le_bytes([bs[22], bs[23]]) == 0;
    bs[if fat32 { 0x41 } else { 0x25 }] & 1 != 0
}

#[test]
fn the_maximum_of_boot_files_is_written_in_one_pass() {
    let w = World::new();
    let img = w.provision("max.img", "1.0.0", "systemd-boot", &[]);
    // Long names with shared prefixes: every one needs a generated FAT short name.
    let mut names: Vec<Vec<u8>> =
        vec![b"vmlinuz".to_vec(), b"initrd".to_vec(), b"cmdline".to_vec()];
    names.extend((0..1021).map(|i| format!("overlay-{i:04}.dtbo").into_bytes()));
    let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
    let mut payload = files(&names);
    payload[2].1 = b"console=ttyS0".to_vec();
    let bundle = rebundle(&w, &boot_tar(&payload), &w.dir.join("max.hup"));
    let t = Instant::now();
    hup_ok(&w.apply_args(&img, &bundle));
    // A measurement for the record, not an assertion (debug build, shared machine).
    eprintln!("apply with {} boot files: {:?}", names.len(), t.elapsed());
    assert!(!fat_dirty(&img), "the FAT dirty bit is left set");
    let work = tempfile::tempdir().unwrap();
    let esp = work.path().join("esp.img");
    extract(&img, "hup-boot", &esp);
    sh(&format!("fsck.fat -n {} >/dev/null", p(&esp)));
    let listing = sh(&format!("mdir -i {} -b ::/hup/b", p(&esp)));
    assert_eq!(listing.lines().count(), 1024, "{listing}");
    for n in ["overlay-0000.dtbo", "overlay-1020.dtbo", "vmlinuz"] {
        let got = sh(&format!("mtype -i {} ::/hup/b/{n}", p(&esp)));
        assert_eq!(got, format!("content of {n}"));
    }
}

#[test]
fn pack_refuses_boot_trees_fat_cannot_hold() {
    let w = World::new();
    let root = w.dir.join("rootfs");
    make_rootfs(&root, "2.0.0");
    let out = w.dir.join("out.hup");
    let pack = |boot: &Path| {
        BundleBuilder::new(&root, "2.0.0", &w.key)
            .boot(boot)
            .command(&out)
            .err_line()
    };
    let case = w.dir.join("case");
    std::fs::create_dir(&case).unwrap();
    std::fs::write(case.join("vmlinuz"), "a").unwrap();
    std::fs::write(case.join("VMLINUZ"), "b").unwrap();
    let err = pack(&case);
    assert!(err.contains("same name on FAT"), "{err}");
    let sub = w.dir.join("sub");
    std::fs::create_dir_all(sub.join("overlays")).unwrap();
    let err = pack(&sub);
    assert!(err.contains("only plain files at the top level"), "{err}");
    let many = w.dir.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..1025 {
        std::fs::write(many.join(format!("f{i}")), "").unwrap();
    }
    let err = pack(&many);
    assert!(err.contains("more than 1024 files"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_failed_boot_files_step_leaves_the_fat_clean() {
    let w = World::new();
    let img = w.provision("fail.img", "1.0.0", "systemd-boot", &[]);
    let (start, _) = part(&img, "hup-boot");
    let at = format!("{}@@{start}", p(&img));
    // A file the step removes (a write), then a subdirectory it refuses.
    sh(&format!(
        "mmd -i {at} ::/hup/b && echo x > {dir}/a-file && mcopy -i {at} {dir}/a-file ::/hup/b/a-file && mmd -i {at} ::/hup/b/sub",
        dir = p(&w.dir)
    ));
    let names: Vec<&[u8]> = vec![b"vmlinuz", b"initrd"];
    let bundle = rebundle(&w, &boot_tar(&files(&names)), &w.dir.join("b.hup"));
    let err = apply_err(&w, &img, &bundle);
    assert!(err.contains("boot payloads are flat"), "{err}");
    let listing = sh(&format!("mdir -i {at} -b ::/hup/b"));
    assert!(
        !listing.contains("a-file"),
        "the step did not start writing: {listing}"
    );
    assert!(
        !fat_dirty(&img),
        "a failed write left the FAT dirty bit set"
    );
    let esp = w.dir.join("esp.img");
    extract(&img, "hup-boot", &esp);
    sh(&format!("fsck.fat -n {} >/dev/null", p(&esp)));
}
