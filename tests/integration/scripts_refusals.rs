//! The error paths of the build scripts, run for real: `scripts/qemu-uboot` refuses a U-Boot
//! source tarball with another sha256 (served by the test's HTTP server as the Debian
//! mirror), `scripts/mk-test-os` an unknown `--arch`, `scripts/demo` an unknown `--arch` and
//! a `--boot-backend` that does not go with the architecture. Each stops with its one-line
//! error and a non-zero exit and leaves nothing behind: no cache entry, no output directory.
//! `scripts/fetch-deb` (their shared .deb cache) refuses a package or version apt does not have.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::server::Server;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TARBALL: &str = "u-boot_2023.01+dfsg.orig.tar.xz";

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The entries of `dir` (which must exist), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn qemu_uboot_refuses_a_tarball_with_another_sha256_and_caches_nothing() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = scratch.path().join("cache");
    let server = Server::http();
    let pool = format!("/pool/main/u/u-boot/{TARBALL}");
    server.put(&pool, b"not the U-Boot source of bookworm\n".to_vec());

    let out = run(Command::new(Path::new(REPO).join("scripts/qemu-uboot"))
        .env("HUP_DEBIAN_MIRROR", &server.base)
        .env("HUP_CACHE", &cache));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // Its progress line, then its one-line error: nothing of sha256sum's own.
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!("qemu-uboot: downloading {TARBALL}"),
            format!("qemu-uboot: {TARBALL} does not have the expected sha256"),
        ],
        "{err}"
    );
    assert_eq!(text(&out.stdout), "", "printed something on stdout");
    // It did fetch the file from the mirror it was given.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with(&format!("GET {pool} "))),
        "{:?}",
        server.requests()
    );
    // Neither the tarball, nor a uboot/<key> build directory, nor the temporary one stays.
    assert_eq!(entries(&cache.join("uboot")), Vec::<String>::new());
}

#[test]
fn mk_test_os_refuses_an_unknown_arch_before_creating_or_fetching_anything() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = scratch.path().join("cache");
    let os = scratch.path().join("os");
    let out = run(Command::new(Path::new(REPO).join("scripts/mk-test-os"))
        .arg("1.0.0")
        .arg(&os)
        .args(["--arch", "sparc", "--hup", env!("CARGO_BIN_EXE_hup")])
        .env("HUP_CACHE", &cache)
        .env_remove("BUSYBOX"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "mk-test-os: unsupported --arch sparc (x86_64 or aarch64)\n"
    );
    assert_eq!(text(&out.stdout), "");
    assert!(!os.exists(), "made {}", os.display());
    assert!(!cache.exists(), "touched the cache {}", cache.display());
}

#[test]
fn demo_refuses_a_backend_of_another_arch_and_an_unknown_arch_before_doing_anything() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let work = scratch.path().join("demo");
    for (args, msg) in [
        (
            &["--boot-backend", "uboot"][..],
            "demo: --boot-backend uboot: the x86_64 demo runs on gpt or grub",
        ),
        (
            &["--arch", "x86_64", "--boot-backend", "uboot"][..],
            "demo: --boot-backend uboot: the x86_64 demo runs on gpt or grub",
        ),
        (
            &["--arch", "aarch64", "--boot-backend", "grub"][..],
            "demo: --boot-backend grub: the aarch64 demo runs on uboot",
        ),
        (
            &["--boot-backend=gpt", "--arch=aarch64"][..],
            "demo: --boot-backend gpt: the aarch64 demo runs on uboot",
        ),
        (
            &["--arch", "sparc"][..],
            "demo: --arch sparc: x86_64 or aarch64",
        ),
        (
            &["--arch", "sparc", "--boot-backend", "grub"][..],
            "demo: --arch sparc: x86_64 or aarch64",
        ),
    ] {
        let out = run(Command::new(Path::new(REPO).join("scripts/demo"))
            .args(args)
            .env("HUP_DEMO_DIR", &work));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err, format!("{msg}\n"), "{args:?}");
        // The first step (installing what it needs) prints its heading on stdout.
        assert_eq!(text(&out.stdout), "", "{args:?} started");
        assert!(!work.exists(), "{args:?} made {}", work.display());
    }
}

#[test]
fn fetch_deb_refuses_an_unknown_package_or_version_and_caches_nothing() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache = scratch.path().join("cache");
    let fetch = |args: &[&str]| {
        run(Command::new(Path::new(REPO).join("scripts/fetch-deb"))
            .args(args)
            .env("HUP_CACHE", &cache))
    };

    let out = fetch(&["hup-no-such-package", "amd64"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "fetch-deb: apt knows no hup-no-such-package:amd64 \
         (apt-get update; for arm64, scripts/install-deps adds the architecture)\n"
    );
    assert_eq!(text(&out.stdout), "");
    assert!(!cache.exists(), "touched the cache {}", cache.display());

    // A version apt does not have: apt-get download fails (no network needed), and the
    // temporary directory it ran in is gone.
    let out = fetch(&["busybox-static", "amd64", "0.0-hup-no-such-version"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The progress line, then the error with apt's own last line.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("fetch-deb: downloading "), "{err}");
    assert!(
        lines[1].starts_with(
            "fetch-deb: apt-get download busybox-static:amd64=0.0-hup-no-such-version failed: E: "
        ),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");
    assert_eq!(entries(&cache.join("deb")), Vec::<String>::new());

    for args in [
        &["Busybox", "amd64"][..],
        &["busybox-static", "amd64", "1;rm"][..],
    ] {
        let out = fetch(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("fetch-deb: bad "), "{args:?}: {err}");
    }
    let out = fetch(&["busybox-static"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "usage: scripts/fetch-deb PKG ARCH [VERSION]\n"
    );
}
