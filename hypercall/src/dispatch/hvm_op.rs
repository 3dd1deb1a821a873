//! `HYPERVISOR_hvm_op` (Xen `do_hvm_op`, `hvmop_set_param`,
//! `hvmop_get_param`, `hvm_allow_{set,get}_param`,
//! `xen/arch/x86/hvm/hvm.c`).
//!
//! `hvm_op(unsigned long op, void *arg)`.
//!
//! `HVMOP_set_param`/`HVMOP_get_param`, in Xen's order: copy in
//! `xen_hvm_param` (`-EFAULT`); `index >= HVM_NR_PARAMS` is `-EINVAL`; a
//! domid other than `DOMID_SELF` or the caller's own is `-ESRCH` (keel has
//! no cross-domain parameter access yet and answers as if the domain did
//! not exist). Then Xen's policy for a domain acting on itself, which is
//! the same for privileged and unprivileged callers:
//!
//! - settable by the guest: `CALLBACK_IRQ`, `VM86_TSS`, `VM86_TSS_SIZED`,
//!   `ACPI_IOPORTS_LOCATION`, `VM_GENERATION_ID_ADDR`, `STORE_EVTCHN`,
//!   `CONSOLE_EVTCHN`, `X87_FIP_WIDTH`;
//! - readable by the guest: those, plus `STORE_PFN`, `CONSOLE_PFN`,
//!   `ALTP2M`;
//! - setting `ALTP2M` (read-only) is `-EEXIST`;
//! - the deprecated indexes (`PAE_ENABLED`, `DM_DOMAIN`,
//!   `MEMORY_EVENT_*`, `NESTEDHVM`, `BUFIOREQ_EVTCHN`) are `-EINVAL`;
//! - every other index is `-EPERM`.
//!
//! What passes goes to [`Domain::get_hvm_param`]/[`Domain::set_hvm_param`];
//! a get copies the whole structure back with `value` filled in. A failed
//! check or a domain error writes nothing.
//!
//! `HVMOP_set_evtchn_upcall_vector` (Xen `hvmop_set_evtchn_upcall_vector`):
//! copy in `xen_hvm_evtchn_upcall_vector` (`-EFAULT`); a vector below 0x10
//! (exceptions and reserved) is `-EINVAL`; a vCPU the domain does not have
//! `-ENOENT`; then [`Domain::set_evtchn_upcall_vector`].
//!
//! `HVMOP_flush_tlbs` (Xen `do_hvm_op`, `hvmop_flush_tlb_all`): `arg` must
//! be NULL (`-EINVAL`); then [`Domain::hvm_flush_tlbs`] flushes every vCPU's
//! TLB. Xen's `-EINVAL` for a domain that is not HVM/PVH cannot arise (keel
//! runs no other kind); its `-ERESTART` continuation comes only from shadow
//! paging, and keel uses HAP alone, whose flush always succeeds.
//!
//! `HVM_PARAM_CALLBACK_IRQ` goes through [`Domain::set_hvm_param`] like any
//! parameter; the kernel decodes it with `abi::hvm::HvmCallbackVia`.
//!
//! Every other `HVMOP_*` is `-ENOSYS`.

use super::{Ctx, Domain, Outcome};
use crate::abi::Errno;
use crate::abi::hvm::*;

pub(super) fn do_hvm_op<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, op: u64, arg: u64) -> Outcome {
    Outcome::from_result(match op {
        o if o == u64::from(HVMOP_SET_PARAM) => set_param(cx, arg),
        o if o == u64::from(HVMOP_GET_PARAM) => get_param(cx, arg),
        o if o == u64::from(HVMOP_SET_EVTCHN_UPCALL_VECTOR) => set_evtchn_upcall_vector(cx, arg),
        o if o == u64::from(HVMOP_FLUSH_TLBS) => flush_tlbs(cx, arg),
        _ => Err(Errno::ENOSYS),
    })
}

/// Copies in and checks the parts common to set and get.
fn param_in<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, arg: u64) -> Result<XenHvmParam, Errno> {
    let a = XenHvmParam::from_bytes(&cx.read(arg)?);
    if a.index >= HVM_NR_PARAMS {
        return Err(Errno::EINVAL);
    }
    if !cx.is_self(a.domid) {
        return Err(Errno::ESRCH);
    }
    Ok(a)
}

