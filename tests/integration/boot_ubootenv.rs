//! boot: U-Boot's environment (`boot::ubootenv`) and its storage (`boot::fw_env_config`),
//! cross-checked in both directions with the real tools: `fw_printenv`/`fw_setenv -c CONFIG`
//! (Debian's libubootenv-tool) read what hup wrote and write what hup reads, and images made
//! by `mkenvimage` (u-boot-tools) read back. Storages: whole files, raw offsets in a disk
//! image, and files on the FAT boot partition of an image made by `hup provision` (copied
//! out and back with mtools for the tools). Power cuts: boot_ubootenv_power.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::disk::*;
use crate::support::image::World;
use hup::boot::fw_env_config::{EnvStore, FwEnvConfig, Storage};
use hup::boot::ubootenv::{UbootEnv, UbootEnvError};
use hup::disk::{Disk, Esp};

/// Bytes of one copy in these tests (a common board value).
pub const SIZE: usize = 0x4000;

/// A default-like environment, sorted as U-Boot and libubootenv write it; values with
/// spaces, `=` and `;`.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("arch", "arm"),
    ("baudrate", "115200"),
    ("boot_targets", "virtio0 scsi0 dhcp"),
    ("bootcmd", "run distro_bootcmd; echo failed"),
    ("bootdelay", "2"),
    ("fdt_addr", "0x40000000"),
    ("odd", "a=b=c"),
];

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes a `fw_env.config` in `dir` with `lines`; returns its path.
pub fn config(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// hup's store for the config at `path` (no boot mount).
pub fn store(path: &Path) -> EnvStore {
    EnvStore::new(&FwEnvConfig::load(path).unwrap(), None).unwrap()
}

/// `fw_printenv -c CONFIG`: (success, `name=value` lines).
pub fn fw_printenv(cfg: &Path) -> (bool, Vec<String>) {
    let out = Command::new("fw_printenv")
        .args(["-c", p(cfg)])
        .output()
        .expect("fw_printenv (libubootenv-tool) is installed by scripts/install-deps");
    let text = String::from_utf8_lossy(&out.stdout);
    // A debug build of libubootenv prints its choice first; keep the variables only.
    let vars = text
        .lines()
        .filter(|l| l.contains('=') && !l.starts_with("Environment "))
        .map(str::to_string)
        .collect();
    (out.status.success(), vars)
}

/// `fw_setenv -c CONFIG NAME VALUE` (no value: unset), which must succeed.
pub fn fw_setenv(cfg: &Path, name: &str, value: Option<&str>) {
    let mut c = Command::new("fw_setenv");
    c.args(["-c", p(cfg), name]);
    c.args(value);
    let out = c.output().unwrap();
    assert!(out.status.success(), "fw_setenv {name}: {out:?}");
}

pub fn lines(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(n, v)| format!("{n}={v}")).collect()
}

pub fn env(pairs: &[(&str, &str)]) -> UbootEnv {
    let mut e = UbootEnv::new();
    for (n, v) in pairs {
        e.set(n, v).unwrap();
    }
    e
}

/// What fw_printenv prints for the defaults after hup's RAUC-style changes.
fn changed() -> Vec<String> {
    let mut want = DEFAULTS.to_vec();
    want.retain(|(n, _)| *n != "bootdelay");
    want.extend([
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "0"),
        ("BOOT_ORDER", "B A"),
    ]);
    want.sort();
    lines(&want)
}

