use std::os::unix::fs::MetadataExt;

use super::*;
use crate::boot::ubootenv::UbootEnvError;

fn dev(line: usize, device: &str, offset: i64, size: usize) -> EnvDevice {
    EnvDevice {
        line,
        device: device.into(),
        offset,
        size,
        sector_size: None,
        sectors: None,
    }
}

#[test]
fn numbers_are_read_like_libubootenv() {
    let c = FwEnvConfig::parse(
        "# comment\n\
         \n\
         /boot/uboot.env 0x0 4000 1000 2 # sizes are hex\n\
         /dev/mmcblk0\t010\t0x4000\n",
    )
    .unwrap();
    assert!(c.is_redundant());
    let mut want = dev(3, "/boot/uboot.env", 0, 0x4000);
    want.sector_size = Some(0x1000);
    want.sectors = Some(2);
    assert_eq!(c.copies[0], want);
    // OFFSET is C's %lli: a leading 0 is octal.
    assert_eq!(c.copies[1], dev(4, "/dev/mmcblk0", 8, 0x4000));
    assert_eq!(c.size(), 0x4000);
    let c = FwEnvConfig::parse("/dev/mmcblk0 -0x8000 0x4000\n/dev/mmcblk0 4194304 0x4000").unwrap();
    assert_eq!(
        (c.copies[0].offset, c.copies[1].offset),
        (-0x8000, 4_194_304)
    );
}

#[test]
fn short_lines_are_skipped_and_a_third_copy_ignored() {
    let c = FwEnvConfig::parse(
        "/a.env\n/b.env 0\n  # indented comment\n/c.env 0 100\n/d.env 0 100\n/e.env 0 100\n",
    )
    .unwrap();
    let names: Vec<_> = c.copies.iter().map(|d| d.device.clone()).collect();
    assert_eq!(names, [PathBuf::from("/c.env"), PathBuf::from("/d.env")]);
    assert!(!FwEnvConfig::parse("/c.env 0 100").unwrap().is_redundant());
}

#[test]
fn bad_configs_are_refused_with_one_line() {
    for (text, want) in [
        (
            "# nothing\n\n",
            "fw_env.config names no environment (no line DEVICE OFFSET SIZE)",
        ),
        ("/a 0 0\n", "fw_env.config line 1: the size is 0"),
        (
            "/a 0 4000\n/b 0 2000\n",
            "fw_env.config: the two copies differ in size (0x4000 and 0x2000 bytes)",
        ),
        (
            "/dev/mtd1 0 4000\n",
            "fw_env.config line 1: /dev/mtd1 is MTD or UBI flash, which hup does not write",
        ),
        (
            "/a 0 0x4000k\n",
            "fw_env.config line 1: SIZE \"0x4000k\" is not a number",
        ),
        (
            "/a 08 4000\n",
            "fw_env.config line 1: OFFSET \"08\" is not a number",
        ),
        (
            "uboot.env 0 4000\n",
            "fw_env.config line 1: the device path \"uboot.env\" is not absolute",
        ),
    ] {
        assert_eq!(FwEnvConfig::parse(text).unwrap_err().to_string(), want);
    }
}

#[test]
fn paths_under_the_boot_mount_are_files_on_the_boot_partition() {
    let m = Some(Path::new("/boot/firmware/"));
    let fat = |p: &str| Storage::Fat { path: p.into() };
    let raw = |p: &str, o| Storage::Path {
        path: p.into(),
        offset: o,
    };
    for (device, want) in [
        ("/boot/firmware/uboot.env", fat("/uboot.env")),
        (
            "/boot/firmware/./env/uboot-redund.env",
            fat("/env/uboot-redund.env"),
        ),
        ("/boot/firmware", raw("/boot/firmware", 0)),
        (
            "/boot/firmware2/uboot.env",
            raw("/boot/firmware2/uboot.env", 0),
        ),
        (
            "/boot/firmware/../uboot.env",
            raw("/boot/firmware/../uboot.env", 0),
        ),
    ] {
        assert_eq!(
            Storage::resolve(&dev(1, device, 0, 16), m).unwrap(),
            want,
            "{device}"
        );
    }
    // Without a boot mount every path is used as named.
    assert_eq!(
        Storage::resolve(&dev(1, "/boot/firmware/uboot.env", 0, 16), None).unwrap(),
        raw("/boot/firmware/uboot.env", 0)
    );
    let e = Storage::resolve(&dev(2, "/boot/firmware/uboot.env", 0x100, 16), m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "fw_env.config line 2: /boot/firmware/uboot.env is a file on the boot partition; its offset must be 0, not 0x100"
    );
}

