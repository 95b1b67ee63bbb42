//! Creating a fresh partition layout (the factory image, `hup provision`).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{Context, Result, bail};
use gpt::partition::Partition;
use gpt::partition_types::{OperatingSystem, Type};

use crate::model::layout::PartitionSpec;

use super::device::{Disk, DiskOptions, LABEL_BOOT, LABEL_DATA, LABEL_ROOT_A, LABEL_ROOT_B};
use super::part_io::PartIo;
use super::table;

/// EFI System Partition type GUID.
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Linux root (x86-64) type GUID (Discoverable Partitions Specification).
pub const TYPE_LINUX_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// Linux filesystem data type GUID.
pub const TYPE_LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Partitions start and (except a last one given no size) end on 1 MiB boundaries.
const ALIGN: u64 = 1 << 20;

/// The hup layout: `hup-boot` (ESP), `hup-root-a`, `hup-root-b` (Linux root x86-64),
/// `hup-data` (Linux filesystem; `None` takes the rest of the disk).
pub fn hup_layout(boot: u64, root: u64, data: Option<u64>) -> Vec<PartitionSpec> {
    vec![
        PartitionSpec::new(LABEL_BOOT, Some(boot), TYPE_ESP),
        PartitionSpec::new(LABEL_ROOT_A, Some(root), TYPE_LINUX_ROOT_X86_64),
        PartitionSpec::new(LABEL_ROOT_B, Some(root), TYPE_LINUX_ROOT_X86_64),
        PartitionSpec::new(LABEL_DATA, data, TYPE_LINUX_FS),
    ]
}

/// Writes a new protective MBR and GPT with `specs` (checked by [`PartitionSpec::check_all`]) to `path`, 1 MiB aligned, and returns the
/// opened disk. An image file is created or truncated to `total_size` bytes (all zeros). On a
/// block device the device's size is used (`total_size` 0, or at most the device size) and the
/// kernel is asked to re-read the table (a failure is only logged).
pub fn create_layout(
    path: impl AsRef<Path>,
    sector_size: u64,
    total_size: u64,
    specs: &[PartitionSpec],
) -> Result<Disk> {
    let path = path.as_ref();
    let name = path.display().to_string();
    PartitionSpec::check_all(specs)?;
    table::logical_block_size(sector_size).with_context(|| format!("disk {name}"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {name} to create a partition table"))?;
    let block_device =
        crate::sys::blk::is_block_device(&file).with_context(|| format!("checking {name}"))?;
    let size = if block_device {
        let dev = crate::sys::blk::size_bytes(&file).with_context(|| format!("sizing {name}"))?;
        let ss = crate::sys::blk::logical_sector_size(&file)
            .with_context(|| format!("reading the sector size of {name}"))?;
        if ss != sector_size {
            bail!("{name} has {ss}-byte logical sectors, not {sector_size}");
        }
        if total_size > dev {
            bail!("{name} has {dev} bytes, fewer than the {total_size} requested");
        }
        dev
    } else {
        if !total_size.is_multiple_of(sector_size) {
            bail!("image size {total_size} is not a multiple of the sector size {sector_size}");
        }
        file.set_len(0)
            .and_then(|_| file.set_len(total_size))
            .with_context(|| format!("sizing image {name} to {total_size} bytes"))?;
        total_size
    };

    let header = table::new_header(size, sector_size)
        .with_context(|| format!("disk {name} of {size} bytes"))?;
    let ss = sector_size;
    let align = ALIGN / ss;
    let mut next = header.first_usable.div_ceil(align) * align;
    let mut parts = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        let last = match s.size {
            Some(bytes) => next + bytes.div_ceil(ALIGN) * align - 1,
            None => (header.last_usable + 1) / align * align - 1,
        };
        if last > header.last_usable || last < next {
            bail!(
                "partition {:?} does not fit on {name} ({size} bytes): it would end at byte {}",
                s.label,
                (last + 1) * ss
            );
        }
        let guid: uuid::Uuid = s.type_guid.parse().context("type GUID")?;
        let number = u32::try_from(i + 1).context("partition count")?;
        parts.insert(
            number,
            Partition {
                part_type_guid: Type {
                    guid,
                    os: OperatingSystem::None,
                },
                part_guid: uuid::Uuid::new_v4(),
                first_lba: next,
                last_lba: last,
                flags: 0,
                name: s.label.clone(),
            },
        );
        next = (last + 1).div_ceil(align) * align;
    }

    let lbas = u32::try_from(size / ss - 1).unwrap_or(u32::MAX);
    let mut io = PartIo::new(
        file.try_clone()
            .context("duplicating the disk file handle")?,
        0,
        size,
        name.clone(),
    );
    gpt::mbr::ProtectiveMBR::with_lb_size(lbas)
        .overwrite_lba0(&mut io)
        .map_err(|e| anyhow::anyhow!("writing the protective MBR of {name}: {e}"))?;
    table::write(&file, size, ss, &header, &parts)
        .with_context(|| format!("writing the GPT of {name}"))?;
    if block_device && let Err(e) = crate::sys::blk::reread_partitions(&file) {
        log::warn!("{name}: the kernel did not re-read the partition table: {e:#}");
    }
    drop(file);
    Disk::open_with(
        path,
        DiskOptions {
            sector_size: Some(sector_size),
            read_only: false,
        },
    )
}
