//! `hup agent` against a scripted DDI server (tests/support/ddi_mock.rs) for what goosebit
//! does not do: hawkBit's deployment shape (sha256 + md5 + sha1, `download` and
//! `download-http`), TargetToken and GatewayToken, maintenance windows and update types,
//! cancelAction; and the whole life of an action on a disk image: staged, applied at the
//! boot, committed or rolled back, reported once.

use serde_json::{Value, json};

use crate::support::agent::Fleet;
use crate::support::ddi_mock::{Ddi, Reply};
use crate::support::device::{BundleSpec, sha256_hex};
use crate::support::status_schema::{assert_valid, doc_blocks};
use hup::model::agent::{ActionPhase, ActionResult};

const ID: &str = "dev1";

/// A hawkBit-shaped deployment of `bundle` served at `/art/v2.hup`.
fn deployment(
    ddi: &Ddi,
    action: &str,
    bundle: &[u8],
    update: &str,
    window: Option<&str>,
) -> String {
    let mut d = json!({
        "id": action,
        "deployment": {
            "download": "forced",
            "update": update,
            "chunks": [{ "part": "os", "version": "2.0.0", "name": "os", "artifacts": [
                { "filename": "README.txt", "size": 3, "hashes": { "sha1": "00" }, "_links": {} },
                { "filename": "v2.hup", "size": bundle.len(),
                  "hashes": { "sha256": sha256_hex(bundle), "md5": "0", "sha1": "0" },
                  "_links": { "download-http": { "href": ddi.url("/art/v2.hup") },
                              "download": { "href": ddi.url("/art/v2.hup") } } } ] }]
        }
    });
    if let Some(w) = window {
        d["deployment"]["maintenanceWindow"] = json!(w);
    }
    d.to_string()
}

/// A server offering action `action` with `bundle`, and a fleet device polling it.
fn offer(update: &str, window: Option<&str>, extra: Value) -> (Ddi, Fleet, Vec<u8>) {
    let ddi = Ddi::start();
    let fleet = Fleet::new(&ddi.url(""), ID, extra);
    let bundle = fleet.dev.bundle(&BundleSpec::default());
    let base = Ddi::base(ID);
    let dep = format!("{base}/deploymentBase/7");
    ddi.set(
        &base,
        Reply::Json(ddi.poll_json("00:00:05", &[("deploymentBase", &dep)])),
    );
    ddi.set(
        &dep,
        Reply::Json(deployment(&ddi, "7", &bundle, update, window)),
    );
    ddi.set("/art/v2.hup", Reply::Bytes(bundle.clone()));
    (ddi, fleet, bundle)
}

