//! `/etc/hup/system.json`: the device configuration shipped in every OS image and initramfs.

use serde::{Deserialize, Serialize};

/// Default location of the device configuration.
pub const SYSTEM_JSON: &str = "/etc/hup/system.json";

/// Partition labels (GPT PARTLABEL) of the four hup partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    pub boot: String,
    pub root_a: String,
    pub root_b: String,
    pub data: String,
}

impl Default for Labels {
    fn default() -> Self {
        Labels {
            boot: "hup-boot".into(),
            root_a: "hup-root-a".into(),
            root_b: "hup-root-b".into(),
            data: "hup-data".into(),
        }
    }
}

/// Which boot backend keeps the slot state (docs/boot-backends.md). In JSON and on the
/// command line by its name: `gpt`, `systemd-boot`, `grub` or `uboot`; any other name is refused when
/// parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum BootBackendKind {
    /// GPT attribute bits of the root partitions.
    #[default]
    Gpt,
    /// Boot Loader Specification entries with boot counting, on the ESP.
    SystemdBoot,
    /// GRUB with hup's script: the state in a GRUB environment block on the ESP.
    Grub,
    /// U-Boot with a boot script: the state in U-Boot's environment (`fw_env.config`).
    Uboot,
}

impl BootBackendKind {
    /// Every kind, in the order the error message lists them.
    pub const ALL: [BootBackendKind; 4] = [
        BootBackendKind::Gpt,
        BootBackendKind::SystemdBoot,
        BootBackendKind::Grub,
        BootBackendKind::Uboot,
    ];

    /// The name in system.json, `--boot-backend` and status: `gpt`, `systemd-boot`, `grub`
    /// or `uboot`.
    pub fn name(self) -> &'static str {
        match self {
            BootBackendKind::Gpt => "gpt",
            BootBackendKind::SystemdBoot => "systemd-boot",
            BootBackendKind::Grub => "grub",
            BootBackendKind::Uboot => "uboot",
        }
    }
}

impl std::fmt::Display for BootBackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for BootBackendKind {
    type Err = String;

    /// A known name, or the one-line error that lists the known ones.
    fn from_str(s: &str) -> Result<Self, String> {
        BootBackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let known: Vec<String> = BootBackendKind::ALL
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect();
                format!(
                    "unknown boot_backend {s:?} (expected {})",
                    known.join(" or ")
                )
            })
    }
}

impl TryFrom<String> for BootBackendKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<BootBackendKind> for &'static str {
    fn from(k: BootBackendKind) -> &'static str {
        k.name()
    }
}

/// The device configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Device type; a bundle's `compatible` must equal it.
    pub compatible: String,
    /// Boot backend: `gpt` (when absent), `systemd-boot`, `grub` or `uboot`.
    #[serde(default)]
    pub boot_backend: BootBackendKind,
    /// `grub` backend: path of the GRUB environment block on the boot partition.
    #[serde(default = "default_grub_env")]
    pub grub_env: String,
    /// `uboot` backend: the `fw_env.config` that says where U-Boot's environment is.
    #[serde(default = "default_fw_env_config")]
    pub fw_env_config: String,
    /// `uboot` backend: where the boot partition is mounted on the running OS; an
    /// environment file under it is a file on the FAT boot partition.
    #[serde(default = "default_boot_mount")]
    pub boot_mount: String,
    /// Tries a freshly installed slot gets before the device falls back.
    #[serde(default = "default_tries")]
    pub max_tries: u8,
    #[serde(default)]
    pub labels: Labels,
    /// Where the data partition is mounted on the running OS; hup keeps its files in `<data_mount>/hup/`.
    #[serde(default = "default_data_mount")]
    pub data_mount: String,
    /// Directory of trusted minisign public keys (`*.pub`).
    #[serde(default = "default_keys_dir")]
    pub keys_dir: String,
    /// Limits of a `hup stage` download (docs/staging.md).
    #[serde(default)]
    pub download: DownloadLimits,
}

/// How long a `hup stage` download may take, and how slow it may be. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadLimits {
    /// Overall deadline of the download (all attempts and retries together), in seconds.
    #[serde(default = "default_deadline")]
    pub deadline_s: u64,
    /// Minimum transfer rate in bytes per second, averaged over `min_rate_window_s`.
    #[serde(default = "default_min_rate")]
    pub min_rate: u64,
    /// The window over which `min_rate` is measured, in seconds.
    #[serde(default = "default_min_rate_window")]
    pub min_rate_window_s: u64,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            deadline_s: default_deadline(),
            min_rate: default_min_rate(),
            min_rate_window_s: default_min_rate_window(),
        }
    }
}

fn default_deadline() -> u64 {
    12 * 3600
}
fn default_min_rate() -> u64 {
    512
}
fn default_min_rate_window() -> u64 {
    120
}

/// Default `grub_env`: where hup's GRUB script loads and saves its environment block.
pub const DEFAULT_GRUB_ENV: &str = "/EFI/hup/grubenv";

fn default_grub_env() -> String {
    DEFAULT_GRUB_ENV.into()
}

/// Default `fw_env_config`: where libubootenv's tools look for it.
pub const DEFAULT_FW_ENV_CONFIG: &str = "/etc/fw_env.config";
/// Default `boot_mount`.
pub const DEFAULT_BOOT_MOUNT: &str = "/boot";

