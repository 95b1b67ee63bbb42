//! Delta bundles (docs/delta.md): `hup pack --delta-from`, and the apply of a delta that
//! writes the same slot a full apply of the same version writes (full listing with
//! contents, metadata and xattrs; e2fsck clean).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::bundle::{BundleBuilder, COMPATIBLE};
use crate::support::device::noise;
use crate::support::ext4::{assert_same_tree, readback};
use crate::support::image::*;
use crate::support::*;

/// A world with base tree 1.0.0 and new tree 2.0.0 covering every kind of change.
pub struct DeltaWorld {
    pub w: World,
    pub base: PathBuf,
    pub full: PathBuf,
    pub delta: PathBuf,
    pub pack_out: String,
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let f = root.join(rel);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, data).unwrap();
}

/// 5 MiB: more than two patch pieces.
const BIG: usize = 5 << 20;

fn base_tree(root: &Path) {
    make_rootfs(root, "1.0.0");
    write(root, "usr/lib/changed.bin", &noise(300_000, 1));
    write(root, "usr/share/doc/renamed-1.0.txt", &noise(50_000, 2));
    write(
        root,
        "usr/lib/modules/6.1.0-18/kernel/mod.ko",
        &noise(120_000, 3),
    );
    write(root, "etc/removed.conf", b"gone in 2.0\n");
    write(root, "usr/lib/big.bin", &noise(BIG, 4));
    write(root, "usr/lib/same.bin", &noise(40_000, 5));
    sh(&format!(
        "mkdir -p $(dirname {f}) && truncate -s 8M {f} && printf 'sparse 1' | dd of={f} bs=1 seek=4194304 conv=notrunc status=none",
        f = p(&root.join("var/sparse.img"))
    ));
    finish(root);
}

fn edit(mut v: Vec<u8>, at: &[usize]) -> Vec<u8> {
    for &i in at {
        v[i..i + 8].copy_from_slice(b"CHANGED!");
    }
    v
}

fn new_tree(root: &Path) {
    make_rootfs(root, "2.0.0");
    // changed in place (patched), with a new hard link to it
    write(
        root,
        "usr/lib/changed.bin",
        &edit(noise(300_000, 1), &[10, 150_000]),
    );
    std::fs::hard_link(
        root.join("usr/lib/changed.bin"),
        root.join("usr/lib/changed-link.bin"),
    )
    .unwrap();
    // renamed, same content (copied from the old name)
    write(root, "usr/share/doc/renamed-2.0.txt", &noise(50_000, 2));
    // a new kernel's module: renamed and changed (patched from the old name)
    write(
        root,
        "usr/lib/modules/6.1.0-21/kernel/mod.ko",
        &edit(noise(120_000, 3), &[500]),
    );
    // new
    write(root, "usr/bin/new-tool", &noise(30_000, 6));
    // larger than one patch piece, changed in each piece
    write(
        root,
        "usr/lib/big.bin",
        &edit(noise(BIG, 4), &[100, (2 << 20) + 5, (4 << 20) + 7]),
    );
    write(root, "usr/lib/same.bin", &noise(40_000, 5));
    // a symlink retargeted, a sparse file changed
    std::fs::remove_file(root.join("bin/rel-link")).unwrap();
    std::os::unix::fs::symlink("../usr/lib/same.bin", root.join("bin/rel-link")).unwrap();
    sh(&format!(
        "mkdir -p $(dirname {f}) && truncate -s 8M {f} && printf 'sparse 2' | dd of={f} bs=1 seek=4194304 conv=notrunc status=none",
        f = p(&root.join("var/sparse.img"))
    ));
    // the capability-carrying tool changed (patched; its xattrs kept)
    let tool = root.join("bin/tool");
    let mut t = std::fs::read(&tool).unwrap();
    t[100..108].copy_from_slice(b"CHANGED!");
    std::fs::write(&tool, t).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    sh(&format!(
        "setfattr -n user.new -v 2 {}",
        p(&root.join("usr/lib/same.bin"))
    ));
    finish(root);
}

fn finish(root: &Path) {
    sh(&format!(
        "find {} -exec touch -h -d @1700000000 {{}} +",
        p(root)
    ));
}

