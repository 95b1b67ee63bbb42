//! Every bundle or source `hup stage` must refuse: a clear one-line error, a non-zero exit,
//! nothing staged, and the bundle staged before still whole. Also the "nothing to do" and
//! free-space cases.

use std::net::TcpListener;
use std::sync::atomic::Ordering;

use crate::support::device::*;
use crate::support::runner::*;

/// A device with v2.0.0 staged (from a local file), and the bundle's bytes.
fn staged_device() -> (Device, Vec<u8>) {
    let dev = Device::new();
    let v2 = dev.bundle(&BundleSpec::default());
    let f = dev.file("v2.hup", &v2);
    ok(&dev.stage(p(&f), &[]));
    dev.assert_staged(&v2, "2.0.0");
    (dev, v2)
}

/// The earlier bundle is still staged and nothing is left in staging/.
fn intact(dev: &Device, v2: &[u8]) {
    dev.assert_staged(v2, "2.0.0");
    assert_eq!(dev.staging(), Vec::<String>::new(), "staging/ is clean");
}

#[test]
fn bad_bytes_and_bad_sources_are_refused() {
    let (dev, v2) = staged_device();
    let srv = Server::http();
    let v3 = dev.bundle(&BundleSpec {
        version: "3.0.0",
        ..BundleSpec::default()
    });

    // Wrong bytes: one byte of the last payload flipped on the server.
    let mut bad = v3.clone();
    let at = bad.len() / 2; // inside rootfs.tar.zst
    bad[at] ^= 0x55;
    srv.put("/bad.hup", bad);
    fails(&dev.stage(&srv.url("/bad.hup"), &[]), 1, "sha256 mismatch");
    intact(&dev, &v2);

    // Wrong --sha256.
    srv.put("/v3.hup", v3.clone());
    let wrong = "0".repeat(64);
    fails(
        &dev.stage(&srv.url("/v3.hup"), &["--sha256", &wrong]),
        1,
        &format!(
            "sha256 mismatch: --sha256 expects {wrong}, the download is {}",
            sha256_hex(&v3)
        ),
    );
    intact(&dev, &v2);
    fails(
        &dev.stage(&srv.url("/v3.hup"), &["--sha256", "xyz"]),
        1,
        "expected 64 hexadecimal digits",
    );

    // 404.
    fails(
        &dev.stage(&srv.url("/missing.hup"), &[]),
        1,
        "HTTP 404 Not Found",
    );
    intact(&dev, &v2);

    // Connection refused: a port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = dev.stage(&format!("http://127.0.0.1:{port}/v3.hup"), &[]);
    fails(&o, 1, "Connection refused");
    assert!(
        !stderr(&o).contains("retrying"),
        "refused is not retried:\n{}",
        stderr(&o)
    );
    intact(&dev, &v2);

    // Not a bundle at all (an HTML error page served with 200).
    srv.put("/page.hup", "<html>oops</html>\n".repeat(100).into_bytes());
    fails(
        &dev.stage(&srv.url("/page.hup"), &[]),
        1,
        "not a hup bundle",
    );
    intact(&dev, &v2);

    // A local file that does not exist, an unsupported scheme.
    fails(
        &dev.stage("/nonexistent/v3.hup", &[]),
        1,
        "/nonexistent/v3.hup",
    );
    fails(
        &dev.stage("ftp://example.org/v3.hup", &[]),
        1,
        "unsupported source",
    );
    intact(&dev, &v2);
}

