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

/// Small files in both trees.
const MANY: usize = 80;

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
    for i in 0..MANY {
        write(
            root,
            &format!("usr/share/many/f{i:03}"),
            &noise(2000, 100 + i as u64),
        );
    }
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
    // more members than the populate-middle failpoint's 64, a quarter of them changed
    for i in 0..MANY {
        let data = noise(2000, 100 + i as u64);
        let data = if i % 4 == 0 {
            edit(data, &[1000])
        } else {
            data
        };
        write(root, &format!("usr/share/many/f{i:03}"), &data);
    }
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
    // copied: same.bin, renamed-2.0.txt (from its old name), data.bin, the long name, three
    // quarters of the many small files
    assert!(
        delta["copy"]["files"].as_u64().unwrap() >= 3 + 60,
        "{delta}"
    );
    // patched: changed.bin (whose data the tar carries under its new first name,
    // changed-link.bin: found through the hard link), mod.ko (renamed), big.bin, bin/tool,
    // the sparse file (a directory's sparse file is packed with its holes as data) and
    // etc/os-release (its version line changed), a quarter of the many small files; new:
    // only new-tool
    assert_eq!(delta["patch"]["files"], 6 + MANY as u64 / 4, "{delta}");
    assert_eq!(delta["new"]["files"], 1, "{delta}");

    let full_img = d.w.provision("full.img", "1.0.0", "gpt", &[]);
    let (ok, err) = d.apply(&full_img, &d.full);
    assert!(ok, "{err}");
    let delta_img = d.w.provision("delta.img", "1.0.0", "gpt", &[]);
    let a = part(&delta_img, "hup-root-a");
    let a_before = range_sha(&delta_img, a);
    let (ok, err) = d.apply(&delta_img, &d.delta);
    assert!(ok, "{err}");
    // The fingerprint took every copied file's digest from preflight instead of hashing it
    // again; the record is still the full apply's (the trees are compared below, with it).
    assert!(
        err.contains(&format!(
            "populate: the digests of {} copied files are the ones preflight checked",
            delta["copy"]["files"]
        )),
        "{err}"
    );
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

/// Migrated NetworkManager keyfiles on the data partition go into every slot an apply
/// writes, here into a directory neither tree has: the delta's base check and the check of
/// the written tree leave them out, the apply succeeds and the new slot has them (and the
/// same tree as a full apply with them).
#[test]
fn migrated_keyfiles_in_a_directory_the_trees_lack_go_into_the_delta_slot() {
    let d = DeltaWorld::new();
    assert!(!d.w.dir.join("rootfs-2.0.0/etc/NetworkManager").exists());
    let mut slots = Vec::new();
    for (name, bundle) in [
        ("full-keyfile.img", &d.full),
        ("delta-keyfile.img", &d.delta),
    ] {
        let img = d.w.provision(name, "1.0.0", "gpt", &[]);
        // `hup apply --disk IMG` keeps hup's data directory in IMG.data
        let rel = hup::migrate::CONNECTIONS_DIR.strip_prefix("hup/").unwrap();
        let conns = PathBuf::from(format!("{}.data/{rel}", p(&img)));
        std::fs::create_dir_all(&conns).unwrap();
        std::fs::write(conns.join("home-wifi"), b"[connection]\nid=home-wifi\n").unwrap();
        let (ok, err) = d.apply(&img, bundle);
        assert!(ok, "{name}: {err}");
        assert!(
            err.contains(
                "populate: adding /etc/NetworkManager/system-connections/home-wifi (migrated)"
            ),
            "{name}: {err}"
        );
        slots.push(slot_b(&img));
    }
    let got = &slots[1];
    let keyfile = &got["/etc/NetworkManager/system-connections/home-wifi"];
    assert_eq!(keyfile.mode & 0o7777, 0o600, "{keyfile:?}");
    assert_same_tree(&slots[0], got, same_but_format_time);
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

    // A delta larger than the full bundle: b.bin = A + C is patched from a base b.bin = C
    // (the patch carries A Huffman-coded, opaque to the stream's compression), and a.bin = A
    // is new; the full bundle's compression finds A twice in its tar and carries A + C once,
    // the delta A twice. A: random letters of 16 (compressible, without long matches).
    let a: Vec<u8> = noise(200_000, 21).iter().map(|b| b'a' + b % 16).collect();
    let c = noise(20_000, 22);
    let base_tree = d.w.dir.join("rootfs-c");
    write(&base_tree, "b.bin", &c);
    let base = d.w.dir.join("c.hup");
    BundleBuilder::new(&base_tree, "3.0.0", &d.w.key)
        .level(1)
        .pack(&base);
    let other = d.w.dir.join("rootfs-other");
    write(&other, "a.bin", &a);
    write(&other, "b.bin", &[a.clone(), c].concat());
    let out_path = d.w.dir.join("other.hup");
    let o = BundleBuilder::new(&other, "4.0.0", &d.w.key)
        .level(1)
        .args(["--delta-from", p(&base)])
        .command(&out_path)
        .run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("wrote the full bundle"), "{stdout}");
    let m: serde_json::Value =
        serde_json::from_str(&hup_ok(&["inspect", "--json", p(&out_path)])).unwrap();
    assert!(m["manifest"].get("delta").is_none(), "{m}");
}

