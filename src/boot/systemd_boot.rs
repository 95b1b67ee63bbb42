//! `systemd-boot` backend: per-slot kernel and initramfs under `/hup/<slot>/` on the ESP and
//! one Boot Loader Specification entry per slot in `loader/entries/`, with systemd-boot's boot
//! counting in the file name (`hup-b+3-0.conf`). systemd-boot counts the tries and falls back;
//! hup renames the entries (mark good, mark bad) and raises `version` to prefer a slot.
//! The ESP is read and written with `fatfs` (no mount). See docs/boot-backends.md.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::backend::{BootBackend, BootState, SlotState, check_tries};
use super::bls::{ENTRIES_DIR, EntryBody, EntryName, boot_order};
use crate::disk::{Disk, Esp};
use crate::model::config::{BootBackendKind, Labels};
use crate::model::slot::{Slot, SlotStatus};

/// Largest tries value accepted by `set_try_next`.
pub const MAX_TRIES: u8 = 15;
/// Clean-shutdown refunds a trial gets (kept in the entry as `# hup-refunds-left N`).
pub const REFUND_BUDGET: u32 = 3;
/// Where the firmware looks for the default loader.
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's configuration: boot the default entry at once, no editor.
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

/// A boot file to install: a reader and its exact length (checked before and after writing).
pub struct Payload<'a> {
    pub reader: &'a mut dyn Read,
    pub len: u64,
}

/// Only the name: the fields are I/O handles and readers without a useful Debug form.
impl std::fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload").finish_non_exhaustive()
    }
}

impl<'a> Payload<'a> {
    pub fn new(reader: &'a mut dyn Read, len: u64) -> Payload<'a> {
        Payload { reader, len }
    }
}

/// The `systemd-boot` backend for one disk.
#[derive(Debug, Clone)]
pub struct SystemdBootBackend {
    disk: PathBuf,
    labels: Labels,
}

/// The current entry of each slot with its parsed body.
struct Entries {
    slots: [Option<(EntryName, EntryBody)>; 2],
}

impl Entries {
    fn get(&self, s: Slot) -> Option<&(EntryName, EntryBody)> {
        self.slots[s.index()].as_ref()
    }

    fn max_version(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .map(|(_, b)| b.version)
            .max()
            .unwrap_or(0)
    }
}

/// Writes `payload` to `tmp`, checks its length, renames it to `path`.
fn put(esp: &Esp, tmp: &str, path: &str, payload: Payload<'_>) -> Result<()> {
    let n = esp.write_file(tmp, payload.reader)?;
    if n != payload.len {
        bail!("{path}: got {n} bytes, expected {}", payload.len);
    }
    esp.rename(tmp, path)
}

fn slot_dir(s: Slot) -> String {
    format!("hup/{s}")
}

impl SystemdBootBackend {
    /// The backend for the disk (image or block device) at `disk`, default labels.
    pub fn new(disk: impl AsRef<Path>) -> SystemdBootBackend {
        SystemdBootBackend::with_labels(disk, Labels::default())
    }

    pub fn with_labels(disk: impl AsRef<Path>, labels: Labels) -> SystemdBootBackend {
        SystemdBootBackend {
            disk: disk.as_ref().to_path_buf(),
            labels,
        }
    }

    /// Opens the ESP (the partition labelled `labels.boot`) for writing.
    pub fn open_esp(&self) -> Result<Esp> {
        Self::esp_on(Disk::open(&self.disk), &self.labels.boot)
    }

    /// [`Self::open_esp`], read-only.
    pub fn open_esp_read_only(&self) -> Result<Esp> {
        Self::esp_on(Disk::open_read_only(&self.disk), &self.labels.boot)
    }

    fn esp_on(disk: Result<Disk>, label: &str) -> Result<Esp> {
        let disk = disk.context("systemd-boot backend")?;
        Esp::open(disk.open_partition(label)?)
    }

    /// Reads the entries; with several files for one slot (an interrupted update) the one
    /// systemd-boot would prefer counts.
    fn entries(&self, esp: &Esp) -> Result<Entries> {
        let mut slots: [Option<(EntryName, EntryBody)>; 2] = [None, None];
        if !esp.exists(ENTRIES_DIR)? {
            return Ok(Entries { slots });
        }
        for e in esp.list(ENTRIES_DIR)? {
            let Some(name) = EntryName::parse(&e.name).filter(|_| !e.is_dir) else {
                continue;
            };
            let text = esp.read_file(&name.path())?;
            let body = EntryBody::parse(&String::from_utf8_lossy(&text));
            let cur = &mut slots[name.slot.index()];
            let better = match cur {
                None => true,
                Some((n, b)) => boot_order((&name, body.version), (n, b.version)).is_lt(),
            };
            if better {
                *cur = Some((name, body));
            }
        }
        Ok(Entries { slots })
    }

