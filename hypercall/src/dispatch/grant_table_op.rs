//! `HYPERVISOR_grant_table_op` (Xen `hvm_grant_table_op`,
//! `xen/arch/x86/hvm/hypercall.c`; `do_grant_table_op`,
//! `xen/common/grant_table.c`; `compat_grant_table_op`,
//! `xen/common/compat/grant_table.c`).
//!
//! `grant_table_op(unsigned int cmd, void *uop, unsigned int count)`: `uop`
//! is an array of `count` structures of the kind `cmd` names. Per-entry
//! results go into each entry's `status` (`GNTST_*`); the hypercall itself
//! returns 0 unless the arguments are bad.
//!
//! Two layers, as in Xen. [`do_grant_table_op`] is Xen's HVM filter: only
//! the commands Xen lets an HVM/PVH guest use are recognised (`map`,
//! `unmap`, `setup_table`, `copy`, `query_size`, `set_version`,
//! `get_version`, `swap_grant_ref`), and `cmd` must be exactly one of them
//! (the filter compares the whole value, so continuation bits from a guest
//! make it unknown): anything else is `-ENOSYS`, `transfer`,
//! `get_status_frames` and `cache_flush` included ("need auditing"; a
//! version 2 HVM guest maps its status frames with
//! `XENMAPIDX_grant_table_status` instead). Every keel guest is HVM/PVH.
//! Past it, [`grant_table_op`] is Xen's `do_grant_table_op`, every command
//! it has: a `count` above `i32::MAX` is `-EINVAL`, so are bits above
//! [`GNTTABOP_CMD_MASK`] but for `cache_flush` (its continuation), and an
//! unknown command (`dump_table`, `unmap_and_replace`) is `-ENOSYS`; then:
//!
//! - `map_grant_ref` (32-byte entries): no `GNTMAP_host_map` nor
//!   `device_map` is `GNTST_bad_gntref`; device, application or PTE maps
//!   (PV only) `GNTST_general_error`; a reserved domain id (`DOMID_SELF`
//!   included: Xen does not resolve it here) or an absent domain
//!   `GNTST_bad_domain`; else [`Domain::gnttab_map_grant_ref`]. The whole
//!   entry is copied back, `handle` and `dev_bus_addr` filled in on
//!   success only.
//! - `unmap_grant_ref` (24-byte entries): [`Domain::gnttab_unmap_grant_ref`];
//!   only `status` is written back.
//! - `copy` (40-byte entries native, 24 compat): a zero `len` is
//!   `GNTST_okay` without further checks; for each end, source then dest,
//!   a frame end whose `domid` is not literally `DOMID_SELF` is
//!   `GNTST_permission_denied`, a grant end naming no domain
//!   `GNTST_bad_domain`; then either end with `offset + len > 4096` is
//!   `GNTST_bad_copy_arg` (Xen finds that after taking both grants, so a
//!   bad ref and a bad length give bad_gntref there); then
//!   [`Domain::gnttab_copy`]. Only `status` is written back.
//! - `swap_grant_ref` (12-byte entries): [`Domain::gnttab_swap_grant_ref`];
//!   only `status` is written back.
//! - `transfer` (24-byte entries native, 16 compat):
//!   [`Domain::gnttab_transfer`]; only `status` is written back.
//! - `cache_flush` (16-byte entries; its result is an errno): an `offset`
//!   past the page, a `length` above 4096 or `offset + length` past the
//!   page, or `op` bits beyond `GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_INVAL`
//!   (`GNTTAB_CACHE_SOURCE_GREF` among them) end the call with `-EINVAL`;
//!   a zero `length` or `op` does nothing, or is `-EILSEQ` if `cmd`
//!   carried a continuation's grant ref; else
//!   [`Domain::gnttab_cache_flush`], whose error ends the call.
//!
//!   These six process at most [`GNTTAB_OP_BUDGET`] entries per entry to
//!   the hypercall, then preempt as Xen does: `uop` advanced past the done
//!   entries, `count` reduced, `cmd` unchanged but for `cache_flush`'s
//!   continuation bits, which are cleared ([`Action::Preempted`]). An
//!   entry that cannot be read or written back (or lies beyond the address
//!   space) ends the call with `-EFAULT`; entries before it stay done.
//! - `setup_table` (`count` must be 1, else `-EINVAL`): copy in (`-EFAULT`);
//!   the frame list must lie in the address space (`-EFAULT`); then into
//!   `status`: `GNTST_bad_domain`, `GNTST_permission_denied` (another
//!   domain, unprivileged caller), `GNTST_general_error` (for a 32-bit
//!   caller, more frames than Xen's translation buffer holds: 1021), or
//!   [`Domain::gnttab_setup_table`]'s verdict; on success each frame's gfn
//!   ([`Domain::gnttab_shared_gfn`]) is written to the list (8 bytes
//!   native, 4 compat: `GNTST_address_too_big` for a gfn above 32 bits;
//!   `GNTST_bad_virt_addr` on a fault). Only `status` is written back.
//! - `get_status_frames` (`count` must be 1): as `setup_table`, with
//!   [`Domain::gnttab_get_status_frames`] and [`Domain::gnttab_status_gfn`],
//!   8-byte gfns for both widths, and for a 32-bit caller Xen's
//!   translation limit of 1022 frames (`GNTST_general_error`, after the
//!   domain's own count). A 64-bit caller gets `GNTST_bad_virt_addr` for a
//!   gfn it cannot write, and `status` alone written back; a 32-bit caller
//!   gets the gfns only with `GNTST_okay` (faults ignored, as Xen's
//!   translation does), and the whole structure written back.
//! - `query_size` (`count` must be 1): `GNTST_bad_domain` /
//!   `GNTST_permission_denied` as above, else [`Domain::gnttab_query_size`];
//!   the whole structure is written back.
//! - `set_version`: 1 and 2 go to [`Domain::gnttab_set_version`], any other
//!   version is `-EINVAL`; in every case `version` is written back with
//!   [`Domain::gnttab_get_version`] (`-EFAULT` if that fails).
//! - `get_version`: [`Ctx::target`] (`-ESRCH`, `-EPERM`); writes
//!   `version` ([`Domain::gnttab_get_version`]).
//!
//! `count` is ignored by `set_version` and `get_version`, as in Xen.

