//! `hup agent` against a DDI server that sends what cannot be used: JSON that does not
//! parse, a deployment without a `.hup` artifact, a hash mismatch, a redirect loop, a
//! stall, a bundle this device refuses. Each gives one clear log line, a failure report
//! when an action is known, and nothing stays staged.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agent::Fleet;
use crate::support::ddi_mock::{Ddi, Reply};
use crate::support::device::{BundleSpec, sha256_hex};
use hup::model::agent::{ActionPhase, ActionResult};

const ID: &str = "dev1";
const FAST: [(&str, &str); 1] = [("HUP_READ_TIMEOUT_MS", "300")];

/// A server whose poll offers action 9 with `deployment` (JSON text), artifact bytes
/// `art` at `/art/v2.hup`.
fn server(deployment: impl Fn(&Ddi) -> String, art: Option<Vec<u8>>) -> (Ddi, Fleet) {
    let ddi = Ddi::start();
    let fleet = Fleet::new(&ddi.url(""), ID, json!({}));
    let base = Ddi::base(ID);
    let dep = format!("{base}/deploymentBase/9");
    ddi.set(
        &base,
        Reply::Json(ddi.poll_json("00:00:05", &[("deploymentBase", &dep)])),
    );
    ddi.set(&dep, Reply::Json(deployment(&ddi)));
    if let Some(b) = art {
        ddi.set("/art/v2.hup", Reply::Bytes(b));
    }
    (ddi, fleet)
}

fn one_artifact(ddi: &Ddi, name: &str, hashes: Value) -> String {
    json!({ "id": "9", "deployment": { "download": "forced", "update": "forced", "chunks": [{ "artifacts": [
        { "filename": name, "hashes": hashes, "_links": { "download": { "href": ddi.url("/art/v2.hup") } } }] }] } })
    .to_string()
}

/// Runs the agent once; asserts one failure report for action 9 whose first detail
/// contains `want`, the same line in the log, a closed and reported action, and nothing
/// staged. Returns the log.
fn fails_with(ddi: &Ddi, fleet: &Fleet, want: &str) -> String {
    let log = fleet.agent_ok("a", &FAST);
    let fb: Vec<Value> = ddi
        .posted("/deploymentBase/9/feedback")
        .into_iter()
        .filter(|f| f["status"]["execution"] == "closed")
        .collect();
    assert_eq!(fb.len(), 1, "one closing report: {fb:?}\n{log}");
    assert_eq!(fb[0]["status"]["result"]["finished"], "failure");
    let line = fb[0]["status"]["details"][0].as_str().unwrap().to_string();
    assert!(line.contains(want), "report {line:?} lacks {want:?}");
    assert!(!line.contains('\n'), "one line: {line:?}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {log}");
    assert!(errors[0].contains(want), "{log}");
    let a = fleet.action().unwrap();
    assert_eq!(
        (a.id.as_str(), a.phase, a.result, a.reported),
        ("9", ActionPhase::Closed, Some(ActionResult::Failure), true)
    );
    fleet.assert_nothing_staged();
    // Reported once: the next cycle sends nothing more.
    fleet.agent_ok("a", &FAST);
    let again = ddi
        .posted("/deploymentBase/9/feedback")
        .iter()
        .filter(|f| f["status"]["execution"] == "closed")
        .count();
    assert_eq!(again, 1);
    log
}

#[test]
fn deployment_json_that_does_not_parse() {
    let (ddi, fleet) = server(|_| "{\"id\": \"9\", \"deployment\": [".into(), None);
    fails_with(&ddi, &fleet, "the deployment answer is not DDI JSON");
}

#[test]
fn poll_json_that_does_not_parse() {
    let ddi = Ddi::start();
    let fleet = Fleet::new(&ddi.url(""), ID, json!({}));
    ddi.set(
        &Ddi::base(ID),
        Reply::Json("<html>proxy error</html>".into()),
    );
    let o = fleet.agent("a", &FAST);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("the poll answer is not DDI JSON"), "{err}");
    let rec = fleet.dev.state().agent.unwrap();
    assert!(rec.last_error.unwrap().contains("not DDI JSON"));
    assert_eq!(rec.last_poll_at, None);
    assert!(ddi.posted("feedback").is_empty());
}