/// hup's change: the RAUC variables set, one default removed.
fn hup_change(s: &EnvStore, esp: Option<&Esp>) {
    s.update(esp, |e| {
        e.set("BOOT_ORDER", "B A")?;
        e.set("BOOT_A_LEFT", "3")?;
        e.set("BOOT_B_LEFT", "0")?;
        e.unset("bootdelay")?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn fw_printenv_reads_a_single_file_hup_wrote_and_hup_reads_fw_setenv() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uboot.env");
    // SIZE written without 0x: libubootenv reads it as hex, and so does hup.
    let cfg = config(dir.path(), "fw_env.config", &[format!("{} 0 4000", p(&f))]);
    let s = store(&cfg);
    s.create(None, &env(DEFAULTS)).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().len(), SIZE as u64);
    assert_eq!(fw_printenv(&cfg), (true, lines(DEFAULTS)));
    hup_change(&s, None);
    assert_eq!(fw_printenv(&cfg), (true, changed()));
    // fw_setenv's writes, read by hup.
    fw_setenv(&cfg, "BOOT_A_LEFT", Some("2"));
    fw_setenv(&cfg, "arch", None);
    fw_setenv(&cfg, "zz", Some("x y"));
    let i = s.read(None).unwrap();
    assert!(!i.is_redundant());
    assert_eq!(i.env.get("BOOT_A_LEFT"), Some("2"));
    assert_eq!(i.env.get("arch"), None);
    assert_eq!(i.env.get("zz"), Some("x y"));
    let got: Vec<String> = i
        .env
        .vars()
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    assert_eq!(got, fw_printenv(&cfg).1);
}

#[test]
fn redundant_files_alternate_between_hup_and_fw_setenv() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("uboot.env"),
        dir.path().join("uboot-redund.env"),
    );
    let cfg = config(
        dir.path(),
        "fw_env.config",
        &[
            format!("{} 0x0 0x4000", p(&a)),
            format!("{} 0x0 0x4000", p(&b)),
        ],
    );
    let s = store(&cfg);
    s.create(None, &env(DEFAULTS)).unwrap();
    assert_eq!(fw_printenv(&cfg), (true, lines(DEFAULTS)));
    hup_change(&s, None);
    assert_eq!(fw_printenv(&cfg), (true, changed()));
    let mut current = s.read(None).unwrap().current;
    assert_eq!(current, 1, "hup wrote the copy that was not in use");
    // Each writer takes the other copy with a higher flag; each reads the other's last write.
    for n in 0..4 {
        let v = (n + 5).to_string();
        fw_setenv(&cfg, "BOOT_B_LEFT", Some(&v));
        let i = s.read(None).unwrap();
        assert_eq!(
            i.current,
            1 - current,
            "round {n}: fw_setenv wrote the other copy"
        );
        assert_eq!(i.env.get("BOOT_B_LEFT"), Some(&*v));
        s.update(None, |e| Ok(e.set("BOOT_A_LEFT", &v)?)).unwrap();
        let i = s.read(None).unwrap();
        assert_eq!(i.current, current, "round {n}");
        let (ok, vars) = fw_printenv(&cfg);
        assert!(ok);
        assert!(vars.contains(&format!("BOOT_A_LEFT={v}")), "{vars:?}");
        assert!(vars.contains(&format!("BOOT_B_LEFT={v}")), "{vars:?}");
        current = i.current;
    }
    // The flags counted up through both tools: 1 + 2 per round + hup's first change.
    let flags = s.read(None).unwrap().flags.unwrap();
    assert_eq!(flags.iter().flatten().max(), Some(&10));
}

#[test]
fn raw_offsets_in_a_disk_image_are_read_and_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0xEE; 4 << 20]).unwrap();
    let cfg = config(
        dir.path(),
        "fw_env.config",
        &[
            format!("{} 0x200000 0x4000", p(&img)),
            // The same offset in decimal.
            format!("{} 2113536 0x4000", p(&img)),
        ],
    );
    let s = store(&cfg);
    s.create(None, &env(DEFAULTS)).unwrap();
    hup_change(&s, None);
    assert_eq!(fw_printenv(&cfg), (true, changed()));
    fw_setenv(&cfg, "BOOT_ORDER", Some("A B"));
    assert_eq!(s.read(None).unwrap().env.get("BOOT_ORDER"), Some("A B"));
    // Only the two copies changed.
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes.len(), 4 << 20);
    let (lo, hi) = (0x200000, 0x200000 + 2 * SIZE);
    assert!(bytes[..lo].iter().chain(&bytes[hi..]).all(|&b| b == 0xEE));
}

