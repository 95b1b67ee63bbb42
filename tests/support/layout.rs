//! Helpers of the layout migration tests: v1 images, loop mounts of their data partition,
//! a data tree with every kind of entry, and a full listing of a tree to compare.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use hup::disk::{Disk, TYPE_ESP, TYPE_LINUX_FS, TYPE_LINUX_ROOT_X86_64};
use hup::layout::{self, Plan, Record};
use hup::model::config::Labels;
use hup::model::layout::{PartitionSpec, TargetLayout};
use hup::model::slot::Slot;

use crate::support::image::{World, range_sha};
use crate::support::{hup_ok, p, sh};

pub const MIB: u64 = 1 << 20;

/// The layout of `hup provision --boot-size 64M --slot-size SLOT`, version 2 with slots of
/// `slot` MiB.
pub fn target(slot_mib: u64) -> TargetLayout {
    let spec = |label: &str, size: Option<u64>, ty: &str| PartitionSpec {
        label: label.into(),
        size: size.map(|m| m * MIB),
        type_guid: ty.into(),
    };
    TargetLayout {
        version: 2,
        partitions: vec![
            spec("hup-boot", Some(64), TYPE_ESP),
            spec("hup-root-a", Some(slot_mib), TYPE_LINUX_ROOT_X86_64),
            spec("hup-root-b", Some(slot_mib), TYPE_LINUX_ROOT_X86_64),
            spec("hup-data", None, TYPE_LINUX_FS),
        ],
    }
}

/// Provisions a v1 image (version 1.0.0 in slot a, gpt backend, 64 MiB boot partition).
pub fn provision(w: &World, name: &str, size: &str, slot: &str) -> PathBuf {
    provision_with(w, name, size, slot, "512")
}

/// [`provision`] with a logical sector size.
pub fn provision_with(w: &World, name: &str, size: &str, slot: &str, sector: &str) -> PathBuf {
    provision_full(w, name, size, slot, sector, "gpt")
}

/// [`provision`] with a logical sector size and a boot backend.
pub fn provision_full(
    w: &World,
    name: &str,
    size: &str,
    slot: &str,
    sector: &str,
    backend: &str,
) -> PathBuf {
    let img = w.dir.join(name);
    let bundle = w.bundle("1.0.0");
    hup_ok(&[
        "provision",
        "--bundle",
        p(&bundle),
        "--key",
        p(&w.pubkey),
        "--size",
        size,
        "--slot-size",
        slot,
        "--boot-size",
        "64M",
        "--sector-size",
        sector,
        "--boot-backend",
        backend,
        p(&img),
    ]);
    img
}

