//! The polling loop: one cycle, then the server's `config.polling.sleep` with jitter;
//! after errors an exponential backoff; `--once` runs one cycle.

use std::time::Duration;

use anyhow::Result;

use super::context::Agent;
use super::cycle::cycle;

/// The interval when the server names none.
pub const DEFAULT_SLEEP: Duration = Duration::from_secs(300);
/// The first wait after an error; doubled per error in a row up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Waits are bounded (a server's `99:00:00` is not obeyed).
pub const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

/// Polls until an error stops it (`once`: one cycle, its error returned).
pub fn run(a: &Agent, once: bool) -> Result<()> {
    let mut errors = 0u32;
    loop {
        let wait = match cycle(a) {
            Ok(s) => {
                errors = 0;
                if once {
                    return Ok(());
                }
                s.unwrap_or(DEFAULT_SLEEP)
                    .clamp(Duration::from_secs(1), MAX_SLEEP)
            }
            Err(e) => {
                if once {
                    return Err(e);
                }
                errors = errors.saturating_add(1);
                let b = backoff(errors);
                log::warn!("{e:#} (retrying in {} s)", b.as_secs());
                b
            }
        };
        std::thread::sleep(jitter(wait, random()));
    }
}

/// The wait after `errors` errors in a row.
pub fn backoff(errors: u32) -> Duration {
    let factor = 1u32 << errors.saturating_sub(1).min(16);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// `d` moved by up to ±10 % (`r` a random number), so a fleet does not poll in step.
pub fn jitter(d: Duration, r: u32) -> Duration {
    let ms = d.as_millis() as u64;
    let span = ms / 5;
    let off = if span == 0 {
        0
    } else {
        u64::from(r) % (span + 1)
    };
    Duration::from_millis(ms - ms / 10 + off)
}

fn random() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_and_jitter() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(50), MAX_BACKOFF);
        let d = Duration::from_secs(100);
        assert_eq!(jitter(d, 0), Duration::from_secs(90));
        assert_eq!(jitter(d, 20_000), Duration::from_secs(110));
        for r in [1, 77, 12345, u32::MAX] {
            let j = jitter(d, r);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }
}