#[test]
fn mkenvimage_images_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("env.txt");
    // mkenvimage keeps its input's order.
    let unsorted = [("zeta", "1"), ("alpha", "two words"), ("mid", "x=y")];
    std::fs::write(&input, lines(&unsorted).join("\n") + "\n").unwrap();
    let single = dir.path().join("single.env");
    let zero_padded = dir.path().join("zero.env");
    let red = dir.path().join("red.env");
    for (out, extra) in [
        (&single, vec![]),
        (&zero_padded, vec!["-p", "0x00"]),
        (&red, vec!["-r"]),
    ] {
        let mut args = extra.clone();
        args.extend(["-s", "0x4000", "-o", p(out), p(&input)]);
        ok("mkenvimage", &args);
    }
    for f in [&single, &zero_padded] {
        let cfg = config(dir.path(), "single.config", &[format!("{} 0 0x4000", p(f))]);
        let i = store(&cfg).read(None).unwrap();
        assert_eq!(i.env, in_order(&unsorted), "{}", f.display());
    }
    // `-r` makes one copy with flag 1; the other copy is blank (zeros: a bad CRC).
    let blank = dir.path().join("blank.env");
    std::fs::write(&blank, vec![0; SIZE]).unwrap();
    let cfg = config(
        dir.path(),
        "red.config",
        &[
            format!("{} 0 0x4000", p(&blank)),
            format!("{} 0 0x4000", p(&red)),
        ],
    );
    let s = store(&cfg);
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.flags), (1, Some([None, Some(1)])));
    assert_eq!(i.env.get("mid"), Some("x=y"));
    // hup's next write goes to the blank copy, with flag 2; fw_printenv follows it.
    s.update(None, |e| Ok(e.set("BOOT_ORDER", "A B")?)).unwrap();
    let i = s.read(None).unwrap();
    assert_eq!((i.current, i.flags), (0, Some([Some(2), Some(1)])));
    let (good, vars) = fw_printenv(&cfg);
    assert!(good);
    assert!(vars.contains(&"BOOT_ORDER=A B".to_string()), "{vars:?}");
}

/// Flips a byte of the data area of the copy in `file` at `offset`.
fn corrupt(file: &Path, offset: usize) {
    let mut b = std::fs::read(file).unwrap();
    b[offset + 8] ^= 0xFF;
    std::fs::write(file, b).unwrap();
}

#[test]
fn a_bad_crc_falls_back_to_the_other_copy_and_in_both_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("uboot.env"),
        dir.path().join("uboot-redund.env"),
    );
    let cfg = config(
        dir.path(),
        "fw_env.config",
        &[format!("{} 0 4000", p(&a)), format!("{} 0 4000", p(&b))],
    );
    let s = store(&cfg);
    s.create(None, &env(&[("v", "old")])).unwrap();
    s.update(None, |e| Ok(e.set("v", "new")?)).unwrap();
    assert_eq!(s.read(None).unwrap().current, 1);
    // The newer copy is damaged: both hup and fw_printenv fall back to the older one.
    corrupt(&b, 0);
    assert_eq!(s.read(None).unwrap().env.get("v"), Some("old"));
    assert_eq!(fw_printenv(&cfg), (true, vec!["v=old".to_string()]));
    corrupt(&a, 0);
    let e = s.read(None).unwrap_err();
    assert_eq!(
        e.downcast_ref::<UbootEnvError>(),
        Some(&UbootEnvError::BothBad)
    );
    assert_eq!(
        format!("{e:#}"),
        format!(
            "U-Boot environment at {} and {}: both copies of the redundant U-Boot environment are bad (bad CRC or missing)",
            p(&a),
            p(&b)
        )
    );
    assert!(!fw_printenv(&cfg).0, "fw_printenv refuses it too");
    // A single copy with a bad CRC: one line naming the file.
    let cfg1 = config(dir.path(), "one.config", &[format!("{} 0 4000", p(&a))]);
    let e = store(&cfg1).read(None).unwrap_err();
    assert!(matches!(
        e.downcast_ref::<UbootEnvError>(),
        Some(UbootEnvError::BadCrc { .. })
    ));
    assert!(
        format!("{e:#}").starts_with(&format!(
            "U-Boot environment at {}: U-Boot environment has a bad CRC (stored 0x",
            p(&a)
        )),
        "{e:#}"
    );
}

