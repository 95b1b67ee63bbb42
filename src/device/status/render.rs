//! The human-readable form of a [`Status`] (the text form may change; scripts use `--json`):
//! one function per section, each writing its lines to an [`io::Write`]. A line is a key
//! padded to 13 columns and its value; continuation lines have an empty key.

use std::io::{self, Write};

use super::report::{
    AgentReport, ApplyingReport, BootReport, LastResultReport, LayoutMigrationReport,
    PartitionTableReport, SlotReport, StagedReport, Status,
};
use crate::model::journal::Step;
use crate::model::slot::SlotStatus;
use crate::size::human;

/// `2024-05-01 12:00:00 UTC` for Unix seconds.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn health(s: &SlotReport) -> String {
    match (s.health, s.tries_left) {
        (Some(SlotStatus::Trying), Some(t)) => format!("trying, {t} tries left"),
        (Some(h), _) => h.to_string(),
        (None, _) => "health unknown".into(),
    }
}

fn slot_line(s: &SlotReport) -> String {
    let version = match &s.version {
        Some(v) => format!("version {v}"),
        None => "no version recorded".into(),
    };
    let next = if s.next_boot { ", boots next" } else { "" };
    format!("slot {}, {version}, {}{next}", s.slot, health(s))
}

/// The human-readable form of `st`, section by section.
pub fn render(st: &Status, w: &mut impl Write) -> io::Result<()> {
    slots(w, st)?;
    staged(w, st.staged.as_ref())?;
    if let Some(a) = &st.applying {
        applying(w, a)?;
    }
    last_result(w, st.last_result.as_ref())?;
    if let Some(m) = &st.layout_migration {
        layout_migration(w, m)?;
    }
    if let Some(a) = &st.agent {
        agent(w, a)?;
    }
    if let Some(b) = &st.boot {
        boot(w, b)?;
    }
    if let Some(t) = &st.partition_table {
        warnings(w, t)?;
    }
    errors(w, &st.errors)
}

/// One line: the key padded to 13 columns, then the value.
fn line(w: &mut impl Write, key: &str, value: &str) -> io::Result<()> {
    writeln!(w, "{key:<13}{value}")
}

/// `booted:` and `other:`, or `slot a:` and `slot b:` when the booted slot is unknown.
fn slots(w: &mut impl Write, st: &Status) -> io::Result<()> {
    match (&st.booted, &st.other) {
        (Some(b), Some(x)) => {
            line(w, "booted:", &slot_line(b))?;
            line(w, "other:", &slot_line(x))
        }
        _ => {
            for s in &st.slots {
                line(w, &format!("slot {}:", s.slot), &slot_line(s))?;
            }
            Ok(())
        }
    }
}

fn staged(w: &mut impl Write, staged: Option<&StagedReport>) -> io::Result<()> {
    let Some(s) = staged else {
        return line(w, "staged:", "nothing");
    };
    line(
        w,
        "staged:",
        &format!(
            "{} ({}, sha256 {}), staged {}",
            s.version,
            human(s.size),
            &s.sha256[..s.sha256.len().min(16)],
            utc(s.staged_at)
        ),
    )?;
    line(w, "", &s.path)
}

fn applying(w: &mut impl Write, a: &ApplyingReport) -> io::Result<()> {
    let done = if a.completed.is_empty() {
        "nothing done yet".into()
    } else {
        let names: Vec<String> = a.completed.iter().map(Step::to_string).collect();
        format!("done: {}", names.join(", "))
    };
    let running = a
        .running
        .map(|r| format!("; interrupted in {r}"))
        .unwrap_or_default();
    line(
        w,
        "applying:",
        &format!("{} into slot {} ({done}{running})", a.version, a.target),
    )?;
    line(w, "", &format!("log: {}", a.log))
}

