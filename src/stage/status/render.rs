//! The human-readable form of [`Status`] (the text form may change; scripts use `--json`).

use std::fmt::Write as _;

use super::{SlotReport, Status};
use crate::model::slot::SlotStatus;
use crate::stage::progress::human;

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
        (Some(h), _) => format!("{h:?}").to_lowercase(),
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

/// The human-readable form.
pub fn render(st: &Status) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(o, "{k:<13}{v}");
    };
    match (&st.booted, &st.other) {
        (Some(b), Some(x)) => {
            line("booted:", &slot_line(b));
            line("other:", &slot_line(x));
        }
        _ => {
            for s in &st.slots {
                line(&format!("slot {}:", s.slot), &slot_line(s));
            }
        }
    }
    match &st.staged {
        Some(s) => {
            line(
                "staged:",
                &format!(
                    "{} ({}, sha256 {}), staged {}",
                    s.version,
                    human(s.size),
                    &s.sha256[..s.sha256.len().min(16)],
                    utc(s.staged_at)
                ),
            );
            line("", &s.path);
        }
        None => line("staged:", "nothing"),
    }
    if let Some(a) = &st.applying {
        let done = if a.completed.is_empty() {
            "nothing done yet".into()
        } else {
            format!("done: {}", a.completed.join(", "))
        };
        let running = a
            .running
            .as_deref()
            .map(|r| format!("; interrupted in {r}"))
            .unwrap_or_default();
        line(
            "applying:",
            &format!("{} into slot {} ({done}{running})", a.version, a.target),
        );
        line("", &format!("log: {}", a.log));
    }
    match &st.last_result {
        Some(l) => {
            let outcome = serde_json::to_value(l.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            line(
                "last update:",
                &format!("{outcome}: {} on slot {}, {}", l.version, l.slot, utc(l.at)),
            );
            if let Some(r) = &l.reason {
                line("", &format!("reason: {r}"));
            }
            if let Some(g) = &l.log {
                line("", &format!("log: {g}"));
            }
        }
        None => line("last update:", "none recorded"),
    }
    if let Some(m) = &st.layout_migration {
        let phases: Vec<String> = m
            .phases
            .iter()
            .map(|p| format!("{} {:.2} s", p.phase, p.ms as f64 / 1000.0))
            .collect();
        line(
            "layout:",
            &format!(
                "migration to layout {} for {}: {}, {}",
                m.layout_version,
                m.version,
                m.phase,
                utc(m.completed_at.unwrap_or(m.started_at))
            ),
        );
        if m.backup_bytes > 0 || !phases.is_empty() {
            line(
                "",
                &format!(
                    "backup {} ({} entries); {}",
                    human(m.backup_bytes),
                    m.entries,
                    phases.join(", ")
                ),
            );
        }
    }
    if let Some(b) = &st.boot {
        let next = b
            .next
            .map_or_else(|| "none".into(), |s| format!("slot {s}"));
        line(
            "boot:",
            &format!("{} backend, next boot: {next}", b.backend),
        );
        for s in &b.slots {
            let mut parts = vec![format!("{:?}", s.status).to_lowercase()];
            if let Some(p) = s.priority {
                parts.push(format!("priority {p}"));
            }
            if let Some(t) = s.tries_left {
                parts.push(format!("tries left {t}"));
            }
            if let Some(e) = &s.entry {
                parts.push(format!("entry {e}"));
            }
            line("", &format!("slot {}: {}", s.slot, parts.join(", ")));
        }
    }
    if let Some(t) = &st.partition_table {
        for p in &t.problems {
            line("warning:", &format!("partition table of {}: {p}", t.disk));
        }
    }
    for e in &st.errors {
        line("error:", e);
    }
    o
}
