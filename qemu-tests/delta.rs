//! A delta update in QEMU (docs/delta.md): v2 packed with `--delta-from` v1's bundle is
//! staged over HTTP by a v1 device, whose initramfs rebuilds v2's slot from the delta and
//! the running slot a (read through libext2fs without mounting it); v2 boots in slot b and
//! commits, the user's files intact.

use std::process::Command;

use crate::artifacts::{self, OsSpec, run};
use crate::device::{Backend, BootOpts, Device};
use crate::script::Script;
use crate::update::{expect_applied, expect_committed, expect_same_data, v1_stages};

#[test]
fn a_delta_update_over_http_boots_v2_committed() {
    let a = artifacts::get();
    let v1 = a.bundle(&OsSpec::gpt("v1", "1", &[]));
    let full = a.bundle(&OsSpec::gpt("v2", "2", &[]));
    let dir = a.scratch("bundle-v2-delta").unwrap();
    let os = dir.join("rootfs");
    a.test_os("2", &os, &[]).unwrap();
    let (mut pack, delta) = a.pack_command(&os, "v2-delta", "2").unwrap();
    let printed = run(pack.arg("--delta-from").arg(&v1)).unwrap();
    assert!(printed.contains("delta bundle: "), "{printed}");
    let inspect = run(Command::new(&a.hup).arg("inspect").arg(&delta)).unwrap();
    assert!(inspect.contains("delta:         from base 1 "), "{inspect}");
    let (d, f) = (
        std::fs::metadata(&delta).unwrap().len(),
        std::fs::metadata(&full).unwrap().len(),
    );
    assert!(
        d < f / 2,
        "the delta ({d} bytes) is not much smaller than v2 ({f} bytes)"
    );
    eprintln!("delta-update: v2 as a delta is {d} bytes, the full v2 bundle {f} bytes");

    let url = artifacts::server().guest_url("bundles/v2-delta.hup");
    let mut dev = Device::provision("delta-update", &v1, Backend::Gpt).unwrap();
    let b1 = v1_stages(&mut dev, "v1-stage-delta", &url);
    let b = dev.boot(BootOpts::new("apply-delta")).unwrap();
    expect_applied(&b, "2", "b");
    let b = dev
        .boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    expect_committed(&b.status(), "2", "b");
    expect_same_data(&b1.data_sums(), &b);
    dev.fsck("hup-root-b").unwrap();
    dev.fsck("hup-data").unwrap();
    // The rebuilt slot holds v2's files: its os-release names version 2.
    let os_release = dev.read_file("hup-root-b", "/etc/os-release").unwrap();
    assert!(
        String::from_utf8_lossy(&os_release).contains("VERSION_ID=2"),
        "{}",
        String::from_utf8_lossy(&os_release)
    );
}
