//! Issue 7, the QEMU part: a partition layout migration in the initramfs (gpt backend).
//!
//! A v1 device (device.rs's gpt layout: 8 MiB boot, 40 MiB slots, 70 MiB data) with the
//! user's files and a resinOS 1.x style WiFi `config.json` on its data partition stages a
//! v2 bundle that requires layout version 2 (56 MiB slots, data the rest: 38 MiB) and the
//! `wifi-config-json-to-networkmanager` migration. At the next boot the initramfs backs the
//! data partition up into the old spare slot, writes the new GPT, formats and restores the
//! data partition, applies v2 into the new slot b and reboots into it; v2 finds the user's
//! files and the NetworkManager keyfile (in its root and on the data partition).
//!
//! Power cuts through failpoints (`hup.failpoint=NAME`, see powercut.rs): in the middle of
//! the backup (old table, no valid backup header: the next boot starts over) and just
//! after the new GPT is written (the next boot restores from the backup); both end in v2
//! with the data intact. Every scenario starts from a copy of one staged v1 device.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use hup::model::slot::{Slot, SlotStatus};
use serde_json::Value;

use crate::artifacts::{self, OsSpec, run};
use crate::device::{Backend, Boot, BootOpts, Device, tail};
use crate::fixture::Cached;
use crate::script::Script;
use crate::status::{boot_slot, next, other};
use crate::update::{expect_applied, expect_committed, expect_same_data};

const MIB: u64 = 1 << 20;
const MIGRATION: &str = "wifi-config-json-to-networkmanager";
const SSID: &str = "hup-test-ssid";
const PSK: &str = "secret-passphrase";
/// The keyfile the migration writes for config.json's `wifiSsid` (docs/migrations.md).
const KEYFILE: &str = "resin-wifi";
/// The line the initramfs logs when the migration is done.
const COMPLETE: &str = "layout migration to version 2 complete";

/// (label, start MiB, size MiB) of device.rs's gpt devices (`hup provision --size 160M
/// --slot-size 40M --boot-size 8M`).
const V1_LAYOUT: [(&str, u64, u64); 4] = [
    ("hup-boot", 1, 8),
    ("hup-root-a", 9, 40),
    ("hup-root-b", 49, 40),
    ("hup-data", 89, 70),
];
/// The same disk in layout version 2: boot in place, slots of 56 MiB, data the rest of the
/// disk (rounded down to whole MiB: the same end as v1's).
const V2_LAYOUT: [(&str, u64, u64); 4] = [
    ("hup-boot", 1, 8),
    ("hup-root-a", 9, 56),
    ("hup-root-b", 65, 56),
    ("hup-data", 121, 38),
];

/// More of the user's data than device.rs writes, so that the backup is not trivial:
/// 8 MiB that does not compress and 8 MiB of text.
const WRITE_BULK: &str = r#"
mkdir -p "$DATA/userdata/bulk"
dd if=/dev/urandom of="$DATA/userdata/bulk/random.bin" bs=1M count=8 2>/dev/null
yes 'the quick brown fox jumps over the lazy dog' | head -c 8388608 > "$DATA/userdata/bulk/text.txt"
sync
"#;
/// Prints `HUP-BULK-SUM <sha256>  <file>` for the files of [`WRITE_BULK`].
const PRINT_BULK: &str = r#"
(cd "$DATA/userdata" && sha256sum bulk/random.bin bulk/text.txt) | sed 's/^/HUP-BULK-SUM /'
"#;

/// The sums printed by [`PRINT_BULK`], in order.
fn bulk_sums(b: &Boot) -> Vec<&str> {
    prefixed(b, "HUP-BULK-SUM ")
}

fn config_json() -> String {
    format!("{{\"wifiSsid\":\"{SSID}\",\"wifiKey\":\"{PSK}\"}}\n")
}

