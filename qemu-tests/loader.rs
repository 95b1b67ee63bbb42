//! What the tests of the real boot loaders (`grub` on OVMF, `uboot` on aarch64) share: a
//! [`Loader`] describes one backend (its bundles, its console marker, how the host reads its
//! environment and what that environment holds after the switch and after the commit), and
//! the helpers and the power-cut scenario are written once against it. A difference between
//! the loaders (GRUB's `A_OK`/`B_OK` against U-Boot's `HUP_TRIAL`, U-Boot's `bootcmd` that
//! must survive) is data in the description, not a second copy of the code.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use hup::model::slot::{Slot, SlotStatus};

use crate::artifacts;
use crate::device::{Backend, Boot, BootOpts, Device};
use crate::script::Script;
use crate::status::{boot_slot, next};
use crate::update::{expect_applied, expect_committed, expect_same_data, v1_stages};

/// A loader's environment as the host's tool reads it: variable to value.
pub type Env = BTreeMap<String, String>;

/// Variables and the values wanted for them (`""`: empty or absent).
pub type Vars = &'static [(&'static str, &'static str)];

/// One boot loader backend as its QEMU tests see it.
pub struct Loader {
    /// The backend the devices are provisioned with.
    pub backend: Backend,
    /// Builds the test OS bundle `name` (version, `hup pack` flags) for a device; its
    /// command line points at the device's script and ends with the last argument.
    pub make_bundle: fn(&str, &str, &str, &[&str], &str) -> PathBuf,
    /// The loader's console line when it boots slot a, and slot b.
    pub booting: [&'static str; 2],
    /// Lines every boot of v1 shows besides [`Loader::booting`] (e.g. the environment load).
    pub v1_lines: &'static [&'static str],
    /// Reads the device's environment on the host (`grub-editenv`, `fw_printenv`).
    pub read_env: fn(&Device) -> Result<Env>,
    /// The environment's name in assertion messages.
    pub env_name: &'static str,
    /// Variables that keep their exact value whatever hup does (the board's own).
    pub kept: Vars,
    /// The environment once hup switched to slot b: b on trial with all its tries, a good.
    pub switched_to_b: Vars,
    /// The environment once v2 in slot b committed itself.
    pub committed_b: Vars,
}

impl Loader {
    /// The test OS bundle `name` of `device`, with the plain command line.
    pub fn bundle(&self, device: &str, name: &str, version: &str, flags: &[&str]) -> PathBuf {
        (self.make_bundle)(device, name, version, flags, "")
    }

    /// The loader's console line when it boots `slot`.
    pub fn booting(&self, slot: Slot) -> &'static str {
        match slot {
            Slot::A => self.booting[0],
            Slot::B => self.booting[1],
        }
    }

    /// Asserts the variables `want` in the device's environment as the host's tool reads it
    /// (`""`: empty or absent), and [`Loader::kept`]. Returns the environment.
    pub fn expect_env(&self, dev: &Device, want: &[(&str, &str)]) -> Env {
        let env = (self.read_env)(dev).unwrap();
        for (k, v) in want {
            assert_eq!(
                env.get(*k).map(String::as_str).unwrap_or(""),
                *v,
                "{k} in the {}: {env:?}",
                self.env_name
            );
        }
        for (k, v) in self.kept {
            assert_eq!(
                env.get(*k).map(String::as_str),
                Some(*v),
                "the board's {k} is gone from the {}: {env:?}",
                self.env_name
            );
        }
        env
    }

    /// v1 provisioned, stages `to_url` (writing the user's files), and the initramfs
    /// applies it to slot b: the first two boots of most scenarios. Returns v1's boot.
    pub fn stage_and_apply(&self, dev: &mut Device, to_url: &str, version: &str) -> Boot {
        let v1 = v1_stages(dev, "v1-stage", to_url);
        for line in self.v1_lines {
            v1.expect(line);
        }
        v1.expect(self.booting(Slot::A));
        v1.expect("HUP-MARK-GOOD rc=0");
        if let Some(t) = v1.os_up_secs {
            eprintln!("boot time {:?}: power-on to OS up {t:.2} s", self.backend);
        }
        let b = dev
            .boot(BootOpts::new(&format!("apply-v{version}")))
            .unwrap();
        expect_applied(&b, version, "b");
        b.expect("boot files: 3 files into hup/b");
        v1
    }

    /// The power cut right after the boot switch: v1's initramfs applies v2 with the
    /// `switch-boot` failpoint on v1's command line, so the power goes the moment the switch
    /// is on the disk. The environment must then show slot b on trial and slot a good
    /// behind it; the loader boots slot b (one try), whose initramfs finishes the journaled
    /// apply, and v2 commits itself with the user's files intact.
    pub fn power_cut_right_after_the_boot_switch(&self, dev_name: &str) {
        // v1's initramfs applies v2: the failpoint rides on v1's kernel command line.
        let v1 = (self.make_bundle)(
            dev_name,
            "v1-failpoint",
            "1",
            &[],
            "hup.failpoint=switch-boot",
        );
        self.bundle(dev_name, "v2", "2", &[]);
        let mut dev = Device::provision(dev_name, &v1, self.backend).unwrap();
        let b1 = v1_stages(&mut dev, "v1-stage", &url(dev_name, "v2"));
        b1.expect("hup: failpoint switch-boot armed");

        let b = dev.boot(BootOpts::new("cut-switch-boot")).unwrap();
        b.expect("step switch-boot: done");
        b.expect("hup: warn: failpoint switch-boot: ");
        b.expect("Kernel panic");
        assert!(b.os_up().is_none(), "an OS came up despite the cut");
        // The switch is on the disk: slot b on trial, slot a still good behind it.
        self.expect_env(&dev, self.switched_to_b);
        let st = dev.host_status().unwrap();
        assert_eq!(next(&st), Some(Slot::B), "{st:#?}");
        assert_eq!(boot_slot(&st, Slot::A).status, SlotStatus::Good, "{st:#?}");

        // The loader boots slot b (one try), whose initramfs finishes the journaled apply.
        let b = dev.boot(BootOpts::new("resume")).unwrap();
        b.expect(self.booting(Slot::B));
        b.expect("resuming the apply of 2 into slot b");
        b.expect("step switch-boot: done before, skipping");
        b.expect("rebooting: 2 written to slot b, trying it next");
        b.expect_not("Kernel panic");
        let b = dev
            .boot(BootOpts::new("v2").script(Script::new().status().print_user_data().poweroff()))
            .unwrap();
        b.expect(self.booting(Slot::B));
        b.expect_os("2", "b");
        expect_committed(&b.status(), "2", "b");
        self.expect_env(&dev, self.committed_b);
        expect_same_data(&b1.data_sums(), &b);
        dev.fsck("hup-data").unwrap();
        dev.fsck("hup-root-b").unwrap();
    }
}

/// The guest URL of `device`'s bundle `name`.
pub fn url(device: &str, name: &str) -> String {
    artifacts::server().guest_url(&format!("bundles/{device}-{name}.hup"))
}
