//! Extended attributes of directories survive populate (a directory's PAX xattrs were once
//! dropped unless the directory was the root or appeared twice in the archive).

use crate::support::ext4::*;

#[test]
fn directory_xattrs_are_written() {
    let tmp = tmpdir();
    let mut b = tar::Builder::new(Vec::new());
    for (path, pax) in [
        (
            "etc/",
            Some(("SCHILY.xattr.user.dir", &b"on a directory"[..])),
        ),
        (
            "etc/sub/",
            Some(("SCHILY.xattr.trusted.deep", &b"nested"[..])),
        ),
        ("etc/sub/file", None),
    ] {
        if let Some(p) = pax {
            b.append_pax_extensions([p]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        let dir = path.ends_with('/');
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        b.append_data(&mut h, path, &[][..]).unwrap();
    }
    let tar = path_in(&tmp, "dirs.tar");
    std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
    let img = path_in(&tmp, "img");
    let out = mkfs(&tar, "16M", &img, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_fsck_clean(&img);
    let r = debugfs(&img, &["ea_list /etc".into(), "ea_list /etc/sub".into()]);
    let etc = r[0].1.join("\n");
    let sub = r[1].1.join("\n");
    assert!(
        etc.contains("user.dir") && etc.contains("on a directory"),
        "{etc}"
    );
    assert!(
        sub.contains("trusted.deep") && sub.contains("nested"),
        "{sub}"
    );
}
