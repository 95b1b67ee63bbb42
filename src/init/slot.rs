//! Which root slot to boot: the `SlotChooser` seam between the init and the boot backends.

use anyhow::{Context, Result};

use super::devices::Devices;
use crate::boot::cmdline::Cmdline;
use crate::model::config::{BootBackendKind, SystemConfig};
use crate::model::slot::Slot;

/// What a chooser may look at.
#[derive(Debug)]
pub struct ChooseContext<'a> {
    pub config: &'a SystemConfig,
    pub cmdline: &'a Cmdline,
    pub devices: &'a Devices,
}

/// Decides the boot order of the slots. The init mounts the first slot of the
/// list that has a mountable root with `/sbin/init`, so the list is "the chosen
/// slot, then the fallback (last good) slot".
pub trait SlotChooser {
    fn candidates(&mut self, ctx: &ChooseContext) -> Result<Vec<Slot>>;
}

/// The chooser for `config.boot_backend`.
pub fn chooser_for(config: &SystemConfig) -> Box<dyn SlotChooser> {
    match config.boot_backend {
        BootBackendKind::SystemdBoot => Box::new(SystemdBoot {
            efivars: std::path::PathBuf::from(EFIVARS),
        }),
        BootBackendKind::Grub => Box::new(Grub),
        BootBackendKind::Uboot => Box::new(Uboot),
        BootBackendKind::Gpt => Box::new(Gpt),
    }
}

/// `grub` backend: hup's GRUB script chose the slot and counted its try; it puts
/// `hup.slot=` on the kernel command line, which names the slot to mount. The init
/// confirms it with the GRUB environment block on the boot partition: the script boots only
/// a slot with `<S>_OK=1`, or the first slot of `ORDER` when none may boot (rescue).
struct Grub;

impl SlotChooser for Grub {
    fn candidates(&mut self, ctx: &ChooseContext) -> Result<Vec<Slot>> {
        let state = grub_state(ctx);
        if let Err(e) = &state {
            log::warn!("cannot confirm the slot with the GRUB environment: {e:#}");
        }
        let slot = grub_slot(ctx.cmdline.slot, state.as_ref().ok());
        Ok(vec![slot, slot.other()])
    }
}

/// `uboot` backend: hup's U-Boot script chose the slot and counted its try; it puts
/// `hup.slot=` on the kernel command line, which names the slot to mount. The init confirms
/// it with U-Boot's environment (through `fw_env.config`): the script boots a slot with
/// `BOOT_<S>_LEFT` above 0 before its count down, or the first of `BOOT_ORDER` (rescue).
struct Uboot;

impl SlotChooser for Uboot {
    fn candidates(&mut self, ctx: &ChooseContext) -> Result<Vec<Slot>> {
        let state = grub_state(ctx);
        if let Err(e) = &state {
            log::warn!("cannot confirm the slot with the U-Boot environment: {e:#}");
        }
        let slot = uboot_slot(ctx.cmdline.slot, state.as_ref().ok());
        Ok(vec![slot, slot.other()])
    }
}

/// The slot to mount: `hup.slot=` when present (logged when the environment disagrees: a
/// slot neither good nor on trial, that is not the rescue choice), else the environment's
/// next slot, else slot a.
fn uboot_slot(cmdline: Option<Slot>, env: Option<&crate::boot::BootState>) -> Slot {
    use crate::model::slot::SlotStatus;
    match (cmdline, env) {
        (Some(c), Some(st)) => {
            // The trial's last try was just counted down to 0: still the trial's boot.
            let counted = st.slot(c).status == SlotStatus::Bad && st.slot(c).tries_done.is_some();
            let fine = matches!(st.slot(c).status, SlotStatus::Good | SlotStatus::Trying);
            if !fine && !counted && st.next != Some(c) {
                log::warn!(
                    "hup.slot={c} but U-Boot's environment does not boot slot {c}; mounting it anyway"
                );
            }
            c
        }
        (Some(c), None) => c,
        (None, Some(st)) => st.next.unwrap_or(Slot::A),
        (None, None) => Slot::A,
    }
}

