//! `HYPERVISOR_memory_op` (Xen `hvm_memory_op` -> `do_memory_op` /
//! `compat_memory_op`, `xen/common/memory.c`; `arch_memory_op`,
//! `xen/arch/x86/mm.c`).
//!
//! `memory_op(unsigned long cmd, void *arg)` (`unsigned int` for a 32-bit
//! caller). The operation is `cmd & MEMOP_CMD_MASK`; the bits above are a
//! continuation's start extent.
//!
//! - `XENMEM_populate_physmap`, `XENMEM_decrease_reservation`: return the
//!   number of extents done, never an errno. Every failure before the
//!   first extent returns the start extent, as Xen: an unreadable
//!   `xen_memory_reservation` (32 bytes native, 20 compat); more extents
//!   than a continuation can encode (`nr_extents > 2^26 - 1`); a start
//!   extent at or past `nr_extents`; a domain other than the caller unless
//!   privileged, or none ([`Ctx::target`]); `mem_flags` Xen refuses
//!   (address bits 1..=12, or for an unprivileged caller an exact-node
//!   request; a node above 63 for a privileged one); populate-on-demand
//!   (keel has none; Xen refuses it on oneself too); an extent list
//!   (8-byte gfns native, 4-byte compat) leaving the address space; an
//!   `extent_order` above Xen's x86 limit for the *caller* (9, 2 MiB, for
//!   an unprivileged domain; 18, 1 GiB, for a privileged one). Then extent
//!   by extent: copy its gfn in, ask [`Domain::populate_physmap`] /
//!   [`Domain::decrease_reservation`]; a fault or an error stops there.
//!   After [`MEMOP_PAGE_BUDGET`] pages (and at least one extent) the call
//!   is preempted as Xen does it: `cmd` becomes `op | done <<
//!   MEMOP_EXTENT_SHIFT` and the guest re-issues it
//!   ([`Action::Preempted`]). keel runs only translated (HVM/PVH) guests,
//!   so, as Xen for them, nothing is written back to the extent list.
//!   `XENMEMF_address_bits` and node requests are otherwise ignored.
//! - `XENMEM_maximum_ram_page`: `-EINVAL` with a start extent; else
//!   [`Domain::maximum_ram_page`].
//! - `XENMEM_current_reservation`, `XENMEM_maximum_reservation`: `-EINVAL`
//!   with a start extent; copy in a `domid_t` (`-EFAULT`); [`Ctx::target`]
//!   (`-ESRCH`, `-EPERM`); the domain's page count.
//! - `XENMEM_add_to_physmap`: a start extent that does not fit the 16-bit
//!   `size` is `-EDOM`; the argument is copied in (`-EFAULT`);
//!   `XENMAPSPACE_gmfn_foreign` is `-ENOSYS` (batch only); a domid other
//!   than `DOMID_SELF` or the caller's own is `-ESRCH` (keel has no
//!   cross-domain physmap changes yet and answers as if the domain did not
//!   exist); a `gpfn` of `INVALID_GFN` is `-EINVAL`. Then by space:
//!   `shared_info` with index 0 calls [`Domain::map_shared_info`], with any
//!   other index is `-EINVAL`; `grant_table` calls
//!   [`Domain::map_grant_frame`], or for a status frame
//!   (`XENMAPIDX_grant_table_status`, bit 31 of the index) taken off the
//!   index [`Domain::map_grant_status_frame`]; an index above 32 bits (Xen
//!   truncates it) is `-EINVAL`; `gmfn` and `gmfn_range` are `-ENOSYS` (not
//!   yet); any other space is `-EINVAL`, as on x86 Xen.
//! - `XENMEM_memory_map`: copies in the header, writes
//!   `min(nr_entries, map length)` entries to `buffer`, then writes the
//!   header back with that count. `-ENOSYS` if the domain has no map (as
//!   Xen). On `-EFAULT` from the entries the header is left unchanged.
//! - `XENMEM_machphys_mapping` is `-ENOSYS` for HVM guests in Xen; so is
//!   everything else here (`increase_reservation`, which gives a translated
//!   guest nothing it can use, `exchange`, `maximum_gpfn`, ...), for now.