fn store(text: &str) -> EnvStore {
    EnvStore::new(&FwEnvConfig::parse(text).unwrap(), None).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> UbootEnv {
    let mut e = UbootEnv::new();
    for (n, v) in pairs {
        e.set(n, v).unwrap();
    }
    e
}

#[test]
fn a_single_whole_file_is_replaced_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uboot.env");
    let s = store(&format!("{} 0 100", f.display()));
    let e = s.read(None).unwrap_err();
    assert!(
        format!("{e:#}").starts_with("no U-Boot environment at "),
        "{e:#}"
    );
    s.create(None, &env(&[("a", "1")])).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 0x100);
    let ino = fs::metadata(&f).unwrap().ino();
    s.update(None, |e| Ok(e.set("b", "2")?)).unwrap();
    let i = s.read(None).unwrap();
    assert_eq!(i.env, env(&[("a", "1"), ("b", "2")]));
    assert_ne!(
        fs::metadata(&f).unwrap().ino(),
        ino,
        "written through a rename"
    );
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file is left");
    // Nothing changed: nothing written.
    let ino = fs::metadata(&f).unwrap().ino();
    s.update(None, |e| Ok(e.set("b", "2")?)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().ino(), ino);
}

#[test]
fn a_copy_inside_a_bigger_file_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    fs::write(&img, vec![0x5A; 0x3000]).unwrap();
    let s = store(&format!("{} 0x1000 0x400\n{0} 0x1400 0x400", img.display()));
    // Neither copy is valid yet.
    let e = s.read(None).unwrap_err();
    assert_eq!(
        e.downcast_ref::<UbootEnvError>(),
        Some(&UbootEnvError::BothBad)
    );
    let ino = fs::metadata(&img).unwrap().ino();
    s.create(None, &env(&[("BOOT_ORDER", "A B")])).unwrap();
    for n in 0..3 {
        s.update(None, |e| Ok(e.set("N", &n.to_string())?)).unwrap();
        let i = s.read(None).unwrap();
        assert_eq!(
            (i.current, i.env.get("N")),
            ((n + 1) % 2, Some(&*n.to_string()))
        );
    }
    let bytes = fs::read(&img).unwrap();
    assert_eq!(bytes.len(), 0x3000);
    assert!(
        bytes[..0x1000]
            .iter()
            .chain(&bytes[0x1800..])
            .all(|&b| b == 0x5A)
    );
    assert_eq!(fs::metadata(&img).unwrap().ino(), ino);
}

#[test]
fn a_missing_redundant_copy_is_bad_and_made_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("uboot.env"),
        dir.path().join("uboot-redund.env"),
    );
    let s = store(&format!("{} 0 100\n{} 0 100", a.display(), b.display()));
    s.create(None, &env(&[("x", "1")])).unwrap();
    fs::remove_file(&b).unwrap();
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.env.get("x")), (0, Some("1")));
    s.update(None, |e| Ok(e.set("x", "2")?)).unwrap();
    assert_eq!(fs::metadata(&b).unwrap().len(), 0x100);
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.env.get("x")), (1, Some("2")));
}

#[test]
fn a_fat_copy_without_the_boot_partition_is_an_error() {
    let c = FwEnvConfig::parse("/boot/uboot.env 0 4000").unwrap();
    let s = EnvStore::new(&c, Some(Path::new("/boot"))).unwrap();
    assert_eq!(
        s.copies(),
        [Storage::Fat {
            path: "/uboot.env".into()
        }]
    );
    assert_eq!(
        s.read(None).unwrap_err().to_string(),
        "the U-Boot environment /uboot.env is on the boot partition, which is not open"
    );
}
