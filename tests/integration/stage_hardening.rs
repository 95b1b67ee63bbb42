//! Hostile or broken input to staging: paths in state.json that point outside the data
//! directory, servers that send too much, too slowly or the wrong part, misleading
//! redirects, a damaged partial download, and the lock a long download must not hold.

use std::time::{Duration, Instant};

use crate::support::device::*;
use crate::support::runner::*;
use serde_json::{Value, json};

/// A file outside `DATA/hup/` that no hup command may touch.
struct Victim {
    path: std::path::PathBuf,
}

const VICTIM: &[u8] = b"user data that must survive\n";

impl Victim {
    fn new(dev: &Device) -> Victim {
        let path = dev.dir.join("victim");
        std::fs::write(&path, VICTIM).unwrap();
        Victim { path }
    }

    fn assert_intact(&self) {
        assert_eq!(
            std::fs::read(&self.path).unwrap(),
            VICTIM,
            "{} changed",
            self.path.display()
        );
    }
}

fn state_json(dev: &Device) -> Value {
    serde_json::from_slice(&std::fs::read(dev.data.join("state.json")).unwrap()).unwrap()
}

fn write_state(dev: &Device, v: &Value) -> Vec<u8> {
    let bytes = serde_json::to_vec_pretty(v).unwrap();
    std::fs::write(dev.data.join("state.json"), &bytes).unwrap();
    bytes
}

#[test]
fn paths_in_state_json_never_reach_outside_the_data_directory() {
    let dev = Device::new();
    let victim = Victim::new(&dev);
    let v2 = dev.bundle(&BundleSpec::default());
    let f = dev.file("v2.hup", &v2);
    // dev.data is DIR/data/hup: from staged/, three levels up is DIR.
    let hostile_files = ["../../../victim".to_string(), p(&victim.path).to_string()];
    for bad in &hostile_files {
        let mut st = state_json(&dev);
        st["staged"] = json!({ "file": bad, "sha256": "ab", "size": 28, "version": "1.5.0",
                               "staged_at": 1_700_000_100u64 });
        let before = write_state(&dev, &st);
        fails(&dev.cmd("cancel", &[], &[]), 1, "staged.file");
        victim.assert_intact();
        fails(&dev.stage(p(&f), &[]), 1, "staged.file");
        victim.assert_intact();
        assert!(!dev.staged_file().exists());
        assert_eq!(std::fs::read(dev.data.join("state.json")).unwrap(), before);
        st["staged"] = Value::Null;
        write_state(&dev, &st);
    }

    // journal.log: the apply would append its log there.
    ok(&dev.stage(p(&f), &[]));
    let staged = dev.staged_file();
    for bad in ["../../victim", p(&victim.path)] {
        let mut st = state_json(&dev);
        st["journal"] = json!({ "bundle_sha256": sha256_hex(&v2), "version": "2.0.0",
            "target": "b", "completed": ["preflight"], "running": null, "log": bad,
            "started_at": 1_700_000_200u64, "attempts": 1 });
        let before = write_state(&dev, &st);
        let o = hup(&[
            "apply",
            "--disk",
            p(&dev.disk),
            "--bundle",
            p(&staged),
            "--key",
            p(&dev.dir.join("release.pub")),
            "--data-dir",
            p(&dev.data),
            "--config",
            p(&dev.config),
        ]);
        fails(&o, 1, "journal.log");
        victim.assert_intact();
        assert_eq!(std::fs::read(dev.data.join("state.json")).unwrap(), before);
        // status names the same problem instead of showing the path.
        let o = dev.cmd("status", &[], &[]);
        let shown = format!("{}{}", stdout(&o), stderr(&o));
        assert!(shown.contains("journal.log"), "{shown}");
    }
}

#[test]
fn junk_after_the_bundle_is_never_stored() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let len = v2.len() as u64;
    let server = Server::http();
    server.put("/v2.hup", v2.clone());
    let url = server.url("/v2.hup");

    // No length and 64 MiB of junk after the bundle (endless, as far as the client knows).
    server.set_no_length(true);
    server.set_junk_after(Some(64 * MIB));
    ok(&dev.stage(&url, &[]));
    dev.assert_staged(&v2, "2.0.0");
    assert!(
        server.served() < len + 24 * MIB,
        "read {} bytes of a {len}-byte bundle",
        server.served()
    );
    ok(&dev.cmd("cancel", &[], &[]));

    // A Content-Length 1 MiB larger than the bundle, and the junk to fill it.
    server.reset_counters();
    server.set_no_length(false);
    server.set_lie_length(Some(len + MIB));
    server.set_junk_after(Some(MIB));
    ok(&dev.stage(&url, &[]));
    dev.assert_staged(&v2, "2.0.0");
    assert_eq!(dev.staging(), Vec::<String>::new());
}

