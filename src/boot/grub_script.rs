//! The GRUB script hup ships (`/EFI/hup/grub.cfg` on the ESP) and the per-slot snippets it
//! sources (`/EFI/hup/slot-<s>.cfg`): GRUB's half of the `grub` backend's contract
//! (docs/boot-backends.md, "grub"). The environment block itself is read and written by the
//! backend; this file only makes text for GRUB's script language.
//!
//! The script finds the ESP by the block, loads it, and walks `ORDER`: a slot is skipped
//! unless `<S>_OK` is `1`; with `<S>_LEFT` empty it boots (committed); at `0` it is skipped;
//! from `15` to `1` the counter is decremented by explicit cases (GRUB 2.06 has no
//! arithmetic) and saved with `save_env` before the slot boots (any other value: skipped).
//! No slot chosen: the first of `ORDER` boots anyway (rescue), slot A when `ORDER` is unset.
//! A slot whose snippet or kernel cannot be loaded is followed by the other slot.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::model::slot::Slot;

/// Where the script and the per-slot snippets live on the ESP.
pub const SCRIPT_DIR: &str = "EFI/hup";
/// The script on the ESP; a GRUB image made by `hup provision` has `/EFI/hup` as its prefix,
/// so GRUB's `normal` reads it by itself.
pub const SCRIPT_PATH: &str = "EFI/hup/grub.cfg";
/// GRUB's prefix for an image made by `hup provision` (on the ESP it was loaded from).
pub const PREFIX: &str = "/EFI/hup";
/// The modules a GRUB image needs for the script (and their dependencies, which
/// `grub-mkimage` adds): GPT and FAT, the environment block, `[`, `echo`, `search --file`,
/// the Linux loader (and `efi_gop`, without which it complains that no video mode fits),
/// `source`, and `normal` to run a script with `if` and `for`.
pub const MODULES: [&str; 10] = [
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "loadenv",
    "test",
    "echo",
    "search",
    "linux",
    "efi_gop",
];
/// Where a GRUB image hup did not make (a signed `grubx64.efi` installed as
/// `/EFI/BOOT/BOOTX64.EFI`) looks for its configuration when its own prefix has none:
/// `$cmdpath/grub.cfg`, next to itself (Debian's signed image does so when
/// `/EFI/debian/grub.cfg` is absent).
pub const STUB_PATH: &str = "EFI/BOOT/grub.cfg";

/// The stub at [`STUB_PATH`]: it finds the ESP by the script and sources it.
pub fn stub() -> String {
    let script = grub_path(SCRIPT_PATH);
    format!(
        "# Written by hup: GRUB images hup did not make read this file; it runs hup's script.\n\
         search --no-floppy --set=root --file {script}\n\
         source {script}\n"
    )
}

/// Largest try counter the script counts down from (`max_tries` is 1 to 15).
pub const MAX_LEFT: u8 = 15;

/// The snippet GRUB sources to load slot `slot`'s kernel and initrd.
pub fn slot_cfg_path(slot: Slot) -> String {
    format!("{SCRIPT_DIR}/slot-{slot}.cfg")
}

/// `path` on the ESP as GRUB names it: one leading `/`.
fn grub_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// `word` as one literal GRUB word: in single quotes, which GRUB takes literally (no `$`
/// expansion, no escapes). A word with a `'` or a control character cannot be quoted so.
fn quote(word: &str) -> Result<String> {
    if let Some(c) = word.chars().find(|c| *c == '\'' || c.is_control()) {
        bail!("{word:?} has {c:?}, which hup cannot quote for GRUB");
    }
    Ok(format!("'{word}'"))
}

/// The kernel command line of `slot` as GRUB's `linux` gets it, one word each:
/// `root=PARTLABEL=<root_label> hup.slot=<slot>`, then `cmdline`'s words. GRUB joins the
/// words with spaces and puts a `\` before every `"`, `'` and `\` it passes on, which the
/// kernel does not undo, so a command line with any of them is refused, as is one with a
/// control character other than white space: one line that names the word.
pub fn kernel_args(root_label: &str, slot: Slot, cmdline: &str) -> Result<Vec<String>> {
    let mut words = vec![
        format!("root=PARTLABEL={root_label}"),
        format!("hup.slot={slot}"),
    ];
    words.extend(cmdline.split_whitespace().map(str::to_string));
    for w in &words {
        if let Some(c) = w
            .chars()
            .find(|c| matches!(c, '"' | '\'' | '\\') || c.is_control())
        {
            bail!(
                "kernel command line word {w:?} has {c:?}: GRUB would pass it on as \\{c}, so the grub backend refuses it"
            );
        }
    }
    Ok(words)
}

