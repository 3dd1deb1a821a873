//! Grant tables from the guest's side: granting pages, mapping and copying
//! other domains' grants (pvh64).
//!
//! # What
//!
//! Version 1 grant tables (`xen/include/public/grant_table.h`). To *grant*, a
//! PVH guest first places frame 0 of its own grant table in its physmap
//! (`XENMEM_add_to_physmap(XENMAPSPACE_grant_table, idx 0, gpfn)`, [`map_table`]),
//! here over the page [`TABLE`], then fills in entries: `frame` and `domid` first,
//! then, after a write barrier, `flags = GTF_permit_access [| GTF_readonly]`
//! ([`grant`]). The hypervisor sets `GTF_reading`/`GTF_writing` while the grantee
//! has the page mapped or is copying; the guest ends a grant by exchanging `flags`
//! with 0 only while neither is set ([`end_grant`], what Linux's
//! `gnttab_end_foreign_access_ref` does), so it never pulls a page out from under
//! a mapping.
//!
//! To *use* another domain's grant: `GNTTABOP_map_grant_ref` with
//! `GNTMAP_host_map` and `host_addr` a guest-physical address (PVH: the hypervisor
//! puts the granted frame in the p2m there; [`map`]), `GNTTABOP_unmap_grant_ref`
//! with the returned handle ([`unmap`]), or `GNTTABOP_copy` between a grant and a
//! local gfn ([`copy`]). The gfns mapped over lie just above the guest's RAM
//! ([`free_gfns`]), which the hypervisor leaves unpopulated, so a read there
//! before a map or after an unmap reaches nothing (all ones).
//!
//! # Invariants and hazards
//!
//! - [`TABLE`] is shared with the hypervisor once mapped: entries are accessed
//!   only atomically.
//! - Results come back in two places: the hypercall's return (an errno, e.g.
//!   `-EFAULT` for an unreadable argument array) and each op's `status`
//!   (`GNTST_*`); [`Gnt`] keeps both.

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering, fence};

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::grant_table::{
    GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTTABOP_COPY, GNTTABOP_GET_VERSION, GNTTABOP_MAP_GRANT_REF,
    GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_SETUP_TABLE, GNTTABOP_UNMAP_GRANT_REF,
    GRANT_ENTRIES_PER_FRAME_V1, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
    GnttabCopy, GnttabCopyPtr, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize,
    GnttabSetVersion, GnttabSetupTable, GnttabUnmapGrantRef, GrantEntryV1, gntst_name,
};
use keel_hypercall::abi::memory::{
    XENMAPSPACE_GRANT_TABLE, XENMEM_ADD_TO_PHYSMAP, XenAddToPhysmap,
};
use keel_hypercall::abi::start_info::XEN_HVM_MEMMAP_TYPE_RAM;

use crate::hypercall;
use crate::paging::Page;
use crate::start_info::BootInfo;

/// The page frame 0 of this guest's grant table is mapped over.
pub static TABLE: Page = Page::new();

/// `XENMEM_add_to_physmap(DOMID_SELF, XENMAPSPACE_grant_table, 0, gpfn of TABLE)`.
pub fn map_table() -> i64 {
    let arg = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: 0,
        gpfn: (TABLE.addr() >> 12) as u64,
    };
    hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::memory_op(XENMEM_ADD_TO_PHYSMAP, a)
    })
    .0
}

/// Entries this guest can fill in (frame 0 only).
pub const ENTRIES: u32 = GRANT_ENTRIES_PER_FRAME_V1;

/// Byte offset of entry `gref` in [`TABLE`].
fn entry_offset(gref: u32) -> usize {
    assert!(gref < ENTRIES);
    gref as usize * GrantEntryV1::SIZE
}

/// The entry's `flags`, as an atomic.
fn flags_of(gref: u32) -> &'static AtomicU16 {
    // SAFETY: inside TABLE (page-aligned static; entries are 8-aligned); the
    // table is accessed only atomically (module docs).
    unsafe { AtomicU16::from_ptr((TABLE.addr() + entry_offset(gref)) as *mut u16) }
}

/// The entry's first 32 bits (`flags | domid << 16`), the unit the hypervisor
/// compares and exchanges.
fn header_of(gref: u32) -> &'static AtomicU32 {
    // SAFETY: as in `flags_of`.
    unsafe { AtomicU32::from_ptr((TABLE.addr() + entry_offset(gref)) as *mut u32) }
}