#[test]
fn data_past_what_the_signed_manifest_allows_is_refused() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let f = dev.file("v2.hup", &v2);
    let scan = hup::bundle::reader::scan(&f).unwrap();
    // The manifest and its signature, then endless junk where the payloads should be.
    let head = scan.payload_members[0].offset - 512;
    let server = Server::http();
    server.put("/v2.hup", v2[..head as usize].to_vec());
    server.set_no_length(true);
    server.set_junk_after(Some(64 * MIB));
    let e = fails(
        &dev.stage(&server.url("/v2.hup"), &[]),
        1,
        "the download goes on past the end of the bundle its signed manifest describes",
    );
    assert!(e.contains("at most"), "{e}");
    assert!(
        server.served() < v2.len() as u64 + 24 * MIB,
        "read {} bytes",
        server.served()
    );
    assert!(dev.state().staged.is_none());
    assert_eq!(dev.staging(), Vec::<String>::new());

    // Junk from the first byte: refused at once.
    server.reset_counters();
    server.put("/junk.hup", Vec::new());
    fails(
        &dev.stage(&server.url("/junk.hup"), &[]),
        1,
        "not a hup bundle",
    );
    assert!(server.served() < 24 * MIB, "read {} bytes", server.served());
}

#[test]
fn a_stream_without_a_signed_manifest_early_on_is_refused() {
    let dev = Device::new();
    // A tar whose first member is far larger than any manifest: followed, but never
    // checked, so the download stops once the first two members' room is used up.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4 * MIB);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", &vec![b' '; 4 * MIB as usize][..])
        .unwrap();
    let big = b.into_inner().unwrap();
    let server = Server::http();
    server.put("/big.hup", big);
    fails(
        &dev.stage(&server.url("/big.hup"), &[]),
        1,
        "not a hup bundle: no signed manifest in its first 1317888 bytes",
    );
    assert!(dev.state().staged.is_none());
    assert_eq!(dev.staging(), Vec::<String>::new());
}

#[test]
fn slow_servers_are_given_up_in_bounded_time_and_resumed() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let server = Server::http();
    server.put("/v2.hup", v2.clone());
    let url = server.url("/v2.hup");

    // One byte every 250 ms against a minimum of 1000 bytes/s over 1 s.
    server.set_drip(Some((1, Duration::from_millis(250))));
    let t = Instant::now();
    let o = dev.stage(
        &url,
        &[
            "--min-rate",
            "1000",
            "--min-rate-window",
            "1",
            "--deadline",
            "0",
        ],
    );
    let e = fails(&o, 1, "slower than the minimum of 1000 bytes/s");
    assert!(e.contains("run the same command again to resume"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let kept = std::fs::metadata(dev.data.join("staging/v2.hup.part"))
        .unwrap()
        .len();
    assert!(kept > 0);

    // The deadline, from system.json this time (no minimum rate).
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&dev.config).unwrap()).unwrap();
    cfg["download"] = json!({ "deadline_s": 2, "min_rate": 0 });
    std::fs::write(&dev.config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let t = Instant::now();
    let e = fails(
        &dev.stage(&url, &[]),
        1,
        "did not finish within its deadline of 2 s",
    );
    assert!(e.contains("run the same command again to resume"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let kept2 = std::fs::metadata(dev.data.join("staging/v2.hup.part"))
        .unwrap()
        .len();
    assert!(kept2 > kept, "{kept2} after {kept}");

    // A normal server: the download resumes where the slow one stopped.
    server.set_drip(None);
    server.reset_counters();
    ok(&dev.stage(&url, &[]));
    dev.assert_staged(&v2, "2.0.0");
    assert_eq!(
        server.requests(),
        vec![format!("GET /v2.hup range=bytes={kept2}-")]
    );
}

#[test]
fn a_206_from_another_start_restarts_cleanly() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let len = v2.len() as u64;
    let server = Server::http();
    server.put("/v2.hup", v2.clone());
    let url = server.url("/v2.hup");
    server.set_cut(Some(len * 3 / 10));
    let o = dev.stage(&url, &["--min-rate", "0"]);
    fails(&o, 1, "the connection closed");
    server.set_cut(None);
    server.set_range_start(Some(1000));
    server.reset_counters();
    ok(&dev.stage(&url, &[]));
    dev.assert_staged(&v2, "2.0.0");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].contains("range=bytes="), "{reqs:?}");
    assert_eq!(reqs[1], "GET /v2.hup range=-");
}

