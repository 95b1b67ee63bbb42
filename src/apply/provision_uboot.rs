//! `hup provision --boot-backend uboot`: hup's U-Boot boot script compiled with `mkimage`
//! and installed as `/boot.scr` on the boot partition, and the initial environment written
//! where the device's `fw_env.config` says (docs/boot-backends.md "U-Boot backend"),
//! starting from the board's default environment when one is given: a stored environment
//! replaces U-Boot's built-in one as a whole, so one holding only hup's variables would
//! leave U-Boot without `bootcmd`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::boot::fw_env_config::{EnvStore, FwEnvConfig};
use crate::boot::uboot::{UbootBackend, initial_env as hup_env};
use crate::boot::uboot_script;
use crate::boot::ubootenv::{UbootEnv, render};
use crate::disk::{Disk, Esp};
use crate::model::config::{Labels, SystemConfig};

/// What provisioning needs before the disk is touched: `config`'s `fw_env.config` read and
/// its copies resolved (a missing or bad one fails here), the compiled script, and the
/// initial environment: `initial_env` (the board's defaults, [`parse_default_env`]) when
/// given, with hup's variables set over it.
pub fn prepare(config: &SystemConfig, initial_env: Option<&Path>) -> Result<(Vec<u8>, UbootEnv)> {
    let fw = FwEnvConfig::load(Path::new(&config.fw_env_config))
        .context("the fw_env.config of --fw-env-config")?;
    EnvStore::new(&fw, Some(Path::new(&config.boot_mount)))?;
    let env = match initial_env {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut env =
                parse_default_env(&text).with_context(|| format!("{}", path.display()))?;
            for (k, v) in hup_env()?.vars() {
                env.set(&k, &v)?;
            }
            env
        }
        None => {
            log::warn!(
                "no --uboot-initial-env: the new environment holds only hup's variables; \
                 U-Boot loading it has no bootcmd of its own"
            );
            hup_env()?
        }
    };
    // The environment must fit the size fw_env.config gives it: rendered as it will be written.
    render(&env, fw.size(), fw.is_redundant().then_some(0))
        .with_context(|| format!("the initial environment in {:#x} bytes", fw.size()))?;
    Ok((compile_script(&config.labels)?, env))
}

/// A default environment as U-Boot's build writes it (`make u-boot-initial-env`) and
/// libubootenv reads it (`fw_setenv --defenv`): one `NAME=VALUE` per line; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_default_env(text: &str) -> Result<UbootEnv> {
    let mut env = UbootEnv::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!("line {}: not NAME=VALUE: {line:?}", n + 1);
        };
        env.set(name, value)
            .with_context(|| format!("line {}", n + 1))?;
    }
    Ok(env)
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

/// Installs `boot_scr` as `/boot.scr` on the boot partition of `disk` and writes `env` (from
/// [`prepare`]: slot A first and good, slot B not bootable) through `config`'s
/// `fw_env.config`, making its file when it does not exist yet.
pub fn install(disk: &Path, config: &SystemConfig, boot_scr: &[u8], env: &UbootEnv) -> Result<()> {
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
    backend.create_env(env)
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

    #[test]
    fn a_default_environment_parses_as_u_boot_writes_it() {
        let env = parse_default_env(
            "# defaults\nbootcmd=run distro_bootcmd\nbootdelay=0\n\nboot_targets=virtio0 dhcp \nempty=\n",
        )
        .unwrap();
        assert_eq!(env.get("bootcmd"), Some("run distro_bootcmd"));
        assert_eq!(env.get("boot_targets"), Some("virtio0 dhcp "));
        assert_eq!(
            env.get("empty"),
            None,
            "an empty value is no variable, as in U-Boot"
        );
        let e = parse_default_env("bootcmd=x\nno equals sign\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }
}