/// `hup provision` of `bundle` into a new image `name` (as [`World::provision`] does).
fn provision(w: &World, name: &str, bundle: &Path) -> PathBuf {
    let img = w.dir.join(name);
    hup_ok(&[
        "provision",
        "--bundle",
        p(bundle),
        "--key",
        p(&w.pubkey),
        "--size",
        "300M",
        "--slot-size",
        "64M",
        "--boot-size",
        "40M",
        "--boot-backend",
        "gpt",
        p(&img),
    ]);
    img
}

#[test]
fn sparse_tar_members_round_trip() {
    use crate::support::hostile_tar::{archive, sparse10, ustar};
    use tar::EntryType::{Directory, Regular};
    let w = World::new();
    let tree = |data: &[u8], region: &[u8]| {
        archive(&[
            ustar("./", Directory, b"", None),
            // no etc/hup: the apply makes it for the slot's fingerprint record, which the
            // base digest must not see (as in a Debian tree)
            ustar("etc/", Directory, b"", None),
            ustar("var/", Directory, b"", None),
            ustar("var/data.bin", Regular, data, None),
            sparse10(
                "var/disk.img",
                16 << 20,
                &[(0, &noise(4096, 7)), (8 << 20, region)],
            ),
            ustar("var/other.bin", Regular, &noise(50_000, 8), None),
        ])
    };
    let base_tar = w.dir.join("base.tar");
    std::fs::write(&base_tar, tree(&noise(100_000, 9), &noise(4096, 10))).unwrap();
    let new_tar = w.dir.join("new.tar");
    std::fs::write(
        &new_tar,
        tree(&edit(noise(100_000, 9), &[5000]), &noise(4096, 11)),
    )
    .unwrap();
    let pack = |tar: &Path, v: &str, out: &str, extra: &[&str]| {
        let out = w.dir.join(out);
        BundleBuilder::new(tar, v, &w.key)
            .level(1)
            .args(extra.iter().copied())
            .pack(&out);
        out
    };
    let base = pack(&base_tar, "1.0.0", "base.hup", &[]);
    let full = pack(&new_tar, "2.0.0", "full.hup", &[]);
    let delta = pack(&new_tar, "2.0.0", "delta.hup", &["--delta-from", p(&base)]);
    let m: serde_json::Value =
        serde_json::from_str(&hup_ok(&["inspect", "--json", p(&delta)])).unwrap();
    let counts = &m["manifest"]["delta"];
    // data.bin patched, other.bin copied; the sparse member is sent as it is
    assert_eq!(
        (
            counts["patch"]["files"].as_u64(),
            counts["copy"]["files"].as_u64()
        ),
        (Some(1), Some(1)),
        "{counts}"
    );
    let mut slots = Vec::new();
    for (name, bundle) in [("full.img", &full), ("delta.img", &delta)] {
        let img = provision(&w, name, &base);
        let o = crate::support::runner::Hup::with(w.apply_args(&img, bundle)).run();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        slots.push(slot_b(&img));
    }
    assert_eq!(slots[0]["/var/disk.img"].size, (16u64 << 20).to_string());
    assert_same_tree(&slots[0], &slots[1], same_but_format_time);
}
