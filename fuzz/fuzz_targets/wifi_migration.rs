//! The WiFi migration end to end on a scratch data partition: the input is `config.json`
//! on the boot partition; `check` must not fail, and when it finds no problem `run` must
//! succeed and write keyfiles that parse.
#![no_main]

use hup::migrate::keyfile::KeyFile;
use hup::migrate::{MigrationContext, get};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir_in(common::scratch()).unwrap();
    let (data_root, boot_root) = (tmp.path().join("data"), tmp.path().join("boot"));
    std::fs::create_dir_all(&data_root).unwrap();
    std::fs::create_dir_all(&boot_root).unwrap();
    std::fs::write(boot_root.join("config.json"), data).unwrap();
    let ctx = MigrationContext::new(&data_root, &boot_root);
    let m = get("wifi-config-json-to-networkmanager").expect("the migration exists");
    let check = m.check(&ctx).expect("check reads the files");
    if !check.is_ok() {
        return;
    }
    let report = m
        .run(&ctx)
        .unwrap_or_else(|e| panic!("check found no problem but run fails: {e:#}"));
    assert_eq!(report.written, check.outputs);
    for w in &report.written {
        let text = std::fs::read_to_string(w).expect("a written keyfile is UTF-8");
        KeyFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e:#}\n{text}", w.display()));
    }
});