/// The GRUB environment as the boot backend reads it, from the disk holding the boot
/// partition.
fn grub_state(ctx: &ChooseContext) -> Result<crate::boot::BootState> {
    let boot = &ctx.config.labels.boot;
    let part = ctx
        .devices
        .get(boot)
        .with_context(|| format!("no partition labelled {boot}"))?;
    let disk = part
        .disk
        .as_ref()
        .with_context(|| format!("no whole-disk device known for {}", part.node.display()))?;
    crate::boot::open_config(ctx.config, disk).state()
}

/// The slot to mount: `hup.slot=` when present (an inconsistent environment is logged, as
/// for systemd-boot's entry), else the slot the environment prefers, else slot a.
fn grub_slot(cmdline: Option<Slot>, env: Option<&crate::boot::BootState>) -> Slot {
    let ok = |st: &crate::boot::BootState, s: Slot| st.slot(s).ok == Some(true);
    let first = |st: &crate::boot::BootState| {
        st.order
            .as_ref()
            .and_then(|o| o.first().copied())
            .unwrap_or(Slot::A)
    };
    match (cmdline, env) {
        (Some(c), Some(st)) => {
            let rescue = !ok(st, Slot::A) && !ok(st, Slot::B) && first(st) == c;
            if !ok(st, c) && !rescue {
                log::error!(
                    "hup.slot={c} but the GRUB environment does not let slot {c} boot \
                     ({}_OK is not 1); trusting hup.slot",
                    c.upper()
                );
            }
            c
        }
        (Some(c), None) => c,
        (None, Some(st)) => {
            let s = st
                .order
                .iter()
                .flatten()
                .copied()
                .find(|&s| ok(st, s))
                .unwrap_or_else(|| first(st));
            log::warn!(
                "no hup.slot= on the command line from GRUB; using slot {s} from its environment"
            );
            s
        }
        (None, None) => {
            log::error!(
                "no hup.slot= on the command line from GRUB and no environment; trying slot a"
            );
            Slot::A
        }
    }
}

/// `gpt` backend: [`crate::boot::gpt::GptBackend::choose`] reads the attribute
/// bits of the root partitions on the disk holding root A, uses a try of a slot
/// on trial, and names the fallback.
struct Gpt;

impl SlotChooser for Gpt {
    fn candidates(&mut self, ctx: &ChooseContext) -> Result<Vec<Slot>> {
        let labels = &ctx.config.labels;
        let part = ctx
            .devices
            .get(&labels.root_a)
            .or_else(|| ctx.devices.get(&labels.root_b))
            .context("no root partition found to read the GPT attributes from")?;
        let disk = part
            .disk
            .as_ref()
            .with_context(|| format!("no whole-disk device known for {}", part.node.display()))?;
        let choice = crate::boot::gpt::GptBackend::with_labels(disk, labels.clone())
            .choose()
            .with_context(|| format!("choosing a slot from the GPT of {}", disk.display()))?;
        if choice.repaired {
            log::warn!(
                "the GPT of {} was damaged and has been repaired",
                disk.display()
            );
        }
        Ok(choice.candidates())
    }
}

/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// systemd-boot's vendor GUID for its Loader* variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// `systemd-boot` backend: the boot entry carries `hup.slot=` on its command line
/// (the loader already did the choosing and the boot counting); the init confirms
/// it with `LoaderEntrySelected`.
struct SystemdBoot {
    efivars: std::path::PathBuf,
}

