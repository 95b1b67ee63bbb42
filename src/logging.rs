//! A small `log` backend: messages to stderr, level from `HUP_LOG` (error..trace).
//!
//! The initramfs installs its own sink (console, kmsg and a buffer) through [`set_sink`].

use std::io::Write;
use std::sync::{Mutex, OnceLock};

type Sink = Box<dyn Fn(&str) + Send + Sync>;

static SINKS: OnceLock<Mutex<Vec<Sink>>> = OnceLock::new();

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
    }

    fn flush(&self) {}
}

/// Installs the logger; the level comes from `HUP_LOG` unless `verbose` asks for debug.
pub fn init(verbose: bool) {
    let level = match std::env::var("HUP_LOG").ok().as_deref() {
        Some("error") => log::LevelFilter::Error,
        Some("warn") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        _ if verbose => log::LevelFilter::Debug,
        _ => log::LevelFilter::Info,
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
