//! What populating wrote.

use crate::size::human;
use std::fmt;
use std::time::Duration;

/// Counts of what was created from the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files (each inode once; hard links are counted separately).
    pub files: u64,
    /// Directories created, explicit members or implied parents (the root is not counted).
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Character and block devices.
    pub devices: u64,
    pub fifos: u64,
    /// Extended attributes set.
    pub xattrs: u64,
    /// Apparent size of the regular files.
    pub bytes: u64,
    /// Data blocks allocated for file contents (holes excluded).
    pub data_blocks: u64,
    /// Time spent formatting and populating.
    pub elapsed: Duration,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files ({}, {} bytes), {} directories, {} symlinks, {} hard links, {} devices, \
             {} fifos, {} xattrs in {:.2} s",
            self.files,
            human(self.bytes),
            self.bytes,
            self.dirs,
            self.symlinks,
            self.hardlinks,
            self.devices,
            self.fifos,
            self.xattrs,
            self.elapsed.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let s = Stats {
            files: 3,
            bytes: 3 << 20,
            dirs: 2,
            elapsed: Duration::from_millis(1500),
            ..Default::default()
        };
        assert_eq!(
            s.to_string(),
            "3 files (3.0 MiB, 3145728 bytes), 2 directories, 0 symlinks, 0 hard links, \
             0 devices, 0 fifos, 0 xattrs in 1.50 s"
        );
    }
}
