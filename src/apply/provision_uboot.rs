//! `hup provision --boot-backend uboot`: hup's U-Boot boot script compiled with `mkimage`
//! and installed as `/boot.scr` on the boot partition, and the initial environment written
//! where the device's `fw_env.config` says (docs/boot-backends.md "U-Boot backend").

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::boot::fw_env_config::{EnvStore, FwEnvConfig};
use crate::boot::uboot::{UbootBackend, initial_env};
use crate::boot::uboot_script;
use crate::disk::{Disk, Esp};
use crate::model::config::{Labels, SystemConfig};

/// What provisioning needs before the disk is touched: `config`'s `fw_env.config` read and
/// its copies resolved (a missing or bad one fails here), and the compiled script.
pub fn prepare(config: &SystemConfig) -> Result<Vec<u8>> {
    let fw = FwEnvConfig::load(Path::new(&config.fw_env_config))
        .context("the fw_env.config of --fw-env-config")?;
    EnvStore::new(&fw, Some(Path::new(&config.boot_mount)))?;
    compile_script(&config.labels)
}

/// `boot.cmd` for `labels` compiled to `boot.scr` with
/// `mkimage -A arm64 -T script -C none` (Debian's u-boot-tools), in a fresh temporary
/// directory.
pub fn compile_script(labels: &Labels) -> Result<Vec<u8>> {
    let tmp = tempfile::tempdir().context("a temporary directory for mkimage")?;
    let cmd = tmp.path().join("boot.cmd");
    let scr = tmp.path().join("boot.scr");
    std::fs::write(&cmd, uboot_script::boot_cmd(labels))?;
    let run = Command::new("mkimage")
        .args([
            "-A", "arm64", "-T", "script", "-C", "none", "-n", "hup", "-d",
        ])
        .arg(&cmd)
        .arg(&scr)
        .output();
    let run = match run {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mkimage not found: install u-boot-tools")
        }
        Err(e) => return Err(e).context("running mkimage"),
    };
    if !run.status.success() {
        bail!(
            "mkimage failed: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    std::fs::read(&scr).with_context(|| format!("reading {}", scr.display()))
}

/// Installs `boot_scr` as `/boot.scr` on the boot partition of `disk` and writes the initial
/// environment (slot A first and good, slot B not bootable) through `config`'s
/// `fw_env.config`, making its file when it does not exist yet.
pub fn install(disk: &Path, config: &SystemConfig, boot_scr: &[u8]) -> Result<()> {
    let d = Disk::open(disk)?;
    let esp = Esp::open(d.open_partition(&config.labels.boot)?)?;
    esp.write_bytes(uboot_script::SCRIPT_PATH, boot_scr)?;
    esp.close().context("installing the U-Boot script")?;
    drop(d);
    let backend = UbootBackend::with_labels(
        disk,
        config.labels.clone(),
        Path::new(&config.fw_env_config),
        Path::new(&config.boot_mount),
    );
    backend.create_env(&initial_env()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_compiles_with_mkimage() {
        let scr = compile_script(&Labels::default()).unwrap();
        // A legacy U-Boot image: its magic, then the script text after the headers.
        assert_eq!(&scr[..4], &[0x27, 0x05, 0x19, 0x56]);
        let text = String::from_utf8_lossy(&scr);
        assert!(text.contains("setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1"));
    }
}