    /// The entry systemd-boot boots next (entries whose kernel is missing are skipped, as
    /// systemd-boot does).
    fn next(&self, esp: &Esp, entries: &Entries) -> Result<Option<Slot>> {
        let mut best: Option<&(EntryName, EntryBody)> = None;
        for entry in entries.slots.iter().flatten() {
            let (n, b) = entry;
            if !esp.exists(&b.linux)? {
                continue;
            }
            if best.is_none_or(|(bn, bb)| boot_order((n, b.version), (bn, bb.version)).is_lt()) {
                best = Some(entry);
            }
        }
        Ok(best.map(|(n, _)| n.slot))
    }

    /// Replaces `old` by an entry named `new` with `body` (written to a temporary name first,
    /// which systemd-boot ignores, then renamed).
    fn rewrite(
        &self,
        esp: &Esp,
        old: Option<&EntryName>,
        new: &EntryName,
        body: &EntryBody,
    ) -> Result<()> {
        let tmp = format!("{ENTRIES_DIR}/hup-{}.tmp", new.slot);
        esp.write_bytes(&tmp, body.render().as_bytes())?;
        if let Some(o) = old {
            esp.remove_if_exists(&o.path())?;
        }
        esp.rename(&tmp, &new.path())
    }

    /// Renames an entry (same content).
    fn rename(&self, esp: &Esp, old: &EntryName, new: &EntryName) -> Result<()> {
        if old != new {
            esp.rename(&old.path(), &new.path())?;
        }
        Ok(())
    }

    /// Installs `slot`'s kernel and initramfs as `/hup/<slot>/vmlinuz` and `/hup/<slot>/initrd`
    /// and its entry, named `hup-<slot>+0-0.conf` (installed, not to be booted until
    /// [`BootBackend::set_try_next`] or [`BootBackend::mark_good`]). The slot's previous entry
    /// and files are removed first; new files are written under temporary names and renamed.
    /// Fails before writing anything when the ESP lacks room. `cmdline` is appended to
    /// `root=PARTLABEL=<root label> hup.slot=<slot>`.
    pub fn install(
        &self,
        slot: Slot,
        kernel: Payload,
        initrd: Payload,
        cmdline: &str,
    ) -> Result<()> {
        let esp = self.open_esp()?;
        let dir = slot_dir(slot);
        let (kpath, ipath) = (format!("{dir}/vmlinuz"), format!("{dir}/initrd"));
        let (ktmp, itmp) = (format!("{kpath}.new"), format!("{ipath}.new"));
        // Room: the new files and an entry, minus what this slot's old files free.
        let mut freed = 0;
        for p in [&kpath, &ipath, &ktmp, &itmp] {
            if let Some(e) = esp.entry(p)? {
                freed += esp.allocation(e.len);
            }
        }
        let needed =
            esp.allocation(kernel.len) + esp.allocation(initrd.len) + 4 * esp.cluster_size();
        let free = esp.free_bytes()? + freed;
        if free < needed {
            bail!(
                "boot partition {} has {free} bytes free for slot {slot}, {needed} bytes needed",
                self.labels.boot
            );
        }
        let entries = self.entries(&esp)?;
        if let Some((old, _)) = entries.get(slot) {
            esp.remove(&old.path())?;
        }
        for p in [&kpath, &ipath, &ktmp, &itmp] {
            esp.remove_if_exists(p)?;
        }
        put(&esp, &ktmp, &kpath, kernel)?;
        put(&esp, &itmp, &ipath, initrd)?;
        self.write_new_entry(&esp, &entries, slot, cmdline)?;
        esp.close()
            .with_context(|| format!("installing boot files of slot {slot}"))
    }

    /// Writes `slot`'s entry for boot files already in `/hup/<slot>/` (`vmlinuz`, and
    /// `initrd` when present), replacing the slot's previous entry. Like
    /// [`SystemdBootBackend::install`], the entry is `hup-<slot>+0-0.conf`: installed, not to be
    /// booted until `set_try_next` or `mark_good`.
    pub fn install_entry(&self, slot: Slot, cmdline: &str) -> Result<()> {
        let esp = self.open_esp()?;
        let entries = self.entries(&esp)?;
        if let Some((old, _)) = entries.get(slot) {
            esp.remove(&old.path())?;
        }
        self.write_new_entry(&esp, &entries, slot, cmdline)?;
        esp.close()
            .with_context(|| format!("writing the boot entry of slot {slot}"))
    }

