//! `hup stage` over HTTP and HTTPS against a real server on 127.0.0.1: success, resume
//! after a cut connection, restart without Range support, TLS with and without `--ca`,
//! two concurrent runs, `--reboot`.

use std::time::{Duration, Instant};

use crate::support::device::*;
use crate::support::runner::*;

#[test]
fn stage_over_http_succeeds_and_status_shows_it() {
    let dev = Device::new();
    let bundle = dev.bundle(&BundleSpec::default());
    let srv = Server::http();
    srv.put("/v2.hup", bundle.clone());
    let sha = sha256_hex(&bundle);
    let o = dev.cmd(
        "stage",
        &[&srv.url("/v2.hup"), "--sha256", &sha],
        &[("HUP_LOG", "debug")],
    );
    let out = ok(&o);
    assert!(out.contains("staged 2.0.0"), "{out}");
    // No second read of the payloads: their digests were taken while downloading.
    assert!(stderr(&o).contains("0 of 3 read again"), "{}", stderr(&o));
    dev.assert_staged(&bundle, "2.0.0");
    assert_eq!(
        dev.staging(),
        Vec::<String>::new(),
        "nothing left in staging/"
    );
    assert_eq!(srv.served(), bundle.len() as u64, "downloaded exactly once");

    let st = dev.status_json();
    assert_eq!(st["status_version"], 1);
    assert_eq!(st["staged"]["version"], "2.0.0");
    assert_eq!(st["staged"]["size"], bundle.len() as u64);
    assert_eq!(st["staged"]["sha256"], sha256_hex(&bundle));
    assert_eq!(st["staged"]["path"], p(&dev.staged_file()));
    assert_eq!(st["booted"]["slot"], "a");
    assert_eq!(st["booted"]["version"], "1.0.0");
    assert_eq!(st["booted"]["health"], "good");
    assert_eq!(st["other"]["slot"], "b");
    assert_eq!(st["other"]["version"], serde_json::Value::Null);
    assert_eq!(st["boot"]["backend"], "gpt");
    assert_eq!(st["errors"], serde_json::json!([]));
    let text = ok(&dev.cmd("status", &[], &[]));
    assert!(text.contains("staged:      2.0.0"), "{text}");

    // The same bundle again: nothing to do (exit 2), still staged, no second download.
    srv.reset_counters();
    srv.set_throttle(Some(Duration::from_millis(30)));
    fails(&dev.stage(&srv.url("/v2.hup"), &[]), 2, "already staged");
    srv.set_throttle(None);
    assert!(
        srv.served() < bundle.len() as u64 / 2,
        "stopped early: {}",
        srv.served()
    );
    dev.assert_staged(&bundle, "2.0.0");
    assert_eq!(dev.staging(), Vec::<String>::new());

    // A newer bundle replaces it.
    let v3 = dev.bundle(&BundleSpec {
        version: "3.0.0",
        ..BundleSpec::default()
    });
    srv.put("/v3.hup", v3.clone());
    ok(&dev.stage(&srv.url("/v3.hup"), &[]));
    dev.assert_staged(&v3, "3.0.0");
}

#[test]
fn resumes_after_the_server_cuts_at_30_percent() {
    let dev = Device::new();
    let bundle = dev.bundle(&BundleSpec::default());
    let len = bundle.len() as u64;
    let cut = len * 3 / 10;
    let srv = Server::http();
    srv.put("/b.hup", bundle.clone());
    srv.set_cut(Some(cut));
    let first = dev.stage(&srv.url("/b.hup"), &[]);
    fails(
        &first,
        1,
        &format!("the connection closed after {cut} of {len} bytes"),
    );
    assert!(stderr(&first).contains("run the same command again to resume"));
    assert_eq!(srv.served(), cut, "retries asked for the rest only");
    let reqs = srv.requests();
    assert!(reqs.len() > 1, "retried: {reqs:?}");
    assert!(
        reqs[1..]
            .iter()
            .all(|r| r.ends_with(&format!("range=bytes={cut}-"))),
        "{reqs:?}"
    );
    assert_eq!(dev.staging(), vec!["b.hup.part", "b.hup.part.meta"]);
    assert!(dev.state().staged.is_none(), "nothing staged");

    srv.set_cut(None);
    srv.reset_counters();
    ok(&dev.stage(&srv.url("/b.hup"), &[]));
    assert_eq!(srv.served(), len - cut, "only the rest was transferred");
    assert_eq!(
        srv.requests(),
        vec![format!("GET /b.hup range=bytes={cut}-")]
    );
    dev.assert_staged(&bundle, "2.0.0");
    assert_eq!(dev.staging(), Vec::<String>::new());
}

