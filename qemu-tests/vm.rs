//! Launching a QEMU VM with a hard timeout, its serial console logged to a file
//! (`target/qemu-logs/<name>.log`) and kept in memory for waiting on markers.
//!
//! Direct kernel boot, or OVMF (UEFI, q35, pflash with a per-device copy of the
//! variables) for the systemd-boot and grub backends, or U-Boot on an aarch64 `virt` machine
//! (`qemu-system-aarch64 -bios u-boot.bin`, virtio-mmio disk and NIC) for the uboot backend;
//! TCG unless `HUP_QEMU_ACCEL` says otherwise (KVM is not usable on the project
//! machines). At most `MAX_VMS` VMs run at once in this process.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Never more than two VMs at once (two cores).
const MAX_VMS: usize = 2;

static RUNNING: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// A place among the running VMs; released on drop.
struct Permit;

impl Permit {
    fn acquire() -> Permit {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_VMS {
            n = SLOT_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        SLOT_FREED.notify_one();
    }
}

/// OVMF firmware code (read-only pflash), Debian's `ovmf` package.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Pristine OVMF variable store; each device boots with its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Names the serial log file (`<name>.log` under [`log_dir`]; may hold a `/`); unique
    /// per boot.
    pub name: String,
    /// Direct kernel boot: kernel and initramfs (used with [`Firmware::Direct`] only).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Raw disk image, attached as virtio (`/dev/vda` in the guest).
    pub disk: PathBuf,
    /// Kernel command line.
    pub append: String,
    pub memory_mib: u32,
    /// Hard limit: the VM is killed when it passes.
    pub timeout: Duration,
    /// Attach a virtio NIC on QEMU user networking.
    pub net: bool,
    /// What starts the kernel.
    pub firmware: Firmware,
}

/// What starts the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// x86_64: QEMU loads [`VmConfig::kernel`] and [`VmConfig::initrd`] itself.
    Direct,
    /// x86_64 UEFI boot (OVMF, q35) with this writable copy of the variable store: the
    /// firmware starts the loader on the disk's ESP.
    Ovmf(PathBuf),
    /// aarch64 `virt` machine (cortex-a57) with this U-Boot as `-bios`: U-Boot runs the boot
    /// script on the disk's boot partition. Disk and NIC are virtio-mmio devices, where
    /// U-Boot's environment code finds the disk.
    Uboot(PathBuf),
}

impl VmConfig {
    /// Direct kernel boot with the defaults of the project (256 MiB, network, 120 s).
    pub fn direct(name: &str, kernel: &Path, initrd: &Path, disk: &Path) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            disk: disk.to_path_buf(),
            append: "console=ttyS0 panic=-1 quiet".to_string(),
            memory_mib: 256,
            timeout: Duration::from_secs(120),
            net: true,
            firmware: Firmware::Direct,
        }
    }

    /// UEFI boot through OVMF with the variable store `vars` (256 MiB, network, 180 s).
    pub fn ovmf(name: &str, disk: &Path, vars: &Path) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            disk: disk.to_path_buf(),
            append: String::new(),
            memory_mib: 256,
            timeout: Duration::from_secs(180),
            net: true,
            firmware: Firmware::Ovmf(vars.to_path_buf()),
        }
    }

    /// aarch64 boot through U-Boot `u_boot` (512 MiB, network, 180 s).
    pub fn uboot(name: &str, disk: &Path, u_boot: &Path) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            disk: disk.to_path_buf(),
            append: String::new(),
            memory_mib: 512,
            timeout: Duration::from_secs(180),
            net: true,
            firmware: Firmware::Uboot(u_boot.to_path_buf()),
        }
    }
}

/// The accelerator: `HUP_QEMU_ACCEL` (e.g. `kvm`), default `tcg`.
pub fn accel() -> String {
    std::env::var("HUP_QEMU_ACCEL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tcg".to_string())
}

/// Directory of the serial logs: `<target>/qemu-logs`.
pub fn log_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|t| t.join("qemu-logs"))
        .unwrap_or_else(|| PathBuf::from("target/qemu-logs"))
}

/// Serial output seen so far, and how many QEMU output streams are still open.
#[derive(Default)]
struct Console {
    text: String,
    open: usize,
}

impl Console {
    fn closed(&self) -> bool {
        self.open == 0
    }
}

type Shared = Arc<(Mutex<Console>, Condvar)>;

/// A running VM. Dropping it kills QEMU.
pub struct Vm {
    name: String,
    child: Arc<Mutex<Child>>,
    console: Shared,
    log_path: PathBuf,
    started: Instant,
    deadline: Instant,
    watchdog_stop: Arc<(Mutex<bool>, Condvar)>,
    _permit: Permit,
}