fn last_result(w: &mut impl Write, last: Option<&LastResultReport>) -> io::Result<()> {
    let Some(l) = last else {
        return line(w, "last update:", "none recorded");
    };
    let outcome = serde_json::to_value(l.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    line(
        w,
        "last update:",
        &format!("{outcome}: {} on slot {}, {}", l.version, l.slot, utc(l.at)),
    )?;
    if let Some(r) = &l.reason {
        line(w, "", &format!("reason: {r}"))?;
    }
    if let Some(g) = &l.log {
        line(w, "", &format!("log: {g}"))?;
    }
    Ok(())
}

/// `agent:` the server and the last poll, then the action and the last error.
fn agent(w: &mut impl Write, a: &AgentReport) -> io::Result<()> {
    let polled = a.last_poll_at.map_or_else(
        || "never answered".to_string(),
        |t| format!("last poll {}", utc(t)),
    );
    line(
        w,
        "agent:",
        &format!("{} as {}, {polled}", a.server, a.controller_id),
    )?;
    if let Some(x) = &a.action {
        let result = match (x.result, x.reported) {
            (Some(r), true) => format!(" ({r}, reported)"),
            (Some(r), false) => format!(" ({r}, not reported yet)"),
            (None, _) => String::new(),
        };
        line(
            w,
            "",
            &format!(
                "action {}: {} {}{result}",
                x.id,
                x.version.as_deref().unwrap_or("(version not known yet)"),
                x.state
            ),
        )?;
    }
    if let Some(e) = &a.last_error {
        line(w, "", &format!("last error: {e}"))?;
    }
    Ok(())
}

fn layout_migration(w: &mut impl Write, m: &LayoutMigrationReport) -> io::Result<()> {
    let phases: Vec<String> = m
        .phases
        .iter()
        .map(|p| format!("{} {:.2} s", p.phase, p.ms as f64 / 1000.0))
        .collect();
    line(
        w,
        "layout:",
        &format!(
            "migration to layout {} for {}: {}, {}",
            m.layout_version,
            m.version,
            m.phase,
            utc(m.completed_at.unwrap_or(m.started_at))
        ),
    )?;
    if m.backup_bytes > 0 || !phases.is_empty() {
        line(
            w,
            "",
            &format!(
                "backup {} ({} entries); {}",
                human(m.backup_bytes),
                m.entries,
                phases.join(", ")
            ),
        )?;
    }
    Ok(())
}

fn boot(w: &mut impl Write, b: &BootReport) -> io::Result<()> {
    let next = b
        .next
        .map_or_else(|| "none".into(), |s| format!("slot {s}"));
    let order = b.order.as_ref().map_or_else(String::new, |o| {
        let names: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        format!(", order: {}", names.join(" "))
    });
    line(
        w,
        "boot:",
        &format!("{} backend, next boot: {next}{order}", b.backend),
    )?;
    for s in &b.slots {
        let mut parts = vec![s.status.to_string()];
        if let Some(ok) = s.ok {
            parts.push(format!("ok {}", u8::from(ok)));
        }
        if let Some(p) = s.priority {
            parts.push(format!("priority {p}"));
        }
        if let Some(t) = s.tries_left {
            parts.push(format!("tries left {t}"));
        }
        if let Some(e) = &s.entry {
            parts.push(format!("entry {e}"));
        }
        line(w, "", &format!("slot {}: {}", s.slot, parts.join(", ")))?;
    }
    Ok(())
}

/// One `warning:` line per problem of the partition table.
fn warnings(w: &mut impl Write, t: &PartitionTableReport) -> io::Result<()> {
    for p in &t.problems {
        line(
            w,
            "warning:",
            &format!("partition table of {}: {p}", t.disk),
        )?;
    }
    Ok(())
}

/// One `error:` line per piece that could not be read.
fn errors(w: &mut impl Write, errors: &[String]) -> io::Result<()> {
    for e in errors {
        line(w, "error:", e)?;
    }
    Ok(())
}