use super::{Action, Ctx, Domain, GuestWidth, Outcome};
use crate::abi::Errno;
use crate::abi::memory::{
    E820Entry, MEMOP_CMD_MASK, MEMOP_EXTENT_SHIFT, XENMAPIDX_GRANT_TABLE_STATUS, XENMAPSPACE_GMFN,
    XENMAPSPACE_GMFN_FOREIGN, XENMAPSPACE_GMFN_RANGE, XENMAPSPACE_GRANT_TABLE,
    XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP, XENMEM_CURRENT_RESERVATION,
    XENMEM_DECREASE_RESERVATION, XENMEM_MAXIMUM_RAM_PAGE, XENMEM_MAXIMUM_RESERVATION,
    XENMEM_MEMORY_MAP, XENMEM_POPULATE_PHYSMAP, XENMEMF_EXACT_NODE_REQUEST, XENMEMF_NO_NODE,
    XENMEMF_POPULATE_ON_DEMAND, XENMEMF_VNODE, XenAddToPhysmap, XenAddToPhysmapCompat,
    XenMemoryDomain, XenMemoryMap, XenMemoryMapCompat, XenMemoryReservation,
    XenMemoryReservationCompat, xenmemf_get_address_bits, xenmemf_get_node,
};

/// `INVALID_GFN` for a native caller (`~0UL`).
const INVALID_GFN: u64 = u64::MAX;

/// Pages `XENMEM_populate_physmap` / `decrease_reservation` handle per
/// entry (16 MiB) before preempting; at least one extent is always done.
pub const MEMOP_PAGE_BUDGET: u64 = 4096;

/// Xen's x86 `CONFIG_DOMU_MAX_ORDER` (`PAGETABLE_ORDER`): the largest
/// extent an unprivileged domain may ask for.
const DOMU_MAX_ORDER: u32 = 9;
/// Xen's x86 limit for a control domain (`CONFIG_CTLDOM_MAX_ORDER` =
/// `CONFIG_PAGEALLOC_MAX_ORDER`, also `MAX_ORDER`); keel's privileged
/// domain is control and hardware domain at once.
const PRIV_MAX_ORDER: u32 = 18;
/// Xen's x86 `MAX_NUMNODES` (`NODES_SHIFT` 6).
const MAX_NUMNODES: u32 = 64;

pub(super) fn do_memory_op<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, args: &[u64; 6]) -> Outcome {
    let (cmd, arg) = (args[0], args[1]);
    let op = (cmd & MEMOP_CMD_MASK) as u32;
    let start_extent = cmd >> MEMOP_EXTENT_SHIFT;
    Outcome::from_result(match op {
        XENMEM_POPULATE_PHYSMAP | XENMEM_DECREASE_RESERVATION => {
            return reservation(cx, op, start_extent, args);
        }
        XENMEM_MAXIMUM_RAM_PAGE if start_extent != 0 => Err(Errno::EINVAL),
        // `long` in Xen; a 32-bit caller sees the low half.
        XENMEM_MAXIMUM_RAM_PAGE => Ok(cx.d.maximum_ram_page() as i64),
        XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION => {
            reservation_size(cx, op, start_extent, arg)
        }
        XENMEM_ADD_TO_PHYSMAP => add_to_physmap(cx, start_extent, arg),
        XENMEM_MEMORY_MAP => memory_map(cx, arg),
        _ => Err(Errno::ENOSYS),
    })
}

fn reservation_size<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    op: u32,
    start_extent: u64,
    arg: u64,
) -> Result<i64, Errno> {
    if start_extent != 0 {
        return Err(Errno::EINVAL);
    }
    let a = XenMemoryDomain::from_bytes(&cx.read(arg)?);
    let dom = cx.target(a.domid)?;
    let pages = if op == XENMEM_CURRENT_RESERVATION {
        cx.d.current_reservation(dom)
    } else {
        cx.d.maximum_reservation(dom)
    };
    // `long` in Xen; a page count never reaches 2^63.
    Ok(pages as i64)
}

