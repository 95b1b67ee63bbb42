//! Smoke test: a hand-built GPT disk with test OS 1 in slot A boots through hup's
//! initramfs into slot A, the OS marks itself good, runs the test script from the
//! data partition and powers off; the init's boot log is on the data partition.

use std::time::Duration;

use crate::artifacts;
use crate::disk::{self, DiskSpec};
use crate::vm::{Vm, VmConfig};

/// The test script the OS finds on the data partition (`DATA/hup-test/run.sh`).
const RUN_SH: &str = r#"
echo "SMOKE slot file: $(cat /run/hup/slot)"
grep -q ' /mnt/data ext4 rw' /proc/mounts && echo "SMOKE data mounted rw"
grep -q ' / ext4 ro' /proc/mounts && echo "SMOKE root mounted ro"
grep -q 'booting slot a from /dev/vda2' "$DATA"/hup/log/boot-1.log && echo "SMOKE boot log ok"
[ -e /init ] || echo "SMOKE initramfs gone"
ip -4 addr show eth0 | grep -q 10.0.2.15 && echo "SMOKE network up"
sync
poweroff
"#;

#[test]
fn smoke_boots_slot_a() {
    let a = artifacts::get();
    let dir = a.scratch("smoke").unwrap();
    let os = dir.join("os1");
    a.test_os("1", &os, &[]).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("hup-test")).unwrap();
    std::fs::write(data.join("hup-test/run.sh"), RUN_SH).unwrap();
    let img = disk::build(
        &dir.join("disk.img"),
        &DiskSpec {
            root_a: Some(&os),
            data: Some(&data),
            a_good: true,
            ..Default::default()
        },
    )
    .unwrap();

    let mut cfg = VmConfig::direct("smoke", &a.vmlinuz, &a.initrd, &img.path);
    cfg.timeout = Duration::from_secs(90);
    let vm = Vm::start(&cfg).unwrap();
    let up = vm.wait_for("HUP-OS-UP version=1 slot=a").unwrap();
    eprintln!("smoke: OS up after {:.1} s", up.as_secs_f64());
    vm.wait_for("HUP-MARK-GOOD rc=").unwrap();
    vm.wait_for("HUP-TEST-DONE rc=").unwrap();
    let st = vm.wait_exit().unwrap();
    let out = vm.output();
    drop(vm);

    assert!(st.success(), "qemu exit status {st}");
    for line in [
        "hup: booting slot a from /dev/vda2 (hup-root-a)",
        "HUP-TEST-START src=/mnt/data/hup-test/run.sh",
        "SMOKE slot file: a",
        "SMOKE data mounted rw",
        "SMOKE root mounted ro",
        "SMOKE boot log ok",
        "SMOKE initramfs gone",
        "SMOKE network up",
    ] {
        assert!(
            out.contains(line),
            "missing {line:?} in the console output:\n{out}"
        );
    }
    // The OS ran `hup mark-good` after it came up, and it succeeded.
    let after_up = out.split("HUP-OS-UP version=1 slot=a").nth(1).unwrap_or("");
    assert!(after_up.contains("HUP-MARK-GOOD rc=0"), "{out}");
    assert!(!out.contains("panicked"), "{out}");

    // After the clean poweroff the boot log is on the data partition.
    let log = String::from_utf8(
        img.read_ext4_file("hup-data", "/hup/log/boot-1.log")
            .unwrap(),
    )
    .unwrap();
    assert!(log.contains("hup: init 0.1.0 starting"), "{log}");
    assert!(log.contains("booting slot a from /dev/vda2"), "{log}");
}
