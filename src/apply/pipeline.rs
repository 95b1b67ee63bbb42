//! The journaled pipeline: each step recorded before and after it runs, resumed after a
//! power cut, given up after repeated deaths (docs/apply.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::boot::{self, BootBackend};
use crate::bundle::reader::Bundle;
use crate::fsutil::now;
use crate::model::journal::{Journal, Step};
use crate::model::slot::Slot;
use crate::model::state::{SlotInfo, State};

use super::context::{Context, Report, current_slot, migration_context};
use super::{bootfiles, preflight, slotfs};

/// Journal attempts after which an apply that keeps dying is given up.
const MAX_ATTEMPTS: u32 = 3;

/// Applies `bundle_path` (resuming a journaled apply of the same bundle). On an error the
/// running slot is untouched and the failure is recorded in state.json; the caller decides
/// what to do with the staged bundle.
pub fn apply(ctx: &Context, bundle_path: &Path) -> Result<Report> {
    apply_known(ctx, bundle_path, None)
}

/// [`apply`] of a bundle whose whole-file sha256 is known already (`hup stage` recorded
/// it): it names the journal without a read of the whole file just for that. The bundle
/// is still verified by preflight on every run.
pub fn apply_known(ctx: &Context, bundle_path: &Path, sha256: Option<&str>) -> Result<Report> {
    let mut state = ctx.data.load_state()?;
    let backend = boot::open_config(ctx.config, ctx.disk);
    let bundle_sha = match sha256 {
        Some(s) => s.to_string(),
        None => {
            crate::bundle::verified::sha256_of(
                std::fs::File::open(bundle_path)
                    .with_context(|| format!("opening {}", bundle_path.display()))?,
            )
            .with_context(|| format!("reading {}", bundle_path.display()))?
            .0
        }
    };

    let current = current_slot(backend.as_ref())?;
    let mut journal = match state.journal.take() {
        Some(j) if j.bundle_sha256 == bundle_sha => {
            log::info!(
                "resuming the apply of {} into slot {} (done: {})",
                j.version,
                j.target,
                j.completed_list()
            );
            j
        }
        other => {
            if let Some(old) = other {
                log::warn!("dropping the journal of another bundle ({})", old.version);
            }
            Journal::new(&bundle_sha, current.other(), now())
        }
    };
    let log_path = ctx.data.root.join(&journal.log);
    let _log = attach_log(&log_path)?;
    journal.attempts += 1;
    if journal.attempts > MAX_ATTEMPTS {
        let reason = format!(
            "the apply was interrupted {} times (last in step {}): giving up",
            journal.attempts - 1,
            journal.running.map_or("?", Step::name)
        );
        abandon_target(backend.as_ref(), &journal)?;
        state.journal = None;
        record_failure(ctx, &mut state, &journal, &reason)?;
        bail!("{reason}");
    }
    if journal.target == current {
        bail!(
            "the journal targets slot {}, which is the running good slot: refusing",
            journal.target
        );
    }

    let mut run = Run {
        ctx,
        backend,
        state,
        journal,
        bundle: None,
        bundle_path: bundle_path.to_path_buf(),
        current,
        timings: Vec::new(),
    };
    match run.all_steps() {
        Ok(()) => Ok(Report {
            version: run.journal.version.clone(),
            target: run.journal.target,
            timings: run.timings,
            log: log_path,
        }),
        Err(e) => {
            append_line(&log_path, &format!("hup: error: {e:#}"));
            let journal = run.journal.clone();
            abandon_target(run.backend.as_ref(), &journal)?;
            run.state.journal = None;
            record_failure(ctx, &mut run.state, &journal, &format!("{e:#}"))?;
            Err(e)
        }
    }
}

/// An apply that is given up must not leave its slot to boot: once any step after preflight
/// started (the boot switch may have been written just before a power cut), the target is
/// marked bad again. A refusal in preflight writes nothing.
fn abandon_target(backend: &dyn BootBackend, j: &Journal) -> Result<()> {
    if j.wrote_target() {
        backend
            .mark_bad(j.target)
            .with_context(|| format!("giving slot {} up", j.target))?;
    }
    Ok(())
}

fn record_failure(ctx: &Context, state: &mut State, j: &Journal, reason: &str) -> Result<()> {
    state.record_failed(&j.version, j.target, reason, Some(&j.log), now());
    ctx.data.save_state(state)
}

/// Appends one line to a log file, best effort (the final error, after the tee is gone).
fn append_line(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = writeln!(f, "{} {line}", now());
    }
}

