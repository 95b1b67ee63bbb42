//! Tests of the tar stream follower (`tarscan.rs`).

use super::*;

fn tar_of(members: &[(&str, Vec<u8>)], pax_first: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, (name, data)) in members.iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        if pax_first && i == 2 {
            b.append_pax_extensions([("comment", &b"hello"[..])])
                .unwrap();
        }
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn scan(
    bytes: &[u8],
    piece: usize,
    early: Option<EarlyCheck>,
) -> Result<(Option<Vec<StreamMember>>, bool)> {
    let mut s = Scanner::new(early);
    for c in bytes.chunks(piece) {
        s.push(c)?;
    }
    Ok(s.finish())
}

#[test]
fn members_match_the_tar_reader() {
    let long = "n".repeat(150);
    let members = vec![
        ("manifest.json", b"{\"m\":1}".to_vec()),
        ("manifest.json.minisig", b"sig".to_vec()),
        ("rootfs.tar.zst", (0..5000u32).map(|i| i as u8).collect()),
        ("empty", Vec::new()),
        (long.as_str(), vec![9u8; 512]),
    ];
    for pax in [false, true] {
        let bytes = tar_of(&members, pax);
        let mut want = Vec::new();
        let mut a = tar::Archive::new(std::io::Cursor::new(&bytes[..]));
        for e in a.entries_with_seek().unwrap() {
            let e = e.unwrap();
            want.push((
                e.path().unwrap().display().to_string(),
                e.raw_file_position(),
                e.size(),
            ));
        }
        for piece in [1, 7, 512, 513, 100_000] {
            let got = scan(&bytes, piece, None).unwrap().0.unwrap();
            let got: Vec<_> = got
                .iter()
                .map(|m| (m.name.clone(), m.offset, m.size))
                .collect();
            assert_eq!(got, want, "piece {piece}, pax {pax}");
        }
        let got = scan(&bytes, 4096, None).unwrap().0.unwrap();
        let data = &members[2].1;
        assert_eq!(got[2].sha256, hex::encode(Sha256::digest(data)));
    }
}

/// A valid manifest with one rootfs payload `p` of `size` bytes.
fn manifest(size: u64) -> Vec<u8> {
    format!(
        r#"{{"format":1,"compatible":"x","version":"2.0.0","payloads":[{{"name":"p","kind":"rootfs","size":{size},"sha256":"{}","unpacked_size":1}}]}}"#,
        "0".repeat(64)
    )
    .into_bytes()
}

fn accept() -> EarlyCheck {
    Arc::new(|_: &Captured| Ok(()))
}

#[test]
fn early_check_sees_manifest_and_signature() {
    let bytes = tar_of(
        &[
            ("manifest.json", manifest(2000)),
            ("manifest.json.minisig", b"sig".to_vec()),
            ("p", vec![1u8; 2000]),
        ],
        false,
    );
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s2 = seen.clone();
    let early: EarlyCheck = Arc::new(move |c: &Captured| {
        *s2.lock().unwrap() = Some((c.manifest.clone(), c.signature.clone()));
        Ok(())
    });
    let (_, checked) = scan(&bytes, 100, Some(early)).unwrap();
    assert!(checked);
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some((manifest(2000), "sig".to_string()))
    );
    let refuse: EarlyCheck = Arc::new(|_: &Captured| bail!("no thanks"));
    let e = scan(&bytes, 100, Some(refuse)).unwrap_err();
    assert_eq!(e.to_string(), "no thanks");
}

#[test]
fn the_bundle_ends_at_its_end_marker_and_within_its_manifest() {
    let bytes = tar_of(
        &[
            ("manifest.json", manifest(2000)),
            ("manifest.json.minisig", b"sig".to_vec()),
            ("p", vec![1u8; 2000]),
        ],
        false,
    );
    let mut s = Scanner::new(Some(accept()));
    assert_eq!(s.limit(), BEFORE_MANIFEST);
    let mut junk = bytes.clone();
    junk.extend(vec![0xEEu8; 5000]);
    s.push(&junk).unwrap();
    // tar::Builder ends with exactly two zero blocks: the end is the file's length.
    assert_eq!(s.end(), Some(bytes.len() as u64));
    assert_eq!(s.limit(), bytes.len() as u64);
    assert!(s.finish().0.is_some());

    // After the manifest, the limit is what its payloads can take.
    let mut s = Scanner::new(Some(accept()));
    s.push(&bytes[..2048]).unwrap();
    assert!(s.checked_early());
    assert!(s.limit() >= bytes.len() as u64 && s.limit() < 2048 + 2 * HEADERS + 4096);

    // A payload the manifest does not name, or of another size, stops at its header.
    for (name, size, want) in [
        (
            "q",
            2000,
            "member q: not in the manifest at this place (expected p)",
        ),
        (
            "p",
            2001,
            "member p: size 2001 differs from the manifest's 2000",
        ),
    ] {
        let other = tar_of(
            &[
                ("manifest.json", manifest(2000)),
                ("manifest.json.minisig", b"sig".to_vec()),
                (name, vec![1u8; size]),
            ],
            false,
        );
        let e = scan(&other, 700, Some(accept())).unwrap_err();
        assert_eq!(e.to_string(), want);
    }
    // A zero block followed by data is not an end-of-archive marker.
    let mut bad = bytes[..bytes.len() - 512].to_vec();
    bad.extend([7u8; 512]);
    let e = scan(&bad, 512, Some(accept())).unwrap_err();
    assert!(e.to_string().contains("followed by data"), "{e}");
}

#[test]
fn garbage_and_truncation() {
    let e = scan("<html>not found</html>".repeat(40).as_bytes(), 10, None).unwrap_err();
    assert!(e.to_string().contains("not a hup bundle"), "{e}");
    let bytes = tar_of(&[("a", vec![1u8; 3000])], false);
    // Cut in the middle of the data: not complete, no member table.
    assert_eq!(scan(&bytes[..1500], 100, None).unwrap().0, None);
}

/// A bundle whose third member is preceded by a PAX header holding `records`.
fn with_pax(records: &[u8]) -> Vec<u8> {
    let mut out = tar_of(
        &[
            ("manifest.json", b"{}".to_vec()),
            ("manifest.json.minisig", b"sig".to_vec()),
        ],
        false,
    );
    out.truncate(out.len() - 1024); // drop the end marker
    let mut x = tar::Header::new_ustar();
    x.set_path("PaxHeader").unwrap();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(records.len() as u64);
    x.set_mode(0o644);
    x.set_cksum();
    out.extend_from_slice(x.as_bytes());
    out.extend_from_slice(records);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut h = tar::Header::new_ustar();
    h.set_path("short").unwrap();
    h.set_size(10);
    h.set_mode(0o644);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[5u8; 10]);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn pax_records_name_and_size_the_next_member() {
    let long = "d/".repeat(100) + "payload";
    let records = crate::archive::pax::encode(&[("path".into(), long.clone().into_bytes())]);
    let got = scan(&with_pax(&records), 300, None).unwrap().0.unwrap();
    assert_eq!(got[2].name, long);
    assert_eq!(got[2].size, 10);
    // Records the shared parser refuses (no newline, a bad length): the table is dropped,
    // so the payloads are read again by the verification.
    for bad in [&b"6 a=bc"[..], b"99 path=x\n"] {
        assert_eq!(scan(&with_pax(bad), 300, None).unwrap().0, None, "{bad:?}");
    }
}
