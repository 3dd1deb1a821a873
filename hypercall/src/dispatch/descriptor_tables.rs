//! `HYPERVISOR_set_gdt` and `HYPERVISOR_update_descriptor` (Xen 4.17
//! `do_set_gdt`, `do_update_descriptor`,
//! `xen/arch/x86/pv/descriptor-tables.c`): a PV guest's GDT lives in frames
//! it may not write, so it names them, and changes descriptors, through
//! Xen. 64-bit PV callers only (the dispatcher answers `-ENOSYS` to anyone
//! else).
//!
//! - `set_gdt(xen_ulong_t *frame_list, unsigned int entries)`: `entries`
//!   above `FIRST_RESERVED_GDT_ENTRY` (7168, the first descriptor that is
//!   Xen's) is `-EINVAL` before anything is read; else `ceil(entries /
//!   512)` frame numbers (8 bytes each, at most
//!   `FIRST_RESERVED_GDT_PAGE` = 14) are copied in (`-EFAULT`; none for
//!   `entries == 0`, so `frame_list` may then be NULL) and handed with
//!   `entries` to [`Domain::pv_set_gdt`].
//! - `update_descriptor(uint64_t gaddr, seg_desc_t desc)`: a `gaddr` that
//!   is not 8-byte aligned is `-EINVAL` ("it will corrupt adjacent
//!   descriptors"); else [`Domain::pv_update_descriptor`], which checks the
//!   descriptor and the frame.

use super::{Ctx, Domain, Outcome};
use crate::abi::Errno;
use crate::abi::pv::{FIRST_RESERVED_GDT_ENTRY, FIRST_RESERVED_GDT_PAGE};

/// Descriptors per GDT frame.
const ENTRIES_PER_FRAME: u32 = 512;

/// `set_gdt`.
pub(super) fn do_set_gdt<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    frame_list: u64,
    entries: u64,
) -> Outcome {
    // `unsigned int entries`.
    let entries = entries as u32;
    // FIRST_RESERVED_GDT_ENTRY is 7168: fits.
    if entries > FIRST_RESERVED_GDT_ENTRY as u32 {
        return Outcome::err(Errno::EINVAL);
    }
    // At most 14 (7168 / 512).
    let nr_frames = entries.div_ceil(ENTRIES_PER_FRAME) as usize;
    let mut raw = [0u8; FIRST_RESERVED_GDT_PAGE * 8];
    let mut frames = [0u64; FIRST_RESERVED_GDT_PAGE];
    if nr_frames > 0 {
        if let Err(e) = cx.read_into(frame_list, &mut raw[..nr_frames * 8]) {
            return Outcome::err(e);
        }
        for (frame, bytes) in frames.iter_mut().zip(raw.as_chunks::<8>().0) {
            *frame = u64::from_le_bytes(*bytes);
        }
    }
    Outcome::from_result(cx.d.pv_set_gdt(&frames[..nr_frames], entries).map(|()| 0))
}

/// `update_descriptor`.
pub(super) fn do_update_descriptor<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    gaddr: u64,
    desc: u64,
) -> Outcome {
    if !gaddr.is_multiple_of(8) {
        return Outcome::err(Errno::EINVAL);
    }
    Outcome::from_result(cx.d.pv_update_descriptor(gaddr, desc).map(|()| 0))
}
