//! `HYPERVISOR_mmu_update`, `HYPERVISOR_mmuext_op`,
//! `HYPERVISOR_update_va_mapping` and `update_va_mapping_otherdomain`
//! (Xen 4.17 `do_mmu_update`, `do_mmuext_op`, `do_update_va_mapping`,
//! `do_update_va_mapping_otherdomain`, `xen/arch/x86/mm.c`): how a PV guest
//! changes page tables it may not write itself. 64-bit PV callers only
//! (the dispatcher answers `-ENOSYS` to anyone else).
//!
//! `mmu_update(const mmu_update_t *reqs, unsigned int count, unsigned int
//! *pdone, unsigned int foreigndom)` and `mmuext_op(mmuext_op_t *ops,
//! unsigned int count, unsigned int *pdone, unsigned int foreigndom)` walk
//! an array of `count` requests (16-byte [`MmuUpdate`]s, 24-byte
//! [`MmuextOp`]s), one [`Domain::pv_mmu_update`] /
//! [`Domain::pv_mmuext_op`] each, with Xen's protocol:
//!
//! 1. `count` with [`MMU_UPDATE_PREEMPTED`] set is a continuation: the flag
//!    is taken off, and the requests done by the earlier passes are read
//!    from `*pdone` unless `pdone` is NULL (a fault reads 0, as Xen ignores
//!    it: mm.c `(void)copy_from_guest(&done, pdone, 1)`).
//! 2. The array must lie in the caller's address space
//!    (`guest_handle_okay`), else `-EFAULT` at once: nothing done, `*pdone`
//!    not written.
//! 3. Request by request: copy it in (`-EFAULT` ends the batch), call the
//!    domain; its first `Err` ends the batch with that errno, the request
//!    not counted.
//! 4. After [`PV_MMU_BUDGET`] requests in one pass, or when the domain
//!    answers `-ERESTART` (before the request it was given), the call is
//!    continued ([`Action::Preempted`]) as Xen does it
//!    (`hypercall_create_continuation(..., "hihi", reqs, (count - i) |
//!    MMU_UPDATE_PREEMPTED, pdone, foreigndom)`): `reqs` advanced to the
//!    first request not done, `count` the rest with the flag, `pdone` and
//!    `foreigndom` unchanged.
//! 5. Whatever ended the pass (the last request, an error, a
//!    continuation), `*pdone`, unless NULL, is written with the total done
//!    so far, earlier passes included, so it accumulates across
//!    continuations through guest memory as in Xen; a fault writing it is
//!    ignored (Xen does not check `copy_to_guest` there). Between the last
//!    request and that write, `mmu_update` calls
//!    [`Domain::pv_mmu_update_flush`] (Xen's TLB flush at the end of
//!    `do_mmu_update`).
//!
//! `update_va_mapping(unsigned long va, uint64_t val, unsigned long
//! flags)` and `update_va_mapping_otherdomain(..., domid_t domid)` are one
//! call each ([`Domain::pv_update_va_mapping`],
//! [`Domain::pv_update_va_mapping_otherdomain`], the domain id the low 16
//! bits of the fourth argument); an `-ERESTART` from the domain re-issues
//! the same call, as Xen's continuation does.
//!
//! # Deviations from Xen
//!
//! - The owner of the frames (`foreigndom` bits 15:0, Xen's
//!   `get_pg_owner` before the loop) is checked by the kernel with each
//!   request. So a batch of 0 requests naming a bad one returns 0 (and
//!   writes `*pdone`), where Xen returns `-ESRCH` (`mmuext_op` without
//!   writing `*pdone`). The owner of the page tables (`mmu_update`'s bits
//!   31:16) is checked here before the loop, as Xen does, except that
//!   another domain's page tables are `-EINVAL` for a privileged caller
//!   (keel cannot update them; Xen can) and `-EPERM` for another at once
//!   (Xen: at the first request, by XSM).
//! - `count == MMU_UPDATE_PREEMPTED` with a NULL array is Xen's private
//!   continuation for a deferred page-table release (`old_guest_table`),
//!   which returns `(int)foreigndom`; keel has none, and treats it as any
//!   continuation with nothing left (0, `*pdone` rewritten).
//! - Preemption after a fixed budget rather than Xen's
//!   `hypercall_preempt_check` (pending softirqs).
//! - Xen lets HVM guests use `mmuext_op`'s pin commands on a PV domain's
//!   tables (for building one); keel answers `-ENOSYS` to every non-PV
//!   caller, as before.

use super::{Action, Ctx, Domain, Outcome};
use crate::abi::Errno;
use crate::abi::domid::{DOMID_FIRST_RESERVED, DomId};
use crate::abi::mmu::{MMU_UPDATE_PREEMPTED, MmuUpdate, MmuextOp};

/// Requests `mmu_update` and `mmuext_op` process per pass before
/// continuing.
pub const PV_MMU_BUDGET: u32 = 64;

/// `mmu_update`.
pub(super) fn do_mmu_update<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, args: &[u64; 6]) -> Outcome {
    // `unsigned int foreigndom`: bits 15:0 the frames' owner (the
    // kernel's to check), bits 31:16 the page tables' (checked here).
    let foreigndom = args[3] as u32;
    let pt_owner = check_pt_owner(cx, foreigndom >> 16);
    let pg_owner = foreigndom as DomId;
    batch::<D, { MmuUpdate::SIZE }>(
        cx,
        args,
        pt_owner,
        |d, raw| d.pv_mmu_update(&MmuUpdate::from_bytes(raw), pg_owner),
        |d| d.pv_mmu_update_flush(),
    )
}