/// The manifest's `layout`: partitions in `hup provision`'s order and type GUIDs.
fn target_layout() -> hup::model::layout::TargetLayout {
    let spec =
        |label: &str, size: Option<u64>, type_guid: &str| hup::model::layout::PartitionSpec {
            label: label.to_string(),
            size,
            type_guid: type_guid.to_string(),
        };
    hup::model::layout::TargetLayout {
        version: 2,
        partitions: vec![
            spec("hup-boot", Some(8 * MIB), hup::disk::TYPE_ESP),
            spec(
                "hup-root-a",
                Some(56 * MIB),
                hup::disk::TYPE_LINUX_ROOT_X86_64,
            ),
            spec(
                "hup-root-b",
                Some(56 * MIB),
                hup::disk::TYPE_LINUX_ROOT_X86_64,
            ),
            spec("hup-data", None, hup::disk::TYPE_LINUX_FS),
        ],
    }
}

static BUNDLE: Cached<String> = Cached::new("packing the layout v2 bundle");

/// The guest URL of v2 with layout version 2 and the WiFi migration, packed on first use.
fn layout_bundle_url() -> String {
    BUNDLE
        .get(|| {
            let a = artifacts::get();
            let file = a.work.join("layout-v2.json");
            let json = serde_json::to_vec_pretty(&target_layout())?;
            std::fs::write(&file, json).with_context(|| format!("writing {}", file.display()))?;
            let args = [
                "--layout".to_string(),
                file.display().to_string(),
                "--migration".to_string(),
                MIGRATION.to_string(),
            ];
            a.bundle_with(&OsSpec::gpt("v2-layout", "2", &[]), &args);
            Ok(artifacts::server().guest_url("bundles/v2-layout.hup"))
        })
        .clone()
}

/// The keyfile the migration makes of [`config_json`], computed on the host with the
/// library (the guest's must be the same, byte for byte).
fn expected_keyfile() -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("creating data/");
    std::fs::write(data.join("config.json"), config_json()).expect("writing config.json");
    let ctx = hup::migrate::MigrationContext::new(&data, &dir.path().join("boot"));
    let m = hup::migrate::get(MIGRATION).expect("the WiFi migration is registered");
    let report = m.run(&ctx).expect("the WiFi migration runs on the host");
    assert_eq!(
        report.written,
        vec![ctx.connections_dir.join(KEYFILE)],
        "{report:?}"
    );
    let text = std::fs::read_to_string(ctx.connections_dir.join(KEYFILE)).expect("the keyfile");
    // The settings of config.json, as NetworkManager reads them.
    for line in [
        format!("ssid={SSID}"),
        format!("psk={PSK}"),
        "key-mgmt=wpa-psk".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    text
}

/// A v1 device with the user's files, config.json and the layout v2 bundle staged,
/// powered off before the migration.
struct Staged {
    device: Device,
    v1: Boot,
    /// Its partitions (v1 layout), to compare GUIDs with after the migration.
    parts: Vec<hup::disk::Part>,
}

static STAGED: Cached<Staged> = Cached::new("staging the layout v2 bundle on a v1 device failed");

fn staged_device() -> &'static Staged {
    STAGED.get(build_staged)
}

fn build_staged() -> Result<Staged> {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    let url = layout_bundle_url();
    let mut dev = Device::provision("layout-staged", &v1, Backend::Gpt)?;
    let write_config = format!(
        "cat > \"$DATA/config.json\" <<'EOF'\n{}EOF\nsync\n",
        config_json()
    );
    let b = dev.boot(
        BootOpts::new("v1-stage-v2-layout").script(
            Script::new()
                .write_user_data()
                .sh(WRITE_BULK)
                .sh(&write_config)
                .print_user_data()
                .sh(PRINT_BULK)
                .stage(&url)
                .poweroff(),
        ),
    )?;
    b.expect_os("1", "a");
    b.expect("HUP-STAGE rc=0");
    ensure!(
        bulk_sums(&b).len() == 2,
        "v1 printed no checksums of the bulk files ({})",
        b.log.display()
    );
    ensure!(
        b.data_sums().len() == 4,
        "v1 printed no checksums ({})",
        b.log.display()
    );
    let st = b.status();
    ensure!(
        st.staged.as_ref().map(|s| s.version.as_str()) == Some("2"),
        "v2 is not staged: {st:#?}"
    );
    let parts = partitions(&dev)?;
    expect_layout(&parts, &V1_LAYOUT, "the provisioned device");
    Ok(Staged {
        device: dev,
        v1: b,
        parts,
    })
}

