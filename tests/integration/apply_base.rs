//! `requires_unmodified_base` in the apply preflight: the running slot (mounted, given with
//! `hup apply --base-root`) must match the fingerprint the apply recorded in it. Root: loop
//! mounts.

use crate::support::image::{COMPATIBLE, World};
use crate::support::layout::Mount;
use crate::support::{hup, p, sh};

fn apply(
    img: &std::path::Path,
    bundle: &std::path::Path,
    w: &World,
    base: Option<&std::path::Path>,
) -> (bool, String) {
    let mut args = vec![
        "apply",
        "--disk",
        p(img),
        "--bundle",
        p(bundle),
        "--key",
        p(&w.pubkey),
    ];
    if let Some(b) = base {
        args.extend(["--base-root", p(b)]);
    }
    let out = hup(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        err.lines().last().unwrap_or_default().to_string(),
    )
}

#[test]
fn the_base_is_checked_before_any_write() {
    let w = World::new();
    let img = w.provision("dev.img", "1.0.0", "gpt", &[]);
    let bundle = w.bundle_with("2.0.0", COMPATIBLE, &["--requires-unmodified-base"]);
    let sha = crate::support::image::file_sha(&img);

    // Without access to the running slot the check cannot run: refused.
    let (ok, err) = apply(&img, &bundle, &w, None);
    assert!(
        !ok && err.contains("requires an unmodified base system"),
        "{err}"
    );

    // A copy of slot a with one file changed and one added: refused, nothing written.
    let copy = w.dir.join("base-copy");
    {
        let m = Mount::new(&img, "hup-root-a", true);
        sh(&format!("cp -a {}/. {}", p(m.path()), p(&copy)));
    }
    std::fs::write(copy.join("etc/os-release"), "tampered\n").unwrap();
    std::fs::write(copy.join("etc/added"), "new\n").unwrap();
    let (ok, err) = apply(&img, &bundle, &w, Some(&copy));
    assert!(!ok, "{err}");
    assert!(
        err.contains("differs from its fingerprint") && err.contains("1 modified, 1 added"),
        "{err}"
    );
    assert_eq!(
        crate::support::image::file_sha(&img),
        sha,
        "a refused apply wrote"
    );

    // The slot as the apply wrote it: accepted.
    let m = Mount::new(&img, "hup-root-a", true);
    let (ok, err) = apply(&img, &bundle, &w, Some(m.path()));
    assert!(ok, "{err}");
}
