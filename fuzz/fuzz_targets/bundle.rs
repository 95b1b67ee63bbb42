//! The bundle's outer tar: a bundle file opened with the trusted test key (members,
//! signature, manifest, member list), its payloads streamed and checked, and the same file
//! opened without the signature check as `hup inspect` does.
#![no_main]

#[path = "common.rs"]
mod common;

use hup::bundle::reader::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch().join("fuzz.hup");
    std::fs::write(&path, data).expect("writing the bundle");
    if let Ok(b) = Bundle::open(&path, common::test_keys()) {
        let _ = b.verify_payloads();
    }
    let _ = Bundle::open_unverified(&path);
});
