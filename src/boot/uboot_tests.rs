use super::*;

/// What hup's boot script does at one boot: the slot it boots, with the trial's counter one
/// less (the text of the script is in `uboot_script`; this replays it on the variables).
fn boot(env: &mut UbootEnv) -> Slot {
    let order = order(env).unwrap_or_default();
    let chosen = order
        .iter()
        .copied()
        .find(|s| SlotVars::read(env, *s).bootable());
    let Some(s) = chosen else {
        return order.first().copied().unwrap_or(Slot::A);
    };
    if trial(env) == Some(s) {
        let left = SlotVars::read(env, s).left.flatten().unwrap();
        env.set(&left_var(s), &(left - 1).to_string()).unwrap();
    }
    s
}

/// Provisioned (A good), then B on trial with `tries`.
fn trying_b(tries: u8) -> UbootEnv {
    let mut e = initial_env().unwrap();
    e.set("bootdelay", "2").unwrap();
    bad(&mut e, Slot::B).unwrap();
    try_next(&mut e, Slot::B, tries).unwrap();
    e
}

fn status(e: &UbootEnv, s: Slot) -> SlotStatus {
    SlotVars::read(e, s).status()
}

#[test]
fn countdown_then_fallback() {
    let mut e = trying_b(3);
    assert_eq!(e.get(BOOT_ORDER), Some("B A"));
    assert_eq!(e.get("BOOT_B_LEFT"), Some("3"));
    assert_eq!(status(&e, Slot::B), SlotStatus::Trying);
    for left in [2, 1, 0] {
        assert_eq!(boot(&mut e), Slot::B);
        assert_eq!(e.get("BOOT_B_LEFT"), Some(left.to_string().as_str()));
    }
    // Used up: the committed slot boots, never counted down.
    assert_eq!(next(&e), Slot::A);
    for _ in 0..5 {
        assert_eq!(boot(&mut e), Slot::A);
    }
    assert_eq!(e.get("BOOT_A_LEFT"), Some("3"));
    assert_eq!(status(&e, Slot::B), SlotStatus::Bad);
    assert_eq!(status(&e, Slot::A), SlotStatus::Good);
    assert_eq!(e.get("bootdelay"), Some("2"), "other variables are kept");
}

#[test]
fn mark_good_commits_and_cancels_the_other_trial() {
    let mut e = trying_b(3);
    boot(&mut e);
    good(&mut e, Slot::B).unwrap();
    assert_eq!(e.get(BOOT_ORDER), Some("B A"));
    assert_eq!(e.get("BOOT_B_LEFT"), Some("3"));
    assert_eq!(e.get(HUP_TRIAL), None);
    assert_eq!(status(&e, Slot::B), SlotStatus::Good);
    assert_eq!(
        status(&e, Slot::A),
        SlotStatus::Good,
        "A stays the fallback"
    );
    for _ in 0..5 {
        assert_eq!(boot(&mut e), Slot::B);
    }
    // A commits while B is on trial: B's trial is cancelled.
    let mut e = trying_b(3);
    good(&mut e, Slot::A).unwrap();
    assert_eq!(e.get(BOOT_ORDER), Some("A B"));
    assert_eq!(e.get("BOOT_B_LEFT"), Some("0"));
    assert_eq!(status(&e, Slot::B), SlotStatus::Bad);
    assert_eq!(next(&e), Slot::A);
}

#[test]
fn mark_bad_and_rescue() {
    let mut e = trying_b(3);
    bad(&mut e, Slot::B).unwrap();
    assert_eq!(e.get(BOOT_ORDER), Some("A B"));
    assert_eq!(e.get("BOOT_B_LEFT"), Some("0"));
    assert_eq!(e.get(HUP_TRIAL), None);
    assert_eq!(boot(&mut e), Slot::A);
    // Nothing bootable: the first of BOOT_ORDER (rescue); no BOOT_ORDER: A.
    bad(&mut e, Slot::A).unwrap();
    assert_eq!(e.get(BOOT_ORDER), Some("B A"));
    assert_eq!(next(&e), Slot::B);
    assert_eq!(next(&UbootEnv::new()), Slot::A);
    assert_eq!(status(&UbootEnv::new(), Slot::A), SlotStatus::Missing);
}

#[test]
fn refund_within_the_budget() {
    let mut e = trying_b(3);
    // No try used yet: nothing to give back.
    assert!(!refund(&mut e, Slot::B).unwrap());
    for _ in 0..REFUND_BUDGET {
        boot(&mut e);
        assert!(refund(&mut e, Slot::B).unwrap());
        assert_eq!(e.get("BOOT_B_LEFT"), Some("3"));
    }
    boot(&mut e);
    assert!(!refund(&mut e, Slot::B).unwrap(), "budget spent");
    assert_eq!(e.get("BOOT_B_LEFT"), Some("2"));
    assert_eq!(e.get(HUP_REFUNDS), Some("0"));
    // A committed slot is never refunded.
    assert!(!refund(&mut e, Slot::A).unwrap());
    assert_eq!(e.get("BOOT_A_LEFT"), Some("3"));
}

#[test]
fn backend_on_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("uboot.env");
    let conf = dir.path().join("fw_env.config");
    std::fs::write(&conf, format!("{} 0x0 0x4000\n", file.display())).unwrap();
    let b = UbootBackend::with_labels(
        dir.path().join("no-disk.img"),
        Labels::default(),
        &conf,
        Path::new("/boot"),
    );
    assert!(b.state().is_err(), "no environment yet");
    b.create_env(&trying_b(2)).unwrap();
    let st = b.state().unwrap();
    assert_eq!(st.next, Some(Slot::B));
    assert_eq!(st.order, Some(vec![Slot::B, Slot::A]));
    assert_eq!(st.slot(Slot::B).status, SlotStatus::Trying);
    assert_eq!(st.slot(Slot::B).tries_left, Some(2));
    assert_eq!(st.slot(Slot::B).refunds_left, Some(REFUND_BUDGET));
    assert_eq!(st.slot(Slot::A).tries_left, Some(3));
    assert_eq!(st.slot(Slot::A).refunds_left, None);
    b.mark_good(Slot::B).unwrap();
    assert_eq!(b.active().unwrap(), Slot::B);
    b.mark_bad(Slot::B).unwrap();
    assert_eq!(b.active().unwrap(), Slot::A);
    assert!(!b.refund_try(Slot::A).unwrap());
    assert_eq!(b.env().unwrap().get("bootdelay"), Some("2"));
    // set_try_next checks the kernel on the boot partition: no disk, an error.
    assert!(b.set_try_next(Slot::B, 3).is_err());
    assert!(b.set_try_next(Slot::B, MAX_TRIES + 1).is_err());
}

#[test]
fn an_image_file_is_never_the_mounted_boot_partition() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, b"").unwrap();
    // `/` is mounted in every test environment, but not from an image file.
    assert!(!boot_mounted_from(&img, Path::new("/")));
    assert!(!boot_mounted_from(
        &dir.path().join("absent"),
        Path::new("/")
    ));
}
