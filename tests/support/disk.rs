//! Helpers shared by the disk_* and boot_* integration tests: images, real tools, loop devices.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hup::disk::{self, Disk};

pub const MIB: u64 = 1 << 20;

/// A fresh hup image: boot 40 MiB, roots 16 MiB each, data the rest of 96 MiB.
pub fn hup_image(dir: &Path, ss: u64) -> PathBuf {
    let path = dir.join(format!("disk-{ss}.img"));
    let specs = disk::hup_layout(40 * MIB, 16 * MIB, None);
    disk::create_layout(&path, ss, 96 * MIB, &specs).expect("create_layout");
    path
}

/// A hup image with a formatted ESP.
/// Byte offset of the boot partition (the ESP) in `img`, for mtools' `-i IMG@@OFFSET`.
pub fn esp_offset(img: &Path) -> u64 {
    Disk::open(img)
        .unwrap()
        .partition("hup-boot")
        .unwrap()
        .start
}

pub fn hup_image_with_esp(dir: &Path, ss: u64) -> PathBuf {
    let path = hup_image(dir, ss);
    let d = Disk::open(&path).unwrap();
    disk::format_esp(d.open_partition("hup-boot").unwrap(), "HUP-BOOT", ss).unwrap();
    path
}

/// Runs a command, returns (success, stdout + stderr).
pub fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs a command that must succeed; returns its output.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let (good, text) = run(cmd, args);
    assert!(good, "{cmd} {args:?} failed:\n{text}");
    text
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `sgdisk -v` finds no problem.
pub fn assert_sgdisk_clean(dev: &Path) {
    let out = ok("sgdisk", &["-v", p(dev)]);
    assert!(
        out.contains("No problems found") && !out.contains("Caution") && !out.contains("Warning"),
        "sgdisk -v {}:\n{out}",
        dev.display()
    );
}

/// `sgdisk -p` output.
pub fn sgdisk_print(dev: &Path) -> String {
    ok("sgdisk", &["-p", p(dev)])
}

/// Attribute flags of partition `number` as printed by `sgdisk -i` (16 hex digits).
pub fn sgdisk_attrs(dev: &Path, number: u32) -> String {
    let out = ok("sgdisk", &["-i", &number.to_string(), p(dev)]);
    out.lines()
        .find_map(|l| l.strip_prefix("Attribute flags: "))
        .unwrap_or_else(|| panic!("no attribute flags in:\n{out}"))
        .trim()
        .to_string()
}

/// Overwrites `len` bytes at `offset` with a pattern (simulated corruption or torn write).
pub fn scribble(path: &Path, offset: u64, len: usize) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0x5a; len], offset).unwrap();
    f.sync_all().unwrap();
}

/// Copies `len` bytes at `offset` from `src` to `dst`.
pub fn copy_range(src: &Path, dst: &Path, offset: u64, len: usize) {
    let mut buf = vec![0; len];
    std::fs::File::open(src)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    let f = OpenOptions::new().write(true).open(dst).unwrap();
    f.write_all_at(&buf, offset).unwrap();
}

/// `mdir -/ -b` of the ESP inside an image: one path per line (`::/hup/a/vmlinuz`).
pub fn mdir_tree(img: &Path, esp_offset: u64) -> Vec<String> {
    let spec = format!("{}@@{esp_offset}", p(img));
    ok("mdir", &["-/", "-b", "-i", &spec, "::"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `mtype` of one file on the ESP inside an image.
pub fn mtype(img: &Path, esp_offset: u64, path: &str) -> String {
    let spec = format!("{}@@{esp_offset}", p(img));
    ok("mtype", &["-i", &spec, &format!("::{path}")])
}

/// Copies one file out of the ESP with mcopy.
pub fn mcopy_out(img: &Path, esp_offset: u64, path: &str, dest: &Path) -> Vec<u8> {
    let spec = format!("{}@@{esp_offset}", p(img));
    ok("mcopy", &["-n", "-i", &spec, &format!("::{path}"), p(dest)]);
    std::fs::read(dest).unwrap()
}

/// `fsck.fat -n` on the ESP copied out of the image.
pub fn assert_fsck_fat_clean(img: &Path, dir: &Path) {
    let d = Disk::open_read_only(img).unwrap();
    let part = d.partition("hup-boot").unwrap();
    let out = dir.join("esp-copy.img");
    let mut buf = vec![0; part.len as usize];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut buf, part.start)
        .unwrap();
    std::fs::write(&out, &buf).unwrap();
    let text = ok("fsck.fat", &["-n", p(&out)]);
    assert!(!text.contains("Dirty bit is set"), "{text}");
    std::fs::remove_file(&out).unwrap();
}

/// A loop device over an image with a given logical sector size; detached on drop.
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    pub fn attach(img: &Path, ss: u64) -> Loop {
        let out = ok("losetup", &["-f", "--show", "-b", &ss.to_string(), p(img)]);
        Loop {
            dev: PathBuf::from(out.trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Where `sgdisk` can read an image with sector size `ss`: the file for 512, a loop device
/// for 4096 (sgdisk assumes 512-byte sectors in files). Keep the returned guard alive.
pub fn sgdisk_view(img: &Path, ss: u64) -> (PathBuf, Option<Loop>) {
    if ss == 512 {
        (img.to_path_buf(), None)
    } else {
        let l = Loop::attach(img, ss);
        (l.dev.clone(), Some(l))
    }
}