#[test]
fn bundles_that_do_not_fit_this_device_are_refused_early() {
    let (dev, v2) = staged_device();
    let srv = Server::http();
    let cases: Vec<(&str, BundleSpec, &str)> = vec![
        (
            "untrusted",
            BundleSpec {
                version: "3.0.0",
                other_key: true,
                ..BundleSpec::default()
            },
            "which is not trusted",
        ),
        (
            "compatible",
            BundleSpec {
                version: "3.0.0",
                compatible: "rpi4",
                ..BundleSpec::default()
            },
            "bundle is for device type \"rpi4\", this device is \"qemu-x86_64\"",
        ),
        (
            "older",
            BundleSpec {
                version: "0.9.0",
                ..BundleSpec::default()
            },
            "bundle version 0.9.0 is older than the running 1.0.0",
        ),
        (
            "min-from",
            BundleSpec {
                version: "3.0.0",
                min_from: Some("1.5.0"),
                ..BundleSpec::default()
            },
            "requires at least version 1.5.0 to update from; slot a runs 1.0.0",
        ),
        (
            "too-big",
            BundleSpec {
                version: "3.0.0",
                zeros: 17 * MIB,
                ..BundleSpec::default()
            },
            "more than slot b's partition hup-root-b (16777216 bytes)",
        ),
    ];
    for (name, spec, needle) in cases {
        let bytes = dev.bundle(&spec);
        let path = format!("/{name}.hup");
        srv.put(&path, bytes.clone());
        srv.reset_counters();
        // The server sends the first 64 KiB and then nothing for 5 s: hup must refuse from
        // what it has, or it fails with a timeout instead of the expected message.
        assert!(
            bytes.len() > 2 * 64 * 1024,
            "{name}: the bundle is too small to tell"
        );
        srv.set_stall(Some(64 * 1024));
        fails(&dev.stage(&srv.url(&path), &[]), 1, needle);
        assert!(
            srv.served() < bytes.len() as u64,
            "{name}: refused before the end ({} of {} bytes)",
            srv.served(),
            bytes.len()
        );
        srv.set_stall(None);
        intact(&dev, &v2);
        // The same from a local file (the final checks, not only the early ones).
        let f = dev.file(&format!("{name}.hup"), &bytes);
        fails(&dev.stage(p(&f), &[]), 1, needle);
        intact(&dev, &v2);
    }

    // --allow-downgrade accepts the older one.
    let old = dev.bundle(&BundleSpec {
        version: "0.9.0",
        ..BundleSpec::default()
    });
    let f = dev.file("old.hup", &old);
    ok(&dev.stage(p(&f), &["--allow-downgrade"]));
    dev.assert_staged(&old, "0.9.0");
}

#[test]
fn nothing_to_do_exits_2() {
    let (dev, v2) = staged_device();
    let f = dev.file("again.hup", &v2);
    fails(&dev.stage(p(&f), &[]), 2, "already staged");
    fails(
        &dev.stage(p(&f), &["--sha256", &sha256_hex(&v2)]),
        2,
        "already staged",
    );
    let same = dev.bundle(&BundleSpec {
        version: "1.0",
        ..BundleSpec::default()
    });
    let f = dev.file("same.hup", &same);
    fails(
        &dev.stage(p(&f), &[]),
        2,
        "version 1.0 is already running (slot a)",
    );
    intact(&dev, &v2);
}

#[test]
fn a_full_data_partition_is_refused_with_both_numbers() {
    let fs = SmallFs::new(40 * MIB);
    let dev = Device::with(Some(fs.mnt.join("hup")), 64 * MIB);
    let v2 = dev.bundle(&BundleSpec::default());
    let srv = Server::http();
    srv.put("/v2.hup", v2.clone());
    ok(&dev.stage(&srv.url("/v2.hup"), &[]));
    intact(&dev, &v2);

    // Bigger than the whole filesystem: refused before the first byte of the body.
    let big = dev.bundle(&BundleSpec {
        version: "3.0.0",
        noise: 48 * MIB as usize,
        ..BundleSpec::default()
    });
    srv.put("/big.hup", big.clone());
    srv.reset_counters();
    // Throttled, so that the bytes served show where hup stopped reading.
    srv.set_throttle(Some(std::time::Duration::from_millis(50)));
    let e = fails(
        &dev.stage(&srv.url("/big.hup"), &[]),
        1,
        "not enough free space on the data partition",
    );
    let needed = big.len() as u64 + 16 * MIB;
    assert!(e.contains(&format!("{needed} bytes needed")), "{e}");
    assert!(e.contains("bytes free in"), "{e}");
    // At most the first chunks the server pushed into the socket before hup closed it.
    assert!(srv.served() <= 64 * 1024, "{}", srv.served());
    srv.set_throttle(None);
    intact(&dev, &v2);

    // Without Content-Length the size is unknown ahead: the disk really fills up, the
    // download stops with a clear error, and the partial file is removed.
    srv.shared.no_length.store(true, Ordering::SeqCst);
    fails(
        &dev.stage(&srv.url("/big.hup"), &[]),
        1,
        "No space left on device",
    );
    intact(&dev, &v2);
}
