//! A wrong partition table never costs data: tables whose entries overlap, leave the usable
//! range, run backwards or overflow byte arithmetic are refused before any write, and
//! `hup status` warns about them. Each table here is whole (every CRC valid): only its
//! content is wrong. The apply cases hash the whole image before and after.

use std::path::Path;

use crate::support::gpt_edit::{self, Copies};
use crate::support::image::{World, file_sha, part, range_sha};
use crate::support::{hup, hup_err, hup_ok, p};
use serde_json::Value;

const SS: u64 = 512;

/// What must not change when hup refuses: the file's size and content, and the data
/// partition's bytes (named separately for a clearer failure).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    size: u64,
    data: String,
    whole: String,
}

fn snapshot(img: &Path, data: (u64, u64)) -> Snapshot {
    Snapshot {
        size: std::fs::metadata(img).unwrap().len(),
        data: range_sha(img, data),
        whole: file_sha(img),
    }
}

/// Provisions 1.0.0 with `backend`, lets `edit` break the table, applies 2.0.0: refused in
/// one line that contains each of `expect`, and the image is unchanged.
fn apply_refused(backend: &str, edit: impl Fn(&Path), expect: &[&str]) {
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", backend, &[]);
    let bundle = w.bundle("2.0.0");
    let data = part(&img, "hup-data");
    edit(&img);
    let before = snapshot(&img, data);
    let err = hup_err(&w.apply_args(&img, &bundle));
    for e in expect {
        assert!(err.contains(e), "{e:?} not in: {err}");
    }
    assert_eq!(snapshot(&img, data), before, "the image changed");
    // The data partition still holds its filesystem.
    let (start, len) = data;
    let f = std::fs::File::open(&img).unwrap();
    let mut magic = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut magic, start + 1080).unwrap();
    assert_eq!(magic, [0x53, 0xEF], "ext4 magic of hup-data ({len} bytes)");
}

#[test]
fn root_b_overlapping_data_is_refused_and_nothing_is_written() {
    apply_refused(
        "gpt",
        |img| {
            let (first, _) = gpt_edit::lbas(img, SS, "hup-root-b");
            let (data_first, _) = gpt_edit::lbas(img, SS, "hup-data");
            gpt_edit::set_lbas(
                img,
                SS,
                Copies::Both,
                "hup-root-b",
                first,
                data_first + 8191,
            );
        },
        &["hup-root-b", "hup-data", "overlap"],
    );
}

#[test]
fn root_b_past_the_end_of_the_disk_with_systemd_boot_is_refused() {
    apply_refused(
        "systemd-boot",
        |img| {
            let (first, _) = gpt_edit::lbas(img, SS, "hup-root-b");
            let sectors = std::fs::metadata(img).unwrap().len() / SS;
            gpt_edit::set_lbas(
                img,
                SS,
                Copies::Both,
                "hup-root-b",
                first,
                sectors + 100_000,
            );
        },
        &["hup-root-b", "usable"],
    );
}

#[test]
fn a_bad_primary_copy_is_refused_even_with_a_good_backup() {
    // The backup still describes the old layout; hup does not guess which copy tells
    // where the data is, and does not "repair" one from the other.
    apply_refused(
        "gpt",
        |img| {
            let (first, _) = gpt_edit::lbas(img, SS, "hup-root-b");
            let (data_first, _) = gpt_edit::lbas(img, SS, "hup-data");
            gpt_edit::set_lbas(
                img,
                SS,
                Copies::PrimaryOnly,
                "hup-root-b",
                first,
                data_first + 8191,
            );
        },
        &["primary", "hup-root-b", "hup-data"],
    );
}

#[test]
fn huge_lbas_are_a_clean_error_not_a_panic() {
    apply_refused(
        "gpt",
        |img| {
            gpt_edit::set_lbas(
                img,
                SS,
                Copies::Both,
                "hup-root-b",
                1 << 62,
                (1 << 62) + 100,
            )
        },
        &["hup-root-b"],
    );
}

#[test]
fn labels_naming_the_data_partition_as_a_slot_are_refused() {
    // Every entry is fine, but system.json names the data partition as slot b: preflight
    // refuses a target that is (or overlaps) another hup partition.
    let w = World::new();
    let img = w.provision("disk.img", "1.0.0", "gpt", &[]);
    let bundle = w.bundle("2.0.0");
    let data = part(&img, "hup-data");
    let cfg_path = format!("{}.data/system.json", p(&img));
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["labels"] = serde_json::json!({
        "boot": "hup-boot", "root_a": "hup-root-a", "root_b": "hup-data", "data": "hup-data"
    });
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let before = snapshot(&img, data);
    // Preflight logs its start on stderr: the error is the one last line.
    let o = hup(&w.apply_args(&img, &bundle));
    assert!(!o.status.success(), "apply succeeded");
    let stderr = String::from_utf8(o.stderr).unwrap();
    let err = stderr.lines().last().unwrap_or_default();
    assert!(err.starts_with("hup: error: step preflight: "), "{stderr}");
    assert_eq!(stderr.matches("error").count(), 1, "{stderr}");
    assert!(err.contains("hup-data"), "{err}");
    assert!(err.contains("data partition"), "{err}");
    assert_eq!(snapshot(&img, data), before, "the image changed");
}

