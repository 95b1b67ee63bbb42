use super::*;

fn block(vars: &[(&str, &str)]) -> EnvBlock {
    let mut e = EnvBlock::default();
    for (n, v) in vars {
        e.set(n, v).unwrap();
    }
    e
}

#[test]
fn next_replays_the_script() {
    // Committed A first.
    let e = block(&[
        ("ORDER", "A B"),
        ("A_OK", "1"),
        ("A_LEFT", ""),
        ("B_OK", "1"),
    ]);
    assert_eq!(next(&e), Slot::A);
    // B on trial first with tries left.
    let mut e = block(&[
        ("ORDER", "B A"),
        ("A_OK", "1"),
        ("B_OK", "1"),
        ("B_LEFT", "2"),
    ]);
    assert_eq!(next(&e), Slot::B);
    // Trial used up: falls back to A.
    e.set("B_LEFT", "0").unwrap();
    assert_eq!(next(&e), Slot::A);
    // A value the script does not count down from: skipped.
    e.set("B_LEFT", "16").unwrap();
    assert_eq!(next(&e), Slot::A);
    e.set("B_LEFT", "03").unwrap();
    assert_eq!(next(&e), Slot::A);
    // Nothing bootable: the first of ORDER (rescue); no ORDER: A.
    e.set("A_OK", "0").unwrap();
    assert_eq!(next(&e), Slot::B);
    assert_eq!(next(&EnvBlock::default()), Slot::A);
}

#[test]
fn slot_status_from_the_variables() {
    let e = block(&[
        ("A_OK", "1"),
        ("B_OK", "1"),
        ("B_LEFT", "3"),
        ("B_TRIES", "3"),
    ]);
    assert_eq!(SlotVars::read(&e, Slot::A).status(), SlotStatus::Good);
    assert_eq!(SlotVars::read(&e, Slot::B).status(), SlotStatus::Trying);
    let e = block(&[("A_OK", "0"), ("B_OK", "1"), ("B_LEFT", "0")]);
    assert_eq!(SlotVars::read(&e, Slot::A).status(), SlotStatus::Bad);
    assert_eq!(SlotVars::read(&e, Slot::B).status(), SlotStatus::Bad);
    let e = block(&[("ORDER", "A B")]);
    assert_eq!(SlotVars::read(&e, Slot::B).status(), SlotStatus::Missing);
    assert_eq!(tries_value("15"), Some(15));
    assert_eq!(tries_value("16"), None);
    assert_eq!(tries_value("+1"), None);
    assert_eq!(
        order(&block(&[("ORDER", "B x A")])),
        Some(vec![Slot::B, Slot::A])
    );
}