/// The entry's `frame`.
fn frame_of(gref: u32) -> &'static AtomicU32 {
    // SAFETY: as in `flags_of` (offset 4 of the 8-byte entry).
    unsafe { AtomicU32::from_ptr((TABLE.addr() + entry_offset(gref) + 4) as *mut u32) }
}

/// Grants `gfn` to `domid` at entry `gref` (read-only if asked).
pub fn grant(gref: u32, domid: u16, gfn: u64, readonly: bool) {
    frame_of(gref).store(gfn as u32, Ordering::Relaxed);
    // domid is the high half of the header; flags stay 0 until the barrier.
    header_of(gref).store(u32::from(domid) << 16, Ordering::Relaxed);
    fence(Ordering::Release);
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    flags_of(gref).store(flags, Ordering::Release);
}

/// The entry's current `flags`.
pub fn flags(gref: u32) -> u16 {
    flags_of(gref).load(Ordering::Acquire)
}

/// Ends the grant at `gref` unless it is in use: `Ok` once `flags` is 0, `Err`
/// with the flags that show it mapped or being copied (`GTF_reading`/`writing`).
pub fn end_grant(gref: u32) -> Result<(), u16> {
    let flags = flags_of(gref);
    let mut now = flags.load(Ordering::Acquire);
    loop {
        if now & (GTF_READING | GTF_WRITING) != 0 {
            return Err(now);
        }
        match flags.compare_exchange(now, 0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(changed) => now = changed,
        }
    }
}

/// A grant-table op's two results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gnt {
    /// The hypercall's return (0 or `-errno`).
    pub rc: i64,
    /// The op's `status` (`GNTST_*`).
    pub status: i16,
}

impl Gnt {
    /// Both say success.
    pub fn ok(&self) -> bool {
        self.rc == 0 && self.status == 0
    }
}

impl core::fmt::Display for Gnt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "rc {}, status {} ({})",
            crate::checks::Rc(self.rc),
            self.status,
            gntst_name(self.status).unwrap_or("?")
        )
    }
}

/// `HYPERVISOR_grant_table_op(cmd, &arg, 1)` on a stack copy of `bytes`.
fn op<const N: usize>(cmd: u32, bytes: [u8; N]) -> (i64, [u8; N]) {
    hypercall::with_arg(bytes, |a| hypercall::grant_table_op(cmd, a, 1))
}

/// `GNTTABOP_map_grant_ref` of `dom`'s `gref` at guest-physical `gpa`: the
/// results and the handle.
pub fn map(dom: u16, gref: u32, gpa: u64, readonly: bool) -> (Gnt, u32) {
    let arg = GnttabMapGrantRef {
        host_addr: gpa,
        flags: GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 },
        ref_: gref,
        dom,
        status: 1,
        handle: u32::MAX,
        dev_bus_addr: 0,
    };
    let (rc, out) = op(GNTTABOP_MAP_GRANT_REF, arg.to_bytes());
    let out = GnttabMapGrantRef::from_bytes(&out);
    (
        Gnt {
            rc,
            status: out.status,
        },
        out.handle,
    )
}

/// `GNTTABOP_unmap_grant_ref` of `handle`, mapped at `gpa`.
pub fn unmap(gpa: u64, handle: u32) -> Gnt {
    let arg = GnttabUnmapGrantRef {
        host_addr: gpa,
        dev_bus_addr: 0,
        handle,
        status: 1,
        pad: 0,
    };
    let (rc, out) = op(GNTTABOP_UNMAP_GRANT_REF, arg.to_bytes());
    Gnt {
        rc,
        status: GnttabUnmapGrantRef::from_bytes(&out).status,
    }
}

/// One end of a `GNTTABOP_copy`.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// `domid`'s grant `gref`, at `offset`.
    Gref { domid: u16, gref: u32, offset: u16 },
    /// This guest's own `gfn`, at `offset`.
    Local { gfn: u64, offset: u16 },
}

impl End {
    fn ptr(self) -> GnttabCopyPtr {
        match self {
            End::Gref {
                domid,
                gref,
                offset,
            } => GnttabCopyPtr::by_gref(gref, domid, offset),
            End::Local { gfn, offset } => GnttabCopyPtr::by_gmfn(gfn, DOMID_SELF, offset),
        }
    }

