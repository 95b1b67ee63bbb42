//! The one way the integration tests run the real `hup` binary: a builder for its
//! arguments, environment and stdin, and the checks every test makes on what it did
//! (success, a one-line error, an exit code with its error line).
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::process::{Child, Command, Output, Stdio};

/// The binary under test.
pub const HUP: &str = env!("CARGO_BIN_EXE_hup");

/// One run of `hup`. `HUP_LOG` is always removed, so stderr holds only what hup prints by
/// default.
#[derive(Debug, Default)]
pub struct Hup {
    args: Vec<OsString>,
    /// (name, Some(value)) sets, (name, None) removes.
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    /// Run under `timeout SECS` (a hang shows as exit status 124).
    watchdog: Option<u32>,
    /// Another program in place of [`HUP`], with its first arguments: another build of hup,
    /// e.g. `qemu-aarch64-static .../aarch64-unknown-linux-musl/release/hup`.
    program: Option<(OsString, Vec<OsString>)>,
}

impl Hup {
    pub fn new() -> Hup {
        Hup::default().env_remove("HUP_LOG")
    }

    /// `hup ARGS...` (a shorthand for `Hup::new().args(args)`).
    pub fn with<I, S>(args: I) -> Hup
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Hup::new().args(args)
    }

    /// As on a running device: `booted` is the booted slot, retries back off 10 ms, and no
    /// proxy from the caller's environment reaches the downloads.
    pub fn on_device(booted: &str) -> Hup {
        let mut h = Hup::new()
            .env("HUP_BOOTED_SLOT", booted)
            .env("HUP_BACKOFF_MS", "10");
        for proxy in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            h = h.env_remove(proxy);
        }
        h
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Hup {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Hup
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Hup {
        self.env
            .push((k.as_ref().to_owned(), Some(v.as_ref().to_owned())));
        self
    }

    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Hup {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Hup {
        self.env.push((k.as_ref().to_owned(), None));
        self
    }

    /// Bytes fed to hup's stdin (else stdin is the test's).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Hup {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs hup under `timeout SECS`: a hang fails the test instead of stalling the suite.
    pub fn watchdog(mut self, secs: u32) -> Hup {
        self.watchdog = Some(secs);
        self
    }

    /// Runs `program PRE... ARGS...` instead of the binary under test (the arm64 build under
    /// user emulation: `program("qemu-aarch64-static", [arm64_hup])`).
    pub fn program<I, S>(mut self, program: impl AsRef<OsStr>, pre: I) -> Hup
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let pre = pre.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.program = Some((program.as_ref().to_owned(), pre));
        self
    }

    /// The arguments, for messages.
    fn shown(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn command(&self) -> Command {
        let (program, pre) = match &self.program {
            Some((program, pre)) => (program.clone(), pre.clone()),
            None => (OsString::from(HUP), Vec::new()),
        };
        let mut c = match self.watchdog {
            Some(secs) => {
                let mut c = Command::new("timeout");
                c.arg(secs.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        c.args(pre).args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Runs hup to its end; the output whatever the exit status.
    pub fn run(self) -> Output {
        let mut c = self.command();
        let Some(input) = &self.stdin else {
            return c.output().expect("running hup");
        };
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting hup");
        let mut pipe = child.stdin.take().unwrap();
        let input = input.clone();
        // A writer thread: hup may print a lot before it reads everything.
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().expect("running hup");
        writer.join().unwrap();
        out
    }

    /// Starts hup in the background, stdout and stderr piped.
    pub fn spawn(self) -> Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting hup")
    }

    /// Runs hup and panics with its output unless it succeeds; returns stdout.
    pub fn ok(self) -> String {
        let args = self.shown();
        let o = self.run();
        assert!(
            o.status.success(),
            "hup {args:?} failed ({}):\n{}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs hup expecting failure (not the watchdog's); returns stderr, asserted to be one
    /// line.
    pub fn err_line(self) -> String {
        let args = self.shown();
        let watched = self.watchdog.is_some();
        let o = self.run();
        let err = String::from_utf8(o.stderr).unwrap();
        if watched {
            assert_ne!(o.status.code(), Some(124), "hup {args:?} did not finish");
        }
        assert!(!o.status.success(), "hup {args:?} unexpectedly succeeded");
        assert_eq!(
            err.lines().count(),
            1,
            "expected a one-line error, got: {err}"
        );
        err
    }

    /// Runs hup expecting exit code `code` and one error line containing `needle`; returns
    /// that line (see [`fails`]).
    pub fn fails(self, code: i32, needle: &str) -> String {
        fails(&self.run(), code, needle)
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "hup failed ({}):\n{}{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts exit code `code` with a last stderr line `hup: error: ...` containing `needle`
/// (and no other error line); returns that line.
pub fn fails(o: &Output, code: i32, needle: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr:\n{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("hup: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{err}");
    assert_eq!(
        err.lines().last(),
        Some(errors[0]),
        "the error comes last:\n{err}"
    );
    assert!(
        errors[0].contains(needle),
        "{needle:?} not in {:?}",
        errors[0]
    );
    errors[0].to_string()
}