fn default_fw_env_config() -> String {
    DEFAULT_FW_ENV_CONFIG.into()
}
fn default_boot_mount() -> String {
    DEFAULT_BOOT_MOUNT.into()
}

fn default_tries() -> u8 {
    3
}
fn default_data_mount() -> String {
    "/mnt/data".into()
}
fn default_keys_dir() -> String {
    "/etc/hup/keys".into()
}

impl SystemConfig {
    /// Parses and checks a configuration.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<Self> {
        let c: SystemConfig = serde_json::from_slice(bytes)?;
        anyhow::ensure!(!c.compatible.is_empty(), "\"compatible\" is empty");
        anyhow::ensure!(
            c.grub_env.starts_with('/')
                && c.grub_env.len() > 1
                && !c.grub_env.ends_with('/')
                && !c.grub_env.split('/').any(|p| p == "." || p == ".."),
            "grub_env must be an absolute file path on the boot partition, got {:?}",
            c.grub_env
        );
        for (name, v) in [
            ("fw_env_config", &c.fw_env_config),
            ("boot_mount", &c.boot_mount),
        ] {
            anyhow::ensure!(
                v.starts_with('/') && !v.split('/').any(|p| p == ".."),
                "{name} must be an absolute path, got {v:?}"
            );
        }
        anyhow::ensure!(
            (1..=15).contains(&c.max_tries),
            "max_tries must be 1..=15, got {}",
            c.max_tries
        );
        Ok(c)
    }

    /// Reads a configuration file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c = SystemConfig::from_json(br#"{"compatible":"qemu-x86_64"}"#).unwrap();
        assert_eq!(c.boot_backend, BootBackendKind::Gpt);
        assert_eq!(c.max_tries, 3);
        assert_eq!(c.labels.root_b, "hup-root-b");
        assert!(SystemConfig::from_json(br#"{"compatible":""}"#).is_err());
        let e = SystemConfig::from_json(br#"{"compatible":"x","boot_backend":"lilo"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                r#"unknown boot_backend "lilo" (expected "gpt" or "systemd-boot" or "grub" or "uboot")"#
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        assert!(SystemConfig::from_json(br#"{"compatible":"x","max_tries":0}"#).is_err());
        assert_eq!(c.grub_env, "/EFI/hup/grubenv");
        let g = SystemConfig::from_json(br#"{"compatible":"x","grub_env":"/boot/grub/grubenv"}"#)
            .unwrap();
        assert_eq!(g.grub_env, "/boot/grub/grubenv");
        for bad in ["grubenv", "/", "/EFI/", "/EFI/../grubenv", ""] {
            let j = format!(r#"{{"compatible":"x","grub_env":"{bad}"}}"#);
            assert!(SystemConfig::from_json(j.as_bytes()).is_err(), "{bad}");
        }
        assert!(SystemConfig::from_json(br#"{"compatible":"x","bogus":1}"#).is_err());
        assert_eq!(
            (c.fw_env_config.as_str(), c.boot_mount.as_str()),
            ("/etc/fw_env.config", "/boot")
        );
        let u = SystemConfig::from_json(
            br#"{"compatible":"x","boot_backend":"uboot","fw_env_config":"/etc/hup/fw_env.config","boot_mount":"/boot/firmware"}"#,
        )
        .unwrap();
        assert_eq!(u.boot_backend, BootBackendKind::Uboot);
        assert_eq!(u.fw_env_config, "/etc/hup/fw_env.config");
        assert_eq!(u.boot_mount, "/boot/firmware");
        for bad in [
            r#""fw_env_config":"fw_env.config""#,
            r#""boot_mount":"/boot/../x""#,
        ] {
            let j = format!(r#"{{"compatible":"x",{bad}}}"#);
            assert!(SystemConfig::from_json(j.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(c.download, DownloadLimits::default());
        let c =
            SystemConfig::from_json(br#"{"compatible":"x","download":{"min_rate":0}}"#).unwrap();
        assert_eq!((c.download.min_rate, c.download.deadline_s), (0, 43200));
        assert!(
            SystemConfig::from_json(br#"{"compatible":"x","download":{"deadline":1}}"#).is_err()
        );
    }

    #[test]
    fn boot_backend_kinds_keep_their_json_names() {
        for (kind, name) in [
            (BootBackendKind::Gpt, "gpt"),
            (BootBackendKind::SystemdBoot, "systemd-boot"),
            (BootBackendKind::Grub, "grub"),
            (BootBackendKind::Uboot, "uboot"),
        ] {
            assert_eq!(kind.to_string(), name);
            assert_eq!(name.parse::<BootBackendKind>().unwrap(), kind);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            let c = SystemConfig::from_json(
                format!(r#"{{"compatible":"x","boot_backend":"{name}"}}"#).as_bytes(),
            )
            .unwrap();
            assert_eq!(c.boot_backend, kind);
            let back = serde_json::to_value(&c).unwrap();
            assert_eq!(back["boot_backend"], name);
        }
        assert!("GPT".parse::<BootBackendKind>().is_err());
        assert!(
            SystemConfig::from_json(br#"{"compatible":"x","boot_backend":null}"#).is_err(),
            "null is not the same as absent"
        );
    }
}