    fn is_gref(self) -> bool {
        matches!(self, End::Gref { .. })
    }
}

/// `GNTTABOP_copy` of `len` bytes from `source` to `dest`.
pub fn copy(source: End, dest: End, len: u16) -> Gnt {
    use keel_hypercall::abi::grant_table::{GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF};
    let flags = if source.is_gref() {
        GNTCOPY_SOURCE_GREF
    } else {
        0
    } | if dest.is_gref() { GNTCOPY_DEST_GREF } else { 0 };
    let arg = GnttabCopy {
        source: source.ptr(),
        dest: dest.ptr(),
        len,
        flags,
        status: 1,
        pad: 0,
    };
    let (rc, out) = op(GNTTABOP_COPY, arg.to_bytes());
    Gnt {
        rc,
        status: GnttabCopy::from_bytes(&out).status,
    }
}

/// `GNTTABOP_query_size(DOMID_SELF)`: results, `nr_frames`, `max_nr_frames`.
pub fn query_size() -> (Gnt, u32, u32) {
    let arg = GnttabQuerySize {
        dom: DOMID_SELF,
        pad0: 0,
        nr_frames: u32::MAX,
        max_nr_frames: u32::MAX,
        status: 1,
        pad1: 0,
    };
    let (rc, out) = op(GNTTABOP_QUERY_SIZE, arg.to_bytes());
    let out = GnttabQuerySize::from_bytes(&out);
    (
        Gnt {
            rc,
            status: out.status,
        },
        out.nr_frames,
        out.max_nr_frames,
    )
}

/// `GNTTABOP_setup_table(DOMID_SELF, nr_frames)`: results and the first frame
/// reported.
pub fn setup_table(nr_frames: u32) -> (Gnt, u64) {
    let mut frames = [u64::MAX; 4];
    let arg = GnttabSetupTable {
        dom: DOMID_SELF,
        pad0: 0,
        nr_frames,
        status: 1,
        pad1: [0; 3],
        frame_list: frames.as_mut_ptr() as usize as u64,
    };
    let (rc, out) = op(GNTTABOP_SETUP_TABLE, arg.to_bytes());
    // SAFETY: a live local array the hypervisor may have written.
    let first = unsafe { core::ptr::read_volatile(frames.as_ptr()) };
    (
        Gnt {
            rc,
            status: GnttabSetupTable::from_bytes(&out).status,
        },
        first,
    )
}

/// `GNTTABOP_set_version(version)`: the errno and the version in effect after.
pub fn set_version(version: u32) -> (i64, u32) {
    let (rc, out) = op(
        GNTTABOP_SET_VERSION,
        GnttabSetVersion { version }.to_bytes(),
    );
    (rc, GnttabSetVersion::from_bytes(&out).version)
}

/// `GNTTABOP_get_version(DOMID_SELF)`: the errno and the version.
pub fn get_version() -> (i64, u32) {
    let arg = GnttabGetVersion {
        dom: DOMID_SELF,
        pad: 0,
        version: u32::MAX,
    };
    let (rc, out) = op(GNTTABOP_GET_VERSION, arg.to_bytes());
    (rc, GnttabGetVersion::from_bytes(&out).version)
}

/// The first of `n` consecutive page-aligned guest-physical addresses at or above
/// the end of the highest RAM entry of the memory map that no memory-map entry
/// covers, below 4 GiB (what the guest maps identity); `None` if there is no
/// such range.
pub fn free_gfns(boot: &BootInfo, n: u64) -> Option<u64> {
    const LIMIT: u64 = 1 << 32;
    let map = boot.memmap();
    let ram_end = map
        .iter()
        .filter(|e| e.type_ == XEN_HVM_MEMMAP_TYPE_RAM)
        .map(|e| e.addr.saturating_add(e.size))
        .max()?;
    let mut start = ram_end.checked_add(4095)? & !4095;
    // Each step moves past one overlapping entry, so this ends.
    for _ in 0..=map.len() {
        let end = start.checked_add(n.checked_mul(4096)?)?;
        if end > LIMIT {
            return None;
        }
        match map
            .iter()
            .find(|e| e.addr < end && e.addr.saturating_add(e.size) > start)
        {
            None => return Some(start),
            Some(e) => start = e.addr.saturating_add(e.size).checked_add(4095)? & !4095,
        }
    }
    None
}