/// `hup status --disk IMG --json` on a table broken by `edit`: exit 0, the table is reported
/// with problems naming `expect`, and the boot state is not read from it.
fn status_warns(edit: impl Fn(&Path), expect: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let img = crate::support::disk::hup_image(dir.path(), SS);
    let before = hup_ok(&["status", "--json", "--disk", p(&img)]);
    let before: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["partition_table"]["problems"], serde_json::json!([]));
    assert_eq!(before["partition_table"]["primary_ok"], true);
    edit(&img);
    let size = std::fs::metadata(&img).unwrap().len();
    let sha = file_sha(&img);
    let o = hup(&["status", "--json", "--disk", p(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = st["partition_table"]["problems"]
        .as_array()
        .unwrap()
        .clone();
    let all = serde_json::to_string(&problems).unwrap();
    for e in expect {
        assert!(all.contains(e), "{e:?} not in {all}");
    }
    assert!(st["boot"].is_null(), "{st}");
    assert!(
        st["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("partition table")),
        "{st}"
    );
    // The text form says it too, as a warning line.
    let text = String::from_utf8(hup(&["status", "--disk", p(&img)]).stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning:") && l.contains("partition table of")),
        "{text}"
    );
    // Nothing was written by looking.
    assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
    assert_eq!(file_sha(&img), sha);
    // And the disk layer refuses the disk, for writing and for reading partitions.
    let err = format!("{:#}", hup::disk::Disk::open(&img).unwrap_err());
    assert!(err.contains("invalid partition table"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    st
}

#[test]
fn status_warns_about_an_entry_whose_first_lba_is_after_its_last() {
    status_warns(
        |img| {
            let (first, last) = gpt_edit::lbas(img, SS, "hup-root-b");
            gpt_edit::set_lbas(img, SS, Copies::Both, "hup-root-b", last, first);
        },
        &["hup-root-b", "after its last"],
    );
}

#[test]
fn status_warns_about_an_entry_outside_the_usable_range() {
    let st = status_warns(
        |img| {
            let (_, last) = gpt_edit::lbas(img, SS, "hup-boot");
            // over the primary entry array
            gpt_edit::set_lbas(img, SS, Copies::Both, "hup-boot", 2, last);
        },
        &["hup-boot", "usable range"],
    );
    assert_eq!(st["partition_table"]["primary_ok"], false);
    assert_eq!(st["partition_table"]["backup_ok"], false);
}

#[test]
fn status_warns_about_overlapping_entries() {
    status_warns(
        |img| {
            let (first, _) = gpt_edit::lbas(img, SS, "hup-root-a");
            let (b_first, _) = gpt_edit::lbas(img, SS, "hup-root-b");
            gpt_edit::set_lbas(img, SS, Copies::Both, "hup-root-a", first, b_first + 10);
        },
        &["hup-root-a", "hup-root-b", "overlap"],
    );
}

#[test]
fn status_warns_about_huge_lbas_without_panicking() {
    status_warns(
        |img| gpt_edit::set_lbas(img, SS, Copies::Both, "hup-data", u64::MAX - 10, u64::MAX),
        &["hup-data", "usable range"],
    );
}

#[test]
fn status_warns_about_a_bad_primary_copy_only() {
    let st = status_warns(
        |img| {
            let (first, _) = gpt_edit::lbas(img, SS, "hup-root-a");
            let (b_first, _) = gpt_edit::lbas(img, SS, "hup-root-b");
            gpt_edit::set_lbas(
                img,
                SS,
                Copies::PrimaryOnly,
                "hup-root-a",
                first,
                b_first + 10,
            );
        },
        &["primary GPT", "hup-root-a", "overlap"],
    );
    assert_eq!(st["partition_table"]["primary_ok"], false);
    assert_eq!(st["partition_table"]["backup_ok"], true);
}

/// The ext4 writer gets its range from the disk and never grows a disk image: when the
/// image is shorter than the partition (here it shrank after the table was read), format
/// refuses and the file keeps its size. (Before, the writer extended the file to the end of
/// whatever range it was given.) A disk opened read-only gives no destination at all.
#[test]
fn the_ext4_writer_never_extends_a_disk_image() {
    use hup::disk::Disk;
    use hup::ext4::{Dest, MkfsOptions};
    let dir = tempfile::tempdir().unwrap();
    let img = crate::support::disk::hup_image(dir.path(), SS);
    let ro = Disk::open_read_only(&img).unwrap();
    let err = format!("{:#}", Dest::partition(&ro, "hup-data").unwrap_err());
    assert!(err.contains("read-only"), "{err}");

    let d = Disk::open(&img).unwrap();
    let dest = Dest::partition(&d, "hup-data").unwrap();
    let part = d.partition("hup-data").unwrap();
    assert_eq!((dest.offset(), dest.size()), (part.start, part.len));
    let short = part.start + part.len / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(short)
        .unwrap();
    let err = format!(
        "{:#}",
        hup::ext4::format(&dest, &MkfsOptions::default()).unwrap_err()
    );
    assert!(err.contains(&format!("has {short} bytes")), "{err}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), short);
}
