//! Event channels from the guest's side: the `EVTCHNOP_*` calls, the upcall, and
//! waiting for events (pvh64).
//!
//! # What
//!
//! Xen's 2-level event channels (`xen/include/public/event_channel.h`): a port is
//! a bit in the shared-info page's `evtchn_pending[]` (and `evtchn_mask[]`); when
//! the hypervisor sets a pending bit of an unmasked port it also sets the port's
//! word in `vcpu_info.evtchn_pending_sel` and `vcpu_info.evtchn_upcall_pending`,
//! and, if the guest asked for one, raises the *upcall*: for an HVM/PVH guest an
//! interrupt on a vector of its choice, requested per vCPU with
//! `HVMOP_set_evtchn_upcall_vector` or for vCPU 0 with
//! `HVM_PARAM_CALLBACK_IRQ = (HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | vector`
//! ([`Upcall`]). Nothing is acknowledged to a (virtual) local APIC.
//!
//! The upcall handler ([`upcall`], installed in [`crate::trap`]) does what Linux's
//! `xen_evtchn_do_upcall` does for 2-level channels: clear
//! `evtchn_upcall_pending`, then repeatedly take (exchange with 0) the selector,
//! and for each word in it take the pending-and-unmasked bits, clearing each
//! port's pending bit before counting it. Counting is all it does: each port below
//! [`TRACKED`] has a counter of events seen and, below [`TIMED`], the system time
//! the last one was seen at. The modes consume counts with [`take`].
//!
//! Waiting ([`wait_for`]): check the count; if nothing yet, sleep in the
//! hypervisor until *something* is pending, with interrupts enabled exactly for the
//! hypercall (`arch::hypercall_sti_cli`) so the upcall runs as soon as it returns:
//! `SCHEDOP_block`, or `SCHEDOP_poll` on the port with a timeout. A guest without
//! an upcall ([`upcalls_registered`] false) polls with interrupts off and scans the
//! bitmaps itself ([`collect`]) — what the pingpong server does.
//!
//! With several vCPUs (the smp mode) each vCPU scans its own `vcpu_info` and
//! takes only the ports bound to it ([`collect_on`]); the smp mode keeps its own
//! per-vCPU counts and installs its own handler (`crate::smp`).
//!
//! # Invariants and hazards
//!
//! - The counters are atomics, touched by the handler (between two instructions
//!   of a wait, on the same CPU) and by the modes; nothing else is shared with it.
//! - Only ports this guest tracks are cleared: a pending bit of a masked port is
//!   left for whoever unmasks it, as Xen's 2-level ABI expects.
//! - Every wrapper takes any `u32` port: the hostile modes pass bad ones on
//!   purpose.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::evtchn::{
    EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_IPI, EVTCHNOP_BIND_VCPU,
    EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND, EVTCHNOP_STATUS, EVTCHNOP_UNMASK,
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnPortArg, EvtchnStatus,
};
use keel_hypercall::abi::hvm::{
    HVM_PARAM_CALLBACK_IRQ, HVMOP_SET_EVTCHN_UPCALL_VECTOR, HVMOP_SET_PARAM, HvmCallbackVia,
    XenHvmEvtchnUpcallVector, XenHvmParam,
};
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::sched::{SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_YIELD, SchedPoll};

use crate::hypercall::{self, Xen};
use crate::shared::{self, WORDS};
use crate::{arch, time, trap};

/// Ports with an event counter (all of the 2-level space).
pub const TRACKED: usize = 4096;
/// Ports whose last event time is kept.
pub const TIMED: usize = 64;

static COUNTS: [AtomicU32; TRACKED] = [const { AtomicU32::new(0) }; TRACKED];
static LAST_NS: [AtomicU64; TIMED] = [const { AtomicU64::new(0) }; TIMED];
static UPCALLS: AtomicU32 = AtomicU32::new(0);
static REGISTERED: AtomicBool = AtomicBool::new(false);
static STAMP: AtomicBool = AtomicBool::new(true);

/// Whether the upcall notes the system time of events on ports below [`TIMED`]
/// (on by default). Reading the pvclock reads the TSC, which a hypervisor may
/// trap; `mode=bench` turns it off to keep the handler free of exits.
pub fn stamp_events(on: bool) {
    STAMP.store(on, Ordering::Relaxed);
}

/// How the guest asks for its upcall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upcall {
    /// `HVMOP_set_evtchn_upcall_vector` for vCPU 0 (Linux's choice where Xen
    /// offers it).
    Vector,
    /// `HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ)` with a vector "callback via".
    Callback,
}