impl SlotChooser for SystemdBoot {
    fn candidates(&mut self, ctx: &ChooseContext) -> Result<Vec<Slot>> {
        let entry = read_loader_entry(
            &self
                .efivars
                .join(format!("LoaderEntrySelected-{LOADER_GUID}")),
        );
        let from_entry = match &entry {
            Ok(name) => {
                log::info!("systemd-boot selected entry {name}");
                slot_of_entry(name)
            }
            Err(e) => {
                log::warn!("cannot confirm the boot entry: {e:#}");
                None
            }
        };
        let slot = match (ctx.cmdline.slot, from_entry) {
            (Some(c), Some(e)) if c != e => {
                log::error!(
                    "hup.slot={c} but the selected entry {} looks like slot {e}; trusting hup.slot",
                    entry.as_deref().unwrap_or("?")
                );
                c
            }
            (Some(c), _) => c,
            (None, Some(e)) => {
                log::warn!("no hup.slot= on the command line; using slot {e} from the boot entry");
                e
            }
            (None, None) => {
                log::error!(
                    "no hup.slot= on the command line and no usable boot entry; trying slot a"
                );
                Slot::A
            }
        };
        Ok(vec![slot, slot.other()])
    }
}

/// Decodes an EFI variable holding a NUL-terminated UTF-16LE string (after the
/// 4-byte attribute word efivarfs puts first).
pub fn decode_efi_string(bytes: &[u8]) -> Result<String> {
    let body = bytes
        .get(4..)
        .context("EFI variable shorter than its attribute word")?;
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).context("EFI variable is not valid UTF-16")
}

fn read_loader_entry(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_efi_string(&bytes).with_context(|| format!("decoding {}", path.display()))
}

