//! Updates of a real Debian bookworm with systemd (scripts/mk-debian-os), gpt backend,
//! booted with hup's initramfs:
//! 1. v1 (a few hundred MB, systemd-networkd) writes the user's files and a connman-era
//!    `config.json` with awkward WiFi values, stages v2 (upgraded packages, NetworkManager
//!    added; the bundle runs the WiFi migration);
//! 2. the initramfs applies v2; v2 is committed by `hup-mark-good.service` once
//!    `boot-complete.target` is reached (dist/systemd/), NetworkManager itself reads the
//!    migrated connection back with the exact values, a file capability survived, both
//!    slots pass `e2fsck -fn`;
//! 3. a power cut in the middle of writing the large rootfs: the next boot completes it;
//! 4. v3, whose health check fails, never reaches `boot-complete.target`, is never
//!    committed, and the device falls back to v2 after its tries; a clean reboot gives its
//!    try back (`hup-refund-try.service`) while a forced one does not.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use hup::model::slot::{Slot, SlotStatus};
use hup::model::state::Outcome;

use crate::artifacts;
use crate::debian::{self, DebianOs, opts};
use crate::device::{Backend, Boot, Device};
use crate::fixture::Cached;
use crate::rollback::{MAX_TRIES, expect_rolled_back};
use crate::script::Script;
use crate::status::{boot_slot, booted, last_result, next};
use crate::update::{expect_applied, expect_committed, expect_same_data};

const MIGRATION: &str = "wifi-config-json-to-networkmanager";
/// A unicode SSID with `;` and quotes in it (25 bytes), and a passphrase with spaces.
pub const SSID: &str = "Café; \"Nöel's\" net";
pub const PSK: &str = "correct horse battery staple";

/// Writes the connman-era `config.json` at the root of the data partition (where the
/// migration looks when the boot partition has none).
fn write_config_json() -> String {
    let json = serde_json::json!({ "wifiSsid": SSID, "wifiKey": PSK }).to_string();
    format!("cat > \"$DATA/config.json\" <<'HUPEOF'\n{json}\nHUPEOF\nsync\n")
}

/// NetworkManager's own view of the migrated connection, as `HUP-NM` lines.
const PRINT_NM: &str = r#"
n=0
until nmcli -t -f RUNNING general 2>/dev/null | grep -q running; do
    n=$((n + 1)); [ $n -ge 30 ] && break; sleep 1
done
nmcli -t -f NAME,TYPE connection show | sed 's/^/HUP-NM-CONN /'
nmcli -s -g 802-11-wireless.ssid,802-11-wireless-security.psk connection show resin-wifi | sed 's/^/HUP-NM-GET /'
echo "HUP-CAP $(getcap /usr/bin/ping)"
echo "HUP-ROOT-RW $(findmnt -n -o OPTIONS / | cut -d, -f1)"
"#;

pub fn v1_spec() -> DebianOs {
    DebianOs::gpt("deb-v1", "v1", "1", &[])
}

pub fn v2_spec() -> DebianOs {
    let mut s = DebianOs::gpt("deb-v2", "v2", "2", &["--refund-on-shutdown"]);
    s.pack_args = vec!["--migration".into(), MIGRATION.into()];
    s
}

/// A Debian v1 device with v2 staged, powered off before the apply.
pub struct Staged {
    pub device: Device,
    pub v1: Boot,
}

static STAGED: Cached<Staged> = Cached::new("staging Debian v2 on a Debian v1 device failed");

pub fn staged() -> &'static Staged {
    STAGED.get(|| {
        debian::bundle(&v2_spec());
        let url = artifacts::server().guest_url("bundles/deb-v2.hup");
        let mut dev = debian::provision("deb-staged", &v1_spec(), Backend::Gpt)?;
        let b = dev.boot(
            opts("v1-stage-v2").script(
                Script::new()
                    .write_user_data()
                    .print_user_data()
                    .sh(&write_config_json())
                    .stage(&url)
                    .poweroff(),
            ),
        )?;
        b.expect_os("1", "a");
        b.expect("HUP-MARK-GOOD rc=0");
        b.expect("HUP-STAGE rc=0");
        anyhow::ensure!(b.data_sums().len() == 4, "v1 printed no checksums");
        Ok(Staged { device: dev, v1: b })
    })
}

/// The staged device after the apply boot and v2's first boot.
pub struct Updated {
    pub device: Device,
    pub apply: Boot,
    pub v2: Boot,
    /// A plain reboot of v2, for the boot-time comparison.
    pub again: Boot,
}

static UPDATED: Cached<Updated> = Cached::new("updating Debian v1 to v2 failed");