/// The snippet of slot `slot` (`/EFI/hup/slot-<s>.cfg`): the `linux` line with the kernel
/// command line of [`kernel_args`], and the `initrd` line when the slot has one.
pub fn slot_cfg(slot: Slot, root_label: &str, cmdline: &str, initrd: bool) -> Result<String> {
    let args = kernel_args(root_label, slot, cmdline)?
        .iter()
        .map(|w| quote(w))
        .collect::<Result<Vec<_>>>()?;
    let mut s = format!(
        "# Written by hup for slot {slot}, sourced by {}; see docs/boot-backends.md.\n\
         linux /hup/{slot}/vmlinuz {}\n",
        grub_path(SCRIPT_PATH),
        args.join(" ")
    );
    if initrd {
        let _ = writeln!(s, "initrd /hup/{slot}/initrd");
    }
    Ok(s)
}

/// The script for the environment block at `env_path` on the ESP (`grub_env` of
/// system.json); see the module documentation. Fails for a path GRUB cannot be given
/// literally.
pub fn script(env_path: &str) -> Result<String> {
    let env = quote(&grub_path(env_path))?;
    let mut s = format!(
        "# hup: A/B root slots with bounded tries. Generated by hup; see docs/boot-backends.md.\n\
         # The state is the environment block {env}: hup writes every variable in it,\n\
         # this script only counts <S>_LEFT down and saves it before the slot boots.\n\
         set hup_env={env}\n\
         search --no-floppy --set=root --file \"$hup_env\"\n\
         load_env --file \"$hup_env\"\n\
         set hup_slot=\n\
         for hup_s in $ORDER; do\n"
    );
    for slot in Slot::ALL {
        choose_slot(&mut s, slot);
    }
    s.push_str(
        "done\n\
         if [ -z \"$hup_slot\" ]; then\n\
         \x20 for hup_s in $ORDER; do\n\
         \x20   if [ -z \"$hup_slot\" -a \"$hup_s\" = A ]; then set hup_slot=a; fi\n\
         \x20   if [ -z \"$hup_slot\" -a \"$hup_s\" = B ]; then set hup_slot=b; fi\n\
         \x20 done\n\
         \x20 if [ -z \"$hup_slot\" ]; then set hup_slot=a; fi\n\
         \x20 echo \"hup grub: no slot is bootable: booting slot $hup_slot anyway (rescue)\"\n\
         fi\n\
         if [ \"$hup_slot\" = a ]; then set hup_other=b; else set hup_other=a; fi\n\
         for hup_s in $hup_slot $hup_other; do\n\
         \x20 echo \"hup grub: booting slot $hup_s\"\n\
         \x20 source \"/EFI/hup/slot-$hup_s.cfg\"\n\
         \x20 boot\n\
         \x20 echo \"hup grub: slot $hup_s could not be loaded\"\n\
         done\n\
         echo \"hup grub: no slot could be loaded\"\n",
    );
    Ok(s)
}

