//! `mode=bench vcpus=2`: an event-channel IPI to a vCPU on another pCPU and back,
//! counted (the metric `evtchn_ipi_cross_cpu_round_trip`, see the parent module).
//!
//! # How
//!
//! vCPU 0 maps shared info, asks for the domain's callback-vector upcall and
//! installs [`on_upcall`], then starts vCPU 1 with `crate::smp::vcpus`
//! (`VCPUOP_initialise` with a 64-bit context, then `VCPUOP_up`), telling it not
//! to ask for an upcall vector of its own: the callback vector reaches every vCPU
//! on both hypervisors and needs no local-APIC EOI (Xen's per-vCPU vector does,
//! an MMIO exit per upcall the metric would count). vCPU 0 binds two IPI ports, one notifying vCPU 1
//! (the request) and one notifying itself (the answer), records them in the
//! vCPUs' [`Slot`](crate::smp::vcpus::Slot)s (`ipi_in`/`ipi_out`, and each port in its vCPU's `owned`
//! bitmap), and posts [`Cmd::Idle`]: vCPU 1 waits in `sti; hlt` from then on.
//!
//! A round: vCPU 0 sends the request, then waits in `sti; hlt` until its handler
//! has counted an answer. vCPU 1's handler counts the request and sends the
//! answer before it returns.
//!
//! # What `-icount` makes of it
//!
//! QEMU's `-icount` runs all CPUs on one thread, in turns: a CPU runs until it
//! halts, until its share of the time to the next virtual-clock timer is used
//! up, or until it moves that timer (a local APIC timer armed to fire first);
//! an interrupt sent to another CPU only marks it pending there. A halted CPU
//! retires nothing, and the clock warps to the next timer only when every CPU
//! is halted. The TSC is one clock for the machine, advanced by every
//! instruction either CPU retires, so the delta vCPU 0 reads is the sum of what
//! both executed. Neither CPU spins waiting for the other, so the sum does not
//! depend on where QEMU switches; and in a round one CPU always has something
//! pending, so no warp is counted. Which paths run can depend on it, though:
//! after the request, pCPU 0 carries on (the hypercall returns, vCPU 0 halts,
//! the hypervisor heads for idle) until it halts or arms its timer, and only
//! then does pCPU 1 wake, run vCPU 1's handler and its answer, and go idle in
//! turn; whether pCPU 0 had halted by then is QEMU's order, not the hardware's
//! (docs/performance.md, "The cross-CPU IPI", has the case keel meets).
//!
//! # Invariants and hazards
//!
//! - The handler runs on either vCPU and takes only the ports bound to the vCPU
//!   it runs on ([`events::collect_on`] with that vCPU's `owned` bitmap): neither
//!   vCPU takes the other's event.
//! - A request or answer that never arrives leaves vCPU 0 halted: there is no
//!   timeout inside a round, because reading the clock there would add an RDTSC
//!   exit on Xen to every round. The harness's time limit ends such a boot, and
//!   keel ends a machine whose vCPUs all wait for nothing.

use core::sync::atomic::Ordering;

use keel_hypercall::abi::vcpu::VCPUOP_UP;

use super::{Failed, WARMUP, error, expect, fail, initial_domain, metric};
use crate::checks::Rc;
use crate::hypercall::{self, Xen};
use crate::smp::lapic;
use crate::smp::vcpus::{self, Cmd, SLOTS};
use crate::start_info::BootInfo;
use crate::{arch, events, shared, time, trap};

/// The metric's name.
pub const METRIC: &str = "evtchn_ipi_cross_cpu_round_trip";

/// The vCPU that answers.
const PEER: usize = 1;

/// How long (system time) vCPU 0 waits for vCPU 1 outside the rounds: to come
/// online, to start waiting, to take the last request and its next command.
const SETUP_TIMEOUT: u64 = 10 * time::S;

/// The two IPI ports.
#[derive(Clone, Copy)]
struct Ports {
    /// Notifies vCPU 1: the request.
    to_peer: u32,
    /// Notifies vCPU 0: the answer.
    to_me: u32,
}

/// Measures the IPI round trip (and `rdtsc_overhead`, for the harness's net).
pub(super) fn measure_all(xen: &Xen, boot: &BootInfo, n: usize) -> Result<(), Failed> {
    initial_domain(boot)?;
    // Before vCPU 1 is up: nothing but the hypervisor can interfere.
    metric("rdtsc_overhead", n, || Ok(()))?;
    let p = setup(xen)?;
    metric(METRIC, n, || round_trip(p))?;
    let rounds = (WARMUP + n) as u32;
    check_counts(p, rounds)?;
    stop(xen, p)?;
    check_counts(p, rounds + 1)
}