#[test]
fn redirects_are_followed_to_http_only_and_named() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let server = Server::http();
    server.put("/v2.hup", v2.clone());
    server.redirect("/evil.hup", "file:///etc/passwd");
    server.redirect("/loop.hup", "/loop.hup");
    server.redirect("/old/v2.hup", "../v2.hup");
    fails(
        &dev.stage(&server.url("/evil.hup"), &[]),
        1,
        "the server redirected to \"file:///etc/passwd\": only http:// and https:// URLs are followed",
    );
    fails(
        &dev.stage(&server.url("/loop.hup"), &[]),
        1,
        "too many redirects (more than 10",
    );
    assert!(dev.state().staged.is_none());
    ok(&dev.stage(&server.url("/old/v2.hup"), &[]));
    dev.assert_staged(&v2, "2.0.0");
}

#[test]
fn a_damaged_partial_download_starts_over() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let server = Server::http();
    server.put("/v2.hup", v2.clone());
    let url = server.url("/v2.hup");
    // What a run cut short leaves, with its first bytes damaged since.
    let part = dev.data.join("staging/v2.hup.part");
    let mut damaged = v2[..30_000].to_vec();
    damaged[..512].copy_from_slice(&[0x55u8; 512]);
    std::fs::write(&part, &damaged).unwrap();
    let etag = format!("\"{}\"", &sha256_hex(&v2)[..16]);
    let meta = json!({ "source": url, "validator": etag, "total": v2.len() });
    std::fs::write(
        dev.data.join("staging/v2.hup.part.meta"),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    let o = dev.stage(&url, &[]);
    let err = stderr(&o);
    ok(&o);
    assert!(
        err.contains("v2.hup.part from an earlier run is unusable")
            && err.contains("starting over from byte 0"),
        "{err}"
    );
    dev.assert_staged(&v2, "2.0.0");
    assert_eq!(server.requests(), vec!["GET /v2.hup range=-".to_string()]);
}

#[test]
fn mark_good_is_not_held_up_by_a_download() {
    let dev = Device::new();
    // The last update went to slot a, which runs: mark-good commits it.
    let mut st = state_json(&dev);
    st["last_result"] = json!({ "outcome": "applied", "version": "1.0.0", "slot": "a",
                                "at": 1_700_000_000u64 });
    write_state(&dev, &st);
    let v2 = dev.bundle(&BundleSpec {
        noise: 800_000,
        ..BundleSpec::default()
    });
    let server = Server::http();
    server.put("/v2.hup", v2.clone());
    // About 5 s for the whole bundle.
    server.set_throttle(Some(Duration::from_millis(100)));
    let mut stage = dev.stage_spawn(&server.url("/v2.hup"), &[]);
    let part = dev.data.join("staging/v2.hup.part");
    let t = Instant::now();
    while !part.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the download did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    let out = ok(&dev.cmd("mark-good", &[], &[]));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(out.contains("last update: committed"), "{out}");
    // refund-try and mark-bad take the same short state lock: they answer at once too
    // (refund-try has nothing to give back on a committed slot; mark-bad refuses because
    // slot b cannot boot, which it can only tell after it got the lock).
    let t = Instant::now();
    let o = dev.cmd("refund-try", &[], &[]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_ne!(
        o.status.code(),
        Some(3),
        "refund-try waited for a lock: {o:?}"
    );
    let t = Instant::now();
    fails(
        &dev.cmd("mark-bad", &[], &[]),
        1,
        "would leave nothing to boot",
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A second stage, and cancel, still refuse while the download runs.
    let e = fails(&dev.cmd("cancel", &[], &[]), 3, "download.lock");
    assert!(e.contains("hup stage"), "{e}");
    assert!(
        stage.try_wait().unwrap().is_none(),
        "the stage ended before mark-good ran"
    );

    let o = stage.wait_with_output().unwrap();
    ok(&o);
    dev.assert_staged(&v2, "2.0.0");
    // The stage stored its bundle without undoing what mark-good recorded.
    let last = dev.state().last_result.unwrap();
    assert_eq!(last.outcome, hup::model::state::Outcome::Committed);
}
