//! What the grub and uboot backends share: a slot order in one environment variable
//! (`ORDER`, `BOOT_ORDER`: `"A B"`, first preferred), walked by the boot script, and the
//! place of a slot's kernel on the boot partition.

use crate::model::slot::Slot;

/// The slots of an order value the script walks (tokens other than `A` and `B` are
/// skipped).
pub fn parse(value: &str) -> Vec<Slot> {
    value
        .split_whitespace()
        .filter_map(Slot::parse_upper)
        .collect()
}

/// The order value with `first` preferred: `"A B"` or `"B A"`.
pub fn value(first: Slot) -> String {
    format!("{} {}", first.upper(), first.other().upper())
}

/// The slot the script boots: the first of `order` that is bootable, else (rescue) the
/// first of `order`, else A.
pub fn next(order: &[Slot], bootable: impl Fn(Slot) -> bool) -> Slot {
    order
        .iter()
        .copied()
        .find(|s| bootable(*s))
        .or_else(|| order.first().copied())
        .unwrap_or(Slot::A)
}

/// The kernel the boot script loads for `slot` from the boot partition (the same file
/// systemd-boot entries use).
pub fn kernel_path(slot: Slot) -> String {
    format!("/hup/{slot}/vmlinuz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_round_trips_and_skips_other_tokens() {
        assert_eq!(parse(&value(Slot::B)), vec![Slot::B, Slot::A]);
        assert_eq!(parse(" A  x b B "), vec![Slot::A, Slot::B]);
        assert_eq!(next(&[Slot::B, Slot::A], |s| s == Slot::A), Slot::A);
        assert_eq!(next(&[Slot::B, Slot::A], |_| false), Slot::B);
        assert_eq!(next(&[], |_| true), Slot::A);
        assert_eq!(kernel_path(Slot::B), "/hup/b/vmlinuz");
    }
}