/// The part of the `ORDER` loop for `slot`: boot it when committed, or count a try down
/// and save it first.
fn choose_slot(s: &mut String, slot: Slot) {
    let up = slot.name().to_ascii_uppercase();
    let left = format!("{up}_LEFT");
    let _ = write!(
        s,
        "  if [ -z \"$hup_slot\" -a \"$hup_s\" = {up} -a \"${up}_OK\" = 1 ]; then\n\
         \x20   if [ -z \"${left}\" ]; then\n\
         \x20     set hup_slot={slot}\n"
    );
    for n in (1..=MAX_LEFT).rev() {
        let _ = write!(
            s,
            "    elif [ \"${left}\" = {n} ]; then\n\
             \x20     set {left}={}\n\
             \x20     if save_env --file \"$hup_env\" {left}; then set hup_slot={slot}; fi\n",
            n - 1
        );
    }
    s.push_str("    fi\n  fi\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `script` from the one holding `start`, `n` of them.
    fn lines_from<'a>(script: &'a str, start: &str, n: usize) -> Vec<&'a str> {
        let lines: Vec<&str> = script.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no {start:?} in\n{script}"));
        lines[i..i + n].iter().map(|l| l.trim()).collect()
    }

    #[test]
    fn every_counter_value_is_decremented_and_saved_before_the_boot() {
        let s = script("/EFI/hup/grubenv").unwrap();
        for (up, low) in [("A", "a"), ("B", "b")] {
            for n in 1..=15u8 {
                assert_eq!(
                    lines_from(&s, &format!("elif [ \"${up}_LEFT\" = {n} ]; then"), 3),
                    [
                        format!("elif [ \"${up}_LEFT\" = {n} ]; then"),
                        format!("set {up}_LEFT={}", n - 1),
                        format!(
                            "if save_env --file \"$hup_env\" {up}_LEFT; then set hup_slot={low}; fi"
                        ),
                    ],
                    "{up}_LEFT={n}"
                );
                assert_eq!(
                    s.matches(&format!("\"${up}_LEFT\" = {n} ]")).count(),
                    1,
                    "{up}_LEFT={n}"
                );
            }
            // 0 and any other value: no case, the slot is skipped. Empty: committed.
            assert!(!s.contains(&format!("\"${up}_LEFT\" = 0 ]")), "{s}");
            assert!(!s.contains(&format!("\"${up}_LEFT\" = 16 ]")), "{s}");
            assert_eq!(
                lines_from(&s, &format!("\"$hup_s\" = {up} -a \"${up}_OK\" = 1 ]"), 3)[1..],
                [
                    format!("if [ -z \"${up}_LEFT\" ]; then"),
                    format!("set hup_slot={low}")
                ]
            );
        }
    }

    #[test]
    fn the_script_loads_the_block_it_is_given_and_falls_back() {
        let s = script("EFI/hup/grubenv").unwrap();
        assert!(
            s.contains(
                "set hup_env='/EFI/hup/grubenv'\n\
                 search --no-floppy --set=root --file \"$hup_env\"\n\
                 load_env --file \"$hup_env\"\n"
            ),
            "{s}"
        );
        assert!(s.contains("for hup_s in $ORDER; do"), "{s}");
        assert!(s.contains("(rescue)"), "{s}");
        assert!(s.contains("source \"/EFI/hup/slot-$hup_s.cfg\""), "{s}");
        // Only the counters are ever saved.
        for l in s.lines().filter(|l| l.contains("save_env")) {
            assert!(
                l.contains("save_env --file \"$hup_env\" A_LEFT;")
                    || l.contains("save_env --file \"$hup_env\" B_LEFT;"),
                "{l}"
            );
        }
        let custom = script("/boot/x y/env").unwrap();
        assert!(custom.contains("set hup_env='/boot/x y/env'\n"), "{custom}");
        assert!(script("/EFI/it's").is_err());
    }

    #[test]
    fn slot_snippets_quote_every_word() {
        let s = slot_cfg(Slot::B, "hup-root-b", " console=ttyS0  quiet\n$x;y\n", true).unwrap();
        assert_eq!(
            s.lines().skip(1).collect::<Vec<_>>(),
            [
                "linux /hup/b/vmlinuz 'root=PARTLABEL=hup-root-b' 'hup.slot=b' 'console=ttyS0' 'quiet' '$x;y'",
                "initrd /hup/b/initrd",
            ]
        );
        let s = slot_cfg(Slot::A, "hup-root-a", "", false).unwrap();
        assert!(
            s.ends_with("linux /hup/a/vmlinuz 'root=PARTLABEL=hup-root-a' 'hup.slot=a'\n"),
            "{s}"
        );
        assert_eq!(slot_cfg_path(Slot::A), "EFI/hup/slot-a.cfg");
    }

    #[test]
    fn command_lines_grub_cannot_pass_on_are_refused() {
        for bad in [
            "init=\"/bin/sh\"",
            "a='b'",
            "path=c:\\x",
            "x=\u{1}",
            "x=\u{7f}",
        ] {
            let e = kernel_args("hup-root-a", Slot::A, bad).unwrap_err();
            assert!(
                format!("{e}").contains("grub backend refuses"),
                "{bad}: {e}"
            );
        }
        assert!(kernel_args("hup's", Slot::A, "").is_err());
        assert_eq!(
            kernel_args("r", Slot::B, "a\tb\r\nc").unwrap(),
            ["root=PARTLABEL=r", "hup.slot=b", "a", "b", "c"]
        );
    }
}