use super::{
    Action, Ctx, Domain, GnttabCopyEnd, GnttabCopyOp, GnttabCopyTarget, GuestWidth, Outcome,
};
use crate::abi::Errno;
use crate::abi::domid::{DOMID_FIRST_RESERVED, DOMID_SELF, DomId};
use crate::abi::grant_table::*;

/// Entries `map_grant_ref`, `unmap_grant_ref`, `copy`, `swap_grant_ref`,
/// `transfer` and `cache_flush` process per entry to the hypercall before
/// preempting.
pub const GNTTAB_OP_BUDGET: u32 = 64;

/// Page size: a copy may not cross its page.
const PAGE_SIZE: u32 = 4096;

/// The most frames Xen's compat `setup_table` can translate:
/// `(COMPAT_ARG_XLAT_SIZE - sizeof(gnttab_setup_table)) / sizeof(xen_pfn_t)`
/// with a two-page translation area.
const COMPAT_SETUP_MAX_FRAMES: u32 = (2 * 4096 - 24) / 8;

/// The most status frames Xen's compat `get_status_frames` can translate:
/// `(COMPAT_ARG_XLAT_SIZE - sizeof(gnttab_get_status_frames)) /
/// sizeof(uint64_t)`.
const COMPAT_STATUS_MAX_FRAMES: u32 = (2 * 4096 - 16) / 8;

/// Bytes of one gfn in `get_status_frames`' list, for both widths.
const STATUS_GFN_SIZE: u64 = 8;

/// Xen's `hvm_grant_table_op`: the commands an HVM/PVH guest may use, then
/// [`grant_table_op`].
pub(super) fn do_grant_table_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
) -> Outcome {
    // `unsigned int cmd`: the low 32 bits, compared whole.
    match args[0] as u32 {
        GNTTABOP_MAP_GRANT_REF
        | GNTTABOP_UNMAP_GRANT_REF
        | GNTTABOP_SETUP_TABLE
        | GNTTABOP_COPY
        | GNTTABOP_QUERY_SIZE
        | GNTTABOP_SET_VERSION
        | GNTTABOP_GET_VERSION
        | GNTTABOP_SWAP_GRANT_REF => grant_table_op(cx, args),
        // "All other commands need auditing."
        _ => Outcome::err(Errno::ENOSYS),
    }
}

