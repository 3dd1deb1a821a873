//! The shared-info page (`struct shared_info`, `xen/include/public/xen.h`), pvh64.
//!
//! # What
//!
//! A PVH guest has no shared-info page until it asks for one: it picks a page of
//! its own RAM and calls `XENMEM_add_to_physmap(XENMAPSPACE_shared_info, idx 0,
//! gpfn)`, and from then on that gfn is the hypervisor's shared-info frame (the
//! RAM page that was there is gone). Here that page is [`SHARED_INFO`], a static
//! in `.bss`, so the guest reaches it at its own (identity-mapped) address.
//!
//! What the domU modes read and write in it: `vcpu_info[0]` (the upcall flags, the
//! 2-level `evtchn_pending_sel`, and the pvclock parameters in `time`) and the
//! 2-level `evtchn_pending[]`/`evtchn_mask[]` bitmaps. The smp mode also uses
//! `vcpu_info[k]` of its other vCPUs (the `_of` accessors): a vCPU that has not
//! registered a `vcpu_info` of its own (`VCPUOP_register_vcpu_info`) has slot
//! `k` of the page, for k below `XEN_LEGACY_MAX_VCPUS` (32). Offsets come from
//! `keel_hypercall::abi::xen` (the native layout: this module is pvh64-only; the
//! compat layout of a 32-bit guest is different).
//!
//! # Invariants and hazards
//!
//! - Everything in the page is shared with the hypervisor, which writes it at any
//!   time: every access is an atomic (or volatile) access through a raw address,
//!   never a Rust reference to plain data.
//! - The accessors hand out `&'static` atomics into [`SHARED_INFO`]; they are
//!   meaningful only after [`map`] succeeded (before, the page is plain zeroed
//!   RAM, which reads as "nothing pending, clock at 0").

use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::memory::{
    XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP, XenAddToPhysmap,
};
use keel_hypercall::abi::xen::{SharedInfo, VcpuInfo, VcpuTimeInfo, XEN_LEGACY_MAX_VCPUS};

use crate::hypercall;
use crate::paging::Page;

/// The page the shared-info frame is mapped over.
pub static SHARED_INFO: Page = Page::new();

static MAPPED: AtomicBool = AtomicBool::new(false);

/// Offset of `vcpu_info[0]` in the page.
const VCPU0: usize = offset_of!(SharedInfo, vcpu_info);
/// Offset of `evtchn_pending[]`.
const PENDING: usize = offset_of!(SharedInfo, evtchn_pending);
/// Offset of `evtchn_mask[]`.
const MASK: usize = offset_of!(SharedInfo, evtchn_mask);
/// Offset of `vcpu_info[0].time`.
pub const TIME: usize = VCPU0 + offset_of!(VcpuInfo, time);

/// Words of the 2-level bitmaps (4096 ports / 64).
pub const WORDS: usize = 64;

/// `XENMEM_add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, gpfn of
/// SHARED_INFO)`; returns the hypercall's result (0 on success).
pub fn map() -> i64 {
    let arg = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: (SHARED_INFO.addr() >> 12) as u64,
    };
    let (rc, _) = hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::memory_op(XENMEM_ADD_TO_PHYSMAP, a)
    });
    if rc == 0 {
        MAPPED.store(true, Ordering::Relaxed);
    }
    rc
}

/// Whether [`map`] succeeded.
pub fn is_mapped() -> bool {
    MAPPED.load(Ordering::Relaxed)
}

/// The u64 at `offset` of the page, as an atomic.
fn u64_at(offset: usize) -> &'static AtomicU64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= 4096);
    // SAFETY: inside SHARED_INFO (a static, page-aligned, so the 8-aligned offset
    // is 8-aligned in memory); the page is only ever accessed atomically or
    // volatilely (see the module docs), never through a plain reference.
    unsafe { AtomicU64::from_ptr((SHARED_INFO.addr() + offset) as *mut u64) }
}

/// The u32 at `offset` of the page, as an atomic.
fn u32_at(offset: usize) -> &'static AtomicU32 {
    assert!(offset.is_multiple_of(4) && offset + 4 <= 4096);
    // SAFETY: as in `u64_at`.
    unsafe { AtomicU32::from_ptr((SHARED_INFO.addr() + offset) as *mut u32) }
}

/// The byte at `offset` of the page, as an atomic.
fn u8_at(offset: usize) -> &'static AtomicU8 {
    assert!(offset < 4096);
    // SAFETY: as in `u64_at`.
    unsafe { AtomicU8::from_ptr((SHARED_INFO.addr() + offset) as *mut u8) }
}

