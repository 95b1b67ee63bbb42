//! PID 1 of the initramfs (see docs/architecture.md).

/// Entry point when hup runs as `/init`; the init is not built yet, so it refuses.
pub fn run() -> ! {
    eprintln!("hup: running as init is not supported by this build");
    std::process::exit(1)
}
