//! Setting environment variables, which Rust 2024 marks unsafe because another
//! thread may read the environment at the same time.
#![allow(unsafe_code)]

use anyhow::{Context, Result};

/// Number of threads of this process, from /proc/self/status.
fn thread_count() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Threads: line in /proc/self/status")
}

/// Sets `key=value` in the process environment; refuses unless the process has
/// exactly one thread (checked through /proc, which must be mounted).
pub fn set_var_single_threaded(key: &str, value: &str) -> Result<()> {
    let n = thread_count()?;
    anyhow::ensure!(n == 1, "cannot set {key}: the process has {n} threads");
    // SAFETY: std::env::set_var is only unsound when another thread reads or
    // writes the environment concurrently; we just checked that this process
    // has a single thread, so nothing else can access the environment.
    unsafe { std::env::set_var(key, value) };
    Ok(())
}