/// vCPUs whose `vcpu_info` is in the page.
pub const VCPU_SLOTS: usize = XEN_LEGACY_MAX_VCPUS;

/// Offset of `vcpu_info[vcpu]` (panics for a vCPU beyond the page's slots).
fn vcpu_info(vcpu: usize) -> usize {
    assert!(vcpu < VCPU_SLOTS);
    VCPU0 + vcpu * size_of::<VcpuInfo>()
}

/// `vcpu_info[0].evtchn_upcall_pending`.
pub fn upcall_pending() -> &'static AtomicU8 {
    upcall_pending_of(0)
}

/// `vcpu_info[0].evtchn_upcall_mask`.
pub fn upcall_mask() -> &'static AtomicU8 {
    u8_at(VCPU0 + offset_of!(VcpuInfo, evtchn_upcall_mask))
}

/// `vcpu_info[0].evtchn_pending_sel`.
pub fn pending_sel() -> &'static AtomicU64 {
    pending_sel_of(0)
}

/// `vcpu_info[vcpu].evtchn_upcall_pending`.
pub fn upcall_pending_of(vcpu: usize) -> &'static AtomicU8 {
    u8_at(vcpu_info(vcpu) + offset_of!(VcpuInfo, evtchn_upcall_pending))
}

/// `vcpu_info[vcpu].evtchn_pending_sel`.
pub fn pending_sel_of(vcpu: usize) -> &'static AtomicU64 {
    u64_at(vcpu_info(vcpu) + offset_of!(VcpuInfo, evtchn_pending_sel))
}

/// `evtchn_pending[word]`.
pub fn pending(word: usize) -> &'static AtomicU64 {
    assert!(word < WORDS);
    u64_at(PENDING + 8 * word)
}

/// `evtchn_mask[word]`.
pub fn mask(word: usize) -> &'static AtomicU64 {
    assert!(word < WORDS);
    u64_at(MASK + 8 * word)
}

/// Whether `port`'s pending bit is set (false for ports beyond the bitmap).
pub fn port_pending(port: u32) -> bool {
    let (w, b) = ((port / 64) as usize, port % 64);
    w < WORDS && pending(w).load(Ordering::Acquire) & (1 << b) != 0
}

/// Whether `port`'s mask bit is set (false for ports beyond the bitmap).
pub fn port_masked(port: u32) -> bool {
    let (w, b) = ((port / 64) as usize, port % 64);
    w < WORDS && mask(w).load(Ordering::Acquire) & (1 << b) != 0
}

/// The u32 at byte `offset` of `vcpu_info[0].time` (version, mul).
pub fn time_u32(offset: usize) -> u32 {
    u32_at(TIME + offset).load(Ordering::Acquire)
}

/// The u64 at byte `offset` of `vcpu_info[0].time` (tsc_timestamp, system_time).
pub fn time_u64(offset: usize) -> u64 {
    u64_at(TIME + offset).load(Ordering::Acquire)
}

/// The byte at `offset` of `vcpu_info[0].time` (tsc_shift, flags).
pub fn time_u8(offset: usize) -> u8 {
    u8_at(TIME + offset).load(Ordering::Acquire)
}

/// Byte offsets inside `struct vcpu_time_info`.
pub mod time_field {
    use core::mem::offset_of;

    use keel_hypercall::abi::xen::VcpuTimeInfo;

    /// `version` (the seqlock).
    pub const VERSION: usize = offset_of!(VcpuTimeInfo, version);
    /// `tsc_timestamp`.
    pub const TSC_TIMESTAMP: usize = offset_of!(VcpuTimeInfo, tsc_timestamp);
    /// `system_time`.
    pub const SYSTEM_TIME: usize = offset_of!(VcpuTimeInfo, system_time);
    /// `tsc_to_system_mul`.
    pub const MUL: usize = offset_of!(VcpuTimeInfo, tsc_to_system_mul);
    /// `tsc_shift`.
    pub const SHIFT: usize = offset_of!(VcpuTimeInfo, tsc_shift);
    /// `flags`.
    pub const FLAGS: usize = offset_of!(VcpuTimeInfo, flags);
}

// The time fields the reader uses are where it expects them (and 8-aligned
// where it reads 8 bytes).
const _: () = {
    assert!(TIME.is_multiple_of(8));
    assert!(
        time_field::TSC_TIMESTAMP.is_multiple_of(8) && time_field::SYSTEM_TIME.is_multiple_of(8)
    );
    assert!(core::mem::size_of::<VcpuTimeInfo>() == 32);
    // The per-vCPU slots' selector words stay 8-aligned.
    assert!(size_of::<VcpuInfo>() == 64);
};