#[test]
fn deployment_without_a_hup_artifact() {
    let (ddi, fleet) = server(
        |d| one_artifact(d, "update.swu", json!({ "sha1": "00" })),
        None,
    );
    fails_with(
        &ddi,
        &fleet,
        "has no artifact whose name ends in .hup (artifacts: update.swu)",
    );
    assert!(
        !ddi.requests().iter().any(|r| r.path == "/art/v2.hup"),
        "nothing downloaded"
    );
}

#[test]
fn hash_mismatch_sha256_sha1_md5() {
    // A wrong hash of each kind refuses the bundle.
    for (hashes, want) in [
        (json!({ "sha256": "ab".repeat(32) }), "sha256".to_string()),
        (
            json!({ "sha1": "cd".repeat(20) }),
            format!("the server's is {}", "cd".repeat(20)),
        ),
        (
            json!({ "md5": "ef".repeat(16) }),
            "the bundle's md5 is".to_string(),
        ),
    ] {
        let (ddi, fleet) = server(|d| one_artifact(d, "v2.hup", hashes.clone()), None);
        ddi.set(
            "/art/v2.hup",
            Reply::Bytes(fleet.dev.bundle(&BundleSpec::default())),
        );
        fails_with(&ddi, &fleet, &want);
    }
    // The right one stages it: the fixture is not wrong otherwise.
    for kind in ["sha256", "sha1", "md5"] {
        let (ddi, fleet) = server(|_| "{}".into(), None);
        let bundle = fleet.dev.bundle(&BundleSpec::default());
        let h = match kind {
            "sha256" => sha256_hex(&bundle),
            "sha1" => hex::encode(<sha1::Sha1 as sha1::Digest>::digest(&bundle)),
            _ => hex::encode(<md5::Md5 as md5::Digest>::digest(&bundle)),
        };
        let dep = format!("{}/deploymentBase/9", Ddi::base(ID));
        ddi.set(
            &dep,
            Reply::Json(one_artifact(&ddi, "v2.hup", json!({ kind: h }))),
        );
        ddi.set("/art/v2.hup", Reply::Bytes(bundle.clone()));
        fleet.agent_ok("a", &FAST);
        fleet.dev.assert_staged(&bundle, "2.0.0");
    }
}

#[test]
fn redirect_loop() {
    let (ddi, fleet) = server(|d| one_artifact(d, "v2.hup", json!({ "sha1": "00" })), None);
    ddi.set("/art/v2.hup", Reply::Redirect(ddi.url("/art/v2.hup")));
    fails_with(&ddi, &fleet, "too many redirects");
}

#[test]
fn stalled_server() {
    // The artifact stalls: the download gives up after its retries; failure reported.
    let (ddi, fleet) = server(|d| one_artifact(d, "v2.hup", json!({ "sha1": "00" })), None);
    ddi.set("/art/v2.hup", Reply::Stall(Duration::from_secs(20)));
    fails_with(&ddi, &fleet, "v2.hup");
    // The poll stalls: one line, no report possible, nothing staged.
    ddi.set(&Ddi::base(ID), Reply::Stall(Duration::from_secs(20)));
    let t = std::time::Instant::now();
    let o = fleet.agent("a", &FAST);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "gave up in time: {:?}",
        t.elapsed()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("did not answer within 0.3 s"), "{err}");
    fleet.assert_nothing_staged();
}

#[test]
fn refused_bundle_reports_the_one_line_error() {
    let (ddi, fleet) = server(|d| one_artifact(d, "v2.hup", json!({})), None);
    let other = fleet.dev.bundle(&BundleSpec {
        compatible: "rpi4",
        ..BundleSpec::default()
    });
    ddi.set("/art/v2.hup", Reply::Bytes(other));
    fails_with(
        &ddi,
        &fleet,
        "bundle is for device type \"rpi4\", this device is \"qemu-x86_64\"",
    );
}
