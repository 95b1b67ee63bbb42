//! Download progress: a bar on a terminal (bytes, rate, ETA), plain log lines otherwise.

use crate::size::human;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(200);
/// How often a log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Progress of one download run.
pub struct Progress {
    tty: bool,
    total: Option<u64>,
    /// Bytes present when this run started (a resumed download), excluded from the rate.
    base: u64,
    start: Instant,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            total: None,
            base: 0,
            start: Instant::now(),
            last: None,
            drawn: false,
        }
    }

    /// A (re)started transfer: `have` bytes already present of `total`.
    pub fn begin(&mut self, have: u64, total: Option<u64>) {
        self.total = total;
        self.base = have;
        self.start = Instant::now();
        self.last = Some(Instant::now());
    }

    fn line(&self, done: u64) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = done.saturating_sub(self.base) as f64 / secs;
        let mut s = match self.total {
            Some(t) if t > 0 => format!(
                "{} of {} ({}%)",
                human(done),
                human(t),
                (done.min(t) * 100 / t)
            ),
            _ => human(done),
        };
        s.push_str(&format!(", {}/s", human(rate as u64)));
        if let Some(t) = self.total
            && rate > 0.0
            && done < t
        {
            s.push_str(&format!(
                ", {} left",
                human_secs(((t - done) as f64 / rate) as u64)
            ));
        }
        s
    }

    /// Called after every read; draws or logs at most at the set pace.
    pub fn update(&mut self, done: u64) {
        let every = if self.tty { DRAW_EVERY } else { LOG_EVERY };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        if self.tty {
            self.draw(done);
        } else {
            log::info!("downloaded {}", self.line(done));
        }
    }

    fn draw(&mut self, done: u64) {
        const WIDTH: usize = 30;
        let bar = match self.total {
            Some(t) if t > 0 => {
                let full = ((done.min(t) as f64 / t as f64) * WIDTH as f64) as usize;
                format!("[{}{}] ", "#".repeat(full), "-".repeat(WIDTH - full))
            }
            _ => String::new(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{bar}{}", self.line(done));
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the bar (a final line with the totals).
    pub fn finish(&mut self, done: u64) {
        if self.tty {
            self.draw(done);
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }

    /// Clears a partly drawn bar before an error or log message.
    pub fn interrupt(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(300 << 20), "300.0 MiB");
        assert_eq!(human_secs(59), "59 s");
        assert_eq!(human_secs(61), "1m01s");
        assert_eq!(human_secs(3700), "1h01m");
        let mut p = Progress::new();
        p.begin(0, Some(1000));
        let l = p.line(500);
        assert!(l.starts_with("500 B of 1000 B (50%), "), "{l}");
    }
}