/// Copies every log line to the apply's log file too, until the guard is dropped (which
/// closes the file, so the data partition can be unmounted before the reboot).
fn attach_log(path: &Path) -> Result<crate::logging::TeeGuard> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))?;
    let file = std::sync::Mutex::new(file);
    Ok(crate::logging::tee(Box::new(move |line| {
        if let Ok(mut f) = file.lock() {
            let _ = writeln!(f, "{} {line}", now());
            let _ = f.sync_data();
        }
    })))
}

/// One apply in progress.
struct Run<'a> {
    ctx: &'a Context<'a>,
    backend: Box<dyn BootBackend>,
    state: State,
    journal: Journal,
    bundle: Option<Bundle>,
    bundle_path: PathBuf,
    current: Slot,
    timings: Vec<(Step, f64)>,
}

impl Run<'_> {
    /// Runs the steps the journal has still to do ([`Journal::todo`]), each journaled before
    /// and after. Each step's name is also a failpoint: `HUP_FAILPOINT=<step>` stops the
    /// process right after the step completed and was journaled.
    fn all_steps(&mut self) -> Result<()> {
        let todo = self.journal.todo();
        for step in Step::ALL {
            if !todo.contains(&step) {
                log::info!("step {step}: done before, skipping");
                continue;
            }
            self.journal.start(step);
            self.save()?;
            log::info!("step {step}: start");
            let t = Instant::now();
            self.step(step).with_context(|| format!("step {step}"))?;
            let secs = t.elapsed().as_secs_f64();
            log::info!("step {step}: done in {secs:.2} s");
            self.timings.push((step, secs));
            if step != Step::Finalize {
                self.journal.complete(step);
                self.save()?;
            }
            crate::failpoint::hit(step.name());
        }
        Ok(())
    }

    fn save(&mut self) -> Result<()> {
        self.state.journal = Some(self.journal.clone());
        self.ctx.data.save_state(&self.state)
    }

    fn bundle(&self) -> &Bundle {
        self.bundle.as_ref().expect("preflight ran first")
    }

    fn step(&mut self, step: Step) -> Result<()> {
        let target = self.journal.target;
        let labels = &self.ctx.config.labels;
        match step {
            Step::Preflight => {
                let b = preflight::check(
                    self.ctx,
                    &self.state,
                    &self.bundle_path,
                    self.current,
                    target,
                )?;
                preflight::check_layout(self.ctx, &b, self.current)?;
                self.journal.version = b.manifest.version.clone();
                self.bundle = Some(b);
            }
            Step::MarkTargetBad => {
                self.backend.mark_bad(target)?;
                *self.state.slot_mut(target) = SlotInfo::EMPTY;
            }
            Step::Format => slotfs::format(self.ctx.disk, target.label(labels), target)?,
            Step::Populate => {
                let extra = slotfs::migrated_files(&self.ctx.data.root)?;
                slotfs::populate(
                    self.ctx.disk,
                    target.label(labels),
                    self.current.label(labels),
                    self.bundle(),
                    extra,
                )?;
            }
            Step::BootFiles => {
                bootfiles::install(self.ctx.disk, self.ctx.config, self.bundle(), target)?;
            }
            Step::Migrations => self.migrations()?,
            Step::SwitchBoot => {
                self.backend
                    .set_try_next(target, self.ctx.config.max_tries)?;
            }
            Step::Finalize => self.finalize()?,
        }
        Ok(())
    }

    /// Runs the manifest's migrations, each recorded in the journal once it completed.
    fn migrations(&mut self) -> Result<()> {
        let ids = self.bundle().manifest.migrations.clone();
        let todo: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.journal.migrations.contains(id))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let (mctx, _old_boot) = migration_context(self.ctx)?;
        for id in todo {
            let m =
                crate::migrate::get(&id).with_context(|| format!("unknown migration {id:?}"))?;
            let r = m.run(&mctx).with_context(|| format!("migration {id}"))?;
            log::info!("migration {id}: wrote {} file(s)", r.written.len());
            self.journal.migrations.push(id);
            self.save()?;
        }
        Ok(())
    }

    fn finalize(&mut self) -> Result<()> {
        self.state.record_applied(&self.journal, now());
        // The staged copy has served its purpose.
        if let Some(staged) = self.state.staged.take() {
            let p = self.ctx.data.staged_dir().join(&staged.file);
            if p == self.bundle_path {
                let _ = std::fs::remove_file(&p);
            } else {
                self.state.staged = Some(staged);
            }
        }
        self.state.journal = None;
        self.ctx.data.save_state(&self.state)
    }
}
