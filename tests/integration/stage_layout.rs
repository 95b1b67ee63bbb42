//! What a bundle requires beyond versions and sizes, from `hup pack` to `hup stage`: a
//! partition layout (`--layout`), configuration migrations (`--migration`) and an unmodified
//! base system (`--requires-unmodified-base`). `hup inspect` shows them and, with `--disk`,
//! the layout migration plan; `hup stage` prints the plan, or refuses (nothing staged, an
//! earlier staged bundle kept) a layout the disk cannot reach, data that would not survive
//! the migration, and a modified base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::bundle::BundleBuilder;
use crate::support::device::*;
use crate::support::runner::*;
use hup::boot::BootBackend;
use hup::disk::{TYPE_ESP, TYPE_LINUX_FS, TYPE_LINUX_ROOT_X86_64};
use hup::model::slot::Slot;
use serde_json::{Value, json};

const WIFI: &str = "wifi-config-json-to-networkmanager";

/// A device (slot a runs 1.0.0 and is good) whose disk has the v1 layout: boot 8 MiB, slots
/// of 32 MiB, the data partition the rest of 124 MiB (73..123 MiB).
fn v1_device() -> Device {
    let dev = Device::new();
    std::fs::remove_file(&dev.disk).unwrap();
    let specs = hup::disk::hup_layout(8 * MIB, 32 * MIB, None);
    let d = hup::disk::create_layout(&dev.disk, 512, 124 * MIB, &specs).unwrap();
    hup::disk::format_esp(d.open_partition("hup-boot").unwrap(), "HUP-BOOT", 512).unwrap();
    drop(d);
    hup::boot::gpt::GptBackend::new(&dev.disk)
        .mark_good(Slot::A)
        .unwrap();
    dev
}

/// A layout: boot partition and slots of these sizes (MiB), the data partition the rest.
fn layout(version: u32, boot_mib: u64, slot_mib: u64) -> Value {
    let part = |label: &str, mib: Option<u64>, ty: &str| match mib {
        Some(m) => json!({"label": label, "size": m * MIB, "type_guid": ty}),
        None => json!({"label": label, "type_guid": ty}),
    };
    json!({"version": version, "partitions": [
        part("hup-boot", Some(boot_mib), TYPE_ESP),
        part("hup-root-a", Some(slot_mib), TYPE_LINUX_ROOT_X86_64),
        part("hup-root-b", Some(slot_mib), TYPE_LINUX_ROOT_X86_64),
        part("hup-data", None, TYPE_LINUX_FS),
    ]})
}

/// The layout the v1 device migrates to: slots of 40 MiB, data 89..123 MiB. The backup
/// region is the old slot b, 41..73 MiB.
fn v2_layout() -> Value {
    layout(2, 8, 40)
}

fn write_json(dev: &Device, name: &str, v: &Value) -> PathBuf {
    dev.file(name, &serde_json::to_vec_pretty(v).unwrap())
}

