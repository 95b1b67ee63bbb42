//! A power cut while hup replaces the GRUB environment block: `hup refund-try` (which
//! rewrites the block) is stopped dead by a failpoint (`HUP_FAILPOINT`, exit 99, no cleanup)
//! at each step of `Esp::replace_file`. The block is then whole, old or new, for
//! `grub-editenv list`; `fsck.fat -n` shows no cross-link that involves the block once the
//! next write cleaned up; and the next write succeeds.

use super::*;

/// Refunds a try of slot b with `hup refund-try`, stopped at `failpoint` (or not at all).
fn refund(f: &Fixture, failpoint: Option<&str>) -> std::process::Output {
    let data = f.dir.path().join("data");
    let mut h = Hup::new()
        .args([
            "refund-try",
            "--disk",
            p(&f.img),
            "--data-dir",
            p(&data),
            "--config",
        ])
        .arg(grub_config(f.dir.path()))
        .env("HUP_BOOTED_SLOT", "b");
    if let Some(fp) = failpoint {
        h = h.env("HUP_FAILPOINT", fp);
    }
    h.run()
}

/// `fsck.fat -n` of the ESP: (success, output).
fn fsck(f: &Fixture) -> String {
    let d = Disk::open_read_only(&f.img).unwrap();
    let part = d.partition("hup-boot").unwrap();
    let out = f.dir.path().join("esp.img");
    let mut buf = vec![0; part.len as usize];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&f.img)
        .unwrap()
        .read_exact_at(&mut buf, part.start)
        .unwrap();
    std::fs::write(&out, &buf).unwrap();
    // Exit 1 when it found something: the output says what.
    let (_, text) = run("fsck.fat", &["-n", p(&out)]);
    text
}

fn cut_at(failpoint: &str, expect_new: bool) {
    let f = Fixture::a_good_b_trying(512);
    f.grub_sets("B_LEFT=2");
    let o = refund(&f, Some(failpoint));
    assert_eq!(o.status.code(), Some(99), "{failpoint}: {o:?}");
    let list = f.list();
    let want = if expect_new { "B_LEFT=3" } else { "B_LEFT=2" };
    has(&list, &[want, "ORDER=B A", "A_OK=1", "B_OK=1"]);
    assert_eq!(
        f.b.state().unwrap().slot(Slot::B).tries_left,
        Some(if expect_new { 3 } else { 2 })
    );
    // A cut leaves `grubenv.new` behind; the next write cleans it up and succeeds.
    let tree = mdir_tree(&f.img, f.off);
    assert!(tree.iter().any(|l| l.ends_with("grubenv.new")), "{tree:?}");
    let before = fsck(&f);
    // Cut after the new block was detached or switched in: one chain no entry references.
    let lost = matches!(failpoint, "esp-replace-detached" | "esp-replace-switched");
    assert_eq!(
        before.contains("Reclaimed 1 unused cluster"),
        lost,
        "{failpoint}:\n{before}"
    );
    f.b.mark_good(Slot::B).unwrap();
    let tree = mdir_tree(&f.img, f.off);
    assert!(!tree.iter().any(|l| l.ends_with(".new")), "{tree:?}");
    has(&f.list(), &["ORDER=B A", "B_LEFT=", "B_OK=1"]);
    let text = fsck(&f);
    // No entry ever shares a cluster with another: at most a lost chain for fsck to reclaim.
    for t in [&before, &text] {
        assert!(
            !t.contains("share clusters") && !t.to_lowercase().contains("grubenv"),
            "{failpoint}: before the cleanup:\n{before}\nafter:\n{text}"
        );
    }
}

#[test]
fn cut_after_the_new_block_is_written_keeps_the_old() {
    cut_at("esp-replace-written", false);
}

#[test]
fn cut_after_the_new_block_is_detached_keeps_the_old() {
    cut_at("esp-replace-detached", false);
}

#[test]
fn cut_after_the_switch_has_the_new_block() {
    cut_at("esp-replace-switched", true);
}

#[test]
fn cut_after_the_swap_has_the_new_block() {
    cut_at("esp-replace-swapped", true);
}
