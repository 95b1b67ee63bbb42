//! The contract between the initramfs image and the init (PID 1) about kernel modules:
//! `hup mkinitramfs` (crate::initramfs, on the build host) writes the list and the module
//! files where the init (crate::init::modules) loads them from. Kept here so that neither
//! side imports the other (docs/initramfs.md).

/// Where the init finds the ordered module list.
pub const MODULES_LIST: &str = "/etc/hup/modules";
/// Where the init finds the module files (`NAME.ko`).
pub const MODULES_DIR: &str = "/lib/modules";

/// Parses a module list: one name per line, blank lines and `#` comments ignored.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_parsing() {
        let l = parse_module_list("# net\nvirtio_ring\n\n  virtio  # core\ncrc32c-intel\n");
        assert_eq!(l, ["virtio_ring", "virtio", "crc32c-intel"]);
        assert!(parse_module_list("\n# nothing\n").is_empty());
    }
}
