//! Differential test: the same tree through `mke2fs -t ext4 -d TREE` and through
//! `hup mkfs --from TREE.tar.zst` (tar written by GNU tar --xattrs --sparse) must read back
//! identically with debugfs, and both images must pass `e2fsck -fn` silently.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt, chown, symlink};
use std::path::Path;
use std::process::Command;

use crate::support::ext4::*;

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn mknod(path: &Path, kind: nix::sys::stat::SFlag, major: u64, minor: u64) {
    nix::sys::stat::mknod(
        path,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
}

/// Every entry type and the edge cases of the issue.
fn make_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let d = |p: &str, mode: u32| {
        let path = root.join(p);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    // 10 000 files in one directory (every 7th with content, the rest empty)
    let many = d("many", 0o755);
    for i in 0..10_000 {
        let data = if i % 7 == 0 {
            format!("file {i}\n").repeat(i % 50 + 1)
        } else {
            String::new()
        };
        fs::write(many.join(format!("entry-{i:05}")), data).unwrap();
    }
    // long and non-ASCII names
    let names = d("names", 0o755);
    write(&names.join("a".repeat(255)), b"255 bytes of name\n", 0o644);
    write(
        &names.join("é".repeat(127) + "x"),
        b"255 bytes, 2-byte chars\n",
        0o644,
    );
    write(&names.join("ünïcødé-日本語-🙂"), b"utf-8\n", 0o600);
    write(&names.join("empty"), b"", 0o644);
    // deep nesting
    let mut deep = d("deep", 0o755);
    for i in 0..40 {
        deep = deep.join(format!("level{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    write(&deep.join("leaf"), b"at the bottom\n", 0o644);
    // sparse: 1 GiB apparent size, a few data regions
    let sparse = root.join("sparse.img");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(1 << 30).unwrap();
    for (off, seed) in [
        (0u64, 1u64),
        (100 << 20, 2),
        ((700 << 20) + 123, 3),
        ((1 << 30) - 5000, 4),
    ] {
        f.write_all_at(&pseudo_random(5000, seed), off).unwrap();
    }
    drop(f);
    // binaries: setuid, capabilities, hard links, odd sizes
    let bin = d("usr/bin", 0o755);
    write(&bin.join("su"), &pseudo_random(50_000, 5), 0o4755);
    write(&bin.join("wall"), &pseudo_random(7_000, 6), 0o2755);
    write(&bin.join("ping"), &pseudo_random(30_000, 7), 0o755);
    xattr::set(
        bin.join("ping"),
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    xattr::set(bin.join("ping"), "user.comment", b"net_raw").unwrap();
    write(&bin.join("busybox"), &pseudo_random(5 << 20, 8), 0o755);
    for l in ["sh", "ls", "cat"] {
        fs::hard_link(bin.join("busybox"), bin.join(l)).unwrap();
    }
    for (i, n) in [1usize, 4095, 4096, 4097, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        write(
            &bin.join(format!("size-{n}")),
            &pseudo_random(n, 10 + i as u64),
            0o644,
        );
    }
    // symlinks: fast, at the 59/60 byte boundary, slow, dangling, to a directory
    let etc = d("etc", 0o755);
    symlink("/usr/share/zoneinfo/UTC", etc.join("localtime")).unwrap();
    symlink("b".repeat(59), etc.join("link59")).unwrap();
    symlink("c".repeat(60), etc.join("link60")).unwrap();
    symlink(format!("/{}", "long/".repeat(40)), etc.join("slowlink")).unwrap();
    symlink("../nowhere", etc.join("dangling")).unwrap();
    symlink("../usr/bin", root.join("bin")).unwrap();
    write(&etc.join("hostname"), b"device\n", 0o644);
    // devices and fifos
    let dev = d("dev", 0o755);
    mknod(&dev.join("null"), nix::sys::stat::SFlag::S_IFCHR, 1, 3);
    mknod(&dev.join("sda"), nix::sys::stat::SFlag::S_IFBLK, 8, 0);
    mknod(
        &dev.join("bignum"),
        nix::sys::stat::SFlag::S_IFCHR,
        300,
        70_000,
    );
    nix::unistd::mkfifo(
        &dev.join("initctl"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // special directory modes and owners
    d("tmp", 0o1777);
    let shared = d("srv/shared", 0o2775);
    chown(&shared, Some(1000), Some(1000)).unwrap();
    let home = d("home/user", 0o700);
    write(&home.join(".profile"), b"export PS1='$ '\n", 0o644);
    chown(home.join(".profile"), Some(1000), Some(1000)).unwrap();
    chown(&home, Some(1000), Some(1000)).unwrap();
    write(&root.join("srv/big-ids"), b"ids above 65535\n", 0o640);
    chown(root.join("srv/big-ids"), Some(70_000), Some(70_001)).unwrap();
    std::os::unix::fs::lchown(etc.join("localtime"), Some(5), Some(6)).unwrap();
}

#[test]
fn same_tree_as_mke2fs() {
    let tmp = tmpdir();
    let tree = tmp.path().join("tree");
    make_tree(&tree);

    let tar = tmp.path().join("tree.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--sparse", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg("."));
    let zst = tmp.path().join("tree.tar.zst");
    fs::write(
        &zst,
        zstd::encode_all(fs::File::open(&tar).unwrap(), 3).unwrap(),
    )
    .unwrap();

    let reference = tmp.path().join("mke2fs.img");
    fs::File::create(&reference)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&reference));

    let img = tmp.path().join("hup.img");
    // as large as the 1 GiB sparse file (a file is never larger than its filesystem)
    let out = mkfs(&zst, "1G", &img, &["--label", "rootfs"]);
    assert!(
        out.status.success(),
        "hup mkfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("10018 files"), "summary: {summary}");
    assert!(
        summary.contains("3 hard links, 3 devices, 1 fifos, 2 xattrs"),
        "summary: {summary}"
    );

    assert_fsck_clean(&reference);
    assert_fsck_clean(&img);

    let theirs = readback(&reference);
    let ours = readback(&img);
    assert!(ours.len() > 10_000, "only {} paths read back", ours.len());
    assert_same_tree(&theirs, &ours, |path, a, b| {
        if path == "/" || path == "/lost+found" {
            // mke2fs -d leaves these with the time of creation
            a.mtime.clear();
            b.mtime.clear();
        }
    });

    // large directories are indexed, holes are not allocated
    let many = &ours["/many"];
    let flags = u32::from_str_radix(many.flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_ne!(
        flags & 0x1000,
        0,
        "/many has no htree index: flags {}",
        many.flags
    );
    assert!(
        ours["/sparse.img"].blockcount <= 8 * 8,
        "sparse file uses {} sectors",
        ours["/sparse.img"].blockcount
    );
    let htree = run(Command::new("debugfs")
        .arg("-R")
        .arg("htree_dump /many")
        .arg(&img));
    assert!(String::from_utf8_lossy(&htree.stdout).contains("Number of entries (count):"));
}
