//! The layout migration inside the apply pipeline (`hup::apply::run_staged` with the data
//! partition held through a loop device, as the initramfs holds it through its node): a v1
//! image with user data, a WiFi config.json and a staged bundle that needs layout v2 ends
//! with the new table, the same data, the bundle applied to the new spare slot, the WiFi
//! keyfile in that slot, and the migration recorded in state.json. Root: loop mounts.

use std::path::{Path, PathBuf};

use crate::support::image::{COMPATIBLE, World, with_ext4};
use crate::support::layout::*;
use crate::support::{p, sh};
use anyhow::Result;
use hup::apply::layout::DataMount;
use hup::boot;
use hup::disk::{Disk, Part};
use hup::fsutil::DataDir;
use hup::model::config::{BootBackendKind, SystemConfig};
use hup::model::slot::{Slot, SlotStatus};
use hup::model::state::{Outcome, Staged};

/// The data partition of an image mounted through an explicit loop device at a fixed
/// directory, as the init mounts its node.
struct LoopData {
    img: PathBuf,
    dir: PathBuf,
    dev: Option<String>,
}

impl LoopData {
    fn new(img: &Path, dir: &Path) -> LoopData {
        std::fs::create_dir_all(dir).unwrap();
        let mut d = LoopData {
            img: img.to_path_buf(),
            dir: dir.to_path_buf(),
            dev: None,
        };
        let part = Disk::open_read_only(img)
            .unwrap()
            .partition("hup-data")
            .unwrap();
        d.mount(img, &part).unwrap();
        d
    }
}

impl DataMount for LoopData {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn quiesce(&mut self) {}

    fn unmount(&mut self) -> Result<()> {
        if let Some(dev) = self.dev.take() {
            sh(&format!("umount {} && losetup -d {dev}", p(&self.dir)));
        }
        Ok(())
    }

    fn mount(&mut self, disk: &Path, part: &Part) -> Result<()> {
        anyhow::ensure!(disk == self.img, "mounting from another disk");
        let dev = sh(&format!(
            "losetup -f --show -o {} --sizelimit {} {}",
            part.start,
            part.len,
            p(&self.img)
        ))
        .trim()
        .to_string();
        sh(&format!("mount {dev} {}", p(&self.dir)));
        self.dev = Some(dev);
        Ok(())
    }
}

