//! Dispatch only: PID 1 or argv[0] `init` runs the initramfs init, anything else the CLI.
#![deny(unsafe_code)]

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if std::process::id() == 1 || name == "init" {
        hup::init::run();
    }
    hup::sys::signal::default_sigpipe();
    std::process::exit(hup::cli::run());
}