impl Upcall {
    /// How it is named on the command line (`upcall=vector|callback`) and in lines.
    pub fn name(self) -> &'static str {
        match self {
            Upcall::Vector => "vector",
            Upcall::Callback => "callback",
        }
    }
}

/// Installs the handler and asks for upcalls on [`trap::UPCALL_VECTOR`]; returns
/// the hypercall's result.
pub fn register_upcall(how: Upcall) -> i64 {
    trap::set_upcall_handler(upcall);
    let rc = match how {
        Upcall::Vector => set_upcall_vector(0),
        Upcall::Callback => {
            let arg = XenHvmParam {
                domid: DOMID_SELF,
                pad: 0,
                index: HVM_PARAM_CALLBACK_IRQ,
                value: HvmCallbackVia::Vector(trap::UPCALL_VECTOR).encode(),
            };
            hypercall::with_arg(arg.to_bytes(), |a| hypercall::hvm_op(HVMOP_SET_PARAM, a)).0
        }
    };
    if rc == 0 {
        REGISTERED.store(true, Ordering::Relaxed);
    }
    rc
}

/// `HVMOP_set_evtchn_upcall_vector(vcpu, trap::UPCALL_VECTOR)`: upcalls for
/// `vcpu` arrive on that vector (Xen: through `vcpu`'s local APIC, so only while
/// it is software-enabled, and each wants an EOI); returns the hypercall's
/// result. Xen expects each vCPU to ask for itself, as Linux does.
pub fn set_upcall_vector(vcpu: u32) -> i64 {
    let arg = XenHvmEvtchnUpcallVector {
        vcpu,
        vector: trap::UPCALL_VECTOR,
        pad: [0; 3],
    };
    hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::hvm_op(HVMOP_SET_EVTCHN_UPCALL_VECTOR, a)
    })
    .0
}

/// Whether upcalls were asked for successfully.
pub fn upcalls_registered() -> bool {
    REGISTERED.load(Ordering::Relaxed)
}

/// Upcall interrupts taken so far.
pub fn upcalls() -> u32 {
    UPCALLS.load(Ordering::Relaxed)
}

/// The upcall handler (runs with interrupts off, on the interrupted stack).
pub fn upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    collect();
}

/// Scans the shared-info bitmaps as the upcall does (or, once the guest is on
/// FIFO event channels, consumes its queues: [`crate::fifo::collect`]): clears
/// `evtchn_upcall_pending`, then takes every pending, unmasked port of every word
/// the selector names, counting each. Returns how many events it counted.
pub fn collect() -> u32 {
    if crate::fifo::is_active() {
        return crate::fifo::collect();
    }
    collect_on(0, |_| u64::MAX, record)
}

/// [`collect`] for vCPU `vcpu`, as Linux's 2-level upcall does on a vCPU of
/// its own: clears `vcpu_info[vcpu].evtchn_upcall_pending`, then takes the
/// selector words `vcpu_info[vcpu]` names and, in each, the pending, unmasked
/// ports that `owned(word)` has a bit for (the ports bound to this vCPU: another
/// vCPU's ports in the same word are left for it; their selector bit is in its
/// own `vcpu_info`). Each taken port's pending bit is cleared, then `seen(port)`
/// is called. Returns how many it took.
pub fn collect_on(vcpu: usize, owned: impl Fn(usize) -> u64, mut seen: impl FnMut(u32)) -> u32 {
    if !shared::is_mapped() {
        return 0;
    }
    let mut taken = 0;
    shared::upcall_pending_of(vcpu).store(0, Ordering::SeqCst);
    loop {
        let sel = shared::pending_sel_of(vcpu).swap(0, Ordering::SeqCst);
        if sel == 0 {
            break;
        }
        for w in bits(sel) {
            let w = w as usize;
            if w >= WORDS {
                continue;
            }
            loop {
                let ready = shared::pending(w).load(Ordering::SeqCst)
                    & !shared::mask(w).load(Ordering::SeqCst)
                    & owned(w);
                if ready == 0 {
                    break;
                }
                for b in bits(ready) {
                    shared::pending(w).fetch_and(!(1u64 << b), Ordering::SeqCst);
                    seen(w as u32 * 64 + b);
                    taken += 1;
                }
            }
        }
    }
    taken
}

/// The set bits of `word`, lowest first.
fn bits(word: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |b| word & (1 << b) != 0)
}

