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

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering, fence};

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::grant_table::{
    GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTTABOP_COPY, GNTTABOP_GET_VERSION, GNTTABOP_MAP_GRANT_REF,
    GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_SETUP_TABLE, GNTTABOP_UNMAP_GRANT_REF,
    GRANT_ENTRIES_PER_FRAME_V1, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_TRANSITIVE, GTF_WRITING,
    GnttabCopy, GnttabCopyPtr, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize,
    GnttabSetVersion, GnttabSetupTable, GnttabUnmapGrantRef, GrantEntryV1, gntst_name,
};
use keel_hypercall::abi::memory::{
    XENMAPIDX_GRANT_TABLE_STATUS, XENMAPSPACE_GRANT_TABLE, XENMEM_ADD_TO_PHYSMAP, XenAddToPhysmap,
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

/// Entries this guest can fill in (frame 0 only) with version 1 tables.
pub const ENTRIES: u32 = GRANT_ENTRIES_PER_FRAME_V1;
/// Entries of frame 0 with version 2 tables (16 bytes each).
pub const ENTRIES_V2: u32 = 4096 / 16;

/// Whether this guest switched its table to version 2 ([`use_v2`]).
static V2: AtomicBool = AtomicBool::new(false);

/// The page status frame 0 is mapped over once the table is version 2.
pub static STATUS: Page = Page::new();

/// Whether the table is version 2 (as [`use_v2`] left it).
pub fn is_v2() -> bool {
    V2.load(Ordering::Acquire)
}

/// Byte offset of entry `gref` in [`TABLE`].
fn entry_offset(gref: u32) -> usize {
    if is_v2() {
        assert!(gref < ENTRIES_V2);
        gref as usize * 16
    } else {
        assert!(gref < ENTRIES);
        gref as usize * GrantEntryV1::SIZE
    }
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

/// The 32-bit word at byte `at` of the entry (v1: 4 is `frame`; v2: 4 is the
/// sub-page offset and length or the transitive domain, 8 and 12 the frame
/// or the transitive ref).
fn word_of(gref: u32, at: usize) -> &'static AtomicU32 {
    assert!(at.is_multiple_of(4) && at < 16);
    // SAFETY: as in `flags_of`; `at` stays inside the entry.
    unsafe { AtomicU32::from_ptr((TABLE.addr() + entry_offset(gref) + at) as *mut u32) }
}

/// Entry `gref`'s status word in a version 2 table (`grant_status_t`).
fn status_of(gref: u32) -> &'static AtomicU16 {
    assert!(gref < 2048);
    // SAFETY: inside STATUS (2 bytes per entry, 2048 per frame); shared with the
    // hypervisor, accessed only atomically.
    unsafe { AtomicU16::from_ptr((STATUS.addr() + 2 * gref as usize) as *mut u16) }
}

/// `GNTTABOP_set_version(2)`, then status frame 0 placed over [`STATUS`]
/// (`XENMEM_add_to_physmap(XENMAPSPACE_grant_table, idx 0 |
/// XENMAPIDX_grant_table_status)`). Entries are written in the version 2
/// layout from here. Returns the first failure's errno, or 0.
pub fn use_v2() -> i64 {
    let (rc, version) = set_version(2);
    if rc != 0 {
        return rc;
    }
    if version != 2 {
        return -1;
    }
    let arg = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: u64::from(XENMAPIDX_GRANT_TABLE_STATUS),
        gpfn: (STATUS.addr() >> 12) as u64,
    };
    let rc = hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::memory_op(XENMEM_ADD_TO_PHYSMAP, a)
    })
    .0;
    if rc == 0 {
        V2.store(true, Ordering::Release);
    }
    rc
}

/// After a successful `set_version(1)`: entries are written in the version 1
/// layout again, and the status frame (gone from the physmap) is not read.
pub fn forget_v2() {
    V2.store(false, Ordering::Release);
}

/// Publishes an entry: the body words first, then `domid` with flags 0, then
/// after a barrier the flags.
fn publish(gref: u32, domid: u16, body: &[(usize, u32)], flags: u16) {
    for &(at, v) in body {
        word_of(gref, at).store(v, Ordering::Relaxed);
    }
    header_of(gref).store(u32::from(domid) << 16, Ordering::Relaxed);
    fence(Ordering::Release);
    flags_of(gref).store(flags, Ordering::Release);
}

/// Grants `gfn` to `domid` at entry `gref` (read-only if asked), in the
/// table's version's layout.
pub fn grant(gref: u32, domid: u16, gfn: u64, readonly: bool) {
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    if is_v2() {
        publish(
            gref,
            domid,
            &[(4, 0), (8, gfn as u32), (12, (gfn >> 32) as u32)],
            flags,
        );
    } else {
        publish(gref, domid, &[(4, gfn as u32)], flags);
    }
}

/// Version 2 only: grants bytes `off..off + len` of `gfn` to `domid`
/// (`GTF_sub_page`; copy only).
pub fn grant_sub_page(gref: u32, domid: u16, gfn: u64, off: u16, len: u16, readonly: bool) {
    let flags = GTF_PERMIT_ACCESS | GTF_SUB_PAGE | if readonly { GTF_READONLY } else { 0 };
    publish(
        gref,
        domid,
        &[
            (4, u32::from(off) | u32::from(len) << 16),
            (8, gfn as u32),
            (12, (gfn >> 32) as u32),
        ],
        flags,
    );
}

/// Version 2 only: lets `domid` use `trans_dom`'s grant `trans_gref` through
/// this domain's entry `gref` (`GTF_transitive`; copy only).
pub fn grant_transitive(gref: u32, domid: u16, trans_dom: u16, trans_gref: u32, readonly: bool) {
    let flags = GTF_TRANSITIVE | if readonly { GTF_READONLY } else { 0 };
    publish(
        gref,
        domid,
        &[(4, u32::from(trans_dom)), (8, trans_gref), (12, 0)],
        flags,
    );
}

/// The entry's current `flags`; with a version 2 table, `GTF_reading` and
/// `GTF_writing` come from the entry's status word, where Xen keeps them.
pub fn flags(gref: u32) -> u16 {
    let f = flags_of(gref).load(Ordering::Acquire);
    if is_v2() {
        f | status_of(gref).load(Ordering::Acquire)
    } else {
        f
    }
}

/// Ends the grant at `gref` unless it is in use: `Ok` once `flags` is 0, `Err`
/// with the flags that show it mapped or being copied (`GTF_reading`/`writing`).
/// With a version 2 table, as Linux's `gnttab_end_foreign_access_ref_v2`: the
/// flags are cleared, then the status word read; busy then is `Err` too (the
/// entry stays ended; the grantee's mapping keeps the frame).
pub fn end_grant(gref: u32) -> Result<(), u16> {
    if is_v2() {
        let busy = status_of(gref).load(Ordering::Acquire) & (GTF_READING | GTF_WRITING);
        if busy != 0 {
            return Err(busy | flags_of(gref).load(Ordering::Acquire));
        }
        flags_of(gref).store(0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let busy = status_of(gref).load(Ordering::Acquire) & (GTF_READING | GTF_WRITING);
        return if busy == 0 { Ok(()) } else { Err(busy) };
    }
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
