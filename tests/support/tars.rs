//! Tar archives built in memory for the ext4 tests.

/// A tar built with the tar crate: PAX xattrs and nanosecond mtimes, long names and link
/// names, numeric owners.
pub fn pax_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str,
                   kind: tar::EntryType,
                   data: &[u8],
                   link: Option<&str>,
                   pax: &[(&str, &[u8])]| {
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o640
        });
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        if let Some(l) = link {
            b.append_link(&mut h, path, l).unwrap();
        } else {
            b.append_data(&mut h, path, data).unwrap();
        }
    };
    let long_dir = format!("{}/{}", "d".repeat(150), "e".repeat(150));
    add("etc/", tar::EntryType::Directory, b"", None, &[]);
    add(
        "etc/ping",
        tar::EntryType::Regular,
        b"ping binary",
        None,
        &[
            (
                "SCHILY.xattr.security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            ("mtime", b"1700000000.123456789"),
        ],
    );
    add(
        &format!("{long_dir}/file"),
        tar::EntryType::Regular,
        b"deep and long\n",
        None,
        &[],
    );
    add(
        "etc/longlink",
        tar::EntryType::Symlink,
        b"",
        Some(&format!("/{long_dir}/file")),
        &[],
    );
    add("etc/hard", tar::EntryType::Link, b"", Some("etc/ping"), &[]);
    b.into_inner().unwrap()
}