/// The feedback bodies of action `id`, as (execution, finished).
fn feedback(ddi: &Ddi, id: &str) -> Vec<(String, String)> {
    ddi.posted(&format!("/deploymentBase/{id}/feedback"))
        .iter()
        .map(|f| {
            (
                f["status"]["execution"].as_str().unwrap().to_string(),
                f["status"]["result"]["finished"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

fn closed(ddi: &Ddi, id: &str) -> Vec<Value> {
    ddi.posted(&format!("/deploymentBase/{id}/feedback"))
        .into_iter()
        .filter(|f| f["status"]["execution"] == "closed")
        .collect()
}

/// How many times `path` was asked of the server.
fn asked(ddi: &Ddi, path: &str) -> usize {
    ddi.requests().iter().filter(|r| r.path == path).count()
}

/// Asserts that every request to the server so far carried the `Authorization` `auth`.
fn all_carried(ddi: &Ddi, auth: &str) {
    for r in ddi.requests() {
        assert_eq!(r.auth.as_deref(), Some(auth), "{r:?}");
    }
}

#[test]
fn success_is_reported_after_mark_good_and_only_once() {
    let (ddi, fleet, bundle) = offer("forced", None, json!({ "target_token": "tok" }));
    fleet.agent_ok("a", &[]);
    fleet.dev.assert_staged(&bundle, "2.0.0");
    let a = fleet.action().unwrap();
    assert_eq!((a.id.as_str(), a.phase), ("7", ActionPhase::Staged));
    let fb = ddi.posted("/deploymentBase/7/feedback");
    assert_eq!(fb.len(), 2, "{fb:?}");
    assert_eq!(
        fb[0]["status"]["result"]["progress"],
        json!({ "cnt": 1, "of": 3 })
    );
    assert_eq!(
        fb[1]["status"]["result"]["progress"],
        json!({ "cnt": 2, "of": 3 })
    );
    assert!(
        fb[1]["status"]["details"][0]
            .as_str()
            .unwrap()
            .contains("staged 2.0.0")
    );
    // Every request carries the device's token: the polls and the artifact download.
    all_carried(&ddi, "TargetToken tok");
    assert_eq!(asked(&ddi, "/art/v2.hup"), 1);

    // `hup status` shows the agent: server, last poll, action and its state (schema-valid).
    let st = fleet.dev.status_json();
    assert_valid(&doc_blocks().0, &st);
    let ag = &st["agent"];
    assert_eq!(ag["server"], ddi.url(""));
    assert_eq!(ag["controller_id"], ID);
    assert!(ag["last_poll_at"].as_u64().unwrap() > 1_700_000_000, "{ag}");
    assert_eq!(ag["action"]["id"], "7");
    assert_eq!(ag["action"]["state"], "staged");
    assert_eq!(ag["action"]["version"], "2.0.0");
    let text = String::from_utf8(fleet.dev.cmd("status", &[], &[]).stdout).unwrap();
    assert!(
        text.contains(&format!("agent:       {} as {ID}, last poll ", ddi.url(""))),
        "{text}"
    );
    assert!(text.contains("action 7: 2.0.0 staged"), "{text}");

    // Polling again while the deployment is still offered: nothing new is sent.
    fleet.agent_ok("a", &[]);
    assert_eq!(feedback(&ddi, "7").len(), 2);

    // The boot applies it; the new OS is on trial: still no result.
    fleet.boot_and_apply();
    fleet.agent_ok("b", &[]);
    assert_eq!(fleet.action().unwrap().phase, ActionPhase::Applied);
    assert!(closed(&ddi, "7").is_empty(), "no result before mark-good");

    fleet.mark("mark-good", "b");
    ddi.remove(&Ddi::base(ID));
    ddi.set(&Ddi::base(ID), Reply::Json(ddi.poll_json("00:00:05", &[])));
    fleet.agent_ok("b", &[]);
    let c = closed(&ddi, "7");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["status"]["result"]["finished"], "success");
    assert!(
        c[0]["status"]["details"][0]
            .as_str()
            .unwrap()
            .contains("2.0.0 runs on slot b")
    );
    let a = fleet.action().unwrap();
    assert_eq!(
        (a.phase, a.result, a.reported),
        (ActionPhase::Closed, Some(ActionResult::Success), true)
    );

    // A restart of the agent reports nothing again.
    fleet.agent_ok("b", &[]);
    assert_eq!(closed(&ddi, "7").len(), 1);
    let st = fleet.dev.status_json();
    assert_valid(&doc_blocks().0, &st);
    assert_eq!(st["agent"]["action"]["result"], "success");
    assert_eq!(st["agent"]["action"]["reported"], true);
}

#[test]
fn rollback_is_reported_as_failure_with_reason_and_log() {
    let (ddi, fleet, _) = offer("attempt", None, json!({}));
    fleet.agent_ok("a", &[]);
    fleet.boot_and_apply();
    fleet.append_to_apply_log("1 hup: the apply's last line");
    fleet.mark("mark-bad", "b");
    fleet.agent_ok("a", &[]);
    let c = closed(&ddi, "7");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["status"]["result"]["finished"], "failure");
    let details: Vec<&str> = c[0]["status"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details[0].contains("rolled-back: 2.0.0 on slot b: slot b was marked bad"),
        "{details:?}"
    );
    assert!(details[1].starts_with("apply log "), "{details:?}");
    assert_eq!(
        details.last(),
        Some(&"1 hup: the apply's last line"),
        "{details:?}"
    );
    fleet.agent_ok("a", &[]);
    assert_eq!(closed(&ddi, "7").len(), 1, "reported once");
}

#[test]
fn md5_and_gateway_token() {
    let ddi = Ddi::start();
    let fleet = Fleet::new(&ddi.url("/"), ID, json!({ "gateway_token": "gw" }));
    let bundle = fleet.dev.bundle(&BundleSpec::default());
    let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&bundle));
    let base = Ddi::base(ID);
    ddi.set(
        &base,
        Reply::Json(ddi.poll_json(
            "00:01:00",
            &[("deploymentBase", &format!("{base}/deploymentBase/3"))],
        )),
    );
    ddi.set(
        &format!("{base}/deploymentBase/3"),
        Reply::Json(json!({ "id": "3", "deployment": { "download": "forced", "update": "forced", "chunks": [{ "artifacts": [
            { "filename": "v2.hup", "hashes": { "md5": md5 }, "_links": { "download-http": { "href": ddi.url("/a/v2.hup") } } }] }] } }).to_string()),
    );
    ddi.set("/a/v2.hup", Reply::Bytes(bundle.clone()));
    fleet.agent_ok("a", &[]);
    fleet.dev.assert_staged(&bundle, "2.0.0");
    all_carried(&ddi, "GatewayToken gw");
}

#[test]
fn update_type_and_maintenance_window_decide_the_reboot() {
    for (update, window, allowed) in [
        ("skip", None, false),
        ("forced", Some("unavailable"), false),
        ("attempt", Some("available"), true),
        ("forced", None, true),
    ] {
        let (ddi, fleet, bundle) = offer(update, window, json!({}));
        let log = fleet.agent_ok("a", &[]);
        fleet.dev.assert_staged(&bundle, "2.0.0");
        let waits = log.contains("the server does not allow the update yet");
        let would = log.contains("reboot to apply it (no reboot by the agent)");
        assert_eq!(
            (waits, would),
            (!allowed, allowed),
            "{update} {window:?}: {log}"
        );
        assert!(feedback(&ddi, "7").iter().all(|(e, _)| e == "proceeding"));
        if !allowed {
            // The window opens: the same action is allowed now, nothing is downloaded again.
            ddi.set(
                &format!("{}/deploymentBase/7", Ddi::base(ID)),
                Reply::Json(deployment(&ddi, "7", &bundle, "forced", Some("available"))),
            );
            let before = asked(&ddi, "/art/v2.hup");
            let log = fleet.agent_ok("a", &[]);
            assert!(log.contains("reboot to apply it"), "{log}");
            assert_eq!(asked(&ddi, "/art/v2.hup"), before);
        }
    }
}

#[test]
fn cancel_drops_a_staged_bundle_and_rejects_an_applied_one() {
    let (ddi, fleet, _) = offer("skip", None, json!({}));
    fleet.agent_ok("a", &[]);
    assert_eq!(fleet.action().unwrap().phase, ActionPhase::Staged);
    let base = Ddi::base(ID);
    let cancel = format!("{base}/cancelAction/8");
    ddi.set(
        &base,
        Reply::Json(ddi.poll_json("00:00:05", &[("cancelAction", &cancel)])),
    );
    ddi.set(
        &cancel,
        Reply::Json(json!({ "id": "8", "cancelAction": { "stopId": "7" } }).to_string()),
    );
    fleet.agent_ok("a", &[]);
    fleet.assert_nothing_staged();
    let a = fleet.action().unwrap();
    assert_eq!((a.phase, a.reported), (ActionPhase::Cancelled, true));
    let answers = ddi.posted("/cancelAction/8/feedback");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["status"]["execution"], "closed");
    assert_eq!(answers[0]["status"]["result"]["finished"], "success");

    // An applied action cannot be cancelled: the answer is `rejected`.
    let (ddi, fleet, _) = offer("forced", None, json!({}));
    fleet.agent_ok("a", &[]);
    fleet.boot_and_apply();
    ddi.set(
        &base,
        Reply::Json(ddi.poll_json("00:00:05", &[("cancelAction", &cancel)])),
    );
    ddi.set(
        &cancel,
        Reply::Json(json!({ "id": "8", "cancelAction": { "stopId": "7" } }).to_string()),
    );
    fleet.agent_ok("b", &[]);
    let answers = ddi.posted("/cancelAction/8/feedback");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["status"]["execution"], "rejected");
    assert_eq!(fleet.action().unwrap().phase, ActionPhase::Applied);
}

#[test]
fn the_token_does_not_follow_a_redirect_to_another_host() {
    let (ddi, fleet, bundle) = offer("forced", None, json!({ "target_token": "tok" }));
    // The artifact link redirects to another server (an object store's URL).
    let store = Ddi::start();
    store.set("/blob/v2.hup", Reply::Bytes(bundle.clone()));
    ddi.set("/art/v2.hup", Reply::Redirect(store.url("/blob/v2.hup")));
    fleet.agent_ok("a", &[]);
    fleet.dev.assert_staged(&bundle, "2.0.0");
    let got = store.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].auth, None, "the token stays with the DDI server");
    all_carried(&ddi, "TargetToken tok");
}
