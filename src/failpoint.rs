//! Failpoints: with the `failpoints` cargo feature, `HUP_FAILPOINT=NAME` makes the process
//! stop dead (exit 99, no cleanup, like a power cut) when it reaches the point `NAME`.
//! Without the feature every call is a no-op. Names are listed in docs/apply.md.

/// Exit status of a process stopped by a failpoint.
pub const EXIT: i32 = 99;

/// Stops the process here when `HUP_FAILPOINT` names this point.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("HUP_FAILPOINT").is_ok_and(|v| v == name) {
        log::warn!("failpoint {name}: stopping");
        std::process::exit(EXIT);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