/// `mmuext_op`.
pub(super) fn do_mmuext_op<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, args: &[u64; 6]) -> Outcome {
    // `get_pg_owner(domid_t)` takes the low 16 bits of `foreigndom`.
    let foreigndom = args[3] as DomId;
    batch::<D, { MmuextOp::SIZE }>(
        cx,
        args,
        Ok(()),
        |d, raw| d.pv_mmuext_op(&MmuextOp::from_bytes(raw), foreigndom),
        |_| {},
    )
}

/// `mmu_update`'s `pt_dom` (`foreigndom >> 16`), as Xen checks it before
/// the first request: 0 is the caller; else `pt_dom - 1` is a domain id
/// looked up without resolving `DOMID_SELF` (`rcu_lock_domain_by_id`):
/// the caller's own id is the caller, a reserved or absent one `-ESRCH`.
/// Another domain's page tables are `-EPERM` for an unprivileged caller
/// (Xen's `xsm_mmu_update`, `XSM_TARGET`, on its first request), and
/// `-EINVAL` for a privileged one: keel cannot update another domain's
/// page tables (Xen can, for a domain with a vCPU 0).
fn check_pt_owner<D: Domain + ?Sized>(cx: &Ctx<'_, D>, pt_dom: u32) -> Result<(), Errno> {
    if pt_dom == 0 {
        return Ok(());
    }
    // pt_dom is at most 0xffff.
    let id = (pt_dom - 1) as DomId;
    if id == cx.d.domid() {
        Ok(())
    } else if id >= DOMID_FIRST_RESERVED || !cx.d.domain_exists(id) {
        Err(Errno::ESRCH)
    } else if !cx.d.is_privileged() {
        Err(Errno::EPERM)
    } else {
        Err(Errno::EINVAL)
    }
}

/// The loop both share (the module's steps 1 to 5): `owner` is the verdict
/// on the page-table owner, given after the array check; `one` runs one
/// request of `N` bytes, `end` once after the last one of the pass.
fn batch<D: Domain + ?Sized, const N: usize>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
    owner: Result<(), Errno>,
    mut one: impl FnMut(&mut D, &[u8; N]) -> Result<(), Errno>,
    end: impl FnOnce(&mut D),
) -> Outcome {
    let reqs = args[0];
    // `unsigned int count`.
    let raw_count = args[1] as u32;
    let pdone = args[2];
    let count = raw_count & !MMU_UPDATE_PREEMPTED;

    let mut done: u32 = 0;
    if raw_count & MMU_UPDATE_PREEMPTED != 0 && pdone != 0 {
        done = cx.read::<4>(pdone).map_or(0, u32::from_le_bytes);
    }
    if let Err(e) = cx.check_array(reqs, u64::from(count), N as u64) {
        return Outcome::err(e);
    }
    if let Err(e) = owner {
        // Xen's `goto out`: no flush, but `*pdone` is written.
        if pdone != 0 {
            let _ = cx.write(pdone, &done.to_le_bytes());
        }
        return Outcome::err(e);
    }

    let size = N as u64;
    let mut i: u32 = 0;
    let mut result = Ok(());
    let mut restart = false;
    while i < count {
        if i == PV_MMU_BUDGET {
            restart = true;
            break;
        }
        // Inside the array check_array accepted: cannot overflow.
        let at = reqs + u64::from(i) * size;
        let raw = match cx.read::<N>(at) {
            Ok(raw) => raw,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        match one(cx.d, &raw) {
            Ok(()) => i += 1,
            Err(Errno::ERESTART) => {
                restart = true;
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    end(cx.d);

    // "Add incremental work we have done to the @done output parameter",
    // ignoring a fault, as Xen.
    if pdone != 0 {
        let _ = cx.write(pdone, &done.wrapping_add(i).to_le_bytes());
    }
    if restart {
        let mut next = *args;
        // i < count: inside the checked array.
        next[0] = reqs + u64::from(i) * size;
        next[1] = u64::from((count - i) | MMU_UPDATE_PREEMPTED);
        return Outcome {
            ret: 0,
            action: Action::Preempted { args: next },
        };
    }
    Outcome::from_result(result.map(|()| 0))
}

/// `update_va_mapping`.
pub(super) fn do_update_va_mapping<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
) -> Outcome {
    let r = cx.d.pv_update_va_mapping(args[0], args[1], args[2]);
    restartable(args, r)
}

/// `update_va_mapping_otherdomain`.
pub(super) fn do_update_va_mapping_otherdomain<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
) -> Outcome {
    // `domid_t domid`: the low 16 bits.
    let domid = args[3] as DomId;
    let r =
        cx.d.pv_update_va_mapping_otherdomain(args[0], args[1], args[2], domid);
    restartable(args, r)
}

/// `r` as the hypercall's result, but `-ERESTART` as a continuation that
/// re-issues the same call (Xen: `hypercall_create_continuation` with the
/// arguments unchanged).
fn restartable(args: &[u64; 6], r: Result<(), Errno>) -> Outcome {
    match r {
        Err(Errno::ERESTART) => Outcome {
            ret: 0,
            action: Action::Preempted { args: *args },
        },
        r => Outcome::from_result(r.map(|()| 0)),
    }
}