impl Drop for LoopData {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

const WIFI: &str = r#"{"wifiSsid":"hup-test-ssid","wifiKey":"secret passphrase"}"#;

/// A v1 image (slots of 128 MiB), its data filled, a WiFi config.json, and `bundle` staged
/// the way `hup stage` leaves it (file + state.json entry).
fn v1_with_staged(w: &World, bundle: &Path) -> (PathBuf, SystemConfig) {
    v1_with_staged_on(w, bundle, "gpt")
}

/// [`v1_with_staged`] with the boot backend `backend`.
fn v1_with_staged_on(w: &World, bundle: &Path, backend: &str) -> (PathBuf, SystemConfig) {
    let img = provision_full(w, "v1.img", "700M", "128M", "512", backend);
    let m = Mount::new(&img, "hup-data", false);
    fill(m.path(), 2 << 20);
    std::fs::write(m.path().join("config.json"), WIFI).unwrap();
    let staged = stage(m.path(), bundle);
    let data = DataDir::under_mount(m.path());
    let mut state = data.load_state().unwrap();
    state.staged = Some(Staged {
        file: "bundle.hup".into(),
        sha256: crate::support::image::file_sha(&staged),
        size: std::fs::metadata(&staged).unwrap().len(),
        version: "2.0.0".into(),
        staged_at: 1,
    });
    data.save_state(&state).unwrap();
    drop(m);
    let keys = w.dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(&w.pubkey, keys.join("release.pub")).unwrap();
    let config = SystemConfig::from_json(
        format!(
            r#"{{"compatible":"{COMPATIBLE}","boot_backend":"{backend}","keys_dir":"{}"}}"#,
            keys.display()
        )
        .as_bytes(),
    )
    .unwrap();
    (img, config)
}

fn layout_bundle(w: &World, slot_mib: u64, extra: &[&str]) -> PathBuf {
    let file = w.dir.join(format!("layout-{slot_mib}.json"));
    std::fs::write(&file, serde_json::to_vec(&target(slot_mib)).unwrap()).unwrap();
    let mut args = vec!["--layout", p(&file)];
    args.extend_from_slice(extra);
    w.bundle_with("2.0.0", COMPATIBLE, &args)
}

/// sha256 of the whole partition labelled `label`.
fn part_sha(img: &Path, label: &str) -> String {
    let part = Disk::open_read_only(img).unwrap().partition(label).unwrap();
    crate::support::image::range_sha(img, (part.start, part.len))
}

/// `run_staged` as the init calls it, with the data partition held through a loop device
/// mounted at `DIR/data-mnt`.
fn run_staged(
    w: &World,
    img: &Path,
    config: &SystemConfig,
) -> (Result<Option<hup::apply::Report>>, DataDir, LoopData) {
    let mnt = w.dir.join("data-mnt");
    let mut data_mount = LoopData::new(img, &mnt);
    let data = DataDir::under_mount(&mnt);
    let r = hup::apply::run_staged(img, &data, config, None, Some(&mut data_mount));
    (r, data, data_mount)
}

/// Lines of a listing outside `hup/` (hup's own files change by design).
fn user_lines(listing: &str) -> String {
    listing
        .lines()
        .filter(|l| !l.starts_with("./hup ") && !l.starts_with("./hup/") && !l.starts_with(". "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn staged_bundle_with_a_new_layout_is_migrated_then_applied() {
    let w = World::new();
    let bundle = layout_bundle(
        &w,
        192,
        &["--migration", "wifi-config-json-to-networkmanager"],
    );
    let (img, config) = v1_with_staged(&w, &bundle);
    let before = data_listing(&img);
    let slot_a = part_sha(&img, "hup-root-a");

    let (report, data, data_mount) = run_staged(&w, &img, &config);
    let report = report.unwrap().expect("something was staged");
    assert_eq!((report.version.as_str(), report.target), ("2.0.0", Slot::B));

    let state = data.load_state().unwrap();
    let m = state.layout_migration.clone().expect("migration recorded");
    assert_eq!((m.phase.name(), m.layout_version), ("completed", 2));
    let phases: Vec<&str> = m.timings_ms.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(phases, ["backup", "table", "restore"]);
    assert!(m.backup_bytes > 2 << 20 && m.entries > 300, "{m:?}");
    let last = state.last_result.clone().unwrap();
    assert_eq!((last.outcome, last.slot), (Outcome::Applied, Slot::B));
    assert!(state.staged.is_none(), "the staged bundle is consumed");
    let keyfile = data.root.join("migrated/system-connections");
    let names: Vec<_> = std::fs::read_dir(&keyfile)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    drop(data_mount);

    // The table is the new one, the kept slot's bytes did not change, the data is the same.
    let out = sgdisk_verify(&img);
    assert!(out.contains("No problems found"), "{out}");
    let d = Disk::open_read_only(&img).unwrap();
    let b = d.partition("hup-root-b").unwrap();
    assert_eq!(d.partition("hup-root-a").unwrap().len, 192 << 20);
    assert_eq!(b.len, 192 << 20);
    assert_eq!(
        crate::support::image::range_sha(&img, (65 << 20, 128 << 20)),
        slot_a,
        "slot a changed"
    );
    assert_eq!(user_lines(&data_listing(&img)), user_lines(&before));

    // Slot b holds v2 with the migrated keyfile, and is the one to try next.
    let (os, key, mode) = with_ext4(&img, "hup-root-b", |root| {
        let key = root
            .join("etc/NetworkManager/system-connections")
            .join(&names[0]);
        (
            std::fs::read_to_string(root.join("etc/os-release")).unwrap(),
            std::fs::read_to_string(&key).unwrap(),
            sh(&format!("stat -c %a {}", p(&key))).trim().to_string(),
        )
    });
    assert!(os.contains("VERSION_ID=2.0.0"), "{os}");
    assert!(
        key.contains("ssid=hup-test-ssid") && key.contains("psk=secret passphrase"),
        "{key}"
    );
    assert_eq!(mode, "600");
    let gpt = boot::open(BootBackendKind::Gpt, &img, &config.labels);
    let st = gpt.state().unwrap();
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Trying);
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Good);
    assert_eq!(st.next, Some(Slot::B));
}

#[test]
fn data_too_big_for_the_backup_is_refused_before_any_write() {
    let w = World::new();
    let bundle = layout_bundle(&w, 192, &[]);
    let (img, config) = v1_with_staged(&w, &bundle);
    {
        // 160 MiB of random data cannot go into the 128 MiB of the old slot b.
        let m = Mount::new(&img, "hup-data", false);
        sh(&format!(
            "head -c 160M /dev/urandom > {}/big.bin",
            p(m.path())
        ));
    }
    // Everything but the data partition (whose state.json records the refusal).
    let data_part = Disk::open_read_only(&img)
        .unwrap()
        .partition("hup-data")
        .unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    let outside = |img: &Path| {
        (
            crate::support::image::range_sha(img, (0, data_part.start)),
            crate::support::image::range_sha(img, (data_part.end(), size - data_part.end())),
        )
    };
    let before = outside(&img);
    let listing = user_lines(&data_listing(&img));

    let (r, data, data_mount) = run_staged(&w, &img, &config);
    let err = r.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("backup") && !msg.contains('\n'), "{msg}");
    let state = data.load_state().unwrap();
    let last = state.last_result.clone().unwrap();
    assert_eq!(last.outcome, Outcome::Failed);
    assert!(last.reason.unwrap().contains("layout migration"));
    assert!(
        state.staged.is_none(),
        "a bundle that cannot apply is dropped"
    );
    drop(data_mount);
    assert_eq!(
        outside(&img),
        before,
        "a refused migration wrote outside the data partition"
    );
    assert_eq!(user_lines(&data_listing(&img)), listing);
}

#[test]
fn host_apply_refuses_a_bundle_that_needs_a_migration_first() {
    let w = World::new();
    let bundle = layout_bundle(&w, 192, &[]);
    let img = provision(&w, "v1.img", "700M", "128M");
    let out = crate::support::hup(&[
        "apply",
        "--disk",
        p(&img),
        "--bundle",
        p(&bundle),
        "--key",
        p(&w.pubkey),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.lines().last().unwrap_or_default();
    assert!(err.contains("layout migration must run first"), "{err}");
}

#[test]
fn running_from_slot_b_the_system_is_copied_into_slot_a_first() {
    let w = World::new();
    let bundle = layout_bundle(&w, 192, &[]);
    let (img, config) = v1_with_staged(&w, &bundle);
    let gpt = run_1_1_from_slot_b(&w, &img, &config);
    let b_before = part_sha(&img, "hup-root-b");
    let esp_b = esp_files(&img, "hup/b");
    let before = data_listing(&img);

    let (report, data, data_mount) = run_staged(&w, &img, &config);
    let report = report.unwrap().expect("something was staged");
    // After the copy, a runs 1.1.0 and b is the spare that gets 2.0.0.
    assert_eq!(report.target, Slot::B);
    let state = data.load_state().unwrap();
    let m = state.layout_migration.clone().unwrap();
    assert!(m.normalized);
    let phases: Vec<&str> = m.timings_ms.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(phases, ["normalize", "backup", "table", "restore"]);
    drop(data_mount);

    assert_eq!(
        crate::support::image::range_sha(&img, (65 << 20, 128 << 20)),
        b_before,
        "slot a does not hold slot b's system"
    );
    assert_eq!(esp_files(&img, "hup/a"), esp_b, "slot a's boot files");
    let st = gpt.state().unwrap();
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Good);
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Trying);
    assert_eq!(user_lines(&data_listing(&img)), user_lines(&before));
    let os = with_ext4(&img, "hup-root-a", |root| {
        std::fs::read_to_string(root.join("etc/os-release")).unwrap()
    });
    assert!(os.contains("VERSION_ID=1.1.0"), "{os}");
}

#[test]
fn with_systemd_boot_the_copied_slot_gets_the_boot_entry_of_the_running_one() {
    let w = World::new();
    let bundle = layout_bundle(&w, 192, &[]);
    let (img, config) = v1_with_staged_on(&w, &bundle, "systemd-boot");
    let sd = run_1_1_from_slot_b(&w, &img, &config);
    assert_eq!(sd.state().unwrap().slot(Slot::A).status, SlotStatus::Good);
    let esp_b = esp_files(&img, "hup/b");

    let (report, data, data_mount) = run_staged(&w, &img, &config);
    assert_eq!(report.unwrap().unwrap().target, Slot::B);
    assert!(
        data.load_state()
            .unwrap()
            .layout_migration
            .unwrap()
            .normalized
    );
    drop(data_mount);

    // Slot a boots what slot b ran: its files and an entry with slot b's command line.
    assert_eq!(esp_files(&img, "hup/a"), esp_b, "slot a's boot files");
    let st = sd.state().unwrap();
    assert_eq!(st.slot(Slot::A).status, SlotStatus::Good);
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Trying);
    let entries =
        hup::boot::systemd_boot::SystemdBootBackend::with_labels(&img, config.labels.clone())
            .entry_files()
            .unwrap();
    let a_entry = entries
        .iter()
        .find(|e| e.starts_with("hup-a"))
        .unwrap_or_else(|| panic!("no entry for slot a in {entries:?}"));
    let d = Disk::open_read_only(&img).unwrap();
    let esp = hup::disk::Esp::open(d.open_partition("hup-boot").unwrap()).unwrap();
    let text =
        String::from_utf8(esp.read_file(&format!("loader/entries/{a_entry}")).unwrap()).unwrap();
    assert!(
        text.contains("/hup/a/") && text.contains("console=ttyS0"),
        "{a_entry}:\n{text}"
    );
}

/// Makes slot b run 1.1.0, committed (applied on the host): slot a, the one that keeps its
/// start, is then not the running one. Returns the device's boot backend.
fn run_1_1_from_slot_b(w: &World, img: &Path, config: &SystemConfig) -> Box<dyn boot::BootBackend> {
    crate::support::hup_ok(&[
        "apply",
        "--disk",
        p(img),
        "--bundle",
        p(&w.bundle("1.1.0")),
        "--key",
        p(&w.pubkey),
    ]);
    let backend = boot::open(config.boot_backend, img, &config.labels);
    backend.mark_good(Slot::B).unwrap();
    backend
}

/// Name and content of each file in `dir` on the boot partition.
fn esp_files(img: &Path, dir: &str) -> Vec<(String, Vec<u8>)> {
    let d = Disk::open_read_only(img).unwrap();
    let esp = hup::disk::Esp::open(d.open_partition("hup-boot").unwrap()).unwrap();
    let mut out: Vec<_> = esp
        .list(dir)
        .unwrap()
        .into_iter()
        .map(|e| {
            let bytes = esp.read_file(&format!("{dir}/{}", e.name)).unwrap();
            (e.name, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no files in {dir}");
    out
}