fn is_deprecated(index: u32) -> bool {
    matches!(
        index,
        HVM_PARAM_PAE_ENABLED
            | HVM_PARAM_DM_DOMAIN
            | HVM_PARAM_MEMORY_EVENT_CR0
            | HVM_PARAM_MEMORY_EVENT_CR3
            | HVM_PARAM_MEMORY_EVENT_CR4
            | HVM_PARAM_MEMORY_EVENT_INT3
            | HVM_PARAM_NESTEDHVM
            | HVM_PARAM_MEMORY_EVENT_SINGLE_STEP
            | HVM_PARAM_BUFIOREQ_EVTCHN
            | HVM_PARAM_MEMORY_EVENT_MSR
    )
}

/// `hvm_allow_set_param` for `d == current->domain`.
fn allow_self_set(index: u32) -> Result<(), Errno> {
    match index {
        HVM_PARAM_CALLBACK_IRQ
        | HVM_PARAM_VM86_TSS
        | HVM_PARAM_VM86_TSS_SIZED
        | HVM_PARAM_ACPI_IOPORTS_LOCATION
        | HVM_PARAM_VM_GENERATION_ID_ADDR
        | HVM_PARAM_STORE_EVTCHN
        | HVM_PARAM_CONSOLE_EVTCHN
        | HVM_PARAM_X87_FIP_WIDTH => Ok(()),
        HVM_PARAM_ALTP2M => Err(Errno::EEXIST),
        i if is_deprecated(i) => Err(Errno::EINVAL),
        _ => Err(Errno::EPERM),
    }
}

/// `hvm_allow_get_param` for `d == current->domain`.
fn allow_self_get(index: u32) -> Result<(), Errno> {
    match index {
        HVM_PARAM_CALLBACK_IRQ
        | HVM_PARAM_VM86_TSS
        | HVM_PARAM_VM86_TSS_SIZED
        | HVM_PARAM_ACPI_IOPORTS_LOCATION
        | HVM_PARAM_VM_GENERATION_ID_ADDR
        | HVM_PARAM_STORE_PFN
        | HVM_PARAM_STORE_EVTCHN
        | HVM_PARAM_CONSOLE_PFN
        | HVM_PARAM_CONSOLE_EVTCHN
        | HVM_PARAM_ALTP2M
        | HVM_PARAM_X87_FIP_WIDTH => Ok(()),
        i if is_deprecated(i) => Err(Errno::EINVAL),
        _ => Err(Errno::EPERM),
    }
}

fn set_param<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, arg: u64) -> Result<i64, Errno> {
    let a = param_in(cx, arg)?;
    // A PV domain has no HVM parameters (Xen's `hvmop_set_param`).
    if cx.d.is_pv() {
        return Err(Errno::EINVAL);
    }
    allow_self_set(a.index)?;
    cx.d.set_hvm_param(a.index, a.value).map(|()| 0)
}

fn get_param<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, arg: u64) -> Result<i64, Errno> {
    let mut a = param_in(cx, arg)?;
    if cx.d.is_pv() {
        return Err(Errno::EINVAL);
    }
    allow_self_get(a.index)?;
    a.value = cx.d.get_hvm_param(a.index)?;
    cx.write(arg, &a.to_bytes()).map(|()| 0)
}

fn flush_tlbs<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, arg: u64) -> Result<i64, Errno> {
    // Xen's `hvmop_flush_tlb_all`: HVM domains only.
    if cx.d.is_pv() {
        return Err(Errno::EINVAL);
    }
    // `guest_handle_is_null`: the argument register, cut to the caller's
    // width, is 0.
    if arg != 0 {
        return Err(Errno::EINVAL);
    }
    cx.d.hvm_flush_tlbs().map(|()| 0)
}

/// The lowest vector Xen accepts for event upcalls: 0..0x10 are
/// exceptions or reserved.
const MIN_UPCALL_VECTOR: u8 = 0x10;

fn set_evtchn_upcall_vector<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    arg: u64,
) -> Result<i64, Errno> {
    // HVM domains only (Xen checks this before reading the argument).
    if cx.d.is_pv() {
        return Err(Errno::EINVAL);
    }
    let a = XenHvmEvtchnUpcallVector::from_bytes(&cx.read(arg)?);
    if a.vector < MIN_UPCALL_VECTOR {
        return Err(Errno::EINVAL);
    }
    let vcpu = cx.vcpu(a.vcpu)?;
    cx.d.set_evtchn_upcall_vector(vcpu, a.vector).map(|()| 0)
}
