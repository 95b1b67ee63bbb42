//! Helpers for the stage_* and status_* tests: a device fixture (keys, system.json, a GPT
//! disk image, state.json, bundles made with `hup pack`), and the HTTP/1.1 test server
//! ([`super::server`]: Range requests, ETag/If-Range, a cut-off switch, throttling,
//! optional TLS).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(unused_imports)]
pub use super::server::{Pki, Server, Shared};

use super::bundle::BundleBuilder;
use super::runner::{Hup, ok};
use hup::boot::BootBackend;
use hup::fsutil::DataDir;
use hup::model::slot::Slot;
use hup::model::state::State;
use sha2::Digest;

pub const MIB: u64 = 1 << 20;

/// Runs hup with `args` on the test device (booted slot a, fast retries).
pub fn hup(args: &[&str]) -> Output {
    hup_env(args, &[])
}

pub fn hup_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Hup::on_device("a").args(args).envs(env).run()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Deterministic incompressible bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A device: keys, system.json, a GPT disk image with a FAT boot partition, state.json
/// saying slot a runs 1.0.0 (and is marked good).
pub struct Device {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub disk: PathBuf,
    pub key: PathBuf,
    /// A key that is not in the device's keys directory.
    pub other_key: PathBuf,
}

pub struct BundleSpec<'a> {
    pub version: &'a str,
    pub compatible: &'a str,
    pub min_from: Option<&'a str>,
    /// Incompressible bytes in the rootfs.
    pub noise: usize,
    /// Zero bytes in the rootfs (to make it large but cheap).
    pub zeros: u64,
    pub other_key: bool,
}

impl Default for BundleSpec<'_> {
    fn default() -> Self {
        BundleSpec {
            version: "2.0.0",
            compatible: "qemu-x86_64",
            min_from: None,
            noise: 200_000,
            zeros: 0,
            other_key: false,
        }
    }
}

impl Device {
    pub fn new() -> Device {
        Device::with_data(None)
    }

    /// `data`: hup's data directory somewhere else (a small mounted filesystem).
    pub fn with_data(data: Option<PathBuf>) -> Device {
        Device::with(data, 16 * MIB)
    }

    /// Also choose the root slots' size (the disk image is sparse).
    pub fn with(data: Option<PathBuf>, root: u64) -> Device {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (key, public) = super::keygen(&dir, "release");
        let (other_key, _) = super::keygen(&dir, "other");
        std::fs::copy(&public, keys.join("release.pub")).unwrap();
        let config = dir.join("system.json");
        let cfg = serde_json::json!({
            "compatible": "qemu-x86_64",
            "keys_dir": keys,
            "data_mount": dir.join("data"),
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let disk = dir.join("disk.img");
        let specs = hup::disk::hup_layout(8 * MIB, root, None);
        let d = hup::disk::create_layout(&disk, 512, 2 * root + 32 * MIB, &specs).unwrap();
        hup::disk::format_esp(d.open_partition("hup-boot").unwrap(), "HUP-BOOT", 512).unwrap();
        drop(d);
        hup::boot::gpt::GptBackend::new(&disk)
            .mark_good(Slot::A)
            .unwrap();
        let data = data.unwrap_or_else(|| dir.join("data/hup"));
        let dd = DataDir::new(&data);
        dd.create().unwrap();
        dd.save_state(&State::new(Slot::A, "1.0.0", 1_700_000_000))
            .unwrap();
        Device {
            _tmp: tmp,
            key,
            other_key,
            dir,
            config,
            data,
            disk,
        }
    }

    /// Packs a bundle (`hup pack --level 1`) and returns its bytes.
    pub fn bundle(&self, spec: &BundleSpec) -> Vec<u8> {
        let root = self.dir.join(format!("rootfs-{}", spec.version));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            format!("VERSION_ID={}\n", spec.version),
        )
        .unwrap();
        std::fs::write(
            root.join("noise.bin"),
            noise(spec.noise, spec.noise as u64 + 7),
        )
        .unwrap();
        if spec.zeros > 0 {
            let f = std::fs::File::create(root.join("zeros.bin")).unwrap();
            f.set_len(spec.zeros).unwrap();
        }
        let boot = self.dir.join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz"), vec![7u8; 5000]).unwrap();
        let out = self.dir.join("out.hup");
        let key = if spec.other_key {
            &self.other_key
        } else {
            &self.key
        };
        let mut b = BundleBuilder::new(&root, spec.version, key)
            .boot(&boot)
            .compatible(spec.compatible)
            .level(1);
        if let Some(m) = spec.min_from {
            b = b.min_from_version(m);
        }
        let _ = std::fs::remove_file(&out);
        b.pack(&out);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::read(&out).unwrap()
    }

    /// Writes bundle bytes to a file in the fixture directory.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let f = self.dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        f
    }

    fn device_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            p(&self.config).into(),
            "--data-dir".into(),
            p(&self.data).into(),
            "--disk".into(),
            p(&self.disk).into(),
        ]
    }

    /// `hup stage SOURCE EXTRA... --config --data-dir --disk`.
    pub fn stage(&self, source: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["stage".into(), source.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.device_args());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        hup(&refs)
    }

    /// [`Device::stage`] started in the background (stderr piped).
    pub fn stage_spawn(&self, source: &str, extra: &[&str]) -> std::process::Child {
        Hup::on_device("a")
            .arg("stage")
            .arg(source)
            .args(extra)
            .args(self.device_args())
            .spawn()
    }

    /// `hup CMD EXTRA... --config --data-dir --disk` (status, mark-good, mark-bad).
    pub fn cmd(&self, cmd: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args: Vec<String> = vec![cmd.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(self.device_args());
        if cmd == "cancel" {
            args.truncate(args.len() - 2); // cancel takes no --disk
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        hup_env(&refs, env)
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&ok(&self.cmd("status", &["--json"], &[]))).unwrap()
    }

    pub fn state(&self) -> State {
        DataDir::new(&self.data).load_state().unwrap()
    }

    pub fn staged_file(&self) -> PathBuf {
        self.data.join("staged/bundle.hup")
    }

    /// Asserts that exactly `bundle` is staged (file, state.json record) and that nothing is
    /// left in staging/ unless `partial` is allowed.
    pub fn assert_staged(&self, bundle: &[u8], version: &str) {
        let st = self.state().staged.expect("something is staged");
        assert_eq!(st.version, version);
        assert_eq!(st.sha256, sha256_hex(bundle));
        assert_eq!(st.size, bundle.len() as u64);
        assert_eq!(st.file, "bundle.hup");
        let on_disk = std::fs::read(self.staged_file()).unwrap();
        assert!(on_disk == bundle, "the staged file differs from the bundle");
    }

    /// Files in staging/.
    pub fn staging(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.data.join("staging"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A small ext4 filesystem mounted through a loop device; unmounted on drop.
pub struct SmallFs {
    pub mnt: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallFs {
    pub fn new(size: u64) -> SmallFs {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        let run = |cmd: &str, args: &[&str]| {
            let o = Command::new(cmd).args(args).output().unwrap();
            assert!(
                o.status.success(),
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run("mkfs.ext4", &["-q", "-F", "-m", "0", p(&img)]);
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run("mount", &["-o", "loop", p(&img), p(&mnt)]);
        SmallFs { mnt, _tmp: tmp }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}
