//! The apply journal in state.json: the steps of the offline apply, which of them completed,
//! and which one a power cut interrupted (docs/apply.md).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::slot::Slot;

/// One step of the offline apply, in the order they run (docs/apply.md). In state.json and
/// as a failpoint name by its kebab-case name (`mark-target-bad`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The bundle and the device are checked; nothing is written.
    Preflight,
    /// The target slot is given up before its first byte is written.
    MarkTargetBad,
    /// The manifest's configuration migrations (before `populate`, which copies their
    /// output into the new slot).
    Migrations,
    /// A fresh ext4 filesystem on the target slot.
    Format,
    /// The rootfs into the target slot.
    Populate,
    /// The slot's boot files on the boot partition.
    BootFiles,
    /// The boot backend tries the target next.
    SwitchBoot,
    /// The record of the applied update; clears the journal.
    Finalize,
}

impl Step {
    /// Every step, in the order an apply runs them.
    pub const ALL: [Step; 8] = [
        Step::Preflight,
        Step::MarkTargetBad,
        Step::Migrations,
        Step::Format,
        Step::Populate,
        Step::BootFiles,
        Step::SwitchBoot,
        Step::Finalize,
    ];

    /// The name in state.json, in logs and as a failpoint.
    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::MarkTargetBad => "mark-target-bad",
            Step::Migrations => "migrations",
            Step::Format => "format",
            Step::Populate => "populate",
            Step::BootFiles => "boot-files",
            Step::SwitchBoot => "switch-boot",
            Step::Finalize => "finalize",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The journal of an apply in progress: which steps completed, for which bundle and slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// sha256 of the bundle being applied; a different staged bundle restarts the journal.
    pub bundle_sha256: String,
    pub version: String,
    pub target: Slot,
    /// Steps that completed, in order.
    pub completed: Vec<Step>,
    /// The step that started and has not completed (a power cut happened in it).
    pub running: Option<Step>,
    /// Log file of this apply, relative to `DATA/hup/`.
    pub log: String,
    pub started_at: u64,
    /// Runs that started this apply; a run that keeps dying is given up after a few.
    #[serde(default)]
    pub attempts: u32,
    /// Configuration migrations that ran to completion in the `migrations` step, by id
    /// (a resumed step does not run them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<String>,
}

impl Journal {
    /// A journal of nothing done yet: the apply of bundle `bundle_sha256` into `target`,
    /// logging to `log/apply-<at>.log`.
    pub fn new(bundle_sha256: &str, target: Slot, at: u64) -> Journal {
        Journal {
            bundle_sha256: bundle_sha256.to_string(),
            version: String::new(),
            target,
            completed: Vec::new(),
            running: None,
            log: format!("log/apply-{at}.log"),
            started_at: at,
            attempts: 0,
            migrations: Vec::new(),
        }
    }

    /// Whether `step` completed.
    pub fn done(&self, step: Step) -> bool {
        self.completed.contains(&step)
    }

    /// The steps this run of the apply executes, in order; the rest completed before. This
    /// is the one place that decides what a resumed apply redoes:
    /// - `preflight` always runs: the bundle is verified again by every run;
    /// - `format` and `populate` run again unless both completed: a half-written
    ///   filesystem is started over, and a new filesystem needs its content;
    /// - every other step runs unless it completed.
    pub fn todo(&self) -> Vec<Step> {
        let filled = self.done(Step::Format) && self.done(Step::Populate);
        Step::ALL
            .into_iter()
            .filter(|&step| match step {
                Step::Preflight => true,
                Step::Format | Step::Populate => !filled,
                Step::MarkTargetBad
                | Step::Migrations
                | Step::BootFiles
                | Step::SwitchBoot
                | Step::Finalize => !self.done(step),
            })
            .collect()
    }

    /// `step` starts: it is the running one, and it (and, for `format`, the `populate`
    /// that filled the old filesystem) no longer counts as completed.
    pub fn start(&mut self, step: Step) {
        self.completed
            .retain(|&s| s != step && !(step == Step::Format && s == Step::Populate));
        self.running = Some(step);
    }

    /// The running `step` completed.
    pub fn complete(&mut self, step: Step) {
        self.running = None;
        self.completed.push(step);
    }

    /// Whether a step that writes to the disk started (any step after `preflight`, even
    /// one a power cut interrupted): the target may hold a partial update.
    pub fn wrote_target(&self) -> bool {
        self.completed
            .iter()
            .chain(self.running.as_ref())
            .any(|&s| s != Step::Preflight)
    }

