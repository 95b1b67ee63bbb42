//! Command-line interface: one small file per command, argument handling only.

use argh::FromArgs;

mod agent;
mod apply;
mod apply_pending;
mod cancel;
mod fingerprint;
mod inspect;
mod keygen;
mod mark;
mod mkfs;
mod mkinitramfs;
mod pack;
mod provision;
mod stage;
mod status;
mod verify;

/// hup: offline host-OS updates for embedded Linux.
#[derive(FromArgs)]
struct Hup {
    /// log debug messages
    #[argh(switch, short = 'v')]
    verbose: bool,
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Keygen(keygen::Keygen),
    Pack(pack::Pack),
    Inspect(inspect::Inspect),
    Verify(verify::Verify),
    Provision(provision::Provision),
    Apply(apply::Apply),
    ApplyPending(apply_pending::ApplyPending),
    Mkinitramfs(mkinitramfs::Mkinitramfs),
    Mkfs(mkfs::Mkfs),
    Stage(stage::Stage),
    Status(status::Status),
    MarkGood(mark::MarkGood),
    MarkBad(mark::MarkBad),
    RefundTry(mark::RefundTry),
    Cancel(cancel::Cancel),
    Agent(agent::AgentCmd),
    Fingerprint(fingerprint::Fingerprint),
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn run() -> i32 {
    let args: Hup = argh::from_env();
    crate::logging::init(if args.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    let result = match args.command {
        Command::Keygen(c) => c.run(),
        Command::Pack(c) => c.run(),
        Command::Inspect(c) => c.run(),
        Command::Verify(c) => c.run(),
        Command::Provision(c) => c.run(),
        Command::Apply(c) => c.run(),
        Command::ApplyPending(c) => c.run(),
        Command::Mkinitramfs(c) => c.run(),
        Command::Mkfs(c) => c.run(),
        Command::Stage(c) => c.run(),
        Command::Status(c) => c.run(),
        Command::MarkGood(c) => c.run(),
        Command::MarkBad(c) => c.run(),
        Command::RefundTry(c) => c.run(),
        Command::Cancel(c) => c.run(),
        Command::Agent(c) => c.run(),
        Command::Fingerprint(c) => c.run(),
    };
    match result {
        Ok(()) => crate::error::code::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            crate::error::exit_code(&e)
        }
    }
}
