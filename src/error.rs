//! Errors the code acts on, and the process exit codes they map to.

/// Outcomes that are not plain failures: the CLI maps each to its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    /// The request is already satisfied (for example: the bundle is already staged or installed).
    #[error("nothing to do: {0}")]
    NothingToDo(String),
    /// Another hup process holds the lock.
    #[error("locked: {0}")]
    Locked(String),
}

/// Exit codes, documented in docs/cli.md.
pub mod code {
    pub const SUCCESS: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const NOTHING_TO_DO: i32 = 2;
    pub const LOCKED: i32 = 3;
}

/// Exit code for an error chain: the first [`Exit`] found decides, anything else is a failure.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return match e {
                Exit::NothingToDo(_) => code::NOTHING_TO_DO,
                Exit::Locked(_) => code::LOCKED,
            };
        }
    }
    code::FAILURE
}
