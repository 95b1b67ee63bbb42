//! Layout migrations that must not start: the backup does not fit, the data would not fit
//! the new data partition, the layout cannot be reached; nothing is written (whole-image
//! sha256). And data beyond the quick upper bound that fits once measured.

use std::path::Path;

use crate::support::image::{World, range_sha};
use crate::support::layout::*;
use hup::disk::Disk;
use hup::layout::{self, PlanError};
use hup::model::config::Labels;
use hup::model::slot::Slot;

/// A v1 image of 640 MiB with 64 MiB slots; `f` fills its data partition, where version
/// 2.0.0 is staged.
fn small_image(w: &World, name: &str, f: impl FnOnce(&Path)) -> std::path::PathBuf {
    let img = provision(w, name, "640M", "64M");
    let m = Mount::new(&img, "hup-data", false);
    f(m.path());
    stage(m.path(), &w.bundle("2.0.0"));
    drop(m);
    img
}

fn whole_sha(img: &Path) -> String {
    range_sha(img, (0, std::fs::metadata(img).unwrap().len()))
}

/// Runs the backup step with the data partition mounted read-only; returns the refusal.
fn refused_backup(img: &Path, plan: &layout::Plan) -> PlanError {
    let m = Mount::new(img, "hup-data", true);
    let disk = Disk::open(img).unwrap();
    let bundle = m.path().join("hup/staged/bundle.hup");
    let err = layout::backup(&disk, plan, m.path(), Some(&bundle)).unwrap_err();
    err.downcast_ref::<PlanError>()
        .unwrap_or_else(|| panic!("not a refusal: {err:#}"))
        .clone()
}

#[test]
fn too_much_data_for_the_backup_region_is_refused_before_any_write() {
    let w = World::new();
    let img = small_image(&w, "full.img", |d| fill(d, 80 << 20));
    let t = target(96);
    let plan = plan(&img, &t, Slot::A);
    assert_eq!((plan.region.start, plan.region.len), (129 * MIB, 64 * MIB));
    let sha = whole_sha(&img);

    let e = refused_backup(&img, &plan);
    let PlanError::BackupTooBig { needed, capacity } = e else {
        panic!("{e}");
    };
    assert_eq!(capacity, 64 * MIB);
    assert!(needed > 80 * MIB, "measured, not guessed: {needed}");
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    // The stage-time check says the same.
    let m = Mount::new(&img, "hup-data", true);
    let est = layout::estimate(m.path(), 0).unwrap();
    assert!(!est.exact && est.needed > capacity, "{est:?}");
    let src = hup::data::backup::Source::new(m.path()).unwrap();
    let err = plan.check_fit(&src, 0).unwrap().unwrap_err();
    assert!(matches!(err, PlanError::BackupTooBig { .. }), "{err}");
    drop(m);
    assert_eq!(whole_sha(&img), sha, "the image changed");
    let disk = Disk::open_read_only(&img).unwrap();
    assert_eq!(
        layout::resume_phase(&disk, &Labels::default()).unwrap(),
        None
    );
}

#[test]
fn compressible_data_beyond_the_bound_is_measured_then_migrated() {
    let w = World::new();
    let img = small_image(&w, "text.img", |d| {
        fill(d, 1 << 20);
        let line = "a line of a log file that compresses well, again and again\n";
        std::fs::write(
            d.join("blobs/log.txt"),
            line.repeat((120 << 20) / line.len()),
        )
        .unwrap();
    });

    // Slots of 200 MiB leave too little room for the data on the new data partition.
    let tight = plan(&img, &target(200), Slot::A);
    let sha = whole_sha(&img);
    let e = refused_backup(&img, &tight);
    assert!(matches!(e, PlanError::DataTooBig { .. }), "{e}");
    assert!(e.to_string().contains("new data partition"), "{e}");
    assert_eq!(whole_sha(&img), sha, "the image changed");

    let t = target(96);
    let plan = plan(&img, &t, Slot::A);
    {
        let m = Mount::new(&img, "hup-data", true);
        let est = layout::estimate(m.path(), 0).unwrap();
        assert!(
            est.needed > plan.region.len,
            "the quick bound does not fit: {est:?}"
        );
    }
    let b = before(&img, "hup-root-a");
    let rec = migrate(&img, &plan);
    assert!(rec.data.len < 16 * MIB, "{}", rec.data.len);
    check_after(&img, &b, &t);
}

#[test]
fn unreachable_layouts_are_refused_on_a_real_disk() {
    let w = World::new();
    let img = small_image(&w, "refuse.img", |d| fill(d, 1 << 20));
    let sha = whole_sha(&img);
    let disk = Disk::open_read_only(&img).unwrap();
    let labels = Labels::default();
    let refuse = |t: &hup::model::layout::TargetLayout| -> PlanError {
        layout::plan(&disk, t, &labels, Slot::A).unwrap_err()
    };

    assert!(matches!(
        refuse(&target(1024)),
        PlanError::DiskTooSmall { .. }
    ));
    let mut t = target(96);
    t.partitions[0].size = Some(128 * MIB);
    assert!(matches!(refuse(&t), PlanError::BootMoves { .. }));
    let mut t = target(64);
    t.partitions.swap(2, 3);
    t.partitions[2].size = Some(64 * MIB);
    t.partitions[3].size = None;
    let e = refuse(&t);
    assert!(
        e.to_string()
            .contains("the backup would be overwritten before the restore"),
        "{e}"
    );
    let mut t = target(96);
    t.partitions.insert(1, t.partitions[3].clone());
    t.partitions[1].label = "hup-state".into();
    t.partitions[1].size = Some(16 * MIB);
    assert!(matches!(refuse(&t), PlanError::ActiveSlotMoves { .. }));
    // The layout it has: nothing to do.
    assert_eq!(
        layout::plan(&disk, &target(64), &labels, Slot::A).unwrap(),
        None
    );
    drop(disk);
    assert_eq!(whole_sha(&img), sha);
}