/// Xen's `construct_memop_from_reservation` and `propagate_node` checks on
/// `mem_flags`, for a domain without vNUMA.
fn mem_flags_ok(mem_flags: u32, privileged: bool) -> bool {
    let bits = xenmemf_get_address_bits(mem_flags);
    if bits != 0 && bits <= 12 {
        return false;
    }
    if mem_flags & XENMEMF_VNODE != 0 {
        // No vNUMA: the node is ignored.
        return true;
    }
    let node = xenmemf_get_node(mem_flags);
    if node == XENMEMF_NO_NODE {
        return true;
    }
    if privileged {
        node < MAX_NUMNODES
    } else {
        mem_flags & XENMEMF_EXACT_NODE_REQUEST == 0
    }
}

fn reservation<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    op: u32,
    start_extent: u64,
    args: &[u64; 6],
) -> Outcome {
    let arg = args[1];
    // Whatever goes wrong before the first extent, Xen reports the start
    // extent as the number done.
    let none_done = Outcome::ret(start_extent as i64);
    let (r, entry_size) = match cx.width {
        GuestWidth::Bits64 => match cx.read(arg) {
            Ok(b) => (XenMemoryReservation::from_bytes(&b), 8u64),
            Err(_) => return none_done,
        },
        GuestWidth::Bits32 => match cx.read(arg) {
            Ok(b) => (XenMemoryReservationCompat::from_bytes(&b).into(), 4u64),
            Err(_) => return none_done,
        },
    };
    // A continuation must be able to encode any progress in `cmd`.
    if r.nr_extents > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start_extent >= r.nr_extents {
        return none_done;
    }
    let Ok(dom) = cx.target(r.domid) else {
        return none_done;
    };
    let privileged = cx.d.is_privileged();
    if !mem_flags_ok(r.mem_flags, privileged) {
        return none_done;
    }
    if op == XENMEM_POPULATE_PHYSMAP && r.mem_flags & XENMEMF_POPULATE_ON_DEMAND != 0 {
        return none_done;
    }
    // Both below 2^26 and the entry size 8 at most: no overflow.
    let list_at = match cx.offset(r.extent_start, start_extent * entry_size) {
        Ok(a) => a,
        Err(_) => return none_done,
    };
    if cx
        .check_range(
            list_at,
            ((r.nr_extents - start_extent) * entry_size) as usize,
        )
        .is_err()
    {
        return none_done;
    }
    let max_order = if privileged {
        PRIV_MAX_ORDER
    } else {
        DOMU_MAX_ORDER
    };
    if r.extent_order > max_order {
        return none_done;
    }
    let pages_per_extent = 1u64 << r.extent_order;
    let mut done = start_extent;
    let mut pages = 0u64;
    while done < r.nr_extents {
        if done != start_extent && pages >= MEMOP_PAGE_BUDGET {
            let mut next = *args;
            next[0] = u64::from(op) | done << MEMOP_EXTENT_SHIFT;
            return Outcome {
                ret: 0,
                action: Action::Preempted { args: next },
            };
        }
        // In range: checked above for the whole list.
        let at = list_at + (done - start_extent) * entry_size;
        let gfn = match cx.width {
            GuestWidth::Bits64 => cx.read::<8>(at).map(u64::from_le_bytes),
            GuestWidth::Bits32 => cx.read::<4>(at).map(|b| u64::from(u32::from_le_bytes(b))),
        };
        let Ok(gfn) = gfn else { break };
        let result = if op == XENMEM_POPULATE_PHYSMAP {
            cx.d.populate_physmap(dom, gfn, r.extent_order)
        } else {
            cx.d.decrease_reservation(dom, gfn, r.extent_order)
        };
        if result.is_err() {
            break;
        }
        done += 1;
        pages += pages_per_extent;
    }
    // Below 2^26.
    Outcome::ret(done as i64)
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
        XENMAPSPACE_GRANT_TABLE => {
            let idx = u32::try_from(xatp.idx).map_err(|_| Errno::EINVAL)?;
            if idx & XENMAPIDX_GRANT_TABLE_STATUS != 0 {
                let idx = idx & !XENMAPIDX_GRANT_TABLE_STATUS;
                return cx.d.map_grant_status_frame(idx, xatp.gpfn).map(|()| 0);
            }
            cx.d.map_grant_frame(idx, xatp.gpfn).map(|()| 0)
        }
        XENMAPSPACE_GMFN | XENMAPSPACE_GMFN_RANGE => Err(Errno::ENOSYS),
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