/// The boot partition of `img`.
pub fn boot_esp(img: &Path) -> Esp {
    Esp::open(Disk::open(img).unwrap().open_partition("hup-boot").unwrap()).unwrap()
}

/// Copies `name` out of the boot partition of `img` into `dir`.
pub fn fat_out(img: &Path, dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    let _ = std::fs::remove_file(&dest);
    mcopy_out(img, esp_offset(img), &format!("/{name}"), &dest);
    dest
}

#[test]
fn files_on_the_boot_partition_of_a_provisioned_image() {
    let w = World::new();
    let img = w.provision("disk.img", "1.0", "gpt", &[]);
    let dir = w.dir.join("env");
    std::fs::create_dir(&dir).unwrap();
    // The running OS's config: the boot partition mounted at /boot/firmware (as on Debian's
    // Raspberry Pi images); hup reaches the files through its FAT code on the disk.
    let device_cfg = FwEnvConfig::parse(
        "/boot/firmware/uboot.env 0x0 0x4000\n/boot/firmware/uboot-redund.env 0x0 0x4000\n",
    )
    .unwrap();
    let s = EnvStore::new(&device_cfg, Some(Path::new("/boot/firmware"))).unwrap();
    assert_eq!(
        s.copies(),
        [
            Storage::Fat {
                path: "/uboot.env".into()
            },
            Storage::Fat {
                path: "/uboot-redund.env".into()
            }
        ]
    );
    let esp = boot_esp(&img);
    s.create(Some(&esp), &env(DEFAULTS)).unwrap();
    hup_change(&s, Some(&esp));
    esp.close().unwrap();
    // The host's tools on the two files copied out.
    let (a, b) = (
        fat_out(&img, &dir, "uboot.env"),
        fat_out(&img, &dir, "uboot-redund.env"),
    );
    let cfg = config(
        &dir,
        "fw_env.config",
        &[format!("{} 0 4000", p(&a)), format!("{} 0 4000", p(&b))],
    );
    assert_eq!(fw_printenv(&cfg), (true, changed()));
    // fw_setenv writes the copy not in use; copied back, hup reads it.
    fw_setenv(&cfg, "BOOT_ORDER", Some("A B"));
    let spec = format!("{}@@{}", p(&img), esp_offset(&img));
    for f in [&a, &b] {
        ok("mcopy", &["-o", "-i", &spec, p(f), "::/"]);
    }
    let esp = boot_esp(&img);
    assert_eq!(
        s.read(Some(&esp)).unwrap().env.get("BOOT_ORDER"),
        Some("A B")
    );
    // And once more from hup, read by fw_printenv.
    s.update(Some(&esp), |e| Ok(e.set("BOOT_A_LEFT", "1")?))
        .unwrap();
    esp.close().unwrap();
    let (a, _) = (
        fat_out(&img, &dir, "uboot.env"),
        fat_out(&img, &dir, "uboot-redund.env"),
    );
    let (good, vars) = fw_printenv(&cfg);
    assert!(good);
    assert!(vars.contains(&"BOOT_A_LEFT=1".to_string()), "{vars:?}");
    assert!(vars.contains(&"BOOT_ORDER=A B".to_string()), "{vars:?}");
    assert!(vars.contains(&"odd=a=b=c".to_string()), "{vars:?}");
    assert_eq!(std::fs::metadata(&a).unwrap().len(), SIZE as u64);
    assert_fsck_fat_clean(&img, &dir);
}

/// An environment with `pairs` in their given order (not sorted as `set` inserts).
fn in_order(pairs: &[(&str, &str)]) -> UbootEnv {
    let mut data = Vec::new();
    for (n, v) in pairs {
        data.extend_from_slice(format!("{n}={v}\0").as_bytes());
    }
    data.push(0);
    UbootEnv::parse_data(&data).unwrap()
}