impl DeltaWorld {
    pub fn new() -> DeltaWorld {
        let w = World::new();
        base_tree(&w.dir.join("rootfs-1.0.0"));
        new_tree(&w.dir.join("rootfs-2.0.0"));
        let base = w.bundle("1.0.0");
        let full = w.bundle("2.0.0");
        let delta = w.dir.join("delta-2.0.0.hup");
        let out = BundleBuilder::new(&w.dir.join("rootfs-2.0.0"), "2.0.0", &w.key)
            .boot(&w.dir.join("boot-2.0.0"))
            .compatible(COMPATIBLE)
            .level(1)
            .args(["--delta-from", p(&base)])
            .command(&delta)
            .run();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        DeltaWorld {
            w,
            base,
            full,
            delta,
            pack_out: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    }

    /// `hup apply` of `bundle` on `img`: success and stderr.
    pub fn apply(&self, img: &Path, bundle: &Path) -> (bool, String) {
        let o = crate::support::runner::Hup::with(self.w.apply_args(img, bundle)).run();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

/// Slot b of `img` read back whole (and e2fsck -fn clean).
pub fn slot_b(img: &Path) -> std::collections::BTreeMap<String, crate::support::ext4::Node> {
    let part = img.with_extension("b.img");
    extract(img, "hup-root-b", &part);
    crate::support::ext4::assert_fsck_clean(&part);
    let r = readback(&part);
    std::fs::remove_file(&part).unwrap();
    r
}

/// `/lost+found` is made by the format, at the time it ran: not from the bundle.
pub fn same_but_format_time(
    path: &str,
    a: &mut crate::support::ext4::Node,
    b: &mut crate::support::ext4::Node,
) {
    if path == "/lost+found" {
        a.mtime.clear();
        b.mtime.clear();
    }
}

#[test]
fn a_delta_apply_writes_what_a_full_apply_writes() {
    let d = DeltaWorld::new();
    assert!(d.pack_out.contains("delta bundle:"), "{}", d.pack_out);
    let full_len = std::fs::metadata(&d.full).unwrap().len();
    let delta_len = std::fs::metadata(&d.delta).unwrap().len();
    assert!(
        delta_len * 3 < full_len,
        "delta {delta_len}, full {full_len}"
    );

    // inspect: the base and the counts of each kind of entry
    let out = hup_ok(&["inspect", p(&d.delta)]);
    assert!(out.contains("delta:         from base 1.0.0"), "{out}");
    let m: serde_json::Value =
        serde_json::from_str(&hup_ok(&["inspect", "--json", p(&d.delta)])).unwrap();
    let delta = &m["manifest"]["delta"];
    // copied: same.bin, renamed-2.0.txt, data.bin, the long name, os-release-less files...
    assert!(delta["copy"]["files"].as_u64().unwrap() >= 3, "{delta}");
    // patched: changed.bin (whose data the tar carries under its new first name,
    // changed-link.bin: found through the hard link), mod.ko (renamed), big.bin, bin/tool,
    // the sparse file (a directory's sparse file is packed with its holes as data) and
    // etc/os-release (its version line changed); new: only new-tool
    assert_eq!(delta["patch"]["files"], 6, "{delta}");
    assert_eq!(delta["new"]["files"], 1, "{delta}");

    let full_img = d.w.provision("full.img", "1.0.0", "gpt", &[]);
    let (ok, err) = d.apply(&full_img, &d.full);
    assert!(ok, "{err}");
    let delta_img = d.w.provision("delta.img", "1.0.0", "gpt", &[]);
    let a = part(&delta_img, "hup-root-a");
    let a_before = range_sha(&delta_img, a);
    let (ok, err) = d.apply(&delta_img, &d.delta);
    assert!(ok, "{err}");
    assert_eq!(range_sha(&delta_img, a), a_before, "the base slot changed");
    let (want, got) = (slot_b(&full_img), slot_b(&delta_img));
    assert!(want.contains_key("/usr/lib/modules/6.1.0-21/kernel/mod.ko"));
    assert!(!want.contains_key("/etc/removed.conf"));
    assert_same_tree(&want, &got, same_but_format_time);
    assert_eq!(
        ext4_listing(&full_img, "hup-root-b"),
        ext4_listing(&delta_img, "hup-root-b")
    );
}

#[test]
fn packing_a_delta_is_deterministic_and_never_larger_than_the_full_bundle() {
    let d = DeltaWorld::new();
    let again = d.w.dir.join("again.hup");
    BundleBuilder::new(&d.w.dir.join("rootfs-2.0.0"), "2.0.0", &d.w.key)
        .boot(&d.w.dir.join("boot-2.0.0"))
        .level(1)
        .args(["--delta-from", p(&d.base)])
        .pack(&again);
    assert_eq!(file_sha(&again), file_sha(&d.delta));

    // A new tree with nothing in common with the base: the full bundle is written.
    let other = d.w.dir.join("rootfs-other");
    write(&other, "usr/lib/x.bin", &noise(200_000, 99));
    let out_path = d.w.dir.join("other.hup");
    let o = BundleBuilder::new(&other, "3.0.0", &d.w.key)
        .level(1)
        .args(["--delta-from", p(&d.base)])
        .command(&out_path)
        .run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("wrote the full bundle"), "{stdout}");
    let m: serde_json::Value =
        serde_json::from_str(&hup_ok(&["inspect", "--json", p(&out_path)])).unwrap();
    assert!(m["manifest"].get("delta").is_none(), "{m}");
}
