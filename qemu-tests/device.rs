//! A test device: a disk image made by `hup provision`, booted again and again.
//!
//! Each [`Device::boot`] is one power-on: the harness first publishes the test script
//! the guest OS fetches at `hup.test=URL` (one URL per device, its content replaced before
//! every boot), starts QEMU on the same disk, and waits until the guest powers off or
//! reboots (`-no-reboot` makes QEMU exit), or kills QEMU (a power cut). The serial log of
//! every boot is kept as `target/qemu-logs/<device>/<NN>-<label>.log`.
//!
//! The guest prints markers the assertions use (scripts/mk-test-os): `HUP-OS-UP`,
//! `HUP-MARK-GOOD rc=`, `HUP-STATUS <json>` (read as the typed [`Status`]); the parts of a
//! [`Script`] add `HUP-DATA-SUM`, `HUP-STAGE rc=` and `HUP-LOG|`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hup::device::status::Status;

use crate::aarch64;
use crate::artifacts::{self, run};
pub use crate::machine::Machine;
use crate::script::Script;
use crate::vm::{self, Vm, VmConfig};

/// Which boot backend the device is provisioned with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Direct kernel boot; hup's initramfs picks the root from the GPT attributes.
    Gpt,
    /// OVMF + systemd-boot; per-slot kernel, initramfs and entry on the ESP.
    SystemdBoot,
    /// OVMF + GRUB with hup's script; per-slot kernel, initramfs and snippet on the ESP,
    /// the state in the GRUB environment block.
    Grub,
    /// aarch64: U-Boot with hup's boot script; per-slot kernel, initramfs and command line
    /// on the boot partition, the state in U-Boot's environment files there
    /// ([`crate::aarch64`]).
    Uboot,
}

impl Backend {
    /// Booted through OVMF from the ESP (not a direct kernel boot).
    pub fn uefi(self) -> bool {
        matches!(self, Backend::SystemdBoot | Backend::Grub)
    }
}

/// What the guest prints once its OS is up (scripts/mk-test-os).
const OS_UP: &str = "HUP-OS-UP ";

/// A provisioned disk image and how to boot it.
pub struct Device {
    pub name: String,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub backend: Backend,
    vars: Option<PathBuf>,
    boots: u32,
    machine: Machine,
}

/// How one boot goes.
#[derive(Debug, Clone)]
pub struct BootOpts {
    /// Names the log file.
    pub label: String,
    /// The test script the OS runs this boot (None: one that powers off at once).
    pub script: Option<Script>,
    /// `hup.failpoint=NAME` (gpt backend only: the command line is the harness's).
    pub failpoint: Option<String>,
    /// Kill QEMU `delay` after the console printed `marker` (a power cut).
    pub kill: Option<(String, Duration)>,
    /// Hard limit for this boot.
    pub timeout: Duration,
}

impl BootOpts {
    pub fn new(label: &str) -> BootOpts {
        BootOpts {
            label: label.to_string(),
            script: None,
            failpoint: None,
            kill: None,
            timeout: Duration::from_secs(150),
        }
    }

    pub fn script(mut self, s: Script) -> BootOpts {
        self.script = Some(s);
        self
    }

    pub fn failpoint(mut self, f: &str) -> BootOpts {
        self.failpoint = Some(f.to_string());
        self
    }

    pub fn kill_after(mut self, marker: &str, delay: Duration) -> BootOpts {
        self.kill = Some((marker.to_string(), delay));
        self
    }
}

/// What one boot printed.
#[derive(Debug, Clone)]
pub struct Boot {
    pub label: String,
    pub out: String,
    /// QEMU was killed by the harness (power cut) before it exited by itself.
    pub killed: bool,
    /// From QEMU's start to its exit (or the kill).
    pub secs: f64,
    /// From QEMU's start (power-on) to the console's `HUP-OS-UP` (not measured with a kill).
    pub os_up_secs: Option<f64>,
    pub log: PathBuf,
}

