//! state.json files written by older hups load and are written back byte-identical.

use super::state::State;

/// (name, bytes) of every fixture in `src/model/fixtures/state/`.
const FIXTURES: &[(&str, &str)] = &[
    (
        "provisioned",
        include_str!("fixtures/state/provisioned.json"),
    ),
    ("staged", include_str!("fixtures/state/staged.json")),
    (
        "applying-format",
        include_str!("fixtures/state/applying-format.json"),
    ),
    (
        "applying-with-migrations",
        include_str!("fixtures/state/applying-with-migrations.json"),
    ),
    (
        "applying-after-applied",
        include_str!("fixtures/state/applying-after-applied.json"),
    ),
    (
        "layout-started",
        include_str!("fixtures/state/layout-started.json"),
    ),
    (
        "layout-failed",
        include_str!("fixtures/state/layout-failed.json"),
    ),
    (
        "layout-completed-applying",
        include_str!("fixtures/state/layout-completed-applying.json"),
    ),
    (
        "layout-completed-applied",
        include_str!("fixtures/state/layout-completed-applied.json"),
    ),
    ("applied", include_str!("fixtures/state/applied.json")),
    ("committed", include_str!("fixtures/state/committed.json")),
    (
        "committed-staged",
        include_str!("fixtures/state/committed-staged.json"),
    ),
    (
        "rolled-back",
        include_str!("fixtures/state/rolled-back.json"),
    ),
    ("failed", include_str!("fixtures/state/failed.json")),
    (
        "failed-in-journal",
        include_str!("fixtures/state/failed-in-journal.json"),
    ),
    (
        "failed-layout-refused",
        include_str!("fixtures/state/failed-layout-refused.json"),
    ),
];

#[test]
fn older_state_files_load_and_write_back_byte_identical() {
    for (name, bytes) in FIXTURES {
        let s = State::from_json(bytes.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let out = s.to_json();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            *bytes,
            "{name} is not written back byte-identical"
        );
    }
}

#[test]
fn every_fixture_file_is_tested() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/fixtures/state");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

fn load(name: &str) -> State {
    let (_, bytes) = FIXTURES.iter().find(|(n, _)| *n == name).unwrap();
    State::from_json(bytes.as_bytes()).unwrap()
}

#[test]
fn older_files_read_as_the_typed_lifecycle() {
    use super::journal::Step::*;
    use super::state::{LayoutPhase, Outcome};
    let j = load("applying-format").journal.unwrap();
    assert_eq!(j.completed, [Preflight, MarkTargetBad, Migrations]);
    assert_eq!(j.running, Some(Format));
    assert_eq!(
        j.todo(),
        [Preflight, Format, Populate, BootFiles, SwitchBoot, Finalize]
    );
    let j = load("applying-with-migrations").journal.unwrap();
    assert_eq!(j.running, Some(Populate));
    assert_eq!(
        j.todo(),
        [Preflight, Format, Populate, BootFiles, SwitchBoot, Finalize]
    );
    for (name, phase) in [
        ("layout-started", LayoutPhase::Started),
        ("layout-failed", LayoutPhase::Failed),
        ("layout-completed-applied", LayoutPhase::Completed),
    ] {
        assert_eq!(load(name).layout_migration.unwrap().phase, phase, "{name}");
    }
    for (name, outcome) in [
        ("applied", Outcome::Applied),
        ("committed", Outcome::Committed),
        ("rolled-back", Outcome::RolledBack),
        ("failed", Outcome::Failed),
    ] {
        assert_eq!(load(name).last_result.unwrap().outcome, outcome, "{name}");
    }
}

#[test]
fn unknown_step_phase_or_outcome_names_are_refused() {
    let with = |name: &str, from: &str, to: &str| {
        let (_, bytes) = FIXTURES.iter().find(|(n, _)| *n == name).unwrap();
        assert!(bytes.contains(from), "{name} has no {from}");
        State::from_json(bytes.replace(from, to).as_bytes())
    };
    let e = with(
        "applying-format",
        "\"running\": \"format\"",
        "\"running\": \"reboot\"",
    );
    assert!(format!("{:#}", e.unwrap_err()).contains("reboot"));
    assert!(with("applying-format", "\"migrations\"\n", "\"Migrations\"\n").is_err());
    assert!(with("layout-started", "\"started\"", "\"backed-up\"").is_err());
    assert!(with("committed", "\"committed\"", "\"good\"").is_err());
}