#[test]
fn a_stalled_server_times_out_and_the_rerun_resumes() {
    let dev = Device::new();
    let bundle = dev.bundle(&BundleSpec::default());
    let len = bundle.len() as u64;
    let srv = Server::http();
    srv.put("/b.hup", bundle.clone());
    srv.set_stall(Some(len / 2));
    let stage = |env: &[(&str, &str)]| dev.cmd("stage", &[&srv.url("/b.hup")], env);
    let t = Instant::now();
    let o = stage(&[("HUP_READ_TIMEOUT_MS", "300")]);
    let e = fails(&o, 1, "no data for 0.3 s (read timeout)");
    assert!(e.contains("run the same command again to resume"), "{e}");
    assert_eq!(stderr(&o).matches("retrying").count(), 4, "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(dev.staging(), vec!["b.hup.part", "b.hup.part.meta"]);
    srv.set_stall(None);
    srv.reset_counters();
    ok(&stage(&[]));
    assert_eq!(srv.served(), len - len / 2);
    dev.assert_staged(&bundle, "2.0.0");
}

#[test]
fn restarts_cleanly_when_the_server_has_no_range_support() {
    let dev = Device::new();
    let bundle = dev.bundle(&BundleSpec::default());
    let len = bundle.len() as u64;
    let srv = Server::http();
    srv.set_range(false);
    srv.put("/b.hup", bundle.clone());
    srv.set_cut(Some(len * 3 / 10));
    fails(
        &dev.stage(&srv.url("/b.hup"), &[]),
        1,
        "the connection closed after",
    );
    assert_eq!(dev.staging(), vec!["b.hup.part", "b.hup.part.meta"]);

    srv.set_cut(None);
    srv.reset_counters();
    let o = dev.stage(&srv.url("/b.hup"), &[]);
    ok(&o);
    assert!(
        stderr(&o).contains("restarting from byte 0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(srv.served(), len, "the whole file again");
    dev.assert_staged(&bundle, "2.0.0");
}

#[test]
fn a_changed_file_on_the_server_restarts_instead_of_mixing() {
    let dev = Device::new();
    let old = dev.bundle(&BundleSpec::default());
    let srv = Server::http();
    srv.put("/b.hup", old.clone());
    srv.set_cut(Some(old.len() as u64 / 2));
    fails(
        &dev.stage(&srv.url("/b.hup"), &[]),
        1,
        "the connection closed after",
    );
    // The server now has another bundle under the same name: If-Range makes it send all.
    let new = dev.bundle(&BundleSpec {
        version: "2.1.0",
        noise: 150_000,
        ..BundleSpec::default()
    });
    srv.put("/b.hup", new.clone());
    srv.set_cut(None);
    srv.reset_counters();
    ok(&dev.stage(&srv.url("/b.hup"), &[]));
    assert_eq!(srv.served(), new.len() as u64);
    dev.assert_staged(&new, "2.1.0");
}

#[test]
fn https_needs_the_ca() {
    let dev = Device::new();
    let bundle = dev.bundle(&BundleSpec::default());
    let pki = Pki::new();
    let ca = dev.file("ca.pem", pki.ca_pem.as_bytes());
    let srv = Server::https(&pki);
    srv.put("/b.hup", bundle.clone());
    // Without --ca: the system CA bundle does not know this CA.
    let o = dev.stage(&srv.url("/b.hup"), &[]);
    let e = fails(&o, 1, "https://127.0.0.1");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(
        !stderr(&o).contains("retrying"),
        "not retried:\n{}",
        stderr(&o)
    );
    assert!(dev.state().staged.is_none());
    assert_eq!(srv.served(), 0);
    ok(&dev.stage(&srv.url("/b.hup"), &["--ca", p(&ca)]));
    dev.assert_staged(&bundle, "2.0.0");
    // A CA file without certificates is refused clearly.
    let junk = dev.file("junk.pem", b"not a pem file\n");
    fails(
        &dev.stage(&srv.url("/b.hup"), &["--ca", p(&junk)]),
        1,
        "no PEM certificate",
    );
}

#[test]
fn two_concurrent_runs_leave_one_consistent_bundle() {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let v3 = dev.bundle(&BundleSpec {
        version: "3.0.0",
        ..BundleSpec::default()
    });
    let srv = Server::http();
    srv.put("/v2.hup", v2.clone());
    srv.put("/v3.hup", v3.clone());
    // About 1.5 s for the first download, so that the second run starts while it runs.
    srv.set_throttle(Some(Duration::from_millis(100)));
    let url2 = srv.url("/v2.hup");
    let first = {
        let dev_args = (dev.config.clone(), dev.data.clone(), dev.disk.clone());
        std::thread::spawn(move || {
            hup(&[
                "stage",
                &url2,
                "--config",
                p(&dev_args.0),
                "--data-dir",
                p(&dev_args.1),
                "--disk",
                p(&dev_args.2),
            ])
        })
    };
    let t = Instant::now();
    while srv.requests().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the first run never asked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = dev.stage(&srv.url("/v3.hup"), &[]);
    let e = fails(&second, 3, "locked");
    assert!(
        e.contains("hup stage") && e.contains("/v2.hup"),
        "names the holder: {e}"
    );
    let first = first.join().unwrap();
    ok(&first);
    assert_eq!(srv.requests().len(), 1, "the second run downloaded nothing");
    dev.assert_staged(&v2, "2.0.0");
    assert_eq!(dev.staging(), Vec::<String>::new());
}

#[test]
fn reboot_runs_the_reboot_command_after_staging() {
    let dev = Device::new();
    let bundle = dev.bundle(&BundleSpec::default());
    let bin = dev.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dev.dir.join("rebooted");
    let script = bin.join("reboot");
    std::fs::write(&script, format!("#!/bin/sh\necho yes > {}\n", p(&marker))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", p(&bin), std::env::var("PATH").unwrap());
    let src = dev.file("b.hup", &bundle);
    let mut args = vec!["stage", p(&src), "--reboot"];
    let cfg = [
        "--config",
        p(&dev.config),
        "--data-dir",
        p(&dev.data),
        "--disk",
        p(&dev.disk),
    ];
    args.extend(cfg);
    // A refused bundle does not reboot.
    let bad = dev.file("bad.hup", b"garbage");
    let mut bad_args = vec!["stage", p(&bad), "--reboot"];
    bad_args.extend(cfg);
    assert!(!hup_env(&bad_args, &[("PATH", &path)]).status.success());
    assert!(!marker.exists());
    ok(&hup_env(&args, &[("PATH", &path)]));
    dev.assert_staged(&bundle, "2.0.0");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "yes\n");
}