fn partitions(dev: &Device) -> Result<Vec<hup::disk::Part>> {
    let d = hup::disk::Disk::open_read_only(&dev.disk)
        .with_context(|| format!("opening {}", dev.disk.display()))?;
    Ok(d.partitions())
}

/// Asserts the partitions are `want` (label, start MiB, size MiB), in disk order.
fn expect_layout(parts: &[hup::disk::Part], want: &[(&str, u64, u64)], what: &str) {
    let got: Vec<(String, u64, u64)> = parts
        .iter()
        .map(|p| (p.label.clone(), p.start / MIB, p.len / MIB))
        .collect();
    let want: Vec<(String, u64, u64)> = want
        .iter()
        .map(|(l, s, n)| (l.to_string(), *s, *n))
        .collect();
    assert_eq!(got, want, "{what}: partitions (label, start MiB, size MiB)");
    for p in parts {
        assert!(
            p.start.is_multiple_of(MIB) && p.len.is_multiple_of(MIB),
            "{what}: {p:?} is not MiB aligned"
        );
    }
}

/// The migration's backup header the next boot would resume from, found on the image as
/// the initramfs finds it.
fn backup_header(dev: &Device) -> Option<hup::layout::Record> {
    let d = hup::disk::Disk::open_read_only(&dev.disk).unwrap();
    hup::layout::resume_phase(&d, &hup::model::config::Labels::default()).unwrap()
}

/// `sgdisk -v` of the image finds nothing wrong.
fn expect_gpt_clean(dev: &Device) {
    let out = run(Command::new("sgdisk").arg("-v").arg(&dev.disk)).unwrap();
    assert!(
        out.contains("No problems found"),
        "sgdisk -v {}:\n{out}",
        dev.disk.display()
    );
}

/// The v2 OS's test script: status, the user's files, both keyfiles with their modes.
fn v2_script() -> Script {
    let keyfiles = format!(
        r#"
for w in slot data; do
    if [ $w = slot ]; then f=/etc/NetworkManager/system-connections/{KEYFILE}
    else f="$DATA/hup/migrated/system-connections/{KEYFILE}"; fi
    if [ -f "$f" ]; then
        stat -c "HUP-KEYMODE|$w|%a %u %g" "$f"
        sed "s#^#HUP-KEYFILE|$w|#" "$f"
    else
        echo "HUP-KEYMISSING|$w"
    fi
done
"#
    );
    // The migration's log survived it (on the new data partition).
    let log = format!(
        "grep -l '{COMPLETE}' \"$DATA\"/hup/log/boot-*.log | sed 's/^/HUP-MIGRATION-LOG /'\n"
    );
    Script::new()
        .status()
        .print_user_data()
        .sh(PRINT_BULK)
        .sh(&keyfiles)
        .sh(&log)
        .poweroff()
}

/// The lines the v2 script printed with `prefix` (without it).
fn prefixed<'a>(b: &'a Boot, prefix: &str) -> Vec<&'a str> {
    b.lines()
        .filter_map(|l| l.split_once(prefix).map(|(_, r)| r))
        .collect()
}

/// Asserts the migration ran in `b` and was followed by the apply of v2 into slot b.
fn expect_migrated_then_applied(b: &Boot) {
    b.expect(COMPLETE);
    b.expect_not("Kernel panic");
    b.expect_not("panicked");
    let done = b.out.find(COMPLETE).unwrap_or(usize::MAX);
    let reboot = b
        .out
        .find("rebooting: 2 written to slot b")
        .unwrap_or(usize::MAX);
    assert!(
        done < reboot,
        "boot {} ({}): the migration did not complete before the apply's reboot:\n{}",
        b.label,
        b.log.display(),
        tail(&b.out, 60)
    );
}

