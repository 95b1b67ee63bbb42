//! The time limits of a download: an overall deadline and a minimum transfer rate
//! (system.json `download`, or the `hup stage` options; docs/staging.md). Both give the
//! download up for good, keeping the partial file so that running the command again
//! resumes it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::model::config::DownloadLimits;

/// The limits of one download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// All attempts and retries together; `None`: no deadline.
    pub deadline: Option<Duration>,
    /// Bytes per second over `window`; 0: no minimum.
    pub min_rate: u64,
    pub window: Duration,
}

impl Pace {
    /// No limits (local tests of the download loop).
    pub const UNLIMITED: Pace = Pace {
        deadline: None,
        min_rate: 0,
        window: Duration::ZERO,
    };

    /// The configured limits; 0 turns a limit off.
    pub fn from_config(c: &DownloadLimits) -> Pace {
        Pace {
            deadline: (c.deadline_s > 0).then(|| Duration::from_secs(c.deadline_s)),
            min_rate: if c.min_rate_window_s > 0 {
                c.min_rate
            } else {
                0
            },
            window: Duration::from_secs(c.min_rate_window_s),
        }
    }
}

/// Watches one download against its [`Pace`].
#[derive(Debug)]
pub struct Watch {
    pace: Pace,
    deadline: Option<Instant>,
    window_start: Instant,
    /// Bytes present when the window started.
    window_bytes: u64,
}

fn at(have: u64, total: Option<u64>) -> String {
    match total {
        Some(t) => format!("at byte {have} of {t}"),
        None => format!("at byte {have}"),
    }
}

impl Watch {
    pub fn new(pace: Pace) -> Watch {
        let now = Instant::now();
        Watch {
            pace,
            deadline: pace.deadline.and_then(|d| now.checked_add(d)),
            window_start: now,
            window_bytes: 0,
        }
    }

    /// Starts a new rate window (a new attempt begins its body with `have` bytes).
    pub fn restart_window(&mut self, have: u64) {
        self.window_start = Instant::now();
        self.window_bytes = have;
    }

    /// Fails once the deadline is reached, or `wait` more would pass it.
    pub fn check_deadline(&self, have: u64, total: Option<u64>, wait: Duration) -> Result<()> {
        if let (Some(d), Some(limit)) = (self.deadline, self.pace.deadline)
            && Instant::now() + wait >= d
        {
            bail!(
                "the download did not finish within its deadline of {} s ({})",
                limit.as_secs(),
                at(have, total)
            );
        }
        Ok(())
    }

    /// Checks the deadline and, once a window has passed, the rate; `have`: bytes received.
    pub fn check(&mut self, have: u64, total: Option<u64>) -> Result<()> {
        self.check_deadline(have, total, Duration::ZERO)?;
        if self.pace.min_rate == 0 {
            return Ok(());
        }
        let elapsed = self.window_start.elapsed();
        if elapsed < self.pace.window {
            return Ok(());
        }
        let got = have.saturating_sub(self.window_bytes);
        let secs = elapsed.as_secs_f64();
        if (got as f64) < self.pace.min_rate as f64 * secs {
            bail!(
                "the transfer was slower than the minimum of {} bytes/s: {got} bytes in the last {secs:.1} s ({})",
                self.pace.min_rate,
                at(have, total)
            );
        }
        self.restart_window(have);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_the_configuration() {
        let p = Pace::from_config(&DownloadLimits::default());
        assert_eq!(p.deadline, Some(Duration::from_secs(12 * 3600)));
        assert_eq!((p.min_rate, p.window), (512, Duration::from_secs(120)));
        let off = Pace::from_config(&DownloadLimits {
            deadline_s: 0,
            min_rate: 100,
            min_rate_window_s: 0,
        });
        assert_eq!((off.deadline, off.min_rate), (None, 0));
    }

    #[test]
    fn a_slow_window_and_a_passed_deadline_fail() {
        let mut w = Watch::new(Pace {
            deadline: None,
            min_rate: 1000,
            window: Duration::from_millis(50),
        });
        assert!(w.check(10, None).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        let e = w.check(20, Some(100)).unwrap_err().to_string();
        assert!(e.contains("slower than the minimum of 1000 bytes/s"), "{e}");
        let w = Watch::new(Pace {
            deadline: Some(Duration::from_millis(1)),
            ..Pace::UNLIMITED
        });
        std::thread::sleep(Duration::from_millis(5));
        let e = w.check_deadline(5, None, Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("deadline of 0 s"), "{e}");
        assert!(
            Watch::new(Pace::UNLIMITED)
                .check_deadline(0, None, Duration::from_secs(1_000_000))
                .is_ok()
        );
    }
}
