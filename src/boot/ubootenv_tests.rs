use super::*;

fn env(pairs: &[(&str, &str)]) -> UbootEnv {
    let mut e = UbootEnv::new();
    for (n, v) in pairs {
        e.set(n, v).unwrap();
    }
    e
}

fn data(strings: &[&str], pad: u8, room: usize) -> Vec<u8> {
    let mut d = Vec::new();
    for s in strings {
        d.extend_from_slice(s.as_bytes());
        d.push(0);
    }
    d.push(0);
    d.resize(room, pad);
    d
}

fn names(e: &UbootEnv) -> Vec<String> {
    e.vars().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn crc_is_zlibs_crc32() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn reads_what_mkenvimage_writes_with_ff_padding() {
    // `mkenvimage -s 0x100` of "foo=bar\nbaz=qux\n": CRC 0xcfff6c2e (bytes 2e 6c ff cf), then
    // the strings in input order, the end marker and 0xFF padding.
    let mut img = 0xcfff_6c2e_u32.to_le_bytes().to_vec();
    img.extend(data(&["foo=bar", "baz=qux"], 0xFF, 0x100 - 4));
    let i = Image::single(&img, 0x100).unwrap();
    assert_eq!(names(&i.env), ["foo", "baz"]);
    assert_eq!(i.env.get("baz"), Some("qux"));
    // hup pads with 0x00 (as U-Boot's saveenv): another CRC, the same variables.
    let mine = render(&i.env, 0x100, None).unwrap();
    assert_eq!(&mine[4..23], b"foo=bar\0baz=qux\0\0\0\0");
    assert!(mine[21..].iter().all(|&b| b == 0));
    assert_eq!(Image::single(&mine, 0x100).unwrap().env, i.env);
}

#[test]
fn a_bad_crc_in_the_only_copy_is_one_clear_error() {
    let mut img = render(&env(&[("a", "1")]), 64, None).unwrap();
    img[10] ^= 1;
    let e = Image::single(&img, 64).unwrap_err();
    assert!(matches!(e, UbootEnvError::BadCrc { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("U-Boot environment has a bad CRC (stored 0x")
    );
    assert_eq!(
        Image::single(&img[..63], 64).unwrap_err(),
        UbootEnvError::Size { len: 63, size: 64 }
    );
}

#[test]
fn parsing_follows_libubootenv() {
    // A duplicate keeps its first place and its last value; a string without '=' is dropped;
    // an empty value is kept as read; the padding after the end marker is not read.
    let d = data(&["b=1", "junk", "a=2", "e=", "b=3"], 0xAB, 64);
    let e = UbootEnv::parse_data(&d).unwrap();
    assert_eq!(
        e.vars(),
        [("b", "3"), ("a", "2"), ("e", "")].map(|(n, v)| (n.to_string(), v.to_string()))
    );
    // No end marker inside the area.
    assert_eq!(
        UbootEnv::parse_data(b"a=1\0b=2"),
        Err(UbootEnvError::Unterminated)
    );
    let mut img = vec![0; 4];
    img.extend_from_slice(&[b'x'; 12]);
    let crc = crc32(&img[4..]);
    img[..4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Image::single(&img, 16), Err(UbootEnvError::Unterminated));
}

#[test]
fn set_keeps_order_and_inserts_like_fw_setenv() {
    let mut e = UbootEnv::parse_data(&data(&["b=1", "a=2", "c=3"], 0, 64)).unwrap();
    e.set("a", "x").unwrap();
    e.set("bb", "y").unwrap();
    e.set("z", "last").unwrap();
    e.set("0", "first").unwrap();
    assert_eq!(names(&e), ["0", "b", "a", "bb", "c", "z"]);
    assert_eq!(e.get("a"), Some("x"));
    // An empty value unsets, as `fw_setenv name` does.
    e.set("bb", "").unwrap();
    assert_eq!(e.get("bb"), None);
    assert!(e.unset("z").unwrap());
    assert!(!e.unset("z").unwrap());
    assert_eq!(names(&e), ["0", "b", "a", "c"]);
}

#[test]
fn bad_names_and_values_are_refused() {
    let mut e = UbootEnv::new();
    for bad in ["", "a=b", "nu\0l", "#x"] {
        assert_eq!(e.set(bad, "1"), Err(UbootEnvError::Name(bad.into())));
    }
    assert_eq!(e.unset("a=b"), Err(UbootEnvError::Name("a=b".into())));
    assert_eq!(e.set("ok", "a\0b"), Err(UbootEnvError::Value("ok".into())));
    assert_eq!(
        e.set("ok", "a\0b").unwrap_err().to_string(),
        "invalid value for U-Boot environment variable ok: it has a NUL byte"
    );
    assert!(e.vars().is_empty());
}

#[test]
fn non_utf8_values_are_kept_byte_for_byte() {
    let mut d = b"bin=\xff\xfe\0a=1\0\0".to_vec();
    d.resize(32, 0);
    let mut e = UbootEnv::parse_data(&d).unwrap();
    assert_eq!(e.get("bin"), None);
    assert_eq!(e.get_bytes("bin"), Some(&b"\xff\xfe"[..]));
    e.set("a", "2").unwrap();
    assert_eq!(&e.render_data(32).unwrap()[..12], b"bin=\xff\xfe\0a=2\0\0");
}

#[test]
fn too_big_is_refused_exactly_at_the_limit() {
    // Header 4 + "a=" + 8 bytes + NUL + end marker = 16.
    let e = env(&[("a", "12345678")]);
    assert_eq!(e.data_len(), 12);
    assert!(render(&e, 16, None).is_ok());
    assert_eq!(
        render(&e, 15, None),
        Err(UbootEnvError::TooBig { need: 12, room: 11 })
    );
    // Redundant: one more header byte.
    assert_eq!(
        render(&e, 16, Some(1)),
        Err(UbootEnvError::TooBig { need: 12, room: 11 })
    );
    assert_eq!(render(&e, 4, None), Err(UbootEnvError::TooSmall(4)));
}

#[test]
fn flags_choose_like_libubootenv() {
    use FlagStyle::*;
    let pick = |a: u8, b: u8, s| choose([Some(a), Some(b)], s).unwrap();
    // Incremental (files, block devices; U-Boot's own rule): higher wins, tie -> copy 0,
    // 255 against 0 is a wrap-around.
    for (a, b, want) in [
        (1, 2, 1),
        (2, 1, 0),
        (5, 5, 0),
        (255, 0, 1),
        (0, 255, 0),
        (254, 255, 1),
        (0, 1, 1),
    ] {
        assert_eq!(pick(a, b, Incremental), want, "incremental {a} {b}");
    }
    // Boolean (NOR flash): 1 active, 0 obsolete, an erased 0xFF wins (copy 1 first).
    for (a, b, want) in [
        (1, 0, 0),
        (0, 1, 1),
        (255, 1, 0),
        (1, 255, 1),
        (255, 255, 1),
    ] {
        assert_eq!(pick(a, b, Boolean), want, "boolean {a} {b}");
    }
    assert_eq!(choose([Some(0), None], Incremental), Ok(0));
    assert_eq!(choose([None, Some(0)], Boolean), Ok(1));
    assert_eq!(
        choose([None, None], Incremental),
        Err(UbootEnvError::BothBad)
    );
    assert_eq!(Incremental.next(255), 0);
    assert_eq!(Incremental.next(7), 8);
    assert_eq!(Boolean.next(1), 1);
}

/// Applies `w` to the pair.
fn apply(pair: &mut [Vec<u8>; 2], w: &CopyWrite) {
    pair[w.copy] = w.bytes.clone();
    if w.obsolete_other {
        pair[1 - w.copy][CRC_LEN] = FlagStyle::OBSOLETE;
    }
}

fn read(pair: &[Vec<u8>; 2], style: FlagStyle) -> Result<Image, UbootEnvError> {
    Image::redundant([Some(&pair[0][..]), Some(&pair[1][..])], 64, style)
}

#[test]
fn redundant_writes_alternate_and_wrap() {
    let e0 = env(&[("BOOT_ORDER", "A B")]);
    let mut pair = [vec![], vec![]];
    for w in Image::fresh(&e0, 64, true).unwrap() {
        apply(&mut pair, &w);
    }
    let i = read(&pair, FlagStyle::Incremental).unwrap();
    assert_eq!((i.current, i.flags), (0, Some([Some(1), Some(0)])));
    assert_eq!(i.env, e0);
    let mut e = e0.clone();
    for n in 0..300u32 {
        let i = read(&pair, FlagStyle::Incremental).unwrap();
        e.set("N", &n.to_string()).unwrap();
        let w = i.next(&e).unwrap();
        assert_eq!(w.copy, 1 - i.current, "round {n}");
        apply(&mut pair, &w);
        let after = read(&pair, FlagStyle::Incremental).unwrap();
        assert_eq!(after.current, w.copy, "round {n}: the new copy wins");
        assert_eq!(after.env, e, "round {n}");
    }
}

#[test]
fn boolean_style_obsoletes_the_old_copy() {
    let mut pair = [vec![], vec![]];
    for w in Image::fresh(&env(&[("a", "1")]), 64, true).unwrap() {
        apply(&mut pair, &w);
    }
    let i = read(&pair, FlagStyle::Boolean).unwrap();
    let w = i.next(&env(&[("a", "2")])).unwrap();
    assert_eq!((w.copy, w.bytes[CRC_LEN], w.obsolete_other), (1, 1, true));
    // Cut before the old copy is obsoleted: both say 1, the tie goes to copy 0 (old).
    let mut cut = pair.clone();
    cut[1] = w.bytes.clone();
    assert_eq!(
        read(&cut, FlagStyle::Boolean).unwrap().env.get("a"),
        Some("1")
    );
    apply(&mut pair, &w);
    let after = read(&pair, FlagStyle::Boolean).unwrap();
    assert_eq!((after.current, after.env.get("a")), (1, Some("2")));
}

#[test]
fn a_bad_copy_falls_back_to_the_other() {
    let mut pair = [vec![], vec![]];
    for w in Image::fresh(&env(&[("v", "old")]), 64, true).unwrap() {
        apply(&mut pair, &w);
    }
    let i = read(&pair, FlagStyle::Incremental).unwrap();
    apply(&mut pair, &i.next(&env(&[("v", "new")])).unwrap());
    assert_eq!(
        read(&pair, FlagStyle::Incremental).unwrap().env.get("v"),
        Some("new")
    );
    // The newer copy torn: the older one is used.
    pair[1][20] ^= 0xFF;
    let i = read(&pair, FlagStyle::Incremental).unwrap();
    assert_eq!((i.current, i.env.get("v")), (0, Some("old")));
    assert_eq!(i.flags, Some([Some(1), None]));
    // A missing copy counts as bad.
    let i = Image::redundant([None, Some(&pair[0][..])], 64, FlagStyle::Incremental).unwrap();
    assert_eq!((i.current, i.env.get("v")), (1, Some("old")));
    // Both bad: one clear error.
    pair[0][20] ^= 0xFF;
    let e = read(&pair, FlagStyle::Incremental).unwrap_err();
    assert_eq!(e, UbootEnvError::BothBad);
    assert_eq!(
        e.to_string(),
        "both copies of the redundant U-Boot environment are bad (bad CRC or missing)"
    );
}
