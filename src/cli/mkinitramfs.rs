//! `hup mkinitramfs`: build the initramfs (newc cpio) with hup as `/init`.

use std::path::PathBuf;

use argh::FromArgs;

/// Build an initramfs (newc cpio) with the static hup as /init, kernel modules, the device configuration and keys.
#[derive(FromArgs)]
#[argh(subcommand, name = "mkinitramfs")]
pub struct Mkinitramfs {
    /// output file (for example initrd.cpio)
    #[argh(option, short = 'o')]
    output: PathBuf,
    /// directory searched recursively for NAME.ko (e.g. an unpacked kernel package)
    #[argh(option)]
    modules_from: Option<PathBuf>,
    /// file of module names, one per line, in load order
    #[argh(option)]
    modules: Option<PathBuf>,
    /// device configuration to install as /etc/hup/system.json
    #[argh(option)]
    config: Option<PathBuf>,
    /// directory of trusted public keys (*.pub) to install in /etc/hup/keys
    #[argh(option)]
    keys: Option<PathBuf>,
    /// the static hup binary to install as /init (default: this executable)
    #[argh(option)]
    hup: Option<PathBuf>,
    /// uboot backend: the device's fw_env.config, installed where --config's fw_env_config
    /// says (required with that backend)
    #[argh(option)]
    fw_env_config: Option<PathBuf>,
}

impl Mkinitramfs {
    pub fn run(self) -> anyhow::Result<()> {
        use anyhow::Context;
        let hup = match self.hup {
            Some(p) => p,
            None => std::env::current_exe().context("finding the running hup executable")?,
        };
        let opts = crate::initramfs::image::Options {
            hup,
            modules_from: self.modules_from,
            modules: self.modules,
            config: self.config,
            keys: self.keys,
            fw_env_config: self.fw_env_config,
        };
        crate::initramfs::image::write(&opts, &self.output)
    }
}
