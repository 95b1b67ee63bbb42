//! disk: GPT disks and their partitions, on an image file or a block device alike.
//!
//! Partitions are found by their GPT name (PARTLABEL), never by number. A partition is a byte
//! range of the disk ([`PartIo`]), so the same code works on `/dev/vda` and on `disk.img`.
//! The GPT is read and written through the `gpt` crate; writes go to both copies, backup first
//! (see `table.rs`), so a power cut leaves one whole copy. See docs/boot-backends.md.

mod device;
mod esp;
mod fat_bulk;
mod fat_fix;
mod fat_io;
mod fat_names;
mod fat_raw;
mod layout;
mod part_io;
mod table;

pub use device::{
    Disk, DiskError, DiskOptions, LABEL_BOOT, LABEL_DATA, LABEL_ROOT_A, LABEL_ROOT_B, Part, inspect,
};
pub use esp::{Esp, EspEntry, format_esp};
pub use fat_bulk::BulkWriter;
pub use fat_io::IoCounts;
pub use fat_names::{BootNames, MAX_BOOT_FILES, ShortName, check_boot_dir, check_fat_name};
pub use layout::{TYPE_ESP, TYPE_LINUX_FS, TYPE_LINUX_ROOT_X86_64, create_layout, hup_layout};
pub use part_io::PartIo;
pub use table::{TableHealth, TableReport};