impl Vm {
    /// Starts QEMU (waiting for a free VM place first).
    pub fn start(cfg: &VmConfig) -> Result<Vm> {
        let permit = Permit::acquire();
        let dir = log_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join(format!("{}.log", cfg.name));
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;

        let aarch64 = matches!(cfg.firmware, Firmware::Uboot(_));
        let program = if aarch64 {
            "qemu-system-aarch64"
        } else {
            "qemu-system-x86_64"
        };
        let mut cmd = Command::new(program);
        cmd.args(["-accel", &accel()])
            .args(["-m", &cfg.memory_mib.to_string()])
            .args(["-smp", "1", "-nographic", "-no-reboot"]);
        match &cfg.firmware {
            Firmware::Direct => {
                cmd.arg("-kernel")
                    .arg(&cfg.kernel)
                    .arg("-initrd")
                    .arg(&cfg.initrd)
                    .args(["-append", &cfg.append]);
            }
            Firmware::Ovmf(vars) => {
                cmd.args(["-machine", "q35"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.display()
                    ));
            }
            Firmware::Uboot(u_boot) => {
                cmd.args(["-machine", "virt", "-cpu", "cortex-a57", "-bios"])
                    .arg(u_boot);
            }
        }
        if aarch64 {
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=hd0,file={},format=raw",
                    cfg.disk.display()
                ))
                .args(["-device", "virtio-blk-device,drive=hd0"]);
        } else {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", cfg.disk.display()));
        }
        let nic = if aarch64 {
            "virtio-net-device,netdev=n0"
        } else {
            "virtio-net-pci,netdev=n0,romfile="
        };
        if cfg.net {
            cmd.args(["-netdev", "user,id=n0", "-device", nic]);
        } else {
            cmd.args(["-nic", "none"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        let started = Instant::now();
        let streams: Vec<Box<dyn Read + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        let console: Shared = Arc::new((
            Mutex::new(Console {
                text: String::new(),
                open: streams.len(),
            }),
            Condvar::new(),
        ));
        let log = Arc::new(Mutex::new(log));
        for stream in streams {
            let console = console.clone();
            let log = log.clone();
            std::thread::spawn(move || pump(stream, console, log));
        }
        let child = Arc::new(Mutex::new(child));
        let deadline = started + cfg.timeout;
        let watchdog_stop = Arc::new((Mutex::new(false), Condvar::new()));
        {
            let child = child.clone();
            let stop = watchdog_stop.clone();
            let name = cfg.name.clone();
            std::thread::spawn(move || {
                let (lock, cv) = &*stop;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*stopped {
                    let now = Instant::now();
                    if now >= deadline {
                        eprintln!("qemu {name}: hard timeout reached, killing the VM");
                        let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
                        return;
                    }
                    stopped = cv
                        .wait_timeout(stopped, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            });
        }
        Ok(Vm {
            name: cfg.name.clone(),
            child,
            console,
            log_path,
            started,
            deadline,
            watchdog_stop,
            _permit: permit,
        })
    }

    /// The serial log file of this boot.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// True once QEMU has exited (both output streams closed).
    pub fn exited(&self) -> bool {
        self.console
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed()
    }

    /// Everything the serial console printed so far.
    pub fn output(&self) -> String {
        self.console
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .text
            .clone()
    }

    fn tail(&self) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until the console has printed `marker` (anywhere in the output so far);
    /// fails at the VM's deadline or when QEMU exits first, quoting the log's tail.
    pub fn wait_for(&self, marker: &str) -> Result<Duration> {
        let (lock, cv) = &*self.console;
        let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if c.text.contains(marker) {
                return Ok(self.started.elapsed());
            }
            let now = Instant::now();
            if c.closed() || now >= self.deadline {
                let why = if c.closed() {
                    "QEMU exited"
                } else {
                    "timed out"
                };
                drop(c);
                bail!(
                    "VM {}: {why} after {:.1} s before printing {marker:?} (log: {})\n--- last lines ---\n{}",
                    self.name,
                    self.started.elapsed().as_secs_f64(),
                    self.log_path.display(),
                    self.tail()
                );
            }
            c = cv
                .wait_timeout(c, (self.deadline - now).min(Duration::from_millis(500)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for QEMU to exit by itself (guest poweroff/reboot with -no-reboot)
    /// before the deadline; kills it and fails otherwise.
    pub fn wait_exit(&self) -> Result<ExitStatus> {
        loop {
            if let Some(st) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait()
                .context("waiting for qemu")?
            {
                // Let the readers drain the pipes.
                let (lock, cv) = &*self.console;
                let c = lock.lock().unwrap_or_else(|e| e.into_inner());
                let _ = cv.wait_timeout_while(c, Duration::from_secs(2), |c| !c.closed());
                return Ok(st);
            }
            if Instant::now() >= self.deadline {
                self.kill();
                bail!(
                    "VM {}: still running at its deadline (log: {})\n--- last lines ---\n{}",
                    self.name,
                    self.log_path.display(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills QEMU at once (a power cut for the guest) and waits for it.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.watchdog_stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        self.kill();
    }
}

/// How many bytes at the end of `b` begin a UTF-8 sequence that is not complete yet.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let need = match c {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Copies a QEMU output stream to the log file and the shared console text.
fn pump(mut stream: Box<dyn Read + Send>, console: Shared, log: Arc<Mutex<std::fs::File>>) {
    let mut buf = [0u8; 4096];
    // A read may end inside a UTF-8 sequence: its bytes wait for the next read.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() - incomplete_tail(&pending);
        let (lock, cv) = &*console;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .text
            .push_str(&String::from_utf8_lossy(&pending[..whole]));
        pending.drain(..whole);
        cv.notify_all();
    }
    let (lock, cv) = &*console;
    lock.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
    cv.notify_all();
}

#[cfg(test)]
mod utf8_tests {
    use super::incomplete_tail;

    #[test]
    fn a_sequence_cut_by_a_read_waits_for_its_end() {
        let s = "Café ö €𝄞".as_bytes();
        // Every cut of the text: the complete part decodes, the rest is what is held back.
        for cut in 0..=s.len() {
            let head = &s[..cut];
            let whole = cut - incomplete_tail(head);
            assert!(std::str::from_utf8(&head[..whole]).is_ok(), "cut {cut}");
            assert!(cut - whole <= 3, "cut {cut}");
            let rest = [&head[whole..], &s[cut..]].concat();
            assert!(std::str::from_utf8(&rest).is_ok(), "cut {cut}");
        }
        assert_eq!(incomplete_tail(b"abc"), 0);
        assert_eq!(incomplete_tail(&"é".as_bytes()[..1]), 1);
    }
}
