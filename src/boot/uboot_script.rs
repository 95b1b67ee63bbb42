//! The U-Boot boot script hup ships (`boot.cmd`, compiled to `/boot.scr` on the boot
//! partition with `mkimage -A arm64 -T script -C none`): U-Boot's half of the `uboot`
//! backend's contract (docs/boot-backends.md "U-Boot backend"). The variable names come from
//! [`super::uboot`], the same constants the backend writes.
//!
//! The script walks `BOOT_ORDER` and takes the first slot whose `BOOT_<S>_LEFT` is above 0;
//! when that slot is `HUP_TRIAL` it counts it down with `setexpr` and runs `saveenv`, before
//! any kernel is loaded. No slot chosen: the first of `BOOT_ORDER` boots anyway (rescue),
//! slot A when it is unset. It loads `/hup/<slot>/vmlinuz` and `/hup/<slot>/initrd` from
//! partition 1 of virtio disk 0, imports `/hup/<slot>/cmdline.env` (`hup_cmdline=...`) when
//! it is there, and boots with `booti`.

use std::fmt::Write as _;

use super::uboot::{BOOT_ORDER, HUP_TRIAL, left_var};
use crate::model::config::Labels;
use crate::model::slot::Slot;

/// The compiled script on the boot partition, where U-Boot's `distro_bootcmd` looks for it.
pub const SCRIPT_PATH: &str = "/boot.scr";
/// The U-Boot device and partition the script loads the slots' files from.
pub const LOAD_FROM: &str = "virtio 0:1";

/// The per-slot file with the slot's extra kernel command line (`hup_cmdline=...`).
pub fn cmdline_env_path(slot: Slot) -> String {
    format!("/hup/{slot}/cmdline.env")
}

/// The text of `boot.cmd` for a disk with `labels`.
pub fn boot_cmd(labels: &Labels) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# hup boot script: walks {BOOT_ORDER}, counts the trial down"
    );
    s.push_str("setenv hup_slot\n");
    let _ = writeln!(s, "for s in \"${{{BOOT_ORDER}}}\"; do");
    for slot in Slot::ALL {
        let n = slot.upper();
        let left = left_var(slot);
        let _ = write!(
            s,
            "  if test -z \"${{hup_slot}}\" && test \"${{s}}\" = \"{n}\"; then\n\
             \x20   if test \"${{{left}}}\" -gt 0; then\n\
             \x20     setenv hup_slot {n}\n\
             \x20     if test \"${{{HUP_TRIAL}}}\" = \"{n}\"; then\n\
             \x20       setexpr {left} ${{{left}}} - 1\n\
             \x20       saveenv\n\
             \x20     fi\n\
             \x20   fi\n\
             \x20 fi\n"
        );
    }
    s.push_str("done\n");
    let _ = write!(
        s,
        "if test -z \"${{hup_slot}}\"; then\n\
         \x20 for s in \"${{{BOOT_ORDER}}}\"; do\n\
         \x20   if test -z \"${{hup_slot}}\"; then setenv hup_slot ${{s}}; fi\n\
         \x20 done\n\
         fi\n\
         if test -z \"${{hup_slot}}\"; then setenv hup_slot A; fi\n"
    );
    for slot in Slot::ALL {
        let label = match slot {
            Slot::A => &labels.root_a,
            Slot::B => &labels.root_b,
        };
        let _ = writeln!(
            s,
            "if test \"${{hup_slot}}\" = \"{n}\"; then setenv hup_dir /hup/{slot}; \
             setenv hup_root PARTLABEL={label}; setenv hup_arg hup.slot={slot}; fi",
            n = slot.upper()
        );
    }
    let _ = write!(
        s,
        "echo \"hup uboot: booting slot ${{hup_slot}}\"\n\
         setenv hup_cmdline\n\
         if load {LOAD_FROM} ${{ramdisk_addr_r}} ${{hup_dir}}/cmdline.env; then env import -t ${{ramdisk_addr_r}} ${{filesize}} hup_cmdline; fi\n\
         load {LOAD_FROM} ${{kernel_addr_r}} ${{hup_dir}}/vmlinuz\n\
         load {LOAD_FROM} ${{ramdisk_addr_r}} ${{hup_dir}}/initrd\n\
         setenv bootargs root=${{hup_root}} ${{hup_arg}} ${{hup_cmdline}}\n\
         booti ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdtcontroladdr}}\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_the_backends_variables() {
        let t = boot_cmd(&Labels::default());
        for v in ["BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "HUP_TRIAL"] {
            assert!(t.contains(&format!("${{{v}}}")), "{v} not read:\n{t}");
        }
        assert!(t.contains("setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1"), "{t}");
        // The countdown is saved before any kernel is loaded.
        let save = t.find("saveenv").unwrap();
        let load = t.find("/vmlinuz").unwrap();
        assert!(save < load, "{t}");
        assert!(t.contains("PARTLABEL=hup-root-b"), "{t}");
        assert!(t.contains("hup.slot=b") || t.contains("hup.slot=B"), "{t}");
        assert!(t.contains("booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize}"));
        assert!(
            t.contains("echo \"hup uboot: booting slot ${hup_slot}\""),
            "{t}"
        );
    }
}
