//! A small `log` backend: messages to stderr, level from `HUP_LOG` (error..trace).
//!
//! The initramfs installs its own sinks (console, kmsg and a buffer) through [`add_sink`];
//! they replace stderr. A [`tee`] gets every line as well, until its guard is dropped
//! (the apply's log file).

use std::io::Write;
use std::sync::{Mutex, OnceLock};

type Sink = Box<dyn Fn(&str) + Send + Sync>;

static SINKS: OnceLock<Mutex<Vec<Sink>>> = OnceLock::new();
/// Extra sinks by id, in addition to stderr or the installed sinks.
static TEES: Mutex<Vec<(u64, Sink)>> = Mutex::new(Vec::new());
static NEXT_TEE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match record.level() {
            log::Level::Info => format!("hup: {}", record.args()),
            l => format!(
                "hup: {}: {}",
                l.as_str().to_ascii_lowercase(),
                record.args()
            ),
        };
        let sinks = SINKS.get_or_init(|| Mutex::new(Vec::new()));
        let sinks = sinks.lock().unwrap_or_else(|e| e.into_inner());
        if sinks.is_empty() {
            let _ = writeln!(std::io::stderr(), "{line}");
        } else {
            for s in sinks.iter() {
                s(&line);
            }
        }
        drop(sinks);
        for (_, t) in TEES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t(&line);
        }
    }

    fn flush(&self) {}
}

/// Installs the logger; the level comes from `HUP_LOG`, else it is `default`.
pub fn init(default: log::LevelFilter) {
    let level = match std::env::var("HUP_LOG").ok().as_deref() {
        Some("error") => log::LevelFilter::Error,
        Some("warn") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        _ => default,
    };
    if log::set_logger(&Logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Replaces stderr by an extra sink (may be called several times; all sinks receive every line).
pub fn add_sink(sink: Sink) {
    let sinks = SINKS.get_or_init(|| Mutex::new(Vec::new()));
    sinks.lock().unwrap_or_else(|e| e.into_inner()).push(sink);
}

/// Removes its tee sink (and drops what the sink owns, e.g. a file) when dropped.
#[derive(Debug)]
pub struct TeeGuard(u64);

impl Drop for TeeGuard {
    fn drop(&mut self) {
        TEES.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.0);
    }
}

/// Sends every line to `sink` too, until the returned guard is dropped.
#[must_use = "the sink is removed when the guard is dropped"]
pub fn tee(sink: Sink) -> TeeGuard {
    let id = NEXT_TEE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TEES.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, sink));
    TeeGuard(id)
}
