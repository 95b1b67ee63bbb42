//! Reading the typed `hup status --json` document (`HUP-STATUS` lines in the guest,
//! `hup status --disk` on the host): the parts the assertions look at, with the whole
//! document in the panic message when a part is missing.

use hup::device::status::{BootSlotReport, LastResultReport, SlotReport, Status};
use hup::model::slot::Slot;

/// Slot `a` or `b`.
pub fn slot(name: &str) -> Slot {
    Slot::parse(name).unwrap_or_else(|| panic!("no slot {name:?}"))
}

/// The booted slot's report.
pub fn booted(st: &Status) -> &SlotReport {
    st.booted
        .as_ref()
        .unwrap_or_else(|| panic!("no booted slot: {st:#?}"))
}

/// The other slot's report.
pub fn other(st: &Status) -> &SlotReport {
    st.other
        .as_ref()
        .unwrap_or_else(|| panic!("no other slot: {st:#?}"))
}

/// The last update's result.
pub fn last_result(st: &Status) -> &LastResultReport {
    st.last_result
        .as_ref()
        .unwrap_or_else(|| panic!("no last result: {st:#?}"))
}

/// The slot the boot loader starts next, if the status knows.
pub fn next(st: &Status) -> Option<Slot> {
    st.boot.as_ref().and_then(|b| b.next)
}

/// The boot backend's state of `slot`.
pub fn boot_slot(st: &Status, slot: Slot) -> &BootSlotReport {
    st.boot
        .as_ref()
        .and_then(|b| b.slots.iter().find(|s| s.slot == slot))
        .unwrap_or_else(|| panic!("no boot state of slot {}: {st:#?}", slot.name()))
}

/// The boot backend's name (`""` when the status has no boot section).
pub fn backend(st: &Status) -> &str {
    st.boot.as_ref().map_or("", |b| b.backend.as_str())
}