    fn write_new_entry(
        &self,
        esp: &Esp,
        entries: &Entries,
        slot: Slot,
        cmdline: &str,
    ) -> Result<()> {
        let dir = slot_dir(slot);
        let kernel = format!("{dir}/vmlinuz");
        if !esp.exists(&kernel)? {
            bail!("slot {slot} has no kernel {kernel} on the boot partition");
        }
        let initrd = format!("{dir}/initrd");
        let initrd = if esp.exists(&initrd)? {
            format!("/{initrd}")
        } else {
            String::new()
        };
        let label = slot.label(&self.labels);
        let body = EntryBody {
            title: format!("hup slot {slot}"),
            version: entries.max_version() + 1,
            linux: format!("/{kernel}"),
            initrd,
            options: format!("root=PARTLABEL={label} hup.slot={slot} {}", cmdline.trim())
                .trim_end()
                .to_string(),
            refunds_left: 0,
        };
        let name = EntryName {
            slot,
            counter: Some((0, 0)),
        };
        self.rewrite(esp, None, &name, &body)
    }

    /// [`SystemdBootBackend::install`] from byte slices.
    pub fn install_bytes(
        &self,
        slot: Slot,
        kernel: &[u8],
        initrd: &[u8],
        cmdline: &str,
    ) -> Result<()> {
        let (mut k, mut i) = (kernel, initrd);
        self.install(
            slot,
            Payload::new(&mut k, kernel.len() as u64),
            Payload::new(&mut i, initrd.len() as u64),
            cmdline,
        )
    }

    /// Installs the loader: `efi_binary` (systemd-bootx64.efi) as `EFI/BOOT/BOOTX64.EFI`,
    /// `loader/loader.conf` ([`LOADER_CONF`]) and the `loader/entries/` directory.
    pub fn install_loader(&self, efi_binary: &Path) -> Result<()> {
        let bin = std::fs::read(efi_binary)
            .with_context(|| format!("reading the EFI loader {}", efi_binary.display()))?;
        let esp = self.open_esp()?;
        let old = esp.entry(LOADER_PATH)?.map_or(0, |e| esp.allocation(e.len));
        esp.ensure_room(
            (esp.allocation(bin.len() as u64) + 4 * esp.cluster_size()).saturating_sub(old),
        )?;
        let tmp = format!("{LOADER_PATH}.new");
        esp.write_bytes(&tmp, &bin)?;
        esp.rename(&tmp, LOADER_PATH)?;
        esp.write_bytes("loader/loader.conf.new", LOADER_CONF.as_bytes())?;
        esp.rename("loader/loader.conf.new", "loader/loader.conf")?;
        esp.create_dir_all(ENTRIES_DIR)?;
        esp.close().context("installing the systemd-boot loader")
    }

    /// The entry file names in `loader/entries/`, sorted.
    pub fn entry_files(&self) -> Result<Vec<String>> {
        let esp = self.open_esp_read_only()?;
        if !esp.exists(ENTRIES_DIR)? {
            return Ok(Vec::new());
        }
        Ok(esp.list(ENTRIES_DIR)?.into_iter().map(|e| e.name).collect())
    }

    fn require<'e>(&self, entries: &'e Entries, slot: Slot) -> Result<&'e (EntryName, EntryBody)> {
        entries.get(slot).with_context(|| {
            format!("slot {slot} has no boot entry in {ENTRIES_DIR}: install it first")
        })
    }

    /// Rewrites `slot`'s entry with `counter` and, when it is not already the only newest, a
    /// version above every other entry.
    fn prefer(
        &self,
        esp: &Esp,
        entries: &Entries,
        slot: Slot,
        counter: Option<(u32, u32)>,
        refunds: u32,
    ) -> Result<()> {
        let (old, body) = self.require(entries, slot)?;
        if !esp.exists(&body.linux)? {
            bail!(
                "slot {slot}'s kernel {} is missing on the boot partition",
                body.linux
            );
        }
        let other_max = entries.get(slot.other()).map_or(0, |(_, b)| b.version);
        let mut body = body.clone();
        body.version = body.version.max(other_max + 1);
        body.refunds_left = refunds;
        let new = EntryName { slot, counter };
        self.rewrite(esp, Some(old), &new, &body)
    }
}

impl BootBackend for SystemdBootBackend {
    fn kind(&self) -> BootBackendKind {
        BootBackendKind::SystemdBoot
    }