impl Device {
    /// `hup provision --bundle BUNDLE --key TEST.pub --boot-backend ...` into a fresh
    /// scratch directory named after the device.
    pub fn provision(name: &str, bundle: &Path, backend: Backend) -> Result<Device> {
        Device::provision_on(name, bundle, backend, Machine::test_os(backend))
    }

    /// [`Device::provision`] on another machine (sizes, memory, kernel).
    pub fn provision_on(
        name: &str,
        bundle: &Path,
        backend: Backend,
        machine: Machine,
    ) -> Result<Device> {
        let a = artifacts::get();
        let dir = a.scratch(&format!("dev-{name}"))?;
        fresh_logs(name)?;
        let disk = dir.join("disk.img");
        let backend_name = match backend {
            Backend::Gpt => "gpt",
            Backend::SystemdBoot => "systemd-boot",
            Backend::Grub => "grub",
            Backend::Uboot => "uboot",
        };
        let mut uboot = Vec::new();
        if backend == Backend::Uboot {
            let arm = aarch64::get();
            uboot.push("--fw-env-config".into());
            uboot.push(arm.fw_env_config.clone().into_os_string());
            uboot.push("--uboot-initial-env".into());
            uboot.push(arm.initial_env.clone().into_os_string());
        }
        let out = run(Command::new(&a.hup)
            .arg("provision")
            .arg("--bundle")
            .arg(bundle)
            .arg("--key")
            .arg(&a.pubkey)
            .args([
                "--size",
                &machine.size,
                "--slot-size",
                &machine.slot_size,
                "--boot-size",
                &machine.boot_size,
            ])
            .args(["--boot-backend", backend_name])
            .args(&uboot)
            .arg("--data-dir")
            .arg(dir.join("host-data"))
            .arg(&disk))?;
        eprintln!("{name}: {}", out.trim());
        let vars = match backend {
            Backend::Gpt | Backend::Uboot => None,
            Backend::SystemdBoot | Backend::Grub => {
                let v = dir.join("OVMF_VARS.fd");
                std::fs::copy(vm::OVMF_VARS, &v)
                    .with_context(|| format!("copying {} to {}", vm::OVMF_VARS, v.display()))?;
                Some(v)
            }
        };
        Ok(Device {
            name: name.to_string(),
            dir,
            disk,
            backend,
            vars,
            boots: 0,
            machine,
        })
    }

    /// A copy of this device (disk and UEFI variables) under another name.
    pub fn copy(&self, name: &str) -> Result<Device> {
        let a = artifacts::get();
        let dir = a.scratch(&format!("dev-{name}"))?;
        fresh_logs(name)?;
        let disk = dir.join("disk.img");
        sparse_copy(&self.disk, &disk)?;
        let vars = match &self.vars {
            Some(v) => {
                let to = dir.join("OVMF_VARS.fd");
                std::fs::copy(v, &to).with_context(|| format!("copying {}", v.display()))?;
                Some(to)
            }
            None => None,
        };
        Ok(Device {
            name: name.to_string(),
            dir,
            disk,
            backend: self.backend,
            vars,
            boots: 0,
            machine: self.machine.clone(),
        })
    }

    /// Where this device's test script is published (relative to the server root).
    fn script_rel(&self) -> String {
        format!("dev/{}/run.sh", self.name)
    }

    /// `hup.test=URL` of this device: what the systemd-boot bundles' `cmdline` must hold.
    pub fn test_url(name: &str) -> String {
        artifacts::server().guest_url(&format!("dev/{name}/run.sh"))
    }

