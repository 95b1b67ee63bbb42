//! Power cuts during a delta apply: cut in the middle of populating the slot from the
//! expanded delta (and right after preflight and populate), run again, and end with the slot
//! a full apply of the same version writes. The base slot is never touched. Needs the
//! `failpoints` feature.

use crate::delta::{DeltaWorld, same_but_format_time, slot_b};
use crate::support::ext4::assert_same_tree;
use crate::support::image::*;
use crate::support::runner::Hup;

#[test]
fn a_cut_delta_populate_resumes_to_the_full_applys_slot() {
    let d = DeltaWorld::new();
    let full_img = d.w.provision("full.img", "1.0.0", "gpt", &[]);
    let (ok, err) = d.apply(&full_img, &d.full);
    assert!(ok, "{err}");
    let want = slot_b(&full_img);

    for point in ["populate-middle", "preflight", "populate"] {
        let img = d.w.provision(&format!("{point}.img"), "1.0.0", "gpt", &[]);
        let a = part(&img, "hup-root-a");
        let a_before = range_sha(&img, a);
        let o = Hup::with(d.w.apply_args(&img, &d.delta))
            .env("HUP_FAILPOINT", point)
            .run();
        assert_eq!(
            o.status.code(),
            Some(hup::failpoint::EXIT),
            "{point}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if point == "populate-middle" {
            // in the middle of the stream: 64 of the tar's more than 100 members
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("exiting after 64 archive members"), "{err}");
        }
        assert_eq!(
            range_sha(&img, a),
            a_before,
            "{point}: the base slot changed"
        );
        let (ok, err) = d.apply(&img, &d.delta);
        assert!(ok, "{point}: resume failed: {err}");
        assert!(err.contains("resuming the apply"), "{point}: {err}");
        assert_eq!(
            range_sha(&img, a),
            a_before,
            "{point}: the base slot changed"
        );
        assert_same_tree(&want, &slot_b(&img), same_but_format_time);
    }
}
