//! The manifest and its signature, as `Bundle::open` checks them: the minisign signature
//! over the manifest bytes with the trusted keys, then the manifest JSON and its rules.
//! Input: manifest bytes, a NUL byte, the signature text (no NUL: the manifest alone, and
//! the same bytes as a signature).
#![no_main]

#[path = "common.rs"]
mod common;

use hup::model::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (manifest, sig) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let sig = String::from_utf8_lossy(sig);
    let _ = common::test_keys().verify(manifest, &sig);
    if let Ok(m) = Manifest::from_json(manifest) {
        let _ = m.validate();
        let _ = m.version();
        let _ = m.min_from_version();
        // What hup writes (hup pack) must read back the same.
        let again = Manifest::from_json(&m.to_json()).expect("a manifest hup writes reads back");
        assert_eq!(again.to_json(), m.to_json());
    }
});
