//! state.json as hup reads it from `DATA/hup/state.json` (`DataDir::load_state`), and
//! what hup writes back must read back the same.
#![no_main]

#[path = "common.rs"]
mod common;

use hup::fsutil::DataDir;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = DataDir::new(common::scratch().join("hup"));
    std::fs::create_dir_all(&dir.root).unwrap();
    std::fs::write(dir.state_path(), data).unwrap();
    if let Ok(state) = dir.load_state() {
        dir.save_state(&state).expect("writing state.json");
        let again = dir
            .load_state()
            .expect("state.json written by hup reads back");
        assert_eq!(again, state);
    }
});
