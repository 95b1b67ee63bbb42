//! Inputs the fuzz targets (fuzz/, docs/fuzzing.md) found, run through the same code path
//! as their target: each must now end in a clean result (an error, or a valid output).
//! `fuzz/regressions/TARGET/` holds the inputs of fixed findings; every file there runs.
//! Findings whose fix is not in yet wait in `fuzz/regressions/unfixed/` (README there).

use std::path::{Path, PathBuf};

use crate::support::ext4::assert_fsck_clean;

/// The regression inputs of `target`, at least one.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

/// Runs `check` on every input of `target` (printing each result) and fails naming every
/// input that panicked.
fn run_all(target: &str, check: fn(&[u8]) -> anyhow::Result<()>) {
    let mut failed = Vec::new();
    for (path, input) in inputs(target) {
        match std::panic::catch_unwind(|| check(&input)) {
            Ok(r) => eprintln!("{}: {:?}", path.display(), r.err()),
            Err(_) => failed.push(path.display().to_string()),
        }
    }
    assert!(failed.is_empty(), "not handled cleanly: {failed:?}");
}

/// rootfs_ext4: the tar stream into a freshly formatted 16 MiB filesystem, as an apply
/// writes a slot. When populate succeeds, the filesystem must be valid.
fn rootfs_ext4(input: &[u8]) -> anyhow::Result<()> {
    const SIZE: u64 = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("slot.img");
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    let dest = hup::ext4::Dest::image(&img, SIZE).unwrap();
    hup::ext4::format(&dest, &hup::ext4::MkfsOptions::default()).unwrap();
    let r = hup::ext4::populate(&dest, std::io::Cursor::new(input.to_vec()));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), SIZE);
    if r.is_ok() {
        assert_fsck_clean(&img);
    }
    r.map(|_| ())
}

#[test]
fn rootfs_ext4_regressions() {
    run_all("rootfs_ext4", rootfs_ext4);
}

/// gpt: a disk image opened read-only; every partition hup reports lies inside the disk
/// and overlaps no other (the inputs are stored with the CRCs the target recomputed).
fn gpt(input: &[u8]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, input).unwrap();
    let disk = hup::disk::Disk::open_read_only(&img)?;
    let parts = disk.partitions();
    for (i, p) in parts.iter().enumerate() {
        let end = p.start.checked_add(p.len);
        assert!(
            end.is_some_and(|e| e <= disk.size()),
            "{p:?} is outside the disk"
        );
        for q in &parts[i + 1..] {
            assert!(!p.overlaps(q), "{p:?} overlaps {q:?}");
        }
    }
    Ok(())
}

#[test]
fn gpt_regressions() {
    run_all("gpt", gpt);
}
