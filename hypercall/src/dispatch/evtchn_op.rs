//! `HYPERVISOR_event_channel_op` (Xen `do_event_channel_op`,
//! `xen/common/event_channel.c`) and the legacy
//! `HYPERVISOR_event_channel_op_compat` (`do_event_channel_op_compat`,
//! `xen/arch/x86/compat.c`).
//!
//! `event_channel_op(int cmd, void *arg)`; `cmd` is the low 32 bits. Every
//! argument structure has one layout for both widths. In Xen's order, each
//! sub-op copies its structure in (`-EFAULT`), checks what the arguments
//! alone decide, asks the domain, and on success copies the whole structure
//! back with the OUT fields filled in (`-EFAULT` if that fails; the port
//! stays allocated, as in Xen: "cleaning up here would be a mess").
//!
//! - `alloc_unbound`: `dom` through [`Ctx::target`] (`-ESRCH`, `-EPERM`);
//!   `remote_dom` `DOMID_SELF` becomes the *caller's* id (not `dom`'s), any
//!   other value passes unchecked, as in Xen.
//! - `bind_interdomain`: `remote_dom` through [`Ctx::lookup`] (`-ESRCH`);
//!   any caller may bind to a port offered to it.
//! - `bind_virq`: `virq >= NR_VIRQS` is `-EINVAL`; a VIRQ that is not
//!   per-vCPU on a vCPU other than 0 is `-EINVAL`; an absent vCPU `-ENOENT`.
//! - `bind_ipi`, `bind_vcpu`: an absent vCPU is `-ENOENT` (before the port
//!   is looked at).
//! - `close`, `send`, `unmask`: straight to the domain.
//! - `status`: `dom` through [`Ctx::target`]; the domain's
//!   [`EvtchnStatusInfo`] is encoded into `status`, `vcpu` and the union
//!   member the state selects (the union's other bytes come back as the
//!   guest passed them, as in Xen).
//! - `reset`, and `reset_cont` (Xen-internal, 14) the same: `dom` through
//!   [`Ctx::target`].
//! - `init_control` (FIFO ABI, Xen's `evtchn_fifo_init_control`): `link_bits`
//!   is filled in; an absent vCPU is `-ENOENT`; an `offset` past
//!   [`EVTCHN_FIFO_MAX_CONTROL_OFFSET`] (the control block would cross the
//!   page end) or not 8-byte aligned is `-EINVAL`; then the domain (the
//!   frame, a second block for one vCPU); the structure is copied back
//!   only on success, as in Xen.
//! - `expand_array`, `set_priority`: straight to the domain (Xen checks
//!   nothing before taking the domain's lock).
//! - `bind_pirq` is `-ENOSYS` (keel has no physical IRQs for guests);
//!   unknown commands are `-ENOSYS`.
//!
//! Xen checks a domain's existence, then allocates, then asks XSM; keel
//! checks existence and permission together first, so an unprivileged
//! caller naming another, existing domain gets `-EPERM` even when the port
//! allocation would have failed.
//!
//! `event_channel_op_compat(evtchn_op_t *op)` copies in the whole 28-byte
//! [`EvtchnOp`] (`-EFAULT`), and for the ten commands Xen routes
//! (`bind_interdomain` .. `unmask`, not `reset` or the FIFO ones) runs the
//! same sub-op on the union at offset 4; any other command is `-ENOSYS`.
//! Xen offers hypercall 16 only to PV guests; keel to every guest.

use super::{Ctx, Domain, EvtchnState, EvtchnStatusInfo, Outcome};
use crate::abi::Errno;
use crate::abi::evtchn::*;

pub(super) fn do_event_channel_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u64,
    arg: u64,
) -> Outcome {
    // `int cmd`: the low 32 bits.
    Outcome::from_result(event_channel_op(cx, cmd as u32, arg).map(|()| 0))
}

pub(super) fn do_event_channel_op_compat<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    uop: u64,
) -> Outcome {
    let op = match cx.read(uop) {
        Ok(bytes) => EvtchnOp::from_bytes(&bytes),
        Err(e) => return Outcome::err(e),
    };
    match op.cmd {
        EVTCHNOP_BIND_INTERDOMAIN
        | EVTCHNOP_BIND_VIRQ
        | EVTCHNOP_BIND_PIRQ
        | EVTCHNOP_CLOSE
        | EVTCHNOP_SEND
        | EVTCHNOP_STATUS
        | EVTCHNOP_ALLOC_UNBOUND
        | EVTCHNOP_BIND_IPI
        | EVTCHNOP_BIND_VCPU
        | EVTCHNOP_UNMASK => {
            // The read above proved `uop + 28` fits the address space.
            let arg = uop + EVTCHN_OP_UNION_OFFSET;
            Outcome::from_result(event_channel_op(cx, op.cmd, arg).map(|()| 0))
        }
        _ => Outcome::err(Errno::ENOSYS),
    }
}

