//! The rootfs tar stream into the ext4 writer, as an apply writes a slot: a 16 MiB image (the smallest hup formats)
//! formatted once per process (copied back before each input), then `ext4::populate`.
//! With HUP_FUZZ_FSCK=1, every filesystem that populate reports as written is checked
//! with `e2fsck -fn` (slower; finds writes that produce an invalid filesystem).
#![no_main]

#[path = "common.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const SIZE: u64 = 16 << 20;

fn formatted() -> &'static Vec<u8> {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let p = common::scratch().join("empty.img");
        std::fs::File::create(&p).unwrap().set_len(SIZE).unwrap();
        let opts = hup::ext4::MkfsOptions {
            uuid: Some([7; 16]),
            ..Default::default()
        };
        let dest = hup::ext4::Dest::image(&p, SIZE).expect("the image");
        hup::ext4::format(&dest, &opts).expect("formatting the image");
        std::fs::read(&p).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let image = formatted();
    let path = common::scratch().join("slot.img");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(SIZE).unwrap();
    f.write_all_at(image, 0).unwrap();
    drop(f);
    let dest = hup::ext4::Dest::image(&path, SIZE).unwrap();
    let ok = hup::ext4::populate(&dest, std::io::Cursor::new(data.to_vec())).is_ok();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        SIZE,
        "the writer changed the size of the image"
    );
    if ok && std::env::var_os("HUP_FUZZ_FSCK").is_some() {
        let out = std::process::Command::new("e2fsck")
            .args(["-fn"])
            .arg(&path)
            .output()
            .expect("running e2fsck");
        assert!(
            out.status.success(),
            "populate succeeded but e2fsck fails:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
});