    /// One power-on; see the module documentation.
    pub fn boot(&mut self, opts: BootOpts) -> Result<Boot> {
        let a = artifacts::get();
        let server = artifacts::server();
        self.boots += 1;
        let script = opts.script.as_ref().map_or_else(
            || "echo HUP-NO-SCRIPT\npoweroff\n".to_string(),
            |s| s.text().to_string(),
        );
        server.put(&self.script_rel(), script.as_bytes())?;
        let name = format!("{}/{:02}-{}", self.name, self.boots, opts.label);
        let mut cfg = match (&self.vars, self.backend) {
            (Some(vars), b) if b.uefi() => VmConfig::ovmf(&name, &self.disk, vars),
            (_, Backend::Uboot) => VmConfig::uboot(&name, &self.disk, &aarch64::get().u_boot),
            _ => {
                let (kernel, initrd) = match &self.machine.direct {
                    Some((k, i)) => (k.as_path(), i.as_path()),
                    None => (a.vmlinuz.as_path(), a.initrd.as_path()),
                };
                let mut c = VmConfig::direct(&name, kernel, initrd, &self.disk);
                c.append
                    .push_str(&format!(" hup.test={}", Device::test_url(&self.name)));
                if let Some(f) = &opts.failpoint {
                    c.append.push_str(&format!(" hup.failpoint={f}"));
                }
                c
            }
        };
        if opts.failpoint.is_some() && self.backend != Backend::Gpt {
            bail!(
                "failpoints need the gpt backend (the harness owns its command line); put hup.failpoint= in the bundle's cmdline"
            );
        }
        cfg.timeout = opts.timeout;
        cfg.memory_mib = self.machine.memory_mib;
        let started = Instant::now();
        let vm = Vm::start(&cfg)?;
        let mut killed = false;
        let mut os_up_secs = None;
        if let Some((marker, delay)) = &opts.kill {
            match vm.wait_for(marker) {
                Ok(_) => {
                    std::thread::sleep(*delay);
                    killed = !vm.exited();
                    vm.kill();
                }
                // The guest went down by itself before the marker: nothing to cut.
                Err(_) if vm.exited() => {}
                Err(e) => return Err(e),
            }
        }
        if !killed {
            if opts.kill.is_none() {
                // Fails once QEMU exits without an OS coming up (an apply boot).
                os_up_secs = vm.wait_for(OS_UP).ok().map(|d| d.as_secs_f64());
            }
            vm.wait_exit()?;
        }
        let boot = Boot {
            label: opts.label.clone(),
            out: vm.output(),
            killed,
            secs: started.elapsed().as_secs_f64(),
            os_up_secs,
            log: vm.log_path().to_path_buf(),
        };
        drop(vm);
        eprintln!(
            "{name}: {:.1} s{}{}",
            boot.secs,
            if killed { ", killed" } else { "" },
            boot.os_up()
                .map(|(v, s)| format!(", OS {v} up in slot {s}"))
                .unwrap_or_default()
                + &boot
                    .os_up_secs
                    .map(|t| format!(" at {t:.1} s"))
                    .unwrap_or_default()
        );
        Ok(boot)
    }

    /// `hup status --disk IMAGE --json` on the host: the boot backend's view of the image.
    pub fn host_status(&self) -> Result<Status> {
        let a = artifacts::get();
        let mut cmd = Command::new(&a.hup);
        cmd.args(["status", "--json", "--disk"]).arg(&self.disk);
        match self.backend {
            Backend::SystemdBoot => {
                cmd.arg("--config").arg(&a.config_sb);
            }
            Backend::Grub => {
                cmd.arg("--config").arg(&a.config_grub);
            }
            // What provision recorded: the uboot config with the host's fw_env.config.
            Backend::Uboot => {
                cmd.arg("--config")
                    .arg(self.dir.join("host-data/system.json"));
            }
            Backend::Gpt => {}
        }
        let out = run(&mut cmd)?;
        serde_json::from_str(&out).with_context(|| format!("hup status --json printed {out}"))
    }

    /// The file `path` of the boot partition (copied out with mtools' `mcopy -i IMG@@OFFSET`).
    pub fn esp_file(&self, path: &str) -> Result<Vec<u8>> {
        let d = hup::disk::Disk::open_read_only(&self.disk)?;
        let esp = d.partition("hup-boot")?;
        let to = self.dir.join("esp-file.out");
        let _ = std::fs::remove_file(&to);
        run(Command::new("mcopy")
            .arg("-n")
            .arg("-i")
            .arg(format!("{}@@{}", self.disk.display(), esp.start))
            .arg(format!("::{path}"))
            .arg(&to))?;
        let bytes = std::fs::read(&to).with_context(|| format!("reading {}", to.display()))?;
        let _ = std::fs::remove_file(&to);
        Ok(bytes)
    }