fn event_channel_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u32,
    arg: u64,
) -> Result<(), Errno> {
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let mut a = EvtchnAllocUnbound::from_bytes(&cx.read(arg)?);
            let dom = cx.target(a.dom)?;
            let remote = cx.resolve(a.remote_dom);
            a.port = cx.d.evtchn_alloc_unbound(dom, remote)?;
            cx.write(arg, &a.to_bytes())
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let mut a = EvtchnBindInterdomain::from_bytes(&cx.read(arg)?);
            let remote = cx.lookup(a.remote_dom)?;
            a.local_port = cx.d.evtchn_bind_interdomain(remote, a.remote_port)?;
            cx.write(arg, &a.to_bytes())
        }
        EVTCHNOP_BIND_VIRQ => {
            let mut a = EvtchnBindVirq::from_bytes(&cx.read(arg)?);
            if a.virq >= NR_VIRQS {
                return Err(Errno::EINVAL);
            }
            if !virq_is_per_vcpu(a.virq) && a.vcpu != 0 {
                return Err(Errno::EINVAL);
            }
            let vcpu = cx.vcpu(a.vcpu)?;
            a.port = cx.d.evtchn_bind_virq(a.virq, vcpu)?;
            cx.write(arg, &a.to_bytes())
        }
        EVTCHNOP_BIND_IPI => {
            let mut a = EvtchnBindIpi::from_bytes(&cx.read(arg)?);
            let vcpu = cx.vcpu(a.vcpu)?;
            a.port = cx.d.evtchn_bind_ipi(vcpu)?;
            cx.write(arg, &a.to_bytes())
        }
        EVTCHNOP_BIND_VCPU => {
            let a = EvtchnBindVcpu::from_bytes(&cx.read(arg)?);
            let vcpu = cx.vcpu(a.vcpu)?;
            cx.d.evtchn_bind_vcpu(a.port, vcpu)
        }
        EVTCHNOP_CLOSE => {
            let a = EvtchnClose::from_bytes(&cx.read(arg)?);
            cx.d.evtchn_close(a.port)
        }
        EVTCHNOP_SEND => {
            let a = EvtchnSend::from_bytes(&cx.read(arg)?);
            cx.d.evtchn_send(a.port)
        }
        EVTCHNOP_UNMASK => {
            let a = EvtchnUnmask::from_bytes(&cx.read(arg)?);
            cx.d.evtchn_unmask(a.port)
        }
        EVTCHNOP_STATUS => {
            let mut a = EvtchnStatus::from_bytes(&cx.read(arg)?);
            let dom = cx.target(a.dom)?;
            let info = cx.d.evtchn_status(dom, a.port)?;
            encode_status(&mut a, info);
            cx.write(arg, &a.to_bytes())
        }
        EVTCHNOP_RESET | EVTCHNOP_RESET_CONT => {
            let a = EvtchnReset::from_bytes(&cx.read(arg)?);
            let dom = cx.target(a.dom)?;
            cx.d.evtchn_reset(dom)
        }
        EVTCHNOP_INIT_CONTROL => {
            let mut a = EvtchnInitControl::from_bytes(&cx.read(arg)?);
            // Xen fills this in first, but copies the structure back only
            // on success.
            a.link_bits = EVTCHN_FIFO_LINK_BITS as u8;
            let vcpu = cx.vcpu(a.vcpu)?;
            if a.offset > EVTCHN_FIFO_MAX_CONTROL_OFFSET || !a.offset.is_multiple_of(8) {
                return Err(Errno::EINVAL);
            }
            cx.d.evtchn_init_control(vcpu, a.control_gfn, a.offset)?;
            cx.write(arg, &a.to_bytes())
        }
        EVTCHNOP_EXPAND_ARRAY => {
            let a = EvtchnExpandArray::from_bytes(&cx.read(arg)?);
            cx.d.evtchn_expand_array(a.array_gfn)
        }
        EVTCHNOP_SET_PRIORITY => {
            let a = EvtchnSetPriority::from_bytes(&cx.read(arg)?);
            cx.d.evtchn_set_priority(a.port, a.priority)
        }
        // No physical IRQs for guests.
        _ => Err(Errno::ENOSYS),
    }
}

/// Xen's `get_virq_type(virq) == VIRQ_VCPU`: the VIRQs each vCPU binds for
/// itself. The rest are per-domain (`VIRQ_ARGO`) or global, and bind on
/// vCPU 0 only; the x86 architectural ones (16..24) are global.
fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

/// Fills in the OUT fields of `evtchn_status` as Xen's `evtchn_status`.
fn encode_status(a: &mut EvtchnStatus, info: EvtchnStatusInfo) {
    a.vcpu = info.vcpu;
    a.status = match info.state {
        EvtchnState::Closed => EVTCHNSTAT_CLOSED,
        EvtchnState::Unbound { remote_dom } => {
            a.set_dom(remote_dom);
            EVTCHNSTAT_UNBOUND
        }
        EvtchnState::Interdomain {
            remote_dom,
            remote_port,
        } => {
            a.set_dom(remote_dom);
            a.set_interdomain_port(remote_port);
            EVTCHNSTAT_INTERDOMAIN
        }
        EvtchnState::Pirq(pirq) => {
            a.set_irq(pirq);
            EVTCHNSTAT_PIRQ
        }
        EvtchnState::Virq(virq) => {
            a.set_irq(virq);
            EVTCHNSTAT_VIRQ
        }
        EvtchnState::Ipi => EVTCHNSTAT_IPI,
    };
}
