//! Reboot for PID 1: flush, ask the kernel to restart, never return.

use nix::sys::reboot::RebootMode;

/// Syncs the filesystems and restarts the machine. If the kernel refuses (not
/// PID 1, no CAP_SYS_BOOT), waits forever: PID 1 must never exit.
pub fn reboot() -> ! {
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(RebootMode::RB_AUTOBOOT);
    log::error!("reboot(2) failed: {e}; halting here");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
