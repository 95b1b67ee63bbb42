//! Crafting partition tables hup must refuse: entries are edited in place in the GPT entry
//! arrays and every CRC is recomputed, so each copy is whole (valid header and array CRCs)
//! and only its content is wrong.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Which copies to edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    Both,
    PrimaryOnly,
}

/// One used entry: (index in the array, name, first LBA, last LBA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: usize,
    pub name: String,
    pub first: u64,
    pub last: u64,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn name_of(e: &[u8]) -> String {
    let units: Vec<u16> = e[56..128]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Applies `f` to the used entries of one copy (header at `lba`), rewrites the array and both
/// CRCs.
fn edit_copy(img: &Path, ss: u64, lba: u64, f: &dyn Fn(&mut Vec<Entry>)) -> u64 {
    let file = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut hdr = vec![0u8; ss as usize];
    file.read_exact_at(&mut hdr, lba * ss).unwrap();
    assert_eq!(&hdr[..8], b"EFI PART", "GPT header at LBA {lba}");
    let hsize = u32_at(&hdr, 12) as usize;
    let backup = u64_at(&hdr, 32);
    let array_lba = u64_at(&hdr, 72);
    let count = u32_at(&hdr, 80) as usize;
    let esize = u32_at(&hdr, 84) as usize;
    let mut array = vec![0u8; count * esize];
    file.read_exact_at(&mut array, array_lba * ss).unwrap();
    let mut entries: Vec<Entry> = (0..count)
        .filter(|i| array[i * esize..i * esize + 16].iter().any(|&b| b != 0))
        .map(|i| {
            let e = &array[i * esize..(i + 1) * esize];
            Entry {
                index: i,
                name: name_of(e),
                first: u64_at(e, 32),
                last: u64_at(e, 40),
            }
        })
        .collect();
    f(&mut entries);
    for e in &entries {
        let at = e.index * esize;
        array[at + 32..at + 40].copy_from_slice(&e.first.to_le_bytes());
        array[at + 40..at + 48].copy_from_slice(&e.last.to_le_bytes());
    }
    file.write_all_at(&array, array_lba * ss).unwrap();
    hdr[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
    hdr[16..20].copy_from_slice(&[0; 4]);
    let crc = crc32(&hdr[..hsize]);
    hdr[16..20].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&hdr, lba * ss).unwrap();
    file.sync_all().unwrap();
    backup
}

/// Edits the entries of the primary copy and, for [`Copies::Both`], the backup copy alike.
pub fn edit_entries(img: &Path, ss: u64, copies: Copies, f: impl Fn(&mut Vec<Entry>)) {
    let backup = edit_copy(img, ss, 1, &f);
    if copies == Copies::Both {
        edit_copy(img, ss, backup, &f);
    }
}

/// Sets the LBAs of the entry named `name` in the copies given.
pub fn set_lbas(img: &Path, ss: u64, copies: Copies, name: &str, first: u64, last: u64) {
    edit_entries(img, ss, copies, |es| {
        let e = es
            .iter_mut()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name:?}"));
        e.first = first;
        e.last = last;
    });
}

/// (first LBA, last LBA) of the entry named `name` in the primary copy.
pub fn lbas(img: &Path, ss: u64, name: &str) -> (u64, u64) {
    let found = std::cell::RefCell::new(None);
    // Reading through the editor with an identity edit keeps one parser.
    edit_entries(img, ss, Copies::PrimaryOnly, |es| {
        *found.borrow_mut() = es
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.first, e.last));
    });
    found
        .into_inner()
        .unwrap_or_else(|| panic!("no entry {name:?}"))
}

/// (first usable LBA, last usable LBA) of the primary header.
pub fn usable(img: &Path, ss: u64) -> (u64, u64) {
    let file = std::fs::File::open(img).unwrap();
    let mut hdr = vec![0u8; ss as usize];
    file.read_exact_at(&mut hdr, ss).unwrap();
    (u64_at(&hdr, 40), u64_at(&hdr, 48))
}
