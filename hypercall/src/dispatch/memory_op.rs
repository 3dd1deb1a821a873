//! `HYPERVISOR_memory_op` (Xen `hvm_memory_op` -> `do_memory_op` /
//! `compat_memory_op`, `xen/common/memory.c`; `arch_memory_op`,
//! `xen/arch/x86/mm.c`).
//!
//! `memory_op(unsigned long cmd, void *arg)` (`unsigned int` for a 32-bit
//! caller). The operation is `cmd & MEMOP_CMD_MASK`; the bits above are a
//! continuation's start extent.
//!
//! - `XENMEM_add_to_physmap`: a start extent that does not fit the 16-bit
//!   `size` is `-EDOM`; the argument is copied in (`-EFAULT`);
//!   `XENMAPSPACE_gmfn_foreign` is `-ENOSYS` (batch only); a domid other
//!   than `DOMID_SELF` or the caller's own is `-ESRCH` (keel has no
//!   cross-domain physmap changes yet and answers as if the domain did not
//!   exist); a `gpfn` of `INVALID_GFN` is `-EINVAL`. Then by space:
//!   `shared_info` with index 0 calls [`Domain::map_shared_info`], with any
//!   other index is `-EINVAL`; `grant_table`, `gmfn` and `gmfn_range` are
//!   `-ENOSYS` (not yet); any other space is `-EINVAL`, as on x86 Xen.
//! - `XENMEM_memory_map`: copies in the header, writes
//!   `min(nr_entries, map length)` entries to `buffer`, then writes the
//!   header back with that count. `-ENOSYS` if the domain has no map (as
//!   Xen). On `-EFAULT` from the entries the header is left unchanged.
//! - `XENMEM_machphys_mapping` is `-ENOSYS` for HVM guests in Xen; so is
//!   everything else here, for now.

use super::{Ctx, Domain, GuestWidth, Outcome};
use crate::abi::Errno;
use crate::abi::memory::{
    E820Entry, MEMOP_CMD_MASK, MEMOP_EXTENT_SHIFT, XENMAPSPACE_GMFN, XENMAPSPACE_GMFN_FOREIGN,
    XENMAPSPACE_GMFN_RANGE, XENMAPSPACE_GRANT_TABLE, XENMAPSPACE_SHARED_INFO,
    XENMEM_ADD_TO_PHYSMAP, XENMEM_MEMORY_MAP, XenAddToPhysmap, XenAddToPhysmapCompat, XenMemoryMap,
    XenMemoryMapCompat,
};

/// `INVALID_GFN` for a native caller (`~0UL`).
const INVALID_GFN: u64 = u64::MAX;

pub(super) fn do_memory_op<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, cmd: u64, arg: u64) -> Outcome {
    let op = (cmd & MEMOP_CMD_MASK) as u32;
    let start_extent = cmd >> MEMOP_EXTENT_SHIFT;
    Outcome::from_result(match op {
        XENMEM_ADD_TO_PHYSMAP => add_to_physmap(cx, start_extent, arg),
        XENMEM_MEMORY_MAP => memory_map(cx, arg),
        _ => Err(Errno::ENOSYS),
    })
}

fn add_to_physmap<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    start_extent: u64,
    arg: u64,
) -> Result<i64, Errno> {
    // A continuation's progress must fit xen_add_to_physmap.size.
    if start_extent > u64::from(u16::MAX) {
        return Err(Errno::EDOM);
    }
    let xatp: XenAddToPhysmap = match cx.width {
        GuestWidth::Bits64 => XenAddToPhysmap::from_bytes(&cx.read(arg)?),
        GuestWidth::Bits32 => XenAddToPhysmapCompat::from_bytes(&cx.read(arg)?).into(),
    };
    if xatp.space == XENMAPSPACE_GMFN_FOREIGN {
        return Err(Errno::ENOSYS);
    }
    if !cx.is_self(xatp.domid) {
        return Err(Errno::ESRCH);
    }
    if xatp.gpfn == INVALID_GFN {
        return Err(Errno::EINVAL);
    }
    match xatp.space {
        XENMAPSPACE_SHARED_INFO if xatp.idx == 0 => cx.d.map_shared_info(xatp.gpfn).map(|()| 0),
        XENMAPSPACE_SHARED_INFO => Err(Errno::EINVAL),
        XENMAPSPACE_GRANT_TABLE | XENMAPSPACE_GMFN | XENMAPSPACE_GMFN_RANGE => Err(Errno::ENOSYS),
        _ => Err(Errno::EINVAL),
    }
}

/// `xen_memory_map` in the caller's layout, kept whole so that only
/// `nr_entries` changes when it is written back (as Xen writes back its copy).
enum MapHeader {
    Native(XenMemoryMap),
    Compat(XenMemoryMapCompat),
}

fn memory_map<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, arg: u64) -> Result<i64, Errno> {
    let mut header = match cx.width {
        GuestWidth::Bits64 => MapHeader::Native(XenMemoryMap::from_bytes(&cx.read(arg)?)),
        GuestWidth::Bits32 => MapHeader::Compat(XenMemoryMapCompat::from_bytes(&cx.read(arg)?)),
    };
    let (nr_entries, buffer) = match header {
        MapHeader::Native(m) => (m.nr_entries, m.buffer),
        MapHeader::Compat(m) => (m.nr_entries, u64::from(m.buffer)),
    };
    if cx.d.memory_map_entry(0).is_none() {
        return Err(Errno::ENOSYS);
    }
    // Bounded by the domain's map, whatever nr_entries the guest claims.
    let mut stored: u32 = 0;
    while stored < nr_entries {
        let Some(entry) = cx.d.memory_map_entry(stored) else {
            break;
        };
        let at = cx.offset(buffer, u64::from(stored) * E820Entry::SIZE as u64)?;
        cx.write(at, &entry.to_bytes())?;
        stored += 1;
    }
    match &mut header {
        MapHeader::Native(m) => {
            m.nr_entries = stored;
            cx.write(arg, &m.to_bytes())?;
        }
        MapHeader::Compat(m) => {
            m.nr_entries = stored;
            cx.write(arg, &m.to_bytes())?;
        }
    }
    Ok(0)
}