    /// The completed steps for a log line: `preflight, format`, or `nothing`.
    pub fn completed_list(&self) -> String {
        if self.completed.is_empty() {
            return "nothing".into();
        }
        let names: Vec<&str> = self.completed.iter().map(|s| s.name()).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(completed: &[Step], running: Option<Step>) -> Journal {
        let mut j = Journal::new("ab", Slot::B, 7);
        j.completed = completed.to_vec();
        j.running = running;
        j
    }

    #[test]
    fn steps_keep_their_json_names_and_order() {
        let names: Vec<String> = Step::ALL
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"preflight\"",
                "\"mark-target-bad\"",
                "\"migrations\"",
                "\"format\"",
                "\"populate\"",
                "\"boot-files\"",
                "\"switch-boot\"",
                "\"finalize\""
            ]
        );
        for s in Step::ALL {
            assert_eq!(format!("\"{s}\""), serde_json::to_string(&s).unwrap());
            assert_eq!(
                serde_json::from_str::<Step>(&format!("\"{}\"", s.name())).unwrap(),
                s
            );
        }
        assert!(serde_json::from_str::<Step>("\"reboot\"").is_err());
        assert_eq!(format!("{:<12}|", Step::Format), "format      |");
    }

    #[test]
    fn a_fresh_apply_runs_every_step() {
        assert_eq!(journal(&[], None).todo(), Step::ALL);
    }

    #[test]
    fn a_resumed_apply_skips_completed_steps_but_always_verifies_again() {
        use Step::*;
        let j = journal(&[Preflight, MarkTargetBad, Migrations], Some(Format));
        assert_eq!(
            j.todo(),
            [Preflight, Format, Populate, BootFiles, SwitchBoot, Finalize]
        );
        let j = journal(
            &[
                Preflight,
                MarkTargetBad,
                Migrations,
                Format,
                Populate,
                BootFiles,
            ],
            Some(SwitchBoot),
        );
        assert_eq!(j.todo(), [Preflight, SwitchBoot, Finalize]);
        let all_but_finalize = &Step::ALL[..7];
        assert_eq!(
            journal(all_but_finalize, Some(Finalize)).todo(),
            [Preflight, Finalize]
        );
    }

    #[test]
    fn a_filesystem_interrupted_while_being_filled_is_formatted_again() {
        use Step::*;
        // The cut came inside populate: format ran, but its filesystem is half-written.
        let j = journal(
            &[Preflight, MarkTargetBad, Migrations, Format],
            Some(Populate),
        );
        assert_eq!(
            j.todo(),
            [Preflight, Format, Populate, BootFiles, SwitchBoot, Finalize]
        );
        // A populate recorded without the format under it is redone with a new format.
        let j = journal(&[Preflight, MarkTargetBad, Migrations, Populate], None);
        assert_eq!(
            j.todo(),
            [Preflight, Format, Populate, BootFiles, SwitchBoot, Finalize]
        );
    }

    #[test]
    fn starting_format_forgets_the_old_populate() {
        use Step::*;
        let mut j = journal(&[Preflight, MarkTargetBad, Populate], None);
        j.start(Preflight);
        assert_eq!(j.completed, [MarkTargetBad, Populate]);
        assert_eq!(j.running, Some(Preflight));
        j.complete(Preflight);
        j.start(Format);
        assert_eq!(j.completed, [MarkTargetBad, Preflight]);
        j.complete(Format);
        assert_eq!(j.completed, [MarkTargetBad, Preflight, Format]);
        assert_eq!(j.running, None);
    }

    #[test]
    fn only_steps_after_preflight_touch_the_target() {
        use Step::*;
        assert!(!journal(&[], None).wrote_target());
        assert!(!journal(&[], Some(Preflight)).wrote_target());
        assert!(!journal(&[Preflight], Some(Preflight)).wrote_target());
        assert!(journal(&[Preflight], Some(MarkTargetBad)).wrote_target());
        assert!(journal(&[Preflight, MarkTargetBad], None).wrote_target());
    }

    #[test]
    fn completed_list_for_the_log() {
        use Step::*;
        assert_eq!(journal(&[], None).completed_list(), "nothing");
        assert_eq!(
            journal(&[Preflight, MarkTargetBad], None).completed_list(),
            "preflight, mark-target-bad"
        );
    }
}