/// Xen's `do_grant_table_op`: every command it has, for a caller that the
/// filter let through.
pub(super) fn grant_table_op<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, args: &[u64; 6]) -> Outcome {
    // `unsigned int cmd`, `unsigned int count`: the low 32 bits.
    let cmd = args[0] as u32;
    let uop = args[1];
    let count = args[2] as u32;
    // `(int)count < 0`.
    if count > i32::MAX as u32 {
        return Outcome::err(Errno::EINVAL);
    }
    let (op, opaque) = (cmd & GNTTABOP_CMD_MASK, cmd & GNTTABOP_ARG_MASK);
    if op != GNTTABOP_CACHE_FLUSH && opaque != 0 {
        return Outcome::err(Errno::EINVAL);
    }
    let wide = |native: usize, compat: usize| match cx.width {
        GuestWidth::Bits64 => native,
        GuestWidth::Bits32 => compat,
    };
    match op {
        GNTTABOP_MAP_GRANT_REF => batch(cx, args, GnttabMapGrantRef::SIZE, map_grant_ref),
        GNTTABOP_UNMAP_GRANT_REF => batch(cx, args, GnttabUnmapGrantRef::SIZE, unmap_grant_ref),
        GNTTABOP_COPY => {
            let size = wide(GnttabCopy::SIZE, GnttabCopyCompat::SIZE);
            batch(cx, args, size, copy)
        }
        GNTTABOP_SWAP_GRANT_REF => batch(cx, args, GnttabSwapGrantRef::SIZE, swap_grant_ref),
        GNTTABOP_TRANSFER => {
            let size = wide(GnttabTransfer::SIZE, GnttabTransferCompat::SIZE);
            batch(cx, args, size, transfer)
        }
        GNTTABOP_CACHE_FLUSH => cache_flush(cx, args, opaque >> GNTTABOP_CONTINUATION_ARG_SHIFT),
        GNTTABOP_SETUP_TABLE => Outcome::from_result(setup_table(cx, uop, count)),
        GNTTABOP_GET_STATUS_FRAMES => Outcome::from_result(get_status_frames(cx, uop, count)),
        GNTTABOP_QUERY_SIZE => Outcome::from_result(query_size(cx, uop, count)),
        GNTTABOP_SET_VERSION => Outcome::from_result(set_version(cx, uop)),
        GNTTABOP_GET_VERSION => Outcome::from_result(get_version(cx, uop)),
        _ => Outcome::err(Errno::ENOSYS),
    }
}

/// Runs `one` on each of the `count` entries of `size` bytes at `uop`, at
/// most [`GNTTAB_OP_BUDGET`] of them before preempting.
fn batch<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
    size: usize,
    mut one: impl FnMut(&mut Ctx<'_, D>, u64) -> Result<(), Errno>,
) -> Outcome {
    let uop = args[1];
    // Checked against i32::MAX by the caller.
    let count = args[2] as u32;
    for i in 0..count {
        let at = match cx.offset(uop, u64::from(i) * size as u64) {
            Ok(at) => at,
            Err(e) => return Outcome::err(e),
        };
        if i == GNTTAB_OP_BUDGET {
            let mut next = *args;
            next[1] = at;
            next[2] = u64::from(count - i);
            return Outcome {
                ret: 0,
                action: Action::Preempted { args: next },
            };
        }
        if let Err(e) = one(cx, at) {
            return Outcome::err(e);
        }
    }
    Outcome::ret(0)
}

/// Writes an entry's `status` field alone, at byte `offset` of the entry.
fn write_status<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    at: u64,
    offset: usize,
    status: i16,
) -> Result<(), Errno> {
    let field = cx.offset(at, offset as u64)?;
    cx.write(field, &status.to_le_bytes())
}

fn map_grant_ref<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64) -> Result<(), Errno> {
    let mut op = GnttabMapGrantRef::from_bytes(&cx.read(at)?);
    op.status = match map_one(cx, &op) {
        Ok(m) => {
            op.handle = m.handle;
            op.dev_bus_addr = m.dev_bus_addr;
            GNTST_OKAY
        }
        Err(status) => status,
    };
    cx.write(at, &op.to_bytes())
}