pub fn updated() -> &'static Updated {
    UPDATED.get(|| {
        let mut dev = staged().device.copy("deb-update")?;
        let apply = dev.boot(opts("apply-v2"))?;
        let v2 = dev.boot(
            opts("v2").script(
                Script::new()
                    .status()
                    .print_user_data()
                    .sh(PRINT_NM)
                    .reboot(),
            ),
        )?;
        let again = dev.boot(opts("v2-again").script(Script::new().poweroff()))?;
        Ok(Updated {
            device: dev,
            apply,
            v2,
            again,
        })
    })
}

fn prefixed<'a>(b: &'a Boot, prefix: &str) -> Vec<&'a str> {
    b.lines()
        .filter_map(|l| l.split_once(prefix).map(|(_, r)| r))
        .collect()
}

#[test]
fn debian_update_is_committed_once_boot_complete_target_is_reached() {
    let u = updated();
    expect_applied(&u.apply, "2", "b");
    u.apply
        .expect("migration wifi-config-json-to-networkmanager");
    let b = &u.v2;
    b.expect_os("2", "b");
    // hup-mark-good.service ran after boot-complete.target and committed the slot.
    b.expect("HUP-MARK-GOOD rc=0");
    b.expect_not("HUP-OS-UNHEALTHY");
    expect_committed(&b.status(), "2", "b");
    expect_same_data(&staged().v1.data_sums(), b);
    // systemd remounted the root read-write from the fstab the OS carries.
    assert_eq!(
        prefixed(b, "HUP-ROOT-RW "),
        vec!["rw"],
        "{}",
        b.log.display()
    );
    // A file capability of the Debian package survived pack, apply and ext4.
    let cap = prefixed(b, "HUP-CAP ");
    assert_eq!(cap.len(), 1, "{}", b.log.display());
    assert!(cap[0].contains("cap_net_raw"), "getcap printed {cap:?}");
    // The plain reboot afterwards stays committed in slot b.
    u.again.expect_os("2", "b");
    u.again.expect("HUP-MARK-GOOD rc=0");
    expect_committed(&u.again.status(), "2", "b");
    // Both slots are clean ext4 after the clean shutdown.
    u.device.fsck("hup-root-a").unwrap();
    u.device.fsck("hup-root-b").unwrap();
    u.device.fsck("hup-data").unwrap();
    record_timings(u);
}

#[test]
fn networkmanager_reads_back_the_migrated_wifi_exactly() {
    let b = &updated().v2;
    let conns = prefixed(b, "HUP-NM-CONN ");
    assert!(
        conns.contains(&"resin-wifi:802-11-wireless"),
        "nmcli connection show printed {conns:?} ({})",
        b.log.display()
    );
    // nmcli -g escapes ':' and '\' only; the SSID and passphrase have neither.
    assert_eq!(
        prefixed(b, "HUP-NM-GET "),
        vec![SSID, PSK],
        "{}",
        b.log.display()
    );
}

#[test]
fn debian_status_validates_against_the_documented_schema() {
    let (schema, _) = crate::status_schema::doc_blocks();
    let b = &updated().v2;
    let docs: Vec<serde_json::Value> = prefixed(b, "HUP-STATUS ")
        .into_iter()
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{e}: {j}")))
        .collect();
    assert!(!docs.is_empty(), "{}", b.log.display());
    for d in &docs {
        crate::status_schema::assert_valid(&schema, d);
    }
    // And on v1, before the update.
    for j in prefixed(&staged().v1, "HUP-STATUS ") {
        crate::status_schema::assert_valid(&schema, &serde_json::from_str(j).unwrap());
    }
}

/// Writes the apply steps' times and the boot times to `target/qemu-logs/debian-timings.txt`
/// (and the test's output), for the closing note and docs/apply.md.
fn record_timings(u: &Updated) {
    let steps: Vec<&str> = u
        .apply
        .lines()
        .filter(|l| l.contains("step ") && l.contains(": done"))
        .collect();
    let mut text = String::from("Debian v1 -> v2 under TCG (gpt backend, hup's initramfs)\n");
    text.push_str(&format!(
        "apply boot: {:.1} s from power-on to the reboot\n",
        u.apply.secs
    ));
    for s in steps {
        text.push_str(&format!("  {}\n", s.trim()));
    }
    let up = |b: &Boot| {
        b.os_up_secs
            .map_or("-".to_string(), |t| format!("{t:.1} s"))
    };
    text.push_str(&format!(
        "power-on to OS up: v1 {} , v2 first boot {}, v2 plain reboot {}\n",
        up(&staged().v1),
        up(&u.v2),
        up(&u.again)
    ));
    text.push_str(&format!(
        "update, power-on of the apply boot to v2 up: {:.1} s\n",
        u.apply.secs + u.v2.os_up_secs.unwrap_or(f64::NAN)
    ));
    eprintln!("{text}");
    let _ = std::fs::write(
        crate::vm::log_dir().join("debian-timings.txt"),
        text.as_bytes(),
    );
}