/// Brings up vCPU 1, binds and unmasks the ports, and leaves vCPU 1 waiting in
/// `sti; hlt`.
fn setup(xen: &Xen) -> Result<Ports, Failed> {
    expect("XENMEM_add_to_physmap(shared_info)", shared::map(), |rc| {
        rc == 0
    })?;
    expect(
        "HVM_PARAM_CALLBACK_IRQ",
        events::register_upcall(events::Upcall::Callback),
        |rc| rc == 0,
    )?;
    trap::set_upcall_handler(on_upcall);

    let up = vcpus::is_up(PEER as u32);
    if up != 0 {
        return Err(error(format_args!(
            "VCPUOP_is_up({PEER}) returned {} before any start, not 0: \
             boot Dom0 with two vCPUs (dom0_max_vcpus=2)",
            Rc(up)
        )));
    }
    // vCPU 1 software-enables its local APIC as it starts: map the page as a
    // device page first (vCPU 1 shares these page tables).
    if let Err(why) = lapic::map_uncached() {
        fail(format_args!("mapping the local APIC: {why}"))?;
    }
    vcpus::APS_SET_UPCALL_VECTOR.store(false, Ordering::SeqCst);
    let ctx = vcpus::context64(PEER);
    expect(
        "VCPUOP_initialise(1)",
        vcpus::initialise(PEER as u32, &ctx),
        |rc| rc == 0,
    )?;
    expect(
        "VCPUOP_up(1)",
        hypercall::vcpu_op(VCPUOP_UP, PEER as u32, 0),
        |rc| rc == 0,
    )?;
    let peer = &SLOTS[PEER];
    if !wait(xen, || peer.online.load(Ordering::SeqCst)) {
        fail(format_args!(
            "vCPU 1 not online {} s after VCPUOP_up",
            SETUP_TIMEOUT / time::S
        ))?;
    }

    let bind = |vcpu: usize| {
        events::bind_ipi(vcpu as u32).map_err(|rc| {
            error(format_args!(
                "EVTCHNOP_bind_ipi({vcpu}) returned {}",
                Rc(rc)
            ))
        })
    };
    let p = Ports {
        to_peer: bind(PEER)?,
        to_me: bind(0)?,
    };
    peer.own(p.to_peer);
    SLOTS[0].own(p.to_me);
    peer.ipi_in.store(p.to_peer, Ordering::SeqCst);
    peer.ipi_out.store(p.to_me, Ordering::SeqCst);
    for port in [p.to_peer, p.to_me] {
        expect("EVTCHNOP_unmask", events::unmask(port), |rc| rc == 0)?;
    }

    vcpus::post(PEER, Cmd::Idle, [0; 2]);
    if !wait(xen, || vcpus::result(PEER, 0) == 1) {
        fail(format_args!("vCPU 1 did not start waiting"))?;
    }
    Ok(p)
}

/// One round trip: the request, then `sti; hlt` until the answer is counted.
fn round_trip(p: Ports) -> Result<(), Failed> {
    let answers = vcpus::port_events(p.to_me);
    let rc = events::send(p.to_peer);
    if rc != 0 {
        return fail(format_args!("EVTCHNOP_send to vCPU 1 returned {}", Rc(rc)));
    }
    while vcpus::port_events(p.to_me) == answers {
        arch::wait_for_interrupt();
    }
    Ok(())
}

/// Ends vCPU 1's wait: posts a `Ping`, sends the request that wakes it to see
/// it (answered as every request), and waits for both.
fn stop(xen: &Xen, p: Ports) -> Result<(), Failed> {
    let answers = vcpus::port_events(p.to_me);
    let seq = vcpus::post(PEER, Cmd::Ping, [0; 2]);
    expect("EVTCHNOP_send", events::send(p.to_peer), |rc| rc == 0)?;
    if !wait(xen, || {
        vcpus::done(PEER, seq) && vcpus::port_events(p.to_me) != answers
    }) {
        fail(format_args!("vCPU 1 did not leave its wait"))?;
    }
    Ok(())
}

/// `Ok` if exactly `rounds` requests reached vCPU 1 and `rounds` answers
/// reached vCPU 0.
fn check_counts(p: Ports, rounds: u32) -> Result<(), Failed> {
    let (asked, answered) = (vcpus::port_events(p.to_peer), vcpus::port_events(p.to_me));
    let stray = vcpus::UNCOUNTED_EVENTS.load(Ordering::SeqCst);
    if asked != rounds || answered != rounds || stray != 0 {
        return fail(format_args!(
            "vCPU 1 counted {asked} requests and vCPU 0 {answered} answers, \
             expected {rounds} each ({stray} events on ports beyond the counted)"
        ));
    }
    Ok(())
}

/// Waits (yielding, bounded by [`SETUP_TIMEOUT`]) for `cond`.
fn wait(xen: &Xen, cond: impl FnMut() -> bool) -> bool {
    vcpus::wait_until(xen, time::now().saturating_add(SETUP_TIMEOUT), cond)
}

/// The upcall, on either vCPU: takes the ports bound to the vCPU it runs on
/// from that vCPU's `vcpu_info` and counts them; on vCPU 1 each request is
/// answered from here, before the handler returns to its `sti; hlt`.
fn on_upcall() {
    let me = vcpus::this_vcpu();
    let s = &SLOTS[me];
    let (request, answer) = (
        s.ipi_in.load(Ordering::SeqCst),
        s.ipi_out.load(Ordering::SeqCst),
    );
    events::collect_on(
        me,
        |w| s.owned[w].load(Ordering::SeqCst),
        |port| {
            vcpus::count_event(port);
            if me == PEER && port == request && answer != 0 {
                // An answer that fails leaves vCPU 0 waiting: the counts
                // checked afterwards (or the harness's time limit) tell.
                events::send(answer);
            }
        },
    );
}