    /// The GRUB environment block `/EFI/hup/grubenv` as `grub-editenv FILE list` reads it:
    /// variable -> value.
    pub fn grub_env(&self) -> Result<BTreeMap<String, String>> {
        let block = self.dir.join("grubenv.copy");
        std::fs::write(&block, self.esp_file("/EFI/hup/grubenv")?)
            .with_context(|| format!("writing {}", block.display()))?;
        let out = run(Command::new("grub-editenv").arg(&block).arg("list"))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Extracts the ext4 partition `label` into a file next to the image.
    pub fn extract(&self, label: &str) -> Result<PathBuf> {
        let d = hup::disk::Disk::open_read_only(&self.disk)?;
        let p = d.partition(label)?;
        let to = self.dir.join(format!("{label}.img"));
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.disk)
            .with_context(|| format!("opening {}", self.disk.display()))?;
        f.seek(SeekFrom::Start(p.start))?;
        let mut out =
            std::fs::File::create(&to).with_context(|| format!("creating {}", to.display()))?;
        std::io::copy(&mut f.take(p.len), &mut out)
            .with_context(|| format!("copying {label} to {}", to.display()))?;
        Ok(to)
    }

    /// `e2fsck -fn` of the ext4 partition `label` (after a clean shutdown it must be clean).
    pub fn fsck(&self, label: &str) -> Result<()> {
        let part = self.extract(label)?;
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(&part)
            .output()
            .context("running e2fsck")?;
        let _ = std::fs::remove_file(&part);
        if !out.status.success() {
            bail!(
                "e2fsck -fn of {label} on {} failed ({}):\n{}{}",
                self.disk.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The file `path` of the ext4 partition `label` (read with debugfs).
    pub fn read_file(&self, label: &str, path: &str) -> Result<Vec<u8>> {
        let part = self.extract(label)?;
        let dump = self.dir.join("debugfs.dump");
        let _ = std::fs::remove_file(&dump);
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {path} {}", dump.display()))
            .arg(&part))?;
        let _ = std::fs::remove_file(&part);
        let bytes = std::fs::read(&dump)
            .with_context(|| format!("{path} not found on {label} (debugfs dump)"))?;
        let _ = std::fs::remove_file(&dump);
        Ok(bytes)
    }
}

/// Empties the device's log directory (logs of an earlier run would be mistaken for this
/// run's).
fn fresh_logs(name: &str) -> Result<()> {
    let d = vm::log_dir().join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    }
    Ok(())
}

/// Copies an image, keeping it sparse (`cp --sparse=always`).
fn sparse_copy(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("cp").arg("--sparse=always").arg(from).arg(to))?;
    Ok(())
}