/// Everything that must hold once v2 ran (`b`, the v2 boot) after a migration of a copy
/// of the staged device: v2 committed in the new slot b, the user's files, the keyfiles,
/// the new partition table, clean filesystems, the migration recorded.
fn expect_v2_device(f: &Staged, dev: &Device, b: &Boot) {
    // The guest's view.
    b.expect("hup: booting slot b from /dev/vda3 (hup-root-b)");
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    let st = b.status();
    expect_committed(&st, "2", "b");
    // `hup status` on the device shows the migration.
    let lm = st.layout_migration.as_ref();
    assert_eq!(
        lm.map(|l| l.phase),
        Some(hup::model::state::LayoutPhase::Completed),
        "{st:#?}"
    );
    assert!(lm.map(|l| l.backup_bytes) > Some(8 << 20), "{st:#?}");
    assert_eq!(other(&st).version.as_deref(), Some("1"), "{st:#?}");
    expect_same_data(&f.v1.data_sums(), b);
    assert_eq!(
        bulk_sums(b),
        bulk_sums(&f.v1),
        "boot {}: the bulk files changed",
        b.label
    );
    let want = expected_keyfile();
    let want: Vec<&str> = want.lines().collect();
    for w in ["slot", "data"] {
        b.expect_not(&format!("HUP-KEYMISSING|{w}"));
        let lines = prefixed(b, &format!("HUP-KEYFILE|{w}|"));
        for line in [format!("ssid={SSID}"), format!("psk={PSK}")] {
            assert!(
                lines.contains(&line.as_str()),
                "boot {} ({}): no {line:?} in the {w} keyfile",
                b.label,
                b.log.display()
            );
        }
        assert_eq!(
            prefixed(b, &format!("HUP-KEYMODE|{w}|")),
            vec!["600 0 0"],
            "boot {} ({}): mode/owner of the {w} keyfile",
            b.label,
            b.log.display()
        );
        assert_eq!(
            prefixed(b, &format!("HUP-KEYFILE|{w}|")),
            want,
            "boot {} ({}): the {w} keyfile",
            b.label,
            b.log.display()
        );
    }

    assert!(
        !prefixed(b, "HUP-MIGRATION-LOG ").is_empty(),
        "boot {} ({}): no boot log on the data partition says {COMPLETE:?}",
        b.label,
        b.log.display()
    );

    // The host's view of the powered-off disk.
    expect_gpt_clean(dev);
    if let Some(r) = backup_header(dev) {
        panic!("{}: the backup header was not cleared: {r:?}", dev.name);
    }
    let parts = partitions(dev).unwrap();
    expect_layout(&parts, &V2_LAYOUT, &dev.name);
    for (old, new) in f.parts.iter().zip(&parts) {
        assert_eq!(
            (&old.guid, &old.type_guid),
            (&new.guid, &new.type_guid),
            "{}: {} changed its GUID or type",
            dev.name,
            new.label
        );
    }
    for label in ["hup-data", "hup-root-a", "hup-root-b"] {
        dev.fsck(label).unwrap();
    }
    assert_eq!(
        dev.read_file("hup-data", "/userdata/note.txt").unwrap(),
        b"written by 1 in slot a\n"
    );
    assert_eq!(
        String::from_utf8(dev.read_file("hup-data", "/config.json").unwrap()).unwrap(),
        config_json(),
        "the migration's input changed"
    );
    let hs = dev.host_status().unwrap();
    assert_eq!(next(&hs), Some(Slot::B), "{hs:#?}");
    assert_eq!(boot_slot(&hs, Slot::B).status, SlotStatus::Good, "{hs:#?}");
    assert_eq!(boot_slot(&hs, Slot::A).status, SlotStatus::Good, "{hs:#?}");
    let state: Value =
        serde_json::from_slice(&dev.read_file("hup-data", "/hup/state.json").unwrap())
            .expect("state.json is JSON");
    let lm = &state["layout_migration"];
    assert_eq!(lm["layout_version"], 2, "{state:#}");
    assert_eq!(lm["bundle_version"], "2", "{state:#}");
    assert_eq!(lm["phase"], "completed", "{state:#}");
    eprintln!(
        "{}: layout migration timings (ms): {}",
        dev.name, lm["timings_ms"]
    );
}

