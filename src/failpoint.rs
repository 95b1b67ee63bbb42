//! Failpoints: with the `failpoints` cargo feature, `HUP_FAILPOINT=NAME` makes the process
//! stop dead (exit 99, no cleanup, like a power cut) when it reaches the point `NAME`.
//! Without the feature every call is a no-op. Names are listed in docs/apply.md.
//!
//! The armed name is fixed once per process, in a `OnceLock`: by [`arm`] (the initramfs,
//! from `hup.failpoint=NAME` on the kernel command line), or else from `HUP_FAILPOINT` the
//! first time a point is reached. The environment is never written.

use std::fmt;
use std::sync::OnceLock;

/// Exit status of a process stopped by a failpoint.
pub const EXIT: i32 = 99;

/// The environment variable that names the armed failpoint.
pub const ENV: &str = "HUP_FAILPOINT";

/// Why [`arm`] did not arm a failpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmError {
    #[error("built without the failpoints feature")]
    Disabled,
    #[error("cannot arm failpoint {wanted}: the armed failpoint is fixed already ({armed})")]
    Fixed { wanted: String, armed: String },
}

/// The armed failpoint name, set once: `None` inside when nothing is armed.
#[derive(Debug)]
struct Armed(OnceLock<Option<String>>);

impl Armed {
    const fn new() -> Armed {
        Armed(OnceLock::new())
    }

    /// The armed name; the first call without an earlier [`Armed::arm`] takes it from `env`.
    fn get(&self, env: impl FnOnce() -> Option<String>) -> Option<&str> {
        self.0.get_or_init(env).as_deref()
    }

    /// Arms `name`, unless the name was fixed already (by an earlier arm or read).
    fn arm(&self, name: &str) -> Result<(), ArmError> {
        self.0
            .set(Some(name.to_string()))
            .map_err(|_| ArmError::Fixed {
                wanted: name.to_string(),
                armed: self.get(|| None).unwrap_or("none").to_string(),
            })
    }
}

static ARMED: Armed = Armed::new();

fn from_env() -> Option<String> {
    std::env::var(ENV).ok()
}

/// Arms failpoint `name` for the rest of this process (instead of `HUP_FAILPOINT`). Must
/// come before the first point is reached; fails without the `failpoints` feature.
pub fn arm(name: &str) -> Result<(), ArmError> {
    if !cfg!(feature = "failpoints") {
        return Err(ArmError::Disabled);
    }
    ARMED.arm(name)
}

/// True when the point `name` is armed (always false without the `failpoints` feature).
#[inline]
fn armed(name: &str) -> bool {
    cfg!(feature = "failpoints") && ARMED.get(from_env) == Some(name)
}

/// Stops the process here when `HUP_FAILPOINT` names this point.
#[inline]
pub fn hit(name: &str) {
    hit_with(name, format_args!("stopping"));
}

/// [`hit`], with `detail` after the point's name in the log line.
#[inline]
pub fn hit_with(name: &str, detail: fmt::Arguments<'_>) {
    if armed(name) {
        log::warn!("failpoint {name}: {detail}");
        std::process::exit(EXIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_read_once() {
        let a = Armed::new();
        assert_eq!(a.get(|| Some("format".into())), Some("format"));
        // Later reads keep the first answer, whatever the environment says now.
        assert_eq!(
            a.get(|| panic!("the environment is read a second time")),
            Some("format")
        );
        let none = Armed::new();
        assert_eq!(none.get(|| None), None);
        assert_eq!(none.get(|| Some("format".into())), None);
    }

    #[test]
    fn arming_wins_over_the_environment() {
        let a = Armed::new();
        a.arm("switch-boot").unwrap();
        assert_eq!(
            a.get(|| panic!("the environment is read after arming")),
            Some("switch-boot")
        );
    }

    #[test]
    fn the_armed_name_is_fixed_once() {
        let a = Armed::new();
        a.arm("format").unwrap();
        let e = a.arm("populate-middle").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot arm failpoint populate-middle: the armed failpoint is fixed already (format)"
        );
        assert_eq!(a.get(|| None), Some("format"));
        // Reading first (nothing in the environment) fixes "none" as well.
        let b = Armed::new();
        assert_eq!(b.get(|| None), None);
        assert_eq!(
            b.arm("format"),
            Err(ArmError::Fixed {
                wanted: "format".into(),
                armed: "none".into()
            })
        );
    }

    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn without_the_feature_nothing_arms() {
        assert_eq!(arm("format"), Err(ArmError::Disabled));
        assert!(!armed("format"));
    }
}