impl Boot {
    /// Lines of the console, without carriage returns.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.out.lines().map(|l| l.trim_end_matches('\r'))
    }

    pub fn has(&self, s: &str) -> bool {
        self.out.contains(s)
    }

    /// Fails with the log's path and tail unless the console printed `s`.
    pub fn expect(&self, s: &str) {
        assert!(
            self.has(s),
            "boot {} ({}): missing {s:?} in the console output:\n{}",
            self.label,
            self.log.display(),
            tail(&self.out, 60)
        );
    }

    /// Fails if the console printed `s`.
    pub fn expect_not(&self, s: &str) {
        assert!(
            !self.has(s),
            "boot {} ({}): unexpected {s:?} in the console output:\n{}",
            self.label,
            self.log.display(),
            tail(&self.out, 60)
        );
    }

    /// `HUP-OS-UP version=V slot=S`: (V, S) of the OS that came up.
    pub fn os_up(&self) -> Option<(String, String)> {
        self.lines().find_map(|l| {
            let rest = l.split("HUP-OS-UP ").nth(1)?;
            let mut version = None;
            let mut slot = None;
            for w in rest.split_whitespace() {
                if let Some(v) = w.strip_prefix("version=") {
                    version = Some(v.to_string());
                } else if let Some(s) = w.strip_prefix("slot=") {
                    slot = Some(s.to_string());
                }
            }
            Some((version?, slot?))
        })
    }

    /// Asserts that OS `version` came up in `slot`.
    pub fn expect_os(&self, version: &str, slot: &str) {
        assert_eq!(
            self.os_up(),
            Some((version.to_string(), slot.to_string())),
            "boot {} ({}): expected OS {version} in slot {slot}:\n{}",
            self.label,
            self.log.display(),
            tail(&self.out, 60)
        );
    }

    /// Every `HUP-STATUS <json>` the guest printed, in order.
    pub fn statuses(&self) -> Vec<Status> {
        self.lines()
            .filter_map(|l| l.split_once("HUP-STATUS ").map(|(_, j)| j))
            .map(|j| {
                serde_json::from_str(j).unwrap_or_else(|e| {
                    panic!("boot {}: HUP-STATUS is not JSON ({e}): {j}", self.label)
                })
            })
            .collect()
    }

    /// The last `HUP-STATUS` the guest printed.
    pub fn status(&self) -> Status {
        self.statuses().pop().unwrap_or_else(|| {
            panic!(
                "boot {} ({}): no HUP-STATUS line:\n{}",
                self.label,
                self.log.display(),
                tail(&self.out, 60)
            )
        })
    }

    /// `HUP-DATA-SUM <sha256>  <file>` lines: file -> sha256.
    pub fn data_sums(&self) -> BTreeMap<String, String> {
        self.lines()
            .filter_map(|l| l.split_once("HUP-DATA-SUM ").map(|(_, r)| r))
            .filter_map(|r| {
                let mut w = r.split_whitespace();
                Some((
                    w.nth(1)?.to_string(),
                    r.split_whitespace().next()?.to_string(),
                ))
            })
            .collect()
    }

    /// Lines `HUP-LOG|<file>|<line>` printed by [`Script::print_apply_logs`]: file -> text.
    pub fn printed_logs(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for l in self.lines() {
            if let Some((_, r)) = l.split_once("HUP-LOG|")
                && let Some((file, line)) = r.split_once('|')
            {
                let e = m.entry(file.to_string()).or_default();
                e.push_str(line);
                e.push('\n');
            }
        }
        m
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sanity check of the harness helpers that need no VM.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{boot_slot, booted};
    use hup::model::slot::{Slot, SlotStatus};

    #[test]
    fn parses_guest_markers() {
        let b = Boot {
            label: "x".into(),
            out: "junk\r\nHUP-OS-UP version=2 slot=b uptime=3.10\r\n\
                  HUP-DATA-SUM abc  blob\r\nHUP-DATA-SUM def  deep/link\r\n\
                  HUP-STATUS {\"status_version\": 1, \"booted\": {\"slot\": \"b\", \"booted\": true, \"next_boot\": true}, \"slots\": [], \"boot\": {\"backend\": \"gpt\", \"slots\": [{\"slot\": \"b\", \"status\": \"good\", \"successful\": true}]}, \"errors\": []}\r\n\
                  HUP-LOG|/mnt/data/hup/log/apply-1.log|1 hup: step format: start\r\n"
                .into(),
            killed: false,
            secs: 1.0,
            os_up_secs: None,
            log: PathBuf::from("x.log"),
        };
        assert_eq!(b.os_up(), Some(("2".into(), "b".into())));
        let sums = b.data_sums();
        assert_eq!(sums["blob"], "abc");
        assert_eq!(sums["deep/link"], "def");
        let st = b.status();
        assert_eq!(booted(&st).slot, Slot::B);
        assert_eq!(boot_slot(&st, Slot::B).status, SlotStatus::Good);
        assert_eq!(
            b.printed_logs()["/mnt/data/hup/log/apply-1.log"],
            "1 hup: step format: start\n"
        );
    }
}