#[test]
fn a_power_cut_while_the_debian_rootfs_is_written_is_completed_at_the_next_boot() {
    let mut dev = staged().device.copy("deb-powercut").unwrap();
    // Cut 8 s into populate (of about 35 s under TCG): part of the 300+ MB rootfs is written.
    let b = dev
        .boot(opts("apply-cut").kill_after("step populate: start", Duration::from_secs(8)))
        .unwrap();
    assert!(
        b.killed,
        "the apply ended before the cut ({})",
        b.log.display()
    );
    b.expect_not("step populate: done");
    let st = dev.host_status().unwrap();
    assert_eq!(boot_slot(&st, Slot::A).status, SlotStatus::Good, "{st:#?}");
    assert_eq!(next(&st), Some(Slot::A), "{st:#?}");
    // The next boot resumes the journal and writes the slot again.
    let b = dev.boot(opts("apply-resumed")).unwrap();
    expect_applied(&b, "2", "b");
    let b = dev
        .boot(opts("v2").script(Script::new().status().print_user_data().poweroff()))
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    expect_committed(&b.status(), "2", "b");
    expect_same_data(&staged().v1.data_sums(), &b);
    dev.fsck("hup-root-b").unwrap();
    dev.fsck("hup-data").unwrap();
}

#[test]
fn a_debian_update_whose_health_check_fails_is_never_committed_and_rolls_back() {
    let spec = DebianOs::gpt(
        "deb-v3-unhealthy",
        "v2",
        "3",
        &["--never-healthy", "--refund-on-shutdown"],
    );
    debian::bundle(&spec);
    let url = artifacts::server().guest_url("bundles/deb-v3-unhealthy.hup");
    let mut dev = updated().device.copy("deb-rollback").unwrap();
    let b = dev
        .boot(opts("v2-stage-v3").script(Script::new().stage(&url).poweroff()))
        .unwrap();
    b.expect("HUP-STAGE rc=0");
    let b = dev.boot(opts("apply-v3")).unwrap();
    expect_applied(&b, "3", "a");

    // A clean reboot: hup-refund-try.service gives the try back at shutdown.
    let b = dev
        .boot(opts("v3-clean-reboot").script(Script::new().status().reboot()))
        .unwrap();
    b.expect_os("3", "a");
    b.expect("HUP-OS-UNHEALTHY version=3 slot=a");
    b.expect("HUP-FAILED-UNIT hup-test-failing-check.service");
    b.expect_not("HUP-MARK-GOOD");
    b.expect("slot a: the try of this boot is given back");
    let tries_first = booted(&b.status()).tries_left;

    // Forced reboots (a watchdog reset) count: after the last try slot a is bad.
    let mut left = BTreeMap::new();
    for n in 1..=MAX_TRIES {
        let b = dev
            .boot(
                opts(&format!("v3-try{n}")).script(
                    Script::new()
                        .status()
                        .sh("sync\nsystemctl reboot --force --force\n"),
                ),
            )
            .unwrap();
        b.expect_os("3", "a");
        b.expect("HUP-OS-UNHEALTHY version=3 slot=a");
        b.expect_not("the try of this boot is given back");
        let st = b.status();
        assert_eq!(last_result(&st).outcome, Outcome::Applied, "{st:#?}");
        left.insert(n, booted(&st).tries_left);
        if n == 1 {
            // The refunded try: the first forced boot has as many tries left as the clean one.
            assert_eq!(booted(&st).tries_left, tries_first, "{st:#?}");
        }
    }
    assert_eq!(
        left.get(&MAX_TRIES).copied().flatten(),
        Some(0),
        "tries left per forced boot: {left:?}"
    );

    // The initramfs boots v2 by itself and records the rollback.
    let b = dev
        .boot(
            opts("v2-again").script(
                Script::new()
                    .status()
                    .print_apply_logs()
                    .print_user_data()
                    .poweroff(),
            ),
        )
        .unwrap();
    b.expect_os("2", "b");
    b.expect("HUP-MARK-GOOD rc=0");
    expect_rolled_back(&b, "3", "a", "did not confirm itself");
    expect_same_data(&staged().v1.data_sums(), &b);
    dev.fsck("hup-data").unwrap();
}

/// The Debian v1 device's first boot: hup's initramfs switches to Debian's systemd, which
/// reports slot a good.
#[test]
fn debian_v1_boots_with_hups_initramfs_and_is_good() -> Result<()> {
    let b = &staged().v1;
    b.expect("hup: booting slot a from /dev/vda2 (hup-root-a)");
    let st = b.status();
    assert_eq!(booted(&st).version.as_deref(), Some("1"), "{st:#?}");
    assert_eq!(booted(&st).health, Some(SlotStatus::Good), "{st:#?}");
    Ok(())
}