fn map_one<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    op: &GnttabMapGrantRef,
) -> Result<super::GnttabMapped, i16> {
    if op.flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
        return Err(GNTST_BAD_GNTREF);
    }
    // An HVM/PVH caller (Xen: `paging_mode_external`) maps into its p2m.
    if op.flags & (GNTMAP_DEVICE_MAP | GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE) != 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    // `rcu_lock_domain_by_id`: no DOMID_SELF here.
    if op.dom >= DOMID_FIRST_RESERVED || (op.dom != cx.d.domid() && !cx.d.domain_exists(op.dom)) {
        return Err(GNTST_BAD_DOMAIN);
    }
    cx.d.gnttab_map_grant_ref(op.dom, op.ref_, op.flags, op.host_addr)
}

fn unmap_grant_ref<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64) -> Result<(), Errno> {
    let op = GnttabUnmapGrantRef::from_bytes(&cx.read(at)?);
    let status =
        cx.d.gnttab_unmap_grant_ref(op.host_addr, op.dev_bus_addr, op.handle);
    write_status(
        cx,
        at,
        core::mem::offset_of!(GnttabUnmapGrantRef, status),
        status,
    )
}

fn copy<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64) -> Result<(), Errno> {
    let (op, status_at): (GnttabCopy, usize) = match cx.width {
        GuestWidth::Bits64 => (
            GnttabCopy::from_bytes(&cx.read(at)?),
            core::mem::offset_of!(GnttabCopy, status),
        ),
        GuestWidth::Bits32 => (
            GnttabCopyCompat::from_bytes(&cx.read(at)?).into(),
            core::mem::offset_of!(GnttabCopyCompat, status),
        ),
    };
    let status = copy_one(cx, &op);
    write_status(cx, at, status_at, status)
}

fn copy_one<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, op: &GnttabCopy) -> i16 {
    if op.len == 0 {
        return GNTST_OKAY;
    }
    let source = match copy_end(cx, &op.source, op.flags & GNTCOPY_SOURCE_GREF != 0) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let dest = match copy_end(cx, &op.dest, op.flags & GNTCOPY_DEST_GREF != 0) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let len = u32::from(op.len);
    if u32::from(source.offset) + len > PAGE_SIZE || u32::from(dest.offset) + len > PAGE_SIZE {
        return GNTST_BAD_COPY_ARG;
    }
    cx.d.gnttab_copy(&GnttabCopyOp {
        source,
        dest,
        len: op.len,
    })
}

/// One end of a copy, as Xen's `gnttab_copy_lock_domain`.
fn copy_end<D: Domain + ?Sized>(
    cx: &Ctx<'_, D>,
    p: &GnttabCopyPtr,
    is_gref: bool,
) -> Result<GnttabCopyEnd, i16> {
    let target = if is_gref {
        let domid: DomId = cx.lookup(p.domid).map_err(|_| GNTST_BAD_DOMAIN)?;
        GnttabCopyTarget::Gref {
            domid,
            gref: p.gref(),
        }
    } else {
        // Only the caller's own frames, named as DOMID_SELF exactly.
        if p.domid != DOMID_SELF {
            return Err(GNTST_PERMISSION_DENIED);
        }
        GnttabCopyTarget::Gmfn(p.gmfn())
    };
    Ok(GnttabCopyEnd {
        target,
        offset: p.offset,
    })
}

/// `GNTST_bad_domain` / `GNTST_permission_denied` for `XSM_TARGET` ops that
/// report through `status`.
fn status_target<D: Domain + ?Sized>(cx: &Ctx<'_, D>, dom: DomId) -> Result<DomId, i16> {
    match cx.target(dom) {
        Ok(d) => Ok(d),
        Err(Errno::EPERM) => Err(GNTST_PERMISSION_DENIED),
        Err(_) => Err(GNTST_BAD_DOMAIN),
    }
}