/// Counts one event on `port` (also for [`crate::fifo`]).
pub(crate) fn record(port: u32) {
    let p = port as usize;
    if p < TRACKED {
        COUNTS[p].fetch_add(1, Ordering::SeqCst);
    }
    if p < TIMED && STAMP.load(Ordering::Relaxed) {
        LAST_NS[p].store(time::now(), Ordering::SeqCst);
    }
}

/// Events seen on `port` since the last [`take`], which resets the count.
pub fn take(port: u32) -> u32 {
    COUNTS
        .get(port as usize)
        .map_or(0, |c| c.swap(0, Ordering::SeqCst))
}

/// Events seen on `port` since the last [`take`] (not reset).
pub fn count(port: u32) -> u32 {
    COUNTS
        .get(port as usize)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// System time at which the last event on `port` was counted (ports below
/// [`TIMED`]; 0 if none).
pub fn last_time(port: u32) -> u64 {
    LAST_NS
        .get(port as usize)
        .map_or(0, |t| t.load(Ordering::SeqCst))
}

/// `HYPERVISOR_event_channel_op(cmd, &arg)` on a stack copy of `bytes`.
fn op<const N: usize>(cmd: u32, bytes: [u8; N]) -> (i64, [u8; N]) {
    hypercall::with_arg(bytes, |a| hypercall::event_channel_op(cmd, a))
}

/// `EVTCHNOP_alloc_unbound(DOMID_SELF, remote)`: the new port, or the error.
pub fn alloc_unbound(remote: u16) -> Result<u32, i64> {
    alloc_unbound_in(DOMID_SELF, remote)
}

/// `EVTCHNOP_alloc_unbound(dom, remote)`.
pub fn alloc_unbound_in(dom: u16, remote: u16) -> Result<u32, i64> {
    let arg = EvtchnAllocUnbound {
        dom,
        remote_dom: remote,
        port: 0,
    };
    match op(EVTCHNOP_ALLOC_UNBOUND, arg.to_bytes()) {
        (0, out) => Ok(EvtchnAllocUnbound::from_bytes(&out).port),
        (rc, _) => Err(rc),
    }
}

/// `EVTCHNOP_bind_interdomain(remote_dom, remote_port)`: the local port.
pub fn bind_interdomain(remote_dom: u16, remote_port: u32) -> Result<u32, i64> {
    let arg = EvtchnBindInterdomain {
        remote_dom,
        pad: 0,
        remote_port,
        local_port: 0,
    };
    match op(EVTCHNOP_BIND_INTERDOMAIN, arg.to_bytes()) {
        (0, out) => Ok(EvtchnBindInterdomain::from_bytes(&out).local_port),
        (rc, _) => Err(rc),
    }
}

/// `EVTCHNOP_bind_virq(virq, vcpu)`: the port.
pub fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, i64> {
    let arg = EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    match op(EVTCHNOP_BIND_VIRQ, arg.to_bytes()) {
        (0, out) => Ok(EvtchnBindVirq::from_bytes(&out).port),
        (rc, _) => Err(rc),
    }
}

/// `EVTCHNOP_bind_ipi(vcpu)`: a port whose sends notify `vcpu` of this domain.
pub fn bind_ipi(vcpu: u32) -> Result<u32, i64> {
    let arg = EvtchnBindIpi { vcpu, port: 0 };
    match op(EVTCHNOP_BIND_IPI, arg.to_bytes()) {
        (0, out) => Ok(EvtchnBindIpi::from_bytes(&out).port),
        (rc, _) => Err(rc),
    }
}

/// `EVTCHNOP_close(port)`.
pub fn close(port: u32) -> i64 {
    op(EVTCHNOP_CLOSE, EvtchnPortArg { port }.to_bytes()).0
}

/// `EVTCHNOP_send(port)`.
pub fn send(port: u32) -> i64 {
    op(EVTCHNOP_SEND, EvtchnPortArg { port }.to_bytes()).0
}

/// `EVTCHNOP_send(port)` with interrupts enabled for the call: an upcall it
/// causes (a port of this vCPU's) has run by the time it returns.
pub fn send_irq(xen: &Xen, port: u32) -> i64 {
    hypercall::with_arg(EvtchnPortArg { port }.to_bytes(), |a| {
        // `a` is a live local the hypervisor only reads.
        call_irq(
            xen,
            nr::EVENT_CHANNEL_OP,
            [EVTCHNOP_SEND as usize, a, 0, 0, 0],
        )
    })
    .0
}

/// `EVTCHNOP_unmask(port)`.
pub fn unmask(port: u32) -> i64 {
    op(EVTCHNOP_UNMASK, EvtchnPortArg { port }.to_bytes()).0
}

/// `EVTCHNOP_bind_vcpu(port, vcpu)`.
pub fn bind_vcpu(port: u32, vcpu: u32) -> i64 {
    op(EVTCHNOP_BIND_VCPU, EvtchnBindVcpu { port, vcpu }.to_bytes()).0
}

/// `EVTCHNOP_status(dom, port)`: the filled-in structure, or the error.
pub fn status(dom: u16, port: u32) -> Result<EvtchnStatus, i64> {
    let arg = EvtchnStatus {
        dom,
        pad: 0,
        port,
        status: u32::MAX,
        vcpu: u32::MAX,
        u: [0; 8],
    };
    match op(EVTCHNOP_STATUS, arg.to_bytes()) {
        (0, out) => Ok(EvtchnStatus::from_bytes(&out)),
        (rc, _) => Err(rc),
    }
}

/// Hypercall `nr` made with interrupts enabled for exactly its duration
/// (`arch::hypercall_sti_cli`): an upcall pending when it returns runs before the
/// caller's next instruction. `args` are passed as given; any pointer among them
/// must be to memory the hypervisor may use (a live local or a `Page`).
fn call_irq(xen: &Xen, nr: u32, args: [usize; 5]) -> i64 {
    // SAFETY: as `hypercall::call`; the upcall gate is installed from the guest's
    // start (crate::trap) and its handler only touches atomics.
    unsafe { arch::hypercall_sti_cli(xen.vendor, u64::from(nr), args) as i64 }
}

/// `SCHEDOP_block` with interrupts enabled for the call: returns once an event
/// is pending (its upcall has run by then).
pub fn block(xen: &Xen) -> i64 {
    call_irq(xen, nr::SCHED_OP, [SCHEDOP_BLOCK as usize, 0, 0, 0, 0])
}

/// `SCHEDOP_yield` with interrupts enabled for the call: gives the pCPU to
/// another runnable vCPU if there is one, and runs whatever upcall or local
/// APIC interrupt became pending meanwhile. Never sleeps, so a wait built on it
/// cannot miss a wake-up (the smp mode's waits).
pub fn yield_irq(xen: &Xen) -> i64 {
    call_irq(xen, nr::SCHED_OP, [SCHEDOP_YIELD as usize, 0, 0, 0, 0])
}

/// `SCHEDOP_poll` on `ports` until `timeout` (absolute system time, 0 for none);
/// with `irq`, interrupts are enabled for the call so the upcall runs at once.
pub fn poll(xen: &Xen, ports: &[u32], timeout: u64, irq: bool) -> i64 {
    let mut list = [0u32; 8];
    let n = ports.len().min(list.len());
    list[..n].copy_from_slice(&ports[..n]);
    let arg = SchedPoll {
        ports: list.as_mut_ptr() as usize as u64,
        nr_ports: n as u32,
        pad: 0,
        timeout,
    };
    let (rc, _) = hypercall::with_arg(arg.to_bytes(), |a| {
        if irq {
            // `a` and the port list are live locals the hypervisor only reads.
            call_irq(xen, nr::SCHED_OP, [SCHEDOP_POLL as usize, a, 0, 0, 0])
        } else {
            hypercall::sched_op(SCHEDOP_POLL, a)
        }
    });
    // Keep the list alive (and its contents meaningful) until after the call.
    core::hint::black_box(&list);
    rc
}

/// How [`wait_for`] sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sleep {
    /// `SCHEDOP_block` (needs an upcall; only an event ends it, so a caller that
    /// wants a bound arms a timer on a bound `VIRQ_TIMER` first).
    Block,
    /// `SCHEDOP_poll` on the port with the deadline as its timeout.
    Poll,
}

/// Waits until an event on `port` has been counted (and takes it: returns the
/// count) or system time reaches `deadline` (returns 0).
pub fn wait_for(xen: &Xen, port: u32, deadline: u64, sleep: Sleep) -> u32 {
    let irq = upcalls_registered();
    loop {
        if !irq {
            collect();
        }
        let n = take(port);
        if n > 0 {
            return n;
        }
        if time::now() >= deadline {
            return 0;
        }
        match sleep {
            Sleep::Block if irq => {
                block(xen);
            }
            _ => {
                poll(xen, &[port], deadline, irq);
            }
        }
    }
}
