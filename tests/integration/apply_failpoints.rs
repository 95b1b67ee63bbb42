//! Power cuts during the apply: stop at every step boundary and in the middle of populating,
//! run again, and end exactly where an uninterrupted apply ends. Slot A is never touched.
//! Needs the `failpoints` feature (scripts/test enables it).

use std::path::Path;

use crate::support::image::*;
use crate::support::runner::Hup;
use crate::support::*;
use hup::boot;
use hup::model::config::{BootBackendKind, Labels};
use hup::model::slot::Slot;

fn run_apply(w: &World, img: &Path, failpoint: Option<&str>) -> std::process::Output {
    let mut c = Hup::with(w.apply_args(img, &w.bundle("2.0.0")));
    if let Some(f) = failpoint {
        c = c.env("HUP_FAILPOINT", f);
    }
    c.run()
}

/// What must be equal between an interrupted-then-resumed and an uninterrupted apply.
fn end_state(img: &Path) -> (String, String, String) {
    let st = boot::open(BootBackendKind::Gpt, img, &Labels::default())
        .state()
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.data/state.json", p(img))).unwrap())
            .unwrap();
    (
        ext4_listing(img, "hup-root-b"),
        format!("{:?} {:?}", st.slot(Slot::A), st.slot(Slot::B)),
        format!(
            "{} {} {}",
            state["slot_b"]["version"], state["last_result"]["outcome"], state["journal"]
        ),
    )
}

#[test]
fn every_failpoint_resumes_to_the_same_end() {
    let w = World::new();
    let reference = w.provision("ref.img", "1.0.0", "gpt", &[]);
    let o = run_apply(&w, &reference, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = end_state(&reference);
    assert!(want.2.contains("\"2.0.0\" \"applied\" null"), "{want:?}");

    let points: Vec<&str> = hup::model::journal::Step::ALL
        .iter()
        .map(|s| s.name())
        .filter(|s| *s != "finalize")
        .chain(["populate-middle"])
        .collect();
    for point in points {
        let img = w.provision(&format!("{point}.img"), "1.0.0", "gpt", &[]);
        let a = part(&img, "hup-root-a");
        let a_before = range_sha(&img, a);
        let o = run_apply(&w, &img, Some(point));
        assert_eq!(
            o.status.code(),
            Some(hup::failpoint::EXIT),
            "{point}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(range_sha(&img, a), a_before, "{point}: slot A changed");
        // Until the switch, the device still boots A.
        let b = boot::open(BootBackendKind::Gpt, &img, &Labels::default());
        if point != "switch-boot" {
            assert_eq!(b.active().unwrap(), Slot::A, "{point}");
        }
        let o = run_apply(&w, &img, None);
        assert!(
            o.status.success(),
            "{point}: resume failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            range_sha(&img, a),
            a_before,
            "{point}: slot A changed on resume"
        );
        assert_eq!(end_state(&img), want, "{point}: different end state");
        std::fs::remove_file(&img).unwrap();
    }
}

/// A power cut inside `switch-boot` (the boot switch written, its completion not yet
/// journaled), three times over: the apply is given up, and the device must keep booting
/// slot A, not the slot the update half-switched to.
#[test]
fn giving_up_after_the_boot_switch_keeps_the_old_slot() {
    let w = World::new();
    let img = w.provision("giveup.img", "1.0.0", "gpt", &[]);
    let o = run_apply(&w, &img, Some("switch-boot"));
    assert_eq!(o.status.code(), Some(hup::failpoint::EXIT));
    let b = boot::open(BootBackendKind::Gpt, &img, &Labels::default());
    assert_eq!(b.active().unwrap(), Slot::B, "the switch was written");
    // As if the cut came before the journal recorded it, on the third interrupted run.
    let state_path = format!("{}.data/state.json", p(&img));
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let j = &mut st["journal"];
    let done: Vec<serde_json::Value> = j["completed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| *s != "switch-boot")
        .cloned()
        .collect();
    j["completed"] = done.into();
    j["running"] = "switch-boot".into();
    j["attempts"] = 3.into();
    std::fs::write(&state_path, serde_json::to_vec(&st).unwrap()).unwrap();

    let o = run_apply(&w, &img, None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("giving up"), "{err}");
    assert_eq!(
        b.active().unwrap(),
        Slot::A,
        "the given-up slot still boots next"
    );
    assert_eq!(
        b.state().unwrap().slot(Slot::B).status,
        hup::model::slot::SlotStatus::Bad
    );
}

/// Each configuration migration is recorded in the journal once it ran, and a resumed
/// `migrations` step does not run it again.
#[test]
fn migrations_are_journaled_one_by_one() {
    let w = World::new();
    let bundle = w.bundle_with(
        "2.0.0",
        COMPATIBLE,
        &["--migration", "wifi-config-json-to-networkmanager"],
    );
    let img = w.provision("mig.img", "1.0.0", "gpt", &[]);
    let apply = |failpoint: Option<&str>| {
        let mut c = Hup::with(w.apply_args(&img, &bundle));
        if let Some(f) = failpoint {
            c = c.env("HUP_FAILPOINT", f);
        }
        c.run()
    };
    let o = apply(Some("migrations"));
    assert_eq!(o.status.code(), Some(hup::failpoint::EXIT));
    let state_path = format!("{}.data/state.json", p(&img));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(
        st["journal"]["migrations"],
        serde_json::json!(["wifi-config-json-to-networkmanager"]),
        "{st:#}"
    );
    let o = apply(None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("step migrations: done before, skipping"),
        "{err}"
    );
}