/// `hup pack --level 1` of a small rootfs as `DIR/VERSION.hup` with `extra` options.
fn pack(dev: &Device, version: &str, extra: &[&str]) -> (Output, PathBuf) {
    let root = dev.dir.join(format!("rootfs-{version}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        format!("VERSION_ID={version}\n"),
    )
    .unwrap();
    std::fs::write(root.join("noise.bin"), noise(100_000, 3)).unwrap();
    let boot = dev.dir.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz"), vec![7u8; 5000]).unwrap();
    let out = dev.dir.join(format!("{version}.hup"));
    pack_from(dev, &root, version, &out, extra)
}

fn pack_from(
    dev: &Device,
    root: &Path,
    version: &str,
    out: &Path,
    extra: &[&str],
) -> (Output, PathBuf) {
    let o = BundleBuilder::new(root, version, &dev.key)
        .boot(&dev.dir.join("boot"))
        .compatible("qemu-x86_64")
        .level(1)
        .args(extra.iter().copied())
        .command(out)
        .run();
    (o, out.to_path_buf())
}

/// A bundle of `version` with a layout, packed successfully.
fn layout_bundle(dev: &Device, version: &str, l: &Value) -> PathBuf {
    let f = write_json(dev, &format!("layout-{version}.json"), l);
    let (o, out) = pack(dev, version, &["--layout", p(&f)]);
    ok(&o);
    out
}

fn inspect(bundle: &Path, extra: &[&str]) -> String {
    let mut args = vec!["inspect", p(bundle)];
    args.extend(extra);
    ok(&hup(&args))
}

fn inspect_json(bundle: &Path, extra: &[&str]) -> Value {
    let mut e = vec!["--json"];
    e.extend(extra);
    serde_json::from_str(&inspect(bundle, &e)).unwrap()
}

/// Every file below `dir` with its content's sha256 (directories as "dir"), but the lock files.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if rel == "hup/lock" || rel == "hup/download.lock" {
                continue; // names the last command that held it
            }
            if path.is_dir() {
                out.insert(rel, "dir".into());
                todo.push(path);
            } else {
                out.insert(rel, sha256_hex(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// The data partition's root of the fixture (the parent of hup's data directory).
fn data_root(dev: &Device) -> PathBuf {
    dev.data.parent().unwrap().to_path_buf()
}

#[test]
fn pack_records_layout_migrations_and_base_requirement() {
    let dev = v1_device();
    let l = v2_layout();
    let lf = write_json(&dev, "v2.json", &l);
    let (o, out) = pack(
        &dev,
        "2.0.0",
        &[
            "--layout",
            p(&lf),
            "--migration",
            WIFI,
            "--requires-unmodified-base",
        ],
    );
    ok(&o);
    let j = inspect_json(&out, &[]);
    let parsed = |v: &Value| -> hup::model::layout::TargetLayout {
        serde_json::from_value(v.clone()).unwrap()
    };
    assert_eq!(parsed(&j["manifest"]["layout"]), parsed(&l));
    assert_eq!(j["manifest"]["migrations"], json!([WIFI]));
    assert_eq!(j["manifest"]["requires_unmodified_base"], json!(true));
    assert!(j.get("layout_migration").is_none(), "no --disk: {j}");
    let text = inspect(&out, &[]);
    for needle in [
        "layout:        version 2",
        "hup-root-a       41943040 bytes (40.0 MiB)",
        "hup-data         rest of the disk",
        TYPE_LINUX_ROOT_X86_64,
        "requires unmodified base: yes",
        &format!("migrations:    {WIFI}"),
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    // Without the options: none of the fields.
    let (o, plain) = pack(&dev, "2.0.1", &[]);
    ok(&o);
    let j = inspect_json(&plain, &[]);
    let m = j["manifest"].as_object().unwrap();
    for field in ["layout", "requires_unmodified_base", "migrations"] {
        assert!(!m.contains_key(field), "{field} in {j}");
    }
    let text = inspect(&plain, &[]);
    assert!(
        !text.contains("layout") && !text.contains("unmodified"),
        "{text}"
    );
}

#[test]
fn pack_refuses_bad_layouts_and_unknown_migrations_before_compressing() {
    let dev = v1_device();
    let out = dev.dir.join("bad.hup");
    // The rootfs does not exist: a refusal naming the layout or migration proves that the
    // options were checked before the rootfs was read.
    let missing_root = dev.dir.join("no-such-rootfs");
    let mut zero = v2_layout();
    zero["partitions"][1]["size"] = json!(0);
    let mut extra_field = v2_layout();
    extra_field["partitions"][0]["start"] = json!(1);
    let cases: Vec<(String, Vec<String>, String)> = vec![
        (
            "not JSON".into(),
            vec![
                "--layout".into(),
                p(&dev.file("garbage.json", b"{\"version\": 2,")).into(),
            ],
            format!("layout file {}", p(&dev.dir.join("garbage.json"))),
        ),
        (
            "size 0".into(),
            vec![
                "--layout".into(),
                p(&write_json(&dev, "zero.json", &zero)).into(),
            ],
            "zero.json: partition \"hup-root-a\" has size 0".into(),
        ),
        (
            "unknown field".into(),
            vec![
                "--layout".into(),
                p(&write_json(&dev, "extra.json", &extra_field)).into(),
            ],
            "extra.json: invalid layout JSON".into(),
        ),
        (
            "missing file".into(),
            vec!["--layout".into(), p(&dev.dir.join("nope.json")).into()],
            "reading layout file".into(),
        ),
        (
            "unknown migration".into(),
            vec![
                "--migration".into(),
                WIFI.into(),
                "--migration".into(),
                "teleport-config".into(),
            ],
            format!("unknown migration \"teleport-config\" (known: {WIFI})"),
        ),
    ];
    for (name, extra, needle) in cases {
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (o, _) = pack_from(&dev, &missing_root, "2.0.0", &out, &refs);
        let line = fails(&o, 1, &needle);
        assert!(!line.contains("no-such-rootfs"), "{name}: {line}");
        assert!(!out.exists(), "{name}: something left at OUT");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dev.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hup-pack-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn inspect_disk_shows_the_migration_plan() {
    let dev = v1_device();
    let cfg = ["--disk", p(&dev.disk), "--config", p(&dev.config)];
    let disk_sha = sha256_hex(&std::fs::read(&dev.disk).unwrap());

    // The layout the disk has already.
    let same = layout_bundle(&dev, "1.1.0", &layout(1, 8, 32));
    let text = inspect(&same, &cfg);
    assert!(
        text.lines().any(|l| l == "layout migration: not needed"),
        "{text}"
    );
    let j = inspect_json(&same, &cfg);
    assert!(
        j.as_object().unwrap().contains_key("layout_migration") && j["layout_migration"].is_null(),
        "{j}"
    );

    // A v2 layout: the plan.
    let v2 = layout_bundle(&dev, "2.0.0", &v2_layout());
    let text = inspect(&v2, &cfg);
    for needle in [
        "layout migration:\nlayout migration of ",
        "to layout version 2",
        "hup-root-a       9 MiB..41 MiB (32 MiB)         9 MiB..49 MiB (40 MiB)",
        "hup-data         73 MiB..123 MiB (50 MiB)",
        "backup region: 41 MiB..73 MiB (32 MiB) in the old hup-root-b",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let j = inspect_json(&v2, &cfg);
    let plan = &j["layout_migration"];
    assert_eq!(plan["layout_version"], json!(2));
    assert_eq!(plan["active"], json!("a"));
    assert_eq!(plan["region"], json!({"start": 41 * MIB, "len": 32 * MIB}));

    // Without --config: the default labels and the gpt backend, the same plan.
    let text = inspect(&v2, &["--disk", p(&dev.disk)]);
    assert!(text.contains("backup region: 41 MiB..73 MiB"), "{text}");

    // A layout this disk cannot reach: reported, exit 0.
    let moved = layout_bundle(&dev, "2.1.0", &layout(2, 16, 40));
    let text = inspect(&moved, &cfg);
    assert!(
        text.contains(
            "layout migration: impossible: the boot partition \"hup-boot\" would change from \
             1 MiB..9 MiB (8 MiB) to 1 MiB..17 MiB (16 MiB)"
        ),
        "{text}"
    );
    let j = inspect_json(&moved, &cfg);
    let refused = j["layout_migration"]["refused"].as_str().unwrap();
    assert!(refused.contains("must keep its place and size"), "{j}");

    // A bundle without a layout needs no migration.
    let (o, plain) = pack(&dev, "2.2.0", &[]);
    ok(&o);
    assert!(inspect(&plain, &cfg).contains("layout migration: not needed"));

    assert_eq!(
        sha256_hex(&std::fs::read(&dev.disk).unwrap()),
        disk_sha,
        "inspect wrote to the disk"
    );
}

#[test]
fn stage_prints_the_plan_and_stages() {
    let dev = v1_device();
    let users = data_root(&dev).join("users");
    std::fs::create_dir_all(&users).unwrap();
    for i in 0..50 {
        std::fs::write(users.join(format!("file-{i}")), noise(10_000, i)).unwrap();
    }
    let v2 = layout_bundle(&dev, "2.0.0", &v2_layout());
    let out = ok(&dev.stage(p(&v2), &[]));
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("this update migrates the partition layout first:")
    );
    assert!(lines.next().unwrap().starts_with("layout migration of "));
    assert!(
        out.contains("backup region: 41 MiB..73 MiB (32 MiB) in the old hup-root-b"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().starts_with("staged 2.0.0 "),
        "{out}"
    );
    dev.assert_staged(&std::fs::read(&v2).unwrap(), "2.0.0");

    // A bundle whose layout the disk has already: no plan.
    let same = layout_bundle(&dev, "2.1.0", &layout(1, 8, 32));
    let out = ok(&dev.stage(p(&same), &[]));
    assert!(!out.contains("layout"), "{out}");
    dev.assert_staged(&std::fs::read(&same).unwrap(), "2.1.0");
}

/// Stages 1.5.0 (no layout), then refuses `bundle` with `needle`: nothing staged, the
/// earlier bundle kept, the data partition's files unchanged.
fn refused_keeps_everything(dev: &Device, bundle: &Path, needle: &str) -> String {
    let before = listing(&data_root(dev));
    let v15 = std::fs::read(dev.staged_file()).unwrap();
    let o = dev.stage(p(bundle), &[]);
    let line = fails(&o, 1, needle);
    assert!(!stdout(&o).contains("staged"), "{}", stdout(&o));
    dev.assert_staged(&v15, "1.5.0");
    assert_eq!(dev.staging(), Vec::<String>::new(), "staging/ is clean");
    assert_eq!(
        listing(&data_root(dev)),
        before,
        "the data partition changed"
    );
    line
}

fn device_with_staged_v15() -> Device {
    let dev = v1_device();
    let (o, v15) = pack(&dev, "1.5.0", &[]);
    ok(&o);
    ok(&dev.stage(p(&v15), &[]));
    dev.assert_staged(&std::fs::read(&v15).unwrap(), "1.5.0");
    dev
}

#[test]
fn stage_refuses_data_that_does_not_survive_the_migration() {
    let dev = device_with_staged_v15();
    let v2 = layout_bundle(&dev, "2.0.0", &v2_layout());
    let users = data_root(&dev).join("users");
    std::fs::create_dir_all(&users).unwrap();

    // 36 MiB that do not compress: more than the 32 MiB backup region.
    std::fs::write(users.join("video.bin"), noise(36 << 20, 9)).unwrap();
    let line = refused_keeps_everything(
        &dev,
        &v2,
        "bundle needs a partition layout migration that the data does not survive: ",
    );
    assert!(line.contains("36.0 MiB of file content"), "{line}");
    assert!(
        line.contains("but the backup region holds 32 MiB"),
        "{line}"
    );
    std::fs::remove_file(users.join("video.bin")).unwrap();

    // Zeros compress to nothing, but the files would not fit the new 34 MiB data partition.
    let f = std::fs::File::create(users.join("disk.img")).unwrap();
    f.set_len(33 << 20).unwrap();
    drop(f);
    let line = refused_keeps_everything(&dev, &v2, "33.0 MiB of file content");
    assert!(
        line.contains("but the new data partition \"hup-data\" holds about"),
        "{line}"
    );
    std::fs::remove_file(users.join("disk.img")).unwrap();

    // Within the limits it stages.
    std::fs::write(users.join("notes.txt"), "fits\n").unwrap();
    let out = ok(&dev.stage(p(&v2), &[]));
    assert!(out.contains("this update migrates the partition layout first:"));
    dev.assert_staged(&std::fs::read(&v2).unwrap(), "2.0.0");
}

#[test]
fn stage_refuses_an_unreachable_layout() {
    let dev = device_with_staged_v15();
    // The boot partition would grow.
    let moved = layout_bundle(&dev, "2.0.0", &layout(2, 16, 40));
    refused_keeps_everything(
        &dev,
        &moved,
        "bundle needs a partition layout this device cannot reach: the boot partition \
         \"hup-boot\" would change",
    );
    // The disk is too small for the slots.
    let big = layout_bundle(&dev, "2.1.0", &layout(2, 8, 64));
    refused_keeps_everything(
        &dev,
        &big,
        "bundle needs a partition layout this device cannot reach: the disk (124 MiB) is too \
         small",
    );
}

/// A small root tree standing for the running slot.
fn base_tree(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
    for d in ["bin", "etc/hup", "usr/lib", "var/log"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("bin/sh"), noise(20_000, 1)).unwrap();
    std::fs::write(root.join("etc/os-release"), "VERSION_ID=1.0.0\n").unwrap();
    std::fs::write(root.join("etc/fstab"), "# nothing\n").unwrap();
    std::fs::write(root.join("usr/lib/libc.so"), noise(30_000, 2)).unwrap();
}

#[test]
fn stage_requires_an_unmodified_base_when_the_bundle_says_so() {
    let dev = v1_device();
    let base = dev.dir.join("base");
    base_tree(&base);
    let (o, v2) = pack(&dev, "2.0.0", &["--requires-unmodified-base"]);
    ok(&o);
    let stage = |extra: &[&str]| {
        let mut e = vec!["--base-root", p(&base)];
        e.extend(extra);
        dev.stage(p(&v2), &e)
    };
    let nothing_staged = || {
        assert!(dev.state().staged.is_none(), "something was staged");
        assert!(!dev.staged_file().exists());
        assert_eq!(dev.staging(), Vec::<String>::new(), "staging/ is clean");
    };

    // No recorded fingerprint.
    fails(
        &stage(&[]),
        1,
        &format!(
            "bundle requires an unmodified base system, but slot a (at {}) has no recorded \
             fingerprint to compare with ({}/etc/hup/fingerprint.json does not exist)",
            p(&base),
            p(&base)
        ),
    );
    nothing_staged();

    let record = |root: &Path| {
        ok(&hup(&[
            "fingerprint",
            "create",
            "--root",
            p(root),
            "-o",
            p(&root.join("etc/hup/fingerprint.json")),
        ]));
    };
    record(&base);

    // Two modified, one added; a log file (default ignore list) does not count.
    std::fs::write(base.join("etc/fstab"), "/dev/sda1 / ext4\n").unwrap();
    std::fs::write(base.join("bin/sh"), noise(20_000, 99)).unwrap();
    std::fs::write(base.join("usr/lib/evil.so"), b"x").unwrap();
    std::fs::write(base.join("var/log/messages"), b"boot\n").unwrap();
    fails(
        &stage(&[]),
        1,
        &format!(
            "bundle requires an unmodified base system; slot a (at {}) differs from its \
             fingerprint: 2 modified, 1 added (run `hup fingerprint check` for the list)",
            p(&base)
        ),
    );
    nothing_staged();

    // One missing, one with another mode.
    base_tree(&base);
    record(&base);
    std::fs::remove_file(base.join("usr/lib/libc.so")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        base.join("etc/fstab"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fails(
        &stage(&[]),
        1,
        "differs from its fingerprint: 1 missing, 1 with changed permissions or owner (run",
    );
    nothing_staged();

    // Identical: staged.
    base_tree(&base);
    record(&base);
    std::fs::write(base.join("var/log/messages"), b"logs change\n").unwrap();
    ok(&stage(&[]));
    dev.assert_staged(&std::fs::read(&v2).unwrap(), "2.0.0");

    // A bundle without the requirement does not look at the base.
    std::fs::write(base.join("etc/fstab"), "changed again\n").unwrap();
    let (o, v3) = pack(&dev, "3.0.0", &[]);
    ok(&o);
    ok(&dev.stage(p(&v3), &["--base-root", p(&base)]));
    dev.assert_staged(&std::fs::read(&v3).unwrap(), "3.0.0");
}
