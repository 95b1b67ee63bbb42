//! Where the init's log lines go: `/dev/console`, `/dev/kmsg`, and a memory buffer
//! that is written to `DATA/hup/log/boot-<n>.log` once the data partition is
//! mounted (after that, lines go straight to that file).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Bytes kept in memory before the data partition is there; older lines are dropped.
const MAX_BUFFER: usize = 1 << 20;
/// Boot logs kept in `DATA/hup/log/`; older ones are deleted.
pub const KEEP_LOGS: usize = 32;

struct State {
    buffer: Vec<u8>,
    dropped: usize,
    file: Option<File>,
}

static STATE: Mutex<State> = Mutex::new(State {
    buffer: Vec::new(),
    dropped: 0,
    file: None,
});

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn record(line: &str) {
    let text = format!("[{:>10}] {line}\n", uptime());
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = s.file.as_mut() {
        let _ = f.write_all(text.as_bytes());
        return;
    }
    s.buffer.extend_from_slice(text.as_bytes());
    if s.buffer.len() > MAX_BUFFER {
        let cut = s.buffer.len() - MAX_BUFFER / 2;
        s.buffer.drain(..cut);
        s.dropped += cut;
    }
}

/// Kernel log priority for a line formatted by crate::logging.
fn kmsg_priority(line: &str) -> u8 {
    if line.starts_with("hup: error:") {
        3
    } else if line.starts_with("hup: warn:") {
        4
    } else if line.starts_with("hup: debug:") || line.starts_with("hup: trace:") {
        7
    } else {
        6
    }
}

/// The kernel's console log level (first field of /proc/sys/kernel/printk; 7 if unknown).
fn console_loglevel() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(7)
}

/// Installs the sinks: console (or stderr if it cannot be opened), kmsg and the buffer.
pub fn install(console: &Path, kmsg: &Path) {
    match OpenOptions::new().write(true).open(console) {
        Ok(f) => crate::logging::add_sink(Box::new(move |line| {
            let _ = (&f).write_all(format!("{line}\n").as_bytes());
        })),
        Err(_) => crate::logging::add_sink(Box::new(|line| eprintln!("{line}"))),
    }
    if let Ok(f) = OpenOptions::new().write(true).open(kmsg) {
        // Records below the console log level are echoed on the console by the kernel;
        // the console sink prints every line already, so raise them to that level.
        let floor = console_loglevel();
        crate::logging::add_sink(Box::new(move |line| {
            let prio = kmsg_priority(line).max(floor).min(7);
            // One write is one kernel log record.
            let _ = (&f).write_all(format!("<{prio}>{line}\n").as_bytes());
        }));
    }
    crate::logging::add_sink(Box::new(record));
}

/// The number for the next `boot-<n>.log` given the names in the log directory.
pub fn next_number<'a>(names: impl Iterator<Item = &'a str>) -> u64 {
    names
        .filter_map(|n| {
            n.strip_prefix("boot-")?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(1, |n| n + 1)
}

fn log_names(dir: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Creates `dir/boot-<n>.log`, writes the buffered lines into it and sends later
/// lines there directly. Deletes the oldest logs beyond [`KEEP_LOGS`].
pub fn attach_file(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = log_names(dir)?;
    let n = next_number(names.iter().map(String::as_str));
    let path = dir.join(format!("boot-{n}.log"));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    {
        let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if s.dropped > 0 {
            let _ = writeln!(f, "[{} bytes of early log dropped]", s.dropped);
        }
        f.write_all(&s.buffer)
            .with_context(|| format!("writing {}", path.display()))?;
        s.buffer = Vec::new();
        s.file = Some(f);
    }
    let mut numbered: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|name| {
            let k = name
                .strip_prefix("boot-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((k, name))
        })
        .collect();
    numbered.sort();
    let excess = (numbered.len() + 1).saturating_sub(KEEP_LOGS);
    for (_, name) in numbered.into_iter().take(excess) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(path)
}

/// Whether lines go to a file on the data partition.
pub fn is_attached() -> bool {
    STATE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .file
        .is_some()
}

/// Flushes and forgets the log file (before the data partition is moved or unmounted).
pub fn detach_file() {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = s.file.take() {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_and_priorities() {
        assert_eq!(next_number(["x", "boot-.log"].into_iter()), 1);
        assert_eq!(
            next_number(["boot-2.log", "boot-10.log", "boot-9.log.old", "state.json"].into_iter()),
            11
        );
        assert_eq!(kmsg_priority("hup: error: x"), 3);
        assert_eq!(kmsg_priority("hup: warn: x"), 4);
        assert_eq!(kmsg_priority("hup: mounted"), 6);
    }
}
