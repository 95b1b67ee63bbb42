//! What `hup mkinitramfs` reads from ELF headers: the interpreter of the hup binary (a
//! dynamically linked one cannot be `/init`) and the machine of the binary and of each
//! kernel module (they must match: one kernel runs both).

use anyhow::{Context, Result, bail};

/// `e_type` of an executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a shared object, or of a position-independent executable.
pub const ET_DYN: u16 = 3;

/// `e_machine` of x86_64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of aarch64.
pub const EM_AARCH64: u16 = 183;

/// A 64-bit little-endian ELF file's header fields that the initramfs checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfHeader {
    /// `e_type`: 1 relocatable (a kernel module), 2 executable, 3 shared object or PIE.
    pub kind: u16,
    /// `e_machine` (see [`machine_name`]).
    pub machine: u16,
}

fn get(bytes: &[u8], off: usize, len: usize) -> Result<&[u8]> {
    off.checked_add(len)
        .and_then(|end| bytes.get(off..end))
        .context("truncated ELF file")
}

fn u16_at(bytes: &[u8], off: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(get(bytes, off, 2)?.try_into()?))
}

fn u32_at(bytes: &[u8], off: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(get(bytes, off, 4)?.try_into()?))
}

fn u64_at(bytes: &[u8], off: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(get(bytes, off, 8)?.try_into()?))
}

/// Reads the header of a 64-bit little-endian ELF file; anything else is an error.
pub fn header(bytes: &[u8]) -> Result<ElfHeader> {
    if get(bytes, 0, 4)? != b"\x7fELF" {
        bail!("not an ELF file");
    }
    if get(bytes, 4, 1)? != [2] || get(bytes, 5, 1)? != [1] {
        bail!("not a 64-bit little-endian ELF file");
    }
    Ok(ElfHeader {
        kind: u16_at(bytes, 0x10)?,
        machine: u16_at(bytes, 0x12)?,
    })
}

/// The architecture's name as hup's targets spell it, for messages.
pub fn machine_name(machine: u16) -> String {
    match machine {
        EM_X86_64 => "x86_64".to_string(),
        EM_AARCH64 => "aarch64".to_string(),
        other => format!("ELF machine {other}"),
    }
}

/// Returns the ELF interpreter (`PT_INTERP`) of an executable, `None` for a static one.
pub fn interpreter(bytes: &[u8]) -> Result<Option<String>> {
    header(bytes)?;
    let phoff = usize::try_from(u64_at(bytes, 0x20)?)?;
    let phentsize = usize::from(u16_at(bytes, 0x36)?);
    let phnum = usize::from(u16_at(bytes, 0x38)?);
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .context("truncated ELF file")?;
        if u32_at(bytes, ph)? == 3 {
            let off = usize::try_from(u64_at(bytes, ph + 8)?)?;
            let size = usize::try_from(u64_at(bytes, ph + 32)?)?;
            let s = get(bytes, off, size)?;
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Ok(Some(String::from_utf8_lossy(s).into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_of_this_test_binary() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are built for the host target; a glibc build has an interpreter,
        // a musl static build has none. Either way the parser must not fail.
        let interp = interpreter(&me).unwrap();
        if cfg!(target_env = "gnu") {
            assert!(interp.unwrap().contains("ld-linux"));
        }
        assert!(interpreter(b"#!/bin/sh\n").is_err());
        assert!(interpreter(b"\x7fELF\x02\x01").is_err());
    }

    #[test]
    fn machine_of_this_test_binary() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let h = header(&me).unwrap();
        let expected = if cfg!(target_arch = "x86_64") {
            EM_X86_64
        } else {
            EM_AARCH64
        };
        assert_eq!(h.machine, expected);
        assert_eq!(machine_name(h.machine), std::env::consts::ARCH);
        assert!(h.kind == ET_EXEC || h.kind == ET_DYN, "e_type {}", h.kind);
        assert_eq!(machine_name(40), "ELF machine 40");
        assert!(header(b"\x7fELF\x01\x01").is_err());
    }
}