#[test]
fn writes_wait_for_libubootenvs_lock() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uboot.env");
    let cfg = config(dir.path(), "fw_env.config", &[format!("{} 0 4000", p(&f))]);
    let s = store(&cfg);
    s.create(None, &env(&[("v", "old")])).unwrap();
    // Hold the lock as fw_setenv does while it works.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(hup::boot::fw_env_config::LOCK_PATH)
        .unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusive).unwrap();
    let s2 = s.clone();
    let writer = std::thread::spawn(move || s2.update(None, |e| Ok(e.set("v", "new")?)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // (fw_printenv would wait for the lock too; hup's read takes none.)
    let v = s.read(None).unwrap().env.get("v").map(str::to_string);
    assert_eq!(v.as_deref(), Some("old"), "the write waited for the lock");
    assert!(!writer.is_finished());
    drop(held);
    writer.join().unwrap().unwrap();
    assert_eq!(fw_printenv(&cfg).1, ["v=new"]);
}

#[test]
fn a_block_device_with_offsets_from_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("emmc.img");
    std::fs::write(&img, vec![0x11; 8 << 20]).unwrap();
    let lo = Loop::attach(&img, 512);
    // Negative offsets count from the end of the block device (libubootenv's rule too).
    let cfg = config(
        dir.path(),
        "fw_env.config",
        &[
            format!("{} -0x8000 0x4000", p(&lo.dev)),
            format!("{} -0x4000 0x4000", p(&lo.dev)),
        ],
    );
    let s = store(&cfg);
    s.create(None, &env(DEFAULTS)).unwrap();
    hup_change(&s, None);
    assert_eq!(fw_printenv(&cfg), (true, changed()));
    fw_setenv(&cfg, "BOOT_ORDER", Some("A B"));
    assert_eq!(s.read(None).unwrap().env.get("BOOT_ORDER"), Some("A B"));
    drop(lo);
    let bytes = std::fs::read(&img).unwrap();
    let end = bytes.len() - 2 * SIZE;
    assert!(
        bytes[..end].iter().all(|&b| b == 0x11),
        "only the last 32 KiB changed"
    );
    // On a regular file a negative offset is refused, as libubootenv refuses it.
    let cfg = config(
        dir.path(),
        "file.config",
        &[format!("{} -0x4000 0x4000", p(&img))],
    );
    let e = store(&cfg).read(None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: a negative offset (-16384) needs a block device",
            p(&img)
        )
    );
}

/// The data area up to and including its end marker.
fn strings(file: &Path, header: usize) -> Vec<u8> {
    let b = std::fs::read(file).unwrap();
    let data = &b[header..];
    let end = data.windows(2).position(|w| w == [0, 0]).unwrap();
    data[..end + 2].to_vec()
}

#[test]
fn hup_writes_the_same_strings_as_fw_setenv() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("defaults.txt");
    std::fs::write(&input, lines(DEFAULTS).join("\n") + "\n").unwrap();
    let mut cfgs = Vec::new();
    for name in ["hup", "tool"] {
        let f = dir.path().join(format!("{name}.env"));
        ok("mkenvimage", &["-s", "0x4000", "-o", p(&f), p(&input)]);
        cfgs.push((
            f.clone(),
            config(
                dir.path(),
                &format!("{name}.config"),
                &[format!("{} 0 4000", p(&f))],
            ),
        ));
    }
    hup_change(&store(&cfgs[0].1), None);
    let tool = &cfgs[1].1;
    fw_setenv(tool, "BOOT_ORDER", Some("B A"));
    fw_setenv(tool, "BOOT_A_LEFT", Some("3"));
    fw_setenv(tool, "BOOT_B_LEFT", Some("0"));
    fw_setenv(tool, "bootdelay", None);
    assert_eq!(strings(&cfgs[0].0, 4), strings(&cfgs[1].0, 4));
}