/// `sgdisk -v` output for an image (through a loop device for 4096-byte sectors: sgdisk
/// assumes 512-byte sectors in files).
pub fn sgdisk_verify(img: &Path) -> String {
    if Disk::open_read_only(img).unwrap().sector_size() == 512 {
        return sh(&format!("sgdisk -v {}", p(img)));
    }
    let dev = sh(&format!("losetup -f --show -b 4096 {}", p(img)));
    let dev = dev.trim();
    let out = std::process::Command::new("sgdisk")
        .args(["-v", dev])
        .output()
        .unwrap();
    sh(&format!("losetup -d {dev}"));
    assert!(out.status.success(), "sgdisk -v {dev}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop mount of one partition of an image; unmounted and detached on drop. The loop
/// device is set up explicitly: `mount -o loop` detaches asynchronously after `umount`, and
/// refuses a new loop over the same range while the old one lingers.
pub struct Mount {
    pub dir: tempfile::TempDir,
    dev: String,
}

impl Mount {
    pub fn new(img: &Path, label: &str, read_only: bool) -> Mount {
        let part = Disk::open_read_only(img).unwrap().partition(label).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (ro, opts) = if read_only {
            ("-r", "-o ro,noload")
        } else {
            ("", "")
        };
        let dev = sh(&format!(
            "losetup -f --show {ro} -o {} --sizelimit {} {}",
            part.start,
            part.len,
            p(img)
        ))
        .trim()
        .to_string();
        let mounted = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("mount {opts} {dev} {}", p(dir.path())))
            .status()
            .unwrap();
        if !mounted.success() {
            sh(&format!("losetup -d {dev}"));
            panic!("mounting {label} of {} ({dev}) failed", img.display());
        }
        Mount { dir, dev }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Another test thread forking at this moment briefly holds copies of descriptors
        // opened below the mount point (until its exec closes them): umount may see EBUSY.
        for _ in 0..100 {
            let status = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
            if status.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

/// Fills a data tree with every kind of entry a data partition has (root needed). `random`
/// bytes of incompressible data go into `blobs/random.bin`.
pub fn fill(root: &Path, random: usize) {
    let d = |rel: &str| root.join(rel);
    for dir in [
        "docs/sub",
        "blobs",
        "tmp",
        "private",
        "deep/a/b/c/d/e/f/g",
        "many",
        "devs",
    ] {
        std::fs::create_dir_all(d(dir)).unwrap();
    }
    std::fs::write(d("docs/readme.txt"), "hello\n".repeat(1000)).unwrap();
    std::fs::write(d("docs/secret"), b"s3cret").unwrap();
    std::fs::write(d("docs/sub/empty"), b"").unwrap();
    std::fs::write(d("docs/grüße ünïcode.txt"), "non-ascii").unwrap();
    std::fs::write(d("blobs/tool"), vec![0x7f; 100_000]).unwrap();
    let mut rnd = vec![0u8; random];
    getrandom_fill(&mut rnd);
    std::fs::write(d("blobs/random.bin"), &rnd).unwrap();
    for i in 0..300 {
        std::fs::write(
            d(&format!("many/file-{i:04}")),
            format!("content {i}\n").repeat(i),
        )
        .unwrap();
    }
    let long = "L".repeat(200);
    std::fs::write(
        d(&format!("deep/a/b/c/d/e/f/g/{long}")),
        b"long name, deep path",
    )
    .unwrap();
    std::fs::hard_link(d("docs/readme.txt"), d("blobs/readme-link")).unwrap();
    std::fs::hard_link(d("docs/readme.txt"), d(&format!("deep/a/{long}"))).unwrap();
    symlink("../docs/readme.txt", d("blobs/rel-link")).unwrap();
    symlink("/etc/passwd", d("blobs/abs-link")).unwrap();
    symlink("nowhere/at/all", d("blobs/dangling")).unwrap();
    symlink("x".repeat(150), d("blobs/long-target")).unwrap();
    symlink("docs", d("docs-dir-link")).unwrap();
    let mode = |rel: &str, m: u32| {
        std::fs::set_permissions(d(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode("docs/secret", 0o600);
    mode("blobs/tool", 0o4755);
    mode("tmp", 0o1777);
    mode("private", 0o700);
    sh(&format!(
        "cd {root} && chown 1000:1000 docs/readme.txt && chown 1001:1002 docs/secret private \
         && chown -h 4242:4343 blobs/rel-link && chown 65534:65534 many \
         && mknod -m 660 devs/null c 1 3 && mknod -m 640 devs/loop9 b 7 9 && mkfifo -m 600 devs/fifo \
         && setfattr -n user.origin -v v1-device docs/readme.txt \
         && setfattr -n user.dir -v yes docs \
         && setfattr -n user.bin -v 0x00ff10 blobs/random.bin \
         && setfattr -n trusted.hup -v secret-attr docs/secret \
         && setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= blobs/tool \
         && setfattr -n system.posix_acl_access \
              -v 0x0200000001000600ffffffff02000400d204000004000400ffffffff10000400ffffffff20000400ffffffff \
              docs/sub/empty \
         && setfattr -n user.root -v top . \
         && truncate -s 40M blobs/sparse.img && printf middle | dd of=blobs/sparse.img bs=1 seek=20000000 conv=notrunc status=none \
         && touch -h -d @1700000000.123456789 docs/readme.txt blobs/abs-link devs/fifo \
         && touch -d @1600000000 docs/sub",
        root = p(root)
    ));
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

/// Stages `bundle` the way `hup stage` leaves it: `hup/staged/bundle.hup`, mode 0644.
pub fn stage(root: &Path, bundle: &Path) -> PathBuf {
    let dest = root.join("hup/staged/bundle.hup");
    std::fs::copy(bundle, &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
    dest
}

/// Every entry of a tree, one line each: path, type, mode, owner, link count, mtime with
/// nanoseconds, size and sha256 of files, hard-link group, symlink target, device number,
/// and every xattr (name and hex value).
pub fn listing(root: &Path) -> String {
    let mut out = Vec::new();
    let mut groups: HashMap<u64, String> = HashMap::new();
    walk(root, Path::new("."), &mut out, &mut groups);
    out.join("\n")
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>, groups: &mut HashMap<u64, String>) {
    let path = root.join(rel);
    let m = std::fs::symlink_metadata(&path).unwrap();
    let ft = m.file_type();
    let kind = {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            "d"
        } else if ft.is_file() {
            "f"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else if ft.is_fifo() {
            "p"
        } else {
            "s"
        }
    };
    let mut line = format!(
        "{} {kind} {:o} {}:{} n={} t={}.{:09}",
        rel.display(),
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        m.nlink(),
        m.mtime(),
        m.mtime_nsec()
    );
    match kind {
        "f" => {
            let sha = hup::bundle::verified::sha256_of(std::fs::File::open(&path).unwrap())
                .unwrap()
                .0;
            line += &format!(" size={} sha={sha}", m.len());
            if m.nlink() > 1 {
                let first = groups
                    .entry(m.ino())
                    .or_insert_with(|| rel.display().to_string());
                line += &format!(" group={first}");
            }
        }
        "l" => line += &format!(" -> {}", std::fs::read_link(&path).unwrap().display()),
        "c" | "b" => line += &format!(" rdev={:x}", m.rdev()),
        _ => {}
    }
    let mut names: Vec<_> = xattr::list(&path).unwrap().collect();
    names.sort();
    for n in names {
        let v = xattr::get(&path, &n).unwrap().unwrap_or_default();
        line += &format!(" {}={}", n.to_string_lossy(), hex::encode(v));
    }
    out.push(line);
    if kind == "d" {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), out, groups);
        }
    }
}

/// The listing of the data partition of an image (mounted read-only).
pub fn data_listing(img: &Path) -> String {
    let m = Mount::new(img, "hup-data", true);
    listing(m.path())
}

/// Everything about the image the tests compare after a migration.
pub struct Before {
    pub listing: String,
    /// (start, sha256 of the first `len` bytes) of the slot that must not change.
    pub slot: (u64, u64, String),
    pub fs_uuid: String,
}

pub fn before(img: &Path, slot_label: &str) -> Before {
    let d = Disk::open_read_only(img).unwrap();
    let s = d.partition(slot_label).unwrap();
    Before {
        listing: data_listing(img),
        slot: (s.start, s.len, range_sha(img, (s.start, s.len))),
        fs_uuid: fs_uuid(img),
    }
}

/// The UUID of the ext4 filesystem on the data partition (blkid).
pub fn fs_uuid(img: &Path) -> String {
    let part = Disk::open_read_only(img)
        .unwrap()
        .partition("hup-data")
        .unwrap();
    sh(&format!(
        "blkid -p -O {} -s UUID -o value {}",
        part.start,
        p(img)
    ))
    .trim()
    .to_string()
}

/// Checks the image after a completed migration to `target`.
pub fn check_after(img: &Path, b: &Before, t: &TargetLayout) {
    let out = sgdisk_verify(img);
    assert!(
        out.contains("No problems found") && !out.contains("Warning"),
        "{out}"
    );
    let d = Disk::open_read_only(img).unwrap();
    let labels: Vec<String> = d.partitions().iter().map(|p| p.label.clone()).collect();
    let want: Vec<String> = t.partitions.iter().map(|p| p.label.clone()).collect();
    assert_eq!(labels, want);
    for (part, spec) in d.partitions().iter().zip(&t.partitions) {
        if let Some(size) = spec.size {
            assert_eq!(part.len, size, "{}", part.label);
        }
    }
    let (start, len, sha) = &b.slot;
    assert_eq!(
        &range_sha(img, (*start, *len)),
        sha,
        "the system in the kept slot changed"
    );
    let data = d.partition("hup-data").unwrap();
    sh(&format!(
        "dd if={} of={}.data.img bs=1M skip={} count={} status=none && e2fsck -fn {}.data.img >/dev/null && rm {}.data.img",
        p(img),
        p(img),
        data.start / MIB,
        data.len / MIB,
        p(img),
        p(img)
    ));
    assert_eq!(fs_uuid(img), b.fs_uuid, "the data filesystem lost its UUID");
    let after = data_listing(img);
    if after != b.listing {
        let diff: Vec<_> = after
            .lines()
            .zip(b.listing.lines())
            .filter(|(x, y)| x != y)
            .take(5)
            .collect();
        panic!("the data differs after the migration: {diff:#?}");
    }
}

/// backup (data partition mounted read-only, bundle staged in it) -> table -> restore.
pub fn migrate(img: &Path, plan: &Plan) -> Record {
    let mut rec = backup(img, plan);
    let mut disk = Disk::open(img).unwrap();
    layout::write_table(&mut disk, &mut rec).unwrap();
    assert!(layout::restore(&mut disk, &mut rec).unwrap().is_some());
    rec
}

pub fn backup(img: &Path, plan: &Plan) -> Record {
    let m = Mount::new(img, "hup-data", true);
    let disk = Disk::open(img).unwrap();
    let bundle = m.path().join("hup/staged/bundle.hup");
    layout::backup(&disk, plan, m.path(), Some(&bundle)).unwrap()
}

pub fn plan(img: &Path, t: &TargetLayout, active: Slot) -> Plan {
    let disk = Disk::open_read_only(img).unwrap();
    layout::plan(&disk, t, &Labels::default(), active)
        .unwrap()
        .expect("a migration")
}
