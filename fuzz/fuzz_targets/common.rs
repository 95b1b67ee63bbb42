//! Shared by the fuzz targets (included with `#[path]`, not a crate of its own).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use hup::bundle::sign::TrustedKeys;

/// The public key the seed bundles and signatures of fuzz/corpus/ are signed with
/// (made by fuzz/make-corpus; its secret key is not kept).
pub fn test_keys() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys/fuzz.pub");
        TrustedKeys::load(&[p], &[]).expect("fuzz/keys/fuzz.pub loads")
    })
}

/// This process's scratch directory for the images and files a target writes, in the
/// system temp dir (`TMPDIR`: scripts/fuzz points it at a directory on /dev/shm, which it
/// removes after the run; the fuzzer exits without running destructors).
pub fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("hup-fuzz-")
            .tempdir()
            .expect("scratch dir")
    })
    .path()
}
