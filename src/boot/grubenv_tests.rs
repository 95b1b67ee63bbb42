use super::*;

/// `grub-editenv F create`, then `set ORDER="A B" A_OK=1`, `unset A_OK`,
/// `set B_LEFT=3 'W=x\y<newline>z'` (GRUB 2.06), byte for byte.
fn editenv_block() -> Vec<u8> {
    let mut b = HEADER.as_bytes().to_vec();
    b.extend_from_slice(WARNING.as_bytes());
    b.extend_from_slice(b"ORDER=A B\nB_LEFT=3\nW=x\\\\y\\\nz\n");
    b.resize(BLOCK_SIZE, b'#');
    b
}

#[test]
fn a_fresh_block_is_what_grub_editenv_creates() {
    let b = EnvBlock::default().render().unwrap();
    assert_eq!(b.len(), BLOCK_SIZE);
    assert!(b.starts_with(b"# GRUB Environment Block\n# WARNING: Do not edit"));
    assert!(b[HEADER.len() + WARNING.len()..].iter().all(|&c| c == b'#'));
    let parsed = EnvBlock::parse(&b).unwrap();
    assert!(parsed.vars().is_empty());
    assert_eq!(parsed, EnvBlock::default());
}

#[test]
fn reads_and_rewrites_grub_editenv_blocks_byte_for_byte() {
    let raw = editenv_block();
    let env = EnvBlock::parse(&raw).unwrap();
    assert_eq!(
        env.vars(),
        vec![("ORDER", "A B"), ("B_LEFT", "3"), ("W", "x\\y\nz")]
    );
    assert_eq!(env.render().unwrap(), raw);
}

#[test]
fn set_in_place_appends_new_and_escapes_like_grub_editenv() {
    let mut env = EnvBlock::default();
    env.set("ORDER", "A B").unwrap();
    env.set("B_LEFT", "1").unwrap();
    env.set("W", "x\\y\nz").unwrap();
    env.set("B_LEFT", "3").unwrap();
    assert_eq!(env.render().unwrap(), editenv_block());
    env.unset("B_LEFT");
    assert_eq!(env.get("B_LEFT"), None);
    assert_eq!(env.get("ORDER"), Some("A B"));
    env.set("B_LEFT", "").unwrap();
    assert_eq!(env.get("B_LEFT"), Some(""));
    let back = EnvBlock::parse(&env.render().unwrap()).unwrap();
    assert_eq!(
        back.vars(),
        vec![("ORDER", "A B"), ("W", "x\\y\nz"), ("B_LEFT", "")]
    );
}

#[test]
fn unknown_variables_and_comments_are_kept() {
    let mut raw = HEADER.as_bytes().to_vec();
    raw.extend_from_slice(b"# my comment\nsaved_entry=debian\nnoequals\nA_OK=0\n");
    raw.resize(BLOCK_SIZE, b'#');
    let mut env = EnvBlock::parse(&raw).unwrap();
    env.set("A_OK", "1").unwrap();
    let out = env.render().unwrap();
    let mut want = HEADER.as_bytes().to_vec();
    want.extend_from_slice(b"# my comment\nsaved_entry=debian\nnoequals\nA_OK=1\n");
    want.resize(BLOCK_SIZE, b'#');
    assert_eq!(out, want);
}

#[test]
fn refuses_bad_blocks_with_one_line() {
    let good = editenv_block();
    let e = EnvBlock::parse(&good[..1000]).unwrap_err();
    assert_eq!(e, EnvError::Size(1000));
    let mut long = good.clone();
    long.push(b'#');
    assert_eq!(EnvBlock::parse(&long).unwrap_err(), EnvError::Size(1025));
    let mut bad = good.clone();
    bad[2] = b'X';
    assert_eq!(EnvBlock::parse(&bad).unwrap_err(), EnvError::Header);
    // A variable line running into the end of the block.
    let mut torn = HEADER.as_bytes().to_vec();
    torn.resize(BLOCK_SIZE, b'A');
    assert!(matches!(EnvBlock::parse(&torn), Err(EnvError::Torn(_))));
    let mut env = EnvBlock::default();
    env.set("BIG", &"x".repeat(1000)).unwrap();
    let e = env.render().unwrap_err();
    assert!(matches!(e, EnvError::TooBig(n) if n > BLOCK_SIZE), "{e}");
    for e in [EnvError::Size(3), EnvError::Header, e] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    assert!(env.set("A=B", "1").is_err());
    assert!(env.set("", "1").is_err());
}

#[test]
fn a_block_filled_to_the_last_byte_fits() {
    let mut env = EnvBlock::default();
    let used = HEADER.len() + WARNING.len() + "V=\n".len();
    env.set("V", &"v".repeat(BLOCK_SIZE - used)).unwrap();
    let out = env.render().unwrap();
    assert_eq!(out.len(), BLOCK_SIZE);
    assert_eq!(out[BLOCK_SIZE - 1], b'\n');
    assert_eq!(EnvBlock::parse(&out).unwrap(), env);
}