/// The slot named by a boot entry id such as `hup-b+2-1.conf`, `hup-a.conf` or `b`:
/// the `.conf` suffix and the boot counter are removed, then the name must be the
/// slot letter or end in `-<letter>`.
pub fn slot_of_entry(entry: &str) -> Option<Slot> {
    let id = entry.strip_suffix(".conf").unwrap_or(entry);
    let id = match id.rsplit_once('+') {
        Some((base, counter))
            if !counter.is_empty() && counter.chars().all(|c| c.is_ascii_digit() || c == '-') =>
        {
            base
        }
        _ => id,
    };
    let letter = id.rsplit_once('-').map_or(id, |(_, l)| l);
    Slot::parse(letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(slot_of_entry("hup-b+2-1.conf"), Some(Slot::B));
        assert_eq!(slot_of_entry("hup-a+3.conf"), Some(Slot::A));
        assert_eq!(slot_of_entry("hup-a.conf"), Some(Slot::A));
        assert_eq!(slot_of_entry("b"), Some(Slot::B));
        assert_eq!(slot_of_entry("a+0-3.conf"), Some(Slot::A));
        assert_eq!(slot_of_entry("debian.conf"), None);
        assert_eq!(slot_of_entry("hup-c.conf"), None);
    }

    #[test]
    fn efi_string() {
        let mut v = vec![6, 0, 0, 0];
        for u in "hup-a.conf".encode_utf16() {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(&[0, 0]);
        assert_eq!(decode_efi_string(&v).unwrap(), "hup-a.conf");
        assert!(decode_efi_string(&[1, 2]).is_err());
    }

    #[test]
    fn systemd_boot_trusts_cmdline_and_falls_back() {
        let t = tempfile::tempdir().unwrap();
        let config =
            SystemConfig::from_json(br#"{"compatible":"x","boot_backend":"systemd-boot"}"#)
                .unwrap();
        let devices = Devices::default();
        let mut sb = SystemdBoot {
            efivars: t.path().to_path_buf(),
        };
        let cmdline = crate::boot::cmdline::parse("hup.slot=b");
        let ctx = ChooseContext {
            config: &config,
            cmdline: &cmdline,
            devices: &devices,
        };
        assert_eq!(sb.candidates(&ctx).unwrap(), [Slot::B, Slot::A]);
        // Entry only: the entry decides.
        let mut v = vec![7, 0, 0, 0];
        for u in "hup-b+1-2.conf\0".encode_utf16() {
            v.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(
            t.path().join(format!("LoaderEntrySelected-{LOADER_GUID}")),
            v,
        )
        .unwrap();
        let empty = crate::boot::cmdline::parse("");
        let ctx = ChooseContext {
            cmdline: &empty,
            ..ctx
        };
        assert_eq!(sb.candidates(&ctx).unwrap(), [Slot::B, Slot::A]);
    }

    #[test]
    fn grub_boots_the_slot_of_hup_slot() {
        let config =
            SystemConfig::from_json(br#"{"compatible":"x","boot_backend":"grub"}"#).unwrap();
        let devices = Devices::default();
        let mut chooser = chooser_for(&config);
        for (line, want) in [
            ("hup.slot=b quiet", [Slot::B, Slot::A]),
            ("hup.slot=a", [Slot::A, Slot::B]),
            ("quiet", [Slot::A, Slot::B]),
        ] {
            let cmdline = crate::boot::cmdline::parse(line);
            let ctx = ChooseContext {
                config: &config,
                cmdline: &cmdline,
                devices: &devices,
            };
            assert_eq!(chooser.candidates(&ctx).unwrap(), want, "{line}");
        }
    }

    fn grub_env(a_ok: bool, b_ok: bool, order: [Slot; 2]) -> crate::boot::BootState {
        let slot = |slot: Slot, ok: bool| crate::boot::SlotState {
            slot,
            status: if ok {
                crate::model::slot::SlotStatus::Good
            } else {
                crate::model::slot::SlotStatus::Bad
            },
            priority: None,
            tries_left: None,
            tries_done: None,
            successful: ok,
            refunds_left: None,
            entry: None,
            version: None,
            ok: Some(ok),
        };
        crate::boot::BootState {
            backend: BootBackendKind::Grub,
            next: None,
            order: Some(order.to_vec()),
            slots: vec![slot(Slot::A, a_ok), slot(Slot::B, b_ok)],
        }
    }

    #[test]
    fn grub_confirms_hup_slot_with_the_environment() {
        use Slot::{A, B};
        let both = grub_env(true, true, [B, A]);
        let only_a = grub_env(true, false, [A, B]);
        let none = grub_env(false, false, [B, A]);
        // hup.slot= always wins (an inconsistent environment is only logged).
        assert_eq!(grub_slot(Some(B), Some(&only_a)), B);
        assert_eq!(grub_slot(Some(B), Some(&none)), B);
        assert_eq!(grub_slot(Some(A), None), A);
        // Without hup.slot=: the first slot of ORDER that may boot, else rescue.
        assert_eq!(grub_slot(None, Some(&both)), B);
        assert_eq!(grub_slot(None, Some(&only_a)), A);
        assert_eq!(grub_slot(None, Some(&grub_env(false, true, [A, B]))), B);
        assert_eq!(grub_slot(None, Some(&none)), B);
        assert_eq!(grub_slot(None, None), A);
    }

    #[test]
    fn uboot_takes_hup_slot_else_the_environments_next() {
        use Slot::{A, B};
        let mut env = grub_env(true, true, [B, A]);
        env.backend = BootBackendKind::Uboot;
        env.next = Some(B);
        // hup.slot= always wins (a disagreeing environment is only logged).
        assert_eq!(uboot_slot(Some(A), Some(&env)), A);
        assert_eq!(uboot_slot(Some(B), None), B);
        // Without hup.slot=: the slot the environment boots next, else a.
        assert_eq!(uboot_slot(None, Some(&env)), B);
        env.next = None;
        assert_eq!(uboot_slot(None, Some(&env)), A);
        assert_eq!(uboot_slot(None, None), A);
        let config =
            SystemConfig::from_json(br#"{"compatible":"x","boot_backend":"uboot"}"#).unwrap();
        let devices = Default::default();
        let cmdline = crate::boot::cmdline::parse("hup.slot=b");
        let ctx = ChooseContext {
            config: &config,
            cmdline: &cmdline,
            devices: &devices,
        };
        // No boot partition to read the environment from: hup.slot= decides.
        assert_eq!(chooser_for(&config).candidates(&ctx).unwrap(), [B, A]);
    }
}