    fn active(&self) -> Result<Slot> {
        let esp = self.open_esp_read_only()?;
        let entries = self.entries(&esp)?;
        self.next(&esp, &entries)?.with_context(|| {
            format!(
                "no bootable hup entry in {ENTRIES_DIR} on {}",
                self.labels.boot
            )
        })
    }

    fn set_try_next(&self, slot: Slot, tries: u8) -> Result<()> {
        check_tries(tries, MAX_TRIES)?;
        let esp = self.open_esp()?;
        let entries = self.entries(&esp)?;
        self.prefer(
            &esp,
            &entries,
            slot,
            Some((u32::from(tries), 0)),
            REFUND_BUDGET,
        )
        .with_context(|| format!("setting slot {slot} to try next ({tries} tries)"))?;
        esp.close()
    }

    fn mark_good(&self, slot: Slot) -> Result<()> {
        let esp = self.open_esp()?;
        let entries = self.entries(&esp)?;
        let (name, body) = self.require(&entries, slot)?;
        let other_max = entries.get(slot.other()).map_or(0, |(_, b)| b.version);
        let good = EntryName {
            slot,
            counter: None,
        };
        if body.version > other_max {
            self.rename(&esp, name, &good)?;
        } else {
            self.prefer(&esp, &entries, slot, None, 0)?;
        }
        // A pending trial of the other slot is cancelled; a good other slot stays as fallback.
        if let Some((other, _)) = entries.get(slot.other())
            && let Some((left, done)) = other.counter
            && left > 0
        {
            let spent = EntryName {
                slot: other.slot,
                counter: Some((0, done)),
            };
            self.rename(&esp, other, &spent)?;
        }
        esp.close()
            .with_context(|| format!("marking slot {slot} good"))
    }

    fn mark_bad(&self, slot: Slot) -> Result<()> {
        let esp = self.open_esp()?;
        let entries = self.entries(&esp)?;
        if let Some((name, body)) = entries.get(slot) {
            let done = name.counter.map_or(0, |(_, d)| d);
            let bad = EntryName {
                slot,
                counter: Some((0, done)),
            };
            if body.refunds_left > 0 {
                // A given-up slot has no refunds: `refund_try` must not revive it.
                let mut body = body.clone();
                body.refunds_left = 0;
                self.rewrite(&esp, Some(name), &bad, &body)?;
            } else {
                self.rename(&esp, name, &bad)?;
            }
        }
        esp.close()
            .with_context(|| format!("marking slot {slot} bad"))
    }

    fn state(&self) -> Result<BootState> {
        let esp = self.open_esp_read_only()?;
        let entries = self.entries(&esp)?;
        let next = self.next(&esp, &entries)?;
        let slots = Slot::ALL
            .iter()
            .map(|s| match entries.get(*s) {
                None => SlotState {
                    slot: *s,
                    status: SlotStatus::Missing,
                    priority: None,
                    tries_left: None,
                    tries_done: None,
                    successful: false,
                    refunds_left: None,
                    entry: None,
                    version: None,
                    ok: None,
                },
                Some((n, b)) => SlotState {
                    slot: *s,
                    status: match n.counter {
                        None => SlotStatus::Good,
                        Some((0, _)) => SlotStatus::Bad,
                        Some(_) => SlotStatus::Trying,
                    },
                    priority: None,
                    tries_left: n.counter.map(|c| c.0),
                    tries_done: n.counter.map(|c| c.1),
                    successful: n.counter.is_none(),
                    refunds_left: n.counter.map(|_| b.refunds_left),
                    entry: Some(n.file_name()),
                    version: Some(b.version),
                    ok: None,
                },
            })
            .collect();
        Ok(BootState {
            order: None,
            backend: BootBackendKind::SystemdBoot,
            next,
            slots,
        })
    }

    fn refund_try(&self, slot: Slot) -> Result<bool> {
        let esp = self.open_esp()?;
        let entries = self.entries(&esp)?;
        let Some((name, body)) = entries.get(slot) else {
            return Ok(false);
        };
        let Some((left, done)) = name.counter else {
            return Ok(false);
        };
        if done == 0 || body.refunds_left == 0 {
            return Ok(false);
        }
        let mut body = body.clone();
        body.refunds_left -= 1;
        let new = EntryName {
            slot,
            counter: Some((left + 1, done - 1)),
        };
        self.rewrite(&esp, Some(name), &new, &body)?;
        esp.close()
            .with_context(|| format!("refunding a try of slot {slot}"))?;
        Ok(true)
    }
}