fn setup_table<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    uop: u64,
    count: u32,
) -> Result<i64, Errno> {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let (op, entry_size) = match cx.width {
        GuestWidth::Bits64 => (GnttabSetupTable::from_bytes(&cx.read(uop)?), 8u64),
        GuestWidth::Bits32 => (
            GnttabSetupTableCompat::from_bytes(&cx.read(uop)?).into(),
            4u64,
        ),
    };
    // At most 2^32 entries of 8 bytes: no overflow.
    let list_len = u64::from(op.nr_frames) * entry_size;
    cx.check_range(
        op.frame_list,
        usize::try_from(list_len).map_err(|_| Errno::EFAULT)?,
    )?;
    let status = match setup_frames(cx, &op, entry_size) {
        Ok(()) => GNTST_OKAY,
        Err(status) => status,
    };
    // `status` is at offset 8 in both layouts.
    write_status(
        cx,
        uop,
        core::mem::offset_of!(GnttabSetupTable, status),
        status,
    )?;
    Ok(0)
}

fn setup_frames<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    op: &GnttabSetupTable,
    entry_size: u64,
) -> Result<(), i16> {
    let dom = status_target(cx, op.dom)?;
    if cx.width == GuestWidth::Bits32 && op.nr_frames > COMPAT_SETUP_MAX_FRAMES {
        return Err(GNTST_GENERAL_ERROR);
    }
    cx.d.gnttab_setup_table(dom, op.nr_frames)?;
    // Bounded by the table's maximum size, which the domain just enforced.
    for i in 0..op.nr_frames {
        let gfn = cx.d.gnttab_shared_gfn(dom, i);
        // In range: the whole list was checked.
        let at = op.frame_list + u64::from(i) * entry_size;
        let written = match cx.width {
            GuestWidth::Bits64 => cx.write(at, &gfn.to_le_bytes()),
            GuestWidth::Bits32 => {
                let Ok(gfn) = u32::try_from(gfn) else {
                    return Err(GNTST_ADDRESS_TOO_BIG);
                };
                cx.write(at, &gfn.to_le_bytes())
            }
        };
        if written.is_err() {
            return Err(GNTST_BAD_VIRT_ADDR);
        }
    }
    Ok(())
}

fn query_size<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, uop: u64, count: u32) -> Result<i64, Errno> {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let mut op = GnttabQuerySize::from_bytes(&cx.read(uop)?);
    op.status = match status_target(cx, op.dom) {
        Ok(dom) => {
            let size = cx.d.gnttab_query_size(dom);
            op.nr_frames = size.nr_frames;
            op.max_nr_frames = size.max_nr_frames;
            GNTST_OKAY
        }
        Err(status) => status,
    };
    cx.write(uop, &op.to_bytes())?;
    Ok(0)
}

fn set_version<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, uop: u64) -> Result<i64, Errno> {
    let mut op = GnttabSetVersion::from_bytes(&cx.read(uop)?);
    let result = match op.version {
        1 | 2 => cx.d.gnttab_set_version(op.version),
        _ => Err(Errno::EINVAL),
    };
    op.version = cx.d.gnttab_get_version(cx.d.domid());
    cx.write(uop, &op.to_bytes())?;
    result.map(|()| 0)
}

fn get_version<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, uop: u64) -> Result<i64, Errno> {
    let op = GnttabGetVersion::from_bytes(&cx.read(uop)?);
    let dom = cx.target(op.dom)?;
    let version = cx.d.gnttab_get_version(dom);
    let field = cx.offset(uop, core::mem::offset_of!(GnttabGetVersion, version) as u64)?;
    cx.write(field, &version.to_le_bytes())?;
    Ok(0)
}

fn get_status_frames<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    uop: u64,
    count: u32,
) -> Result<i64, Errno> {
    if count != 1 {
        return Err(Errno::EINVAL);
    }
    let mut op: GnttabGetStatusFrames = match cx.width {
        GuestWidth::Bits64 => GnttabGetStatusFrames::from_bytes(&cx.read(uop)?),
        GuestWidth::Bits32 => GnttabGetStatusFramesCompat::from_bytes(&cx.read(uop)?).into(),
    };
    // At most 2^32 entries of 8 bytes: no overflow.
    let list_len = u64::from(op.nr_frames) * STATUS_GFN_SIZE;
    cx.check_range(
        op.frame_list,
        usize::try_from(list_len).map_err(|_| Errno::EFAULT)?,
    )?;
    op.status = match status_frames(cx, &op) {
        Ok(()) => GNTST_OKAY,
        Err(status) => status,
    };
    match cx.width {
        GuestWidth::Bits64 => write_status(
            cx,
            uop,
            core::mem::offset_of!(GnttabGetStatusFrames, status),
            op.status,
        )?,
        GuestWidth::Bits32 => {
            // Xen's translation copies the whole structure back.
            let c = GnttabGetStatusFramesCompat {
                nr_frames: op.nr_frames,
                dom: op.dom,
                status: op.status,
                // Read from 32 bits.
                frame_list: op.frame_list as u32,
            };
            cx.write(uop, &c.to_bytes())?;
        }
    }
    Ok(0)
}