#[test]
fn a_v1_device_with_wifi_config_json_migrates_to_layout_v2() {
    let f = staged_device();
    let mut dev = f.device.copy("layout-update").unwrap();
    let b = dev.boot(BootOpts::new("migrate-apply-v2")).unwrap();
    expect_migrated_then_applied(&b);
    expect_applied(&b, "2", "b");
    let b = dev.boot(BootOpts::new("v2").script(v2_script())).unwrap();
    expect_v2_device(f, &dev, &b);
}

/// How the boot after a cut goes on with the migration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// No valid backup header: it plans and backs up again.
    StartOver,
    /// From the backup header: restores from the backup made before the cut.
    FromBackup,
}

/// Cut at failpoint `point` during the migration; `table_after_cut` is the layout the disk
/// has then. The next boot completes the migration (`resume`) and the apply, then v2 runs.
fn cut_at(point: &str, table_after_cut: &[(&str, u64, u64)], resume: Resume) {
    let f = staged_device();
    let mut dev = f.device.copy(&format!("layout-cut-{point}")).unwrap();
    let b = dev
        .boot(BootOpts::new(&format!("cut-{point}")).failpoint(point))
        .unwrap();
    b.expect(&format!("hup: failpoint {point} armed"));
    b.expect(&format!("hup: warn: failpoint {point}: "));
    b.expect("Kernel panic");
    b.expect_not(COMPLETE);
    assert!(b.os_up().is_none(), "an OS came up despite the cut");

    // The disk as the cut left it: a valid table (old or new), slot a (v1) boots next.
    expect_gpt_clean(&dev);
    expect_layout(&partitions(&dev).unwrap(), table_after_cut, &dev.name);
    match (resume, backup_header(&dev)) {
        (Resume::StartOver, None) => {}
        (Resume::FromBackup, Some(r)) => {
            assert_eq!(r.layout_version, 2, "{r:?}");
            assert_eq!(r.phase, hup::layout::Phase::TableWritten, "{r:?}");
        }
        (_, r) => panic!("{}: backup header after the cut: {r:?}", dev.name),
    }
    let hs = dev.host_status().unwrap();
    assert_eq!(next(&hs), Some(Slot::A), "{hs:#?}");
    assert_eq!(boot_slot(&hs, Slot::A).status, SlotStatus::Good, "{hs:#?}");

    let b = dev.boot(BootOpts::new("resume")).unwrap();
    expect_migrated_then_applied(&b);
    match resume {
        Resume::StartOver => {
            b.expect_not("layout: resuming the migration");
            b.expect("layout: backing up ");
            b.expect("layout: writing the new partition table");
        }
        Resume::FromBackup => {
            b.expect("layout: resuming the migration");
            b.expect_not("layout: backing up ");
        }
    }
    b.expect("layout: formatting hup-data and restoring the backup");
    b.expect("rebooting: 2 written to slot b, trying it next");
    let b = dev.boot(BootOpts::new("v2").script(v2_script())).unwrap();
    expect_v2_device(f, &dev, &b);
}

#[test]
fn a_power_cut_in_the_middle_of_the_backup_starts_the_migration_over() {
    cut_at("layout-backup-middle", &V1_LAYOUT, Resume::StartOver);
}

#[test]
fn a_power_cut_just_after_the_gpt_rewrite_resumes_from_the_backup() {
    cut_at("layout-table", &V2_LAYOUT, Resume::FromBackup);
}

/// The layout file and the keyfile, checked without a VM.
#[test]
fn the_layout_file_and_the_expected_keyfile_agree_with_the_test_tables() {
    let t = target_layout();
    t.validate().unwrap();
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["partitions"][3]["label"], "hup-data");
    assert!(json["partitions"][3]["size"].is_null());
    // Sizes and places agree with V2_LAYOUT.
    let mut start = 1;
    for (p, (label, at, size)) in t.partitions.iter().zip(V2_LAYOUT) {
        assert_eq!((p.label.as_str(), start), (label, at));
        if let Some(bytes) = p.size {
            assert_eq!(bytes, size * MIB, "{label}");
        }
        start += size;
    }
    assert!(
        V2_LAYOUT[3].2 >= 16,
        "the new data partition is below 16 MiB"
    );
    let k = expected_keyfile();
    assert!(k.contains("[wifi-security]"), "{k}");
}