fn status_frames<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    op: &GnttabGetStatusFrames,
) -> Result<(), i16> {
    let dom = status_target(cx, op.dom)?;
    cx.d.gnttab_get_status_frames(dom, op.nr_frames)?;
    if cx.width == GuestWidth::Bits32 && op.nr_frames > COMPAT_STATUS_MAX_FRAMES {
        return Err(GNTST_GENERAL_ERROR);
    }
    let mut status = Ok(());
    // Bounded by the domain's status frames, which it just checked.
    for i in 0..op.nr_frames {
        let gfn = cx.d.gnttab_status_gfn(dom, i);
        // In range: the whole list was checked.
        let at = op.frame_list + u64::from(i) * STATUS_GFN_SIZE;
        if cx.write(at, &gfn.to_le_bytes()).is_err() && cx.width == GuestWidth::Bits64 {
            // Xen goes on, and reports the fault in the end.
            status = Err(GNTST_BAD_VIRT_ADDR);
        }
    }
    status
}

fn swap_grant_ref<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64) -> Result<(), Errno> {
    let op = GnttabSwapGrantRef::from_bytes(&cx.read(at)?);
    let status = cx.d.gnttab_swap_grant_ref(op.ref_a, op.ref_b)?;
    write_status(
        cx,
        at,
        core::mem::offset_of!(GnttabSwapGrantRef, status),
        status,
    )
}

fn transfer<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64) -> Result<(), Errno> {
    let (op, status_at): (GnttabTransfer, usize) = match cx.width {
        GuestWidth::Bits64 => (
            GnttabTransfer::from_bytes(&cx.read(at)?),
            core::mem::offset_of!(GnttabTransfer, status),
        ),
        GuestWidth::Bits32 => (
            GnttabTransferCompat::from_bytes(&cx.read(at)?).into(),
            core::mem::offset_of!(GnttabTransferCompat, status),
        ),
    };
    let status = cx.d.gnttab_transfer(op.mfn, op.domid, op.ref_);
    write_status(cx, at, status_at, status)
}

/// `cache_flush`'s batch. `cur_ref` is the grant ref a continuation of
/// Xen's search for the caller's grant of the frame carried in `cmd`; keel
/// searches in one go and never sets it, so it only matters to a zero
/// request (`-EILSEQ`), and only for the first entry (Xen clears it after
/// each).
fn cache_flush<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, args: &[u64; 6], cur_ref: u32) -> Outcome {
    let mut cur_ref = cur_ref;
    let mut next = *args;
    // A continuation carries no search in progress.
    next[0] = u64::from(GNTTABOP_CACHE_FLUSH);
    batch(cx, &next, GnttabCacheFlush::SIZE, |cx, at| {
        let op = GnttabCacheFlush::from_bytes(&cx.read(at)?);
        let result = cache_flush_one(cx, &op, cur_ref);
        cur_ref = 0;
        result
    })
}

fn cache_flush_one<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    op: &GnttabCacheFlush,
    cur_ref: u32,
) -> Result<(), Errno> {
    let (offset, length) = (u32::from(op.offset), u32::from(op.length));
    if offset >= PAGE_SIZE
        || length > PAGE_SIZE
        || offset + length > PAGE_SIZE
        || op.op & !(GNTTAB_CACHE_INVAL | GNTTAB_CACHE_CLEAN) != 0
    {
        return Err(Errno::EINVAL);
    }
    if length == 0 || op.op == 0 {
        return if cur_ref == 0 {
            Ok(())
        } else {
            Err(Errno::EILSEQ)
        };
    }
    cx.d.gnttab_cache_flush(op.a, op.offset, op.length, op.op)
}
