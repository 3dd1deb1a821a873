//! The smp mode's step 8: hostile requests while the APs run — an event
//! channel moved to a down vCPU and raised, IPIs, INIT and SIPI to APIC ids
//! nobody has, and a storm of INIT + SIPI pairs at one AP.
//!
//! The storm: each INIT takes the vCPU down and resets it, each SIPI restarts it
//! in the trampoline, wherever the previous start had got to. The AP's gate
//! ([`vcpus::Slot::gate_open`]) is closed for the storm, so every start waits
//! there, touching nothing shared, until vCPU 0 has sent the last pair; then the
//! one start that is left (the last SIPI's: once the ICR write completes the
//! INIT or SIPI has taken effect, Xen even pauses the sender until it has) goes
//! through, and the AP must come online exactly once.

use core::sync::atomic::Ordering;

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::vcpu::{VCPUOP_DOWN, VCPUOP_UP};

use super::vcpus::{self, Cmd, MAX_VCPUS, SLOTS, apic_id};
use super::{Smp, Why, lapic, trampoline};
use crate::checks::Rc;
use crate::time::{self, Ms};
use crate::{events, hypercall, shared};

impl Smp<'_> {
    pub(super) fn hostile_after(&self) {
        self.bind_vcpu_to_down();
        self.missing_apic_ids();
        self.storm();
    }

    /// A loopback channel's port moved to a down vCPU, then raised.
    fn bind_vcpu_to_down(&self) {
        let c = &self.c;
        let k = 1;
        let s = &SLOTS[k];
        let (bound, waits, delivered) = (
            "EVTCHNOP_bind_vcpu to a down vCPU accepted",
            "event for a down vCPU waits in its selector",
            "event for a down vCPU delivered when it comes up",
        );
        if !s.online.load(Ordering::SeqCst) {
            for name in [bound, waits, delivered] {
                c.fail(name, format_args!("vCPU {k} is not online"));
            }
            return;
        }
        let (a, b) = match events::alloc_unbound(DOMID_SELF)
            .and_then(|a| events::bind_interdomain(DOMID_SELF, a).map(|b| (a, b)))
        {
            Ok(ab) => ab,
            Err(rc) => {
                for name in [bound, waits, delivered] {
                    c.fail(
                        name,
                        format_args!(
                            "no loopback channel: alloc_unbound/bind_interdomain returned {}",
                            Rc(rc)
                        ),
                    );
                }
                return;
            }
        };
        // b's end is vCPU 0's (the bind set it pending, as Xen does: a "may
        // have missed" notification, not counted here).
        SLOTS[0].own(b);
        let rc_down = hypercall::vcpu_op(VCPUOP_DOWN, k as u32, 0);
        let is_down = self.wait(|| vcpus::is_up(k as u32) == 0);
        let rc = events::bind_vcpu(a, k as u32);
        c.check(
            bound,
            rc == 0 && rc_down == 0 && is_down,
            format_args!(
                "VCPUOP_down returned {} (down: {is_down}); bind_vcpu returned {}",
                Rc(rc_down),
                Rc(rc)
            ),
        );
        s.own(a);
        let before = vcpus::port_events(a);
        let rc_send = events::send(b);
        self.settle();
        let w = (a / 64) as usize;
        let (pending, sel, upcall, taken) = (
            shared::port_pending(a),
            shared::pending_sel_of(k).load(Ordering::SeqCst) & (1 << w) != 0,
            shared::upcall_pending_of(k).load(Ordering::SeqCst) != 0,
            vcpus::port_events(a) - before,
        );
        c.check(
            waits,
            rc_send == 0 && pending && sel && upcall && taken == 0,
            format_args!(
                "send returned {}; port {a} pending {pending}, in vCPU {k}'s selector {sel}, its upcall pending {upcall}, taken {taken} times",
                Rc(rc_send)
            ),
        );
        let rc_up = hypercall::vcpu_op(VCPUOP_UP, k as u32, 0);
        let came = self.wait(|| vcpus::port_events(a) != before);
        self.settle();
        let taken = vcpus::port_events(a) - before;
        c.check(
            delivered,
            rc_up == 0 && came && taken == 1,
            format_args!(
                "VCPUOP_up returned {}; the event was taken {taken} times",
                Rc(rc_up)
            ),
        );
        for p in [a, b] {
            events::close(p);
            vcpus::disown(p);
        }
    }

    /// APIC ids nobody has (below 0xFF, the broadcast id).
    fn missing_ids(&self) -> [u32; 2] {
        let taken = |id: u32| (0..self.n).any(|k| apic_id(k) == id);
        let mut out = [0xFE, 0xFD];
        let mut found = 0;
        for id in [1u32, 2 * self.n as u32].into_iter().chain(3..0xFF) {
            if found < 2 && id < 0xFF && !taken(id) && !out[..found].contains(&id) {
                out[found] = id;
                found += 1;
            }
        }
        out
    }

    fn missing_apic_ids(&self) {
        let c = &self.c;
        let ids = self.missing_ids();
        c.info(format_args!(
            "APIC ids nobody has: {} and {}",
            ids[0], ids[1]
        ));

        let mut why = Why::new();
        self.need_all_online(&mut why);
        let before = self.ipi_counts();
        for &id in &ids {
            if !lapic::send_fixed(id) {
                why.set(format_args!("the ICR stayed busy for APIC id {id}"));
            }
        }
        self.settle();
        self.ipi_deltas(&mut why, &before, |_| 0);
        if let Some(k) = self.ping_all() {
            why.set(format_args!("vCPU {k} does not answer after"));
        }
        why.report(c, "fixed IPI to a missing APIC id goes nowhere");

        let mut why = Why::new();
        self.need_all_online(&mut why);
        if !trampoline::installed() {
            // A start nobody expects would run whatever is in the page.
            why.set(format_args!("no trampoline"));
            why.report(c, "INIT and SIPI to a missing APIC id go nowhere");
            return;
        }
        let arrivals: [u32; MAX_VCPUS] =
            core::array::from_fn(|k| SLOTS[k].arrivals.load(Ordering::SeqCst));
        let (entries, bad) = (
            trampoline::entries(),
            vcpus::BAD_STARTS.load(Ordering::SeqCst),
        );
        for &id in &ids {
            if !lapic::send_init(id) || !lapic::send_startup(id, trampoline::PAGE) {
                why.set(format_args!("the ICR stayed busy for APIC id {id}"));
            }
        }
        self.settle();
        if let Some(k) =
            (1..self.n).find(|&k| SLOTS[k].arrivals.load(Ordering::SeqCst) != arrivals[k])
        {
            why.set(format_args!("vCPU {k} restarted"));
        }
        let (ran, strays) = (
            trampoline::entries() - entries,
            vcpus::BAD_STARTS.load(Ordering::SeqCst) - bad,
        );
        if ran != 0 || strays != 0 {
            why.set(format_args!(
                "the trampoline was begun {ran} times, {strays} stray starts"
            ));
        }
        if let Some(k) = self.ping_all() {
            why.set(format_args!("vCPU {k} does not answer after"));
        }
        if let Some(k) = (0..self.n as u32).find(|&k| vcpus::is_up(k) != 1) {
            why.set(format_args!(
                "VCPUOP_is_up({k}) returned {}",
                Rc(vcpus::is_up(k))
            ));
        }
        why.report(c, "INIT and SIPI to a missing APIC id go nowhere");
    }

    /// `storm` INIT + SIPI pairs at an online AP: each INIT resets it, each
    /// SIPI restarts it in the trampoline; its gate holds every start until the
    /// storm is over, so exactly one start (the last SIPI's) gets through.
    fn storm(&self) {
        let k = self.n - 1;
        let s = &SLOTS[k];
        let mut why = Why::new();
        if !trampoline::installed() {
            why.set(format_args!("no trampoline"));
        }
        if !why.is_empty() || !s.online.load(Ordering::SeqCst) {
            why.set(format_args!("vCPU {k} is not online"));
            why.report(&self.c, "INIT+SIPI storm restarts the vCPU once");
            return;
        }
        let (arrivals, gate, entries) = (
            s.arrivals.load(Ordering::SeqCst),
            s.gate_reached.load(Ordering::SeqCst),
            trampoline::entries(),
        );
        s.gate_open.store(false, Ordering::SeqCst);
        s.online.store(false, Ordering::SeqCst);
        trampoline::hand_off(vcpus::stack_top(k), k as u64);
        let t0 = time::now();
        let mut busy = 0u32;
        for _ in 0..self.storm {
            if !lapic::send_init(apic_id(k)) || !lapic::send_startup(apic_id(k), trampoline::PAGE) {
                busy += 1;
            }
        }
        let took = time::now() - t0;
        // Let the last start reach the gate (it may be there already), then
        // open it.
        self.wait(|| s.gate_reached.load(Ordering::SeqCst) != gate);
        s.gate_open.store(true, Ordering::SeqCst);
        let online = self.wait(|| s.online.load(Ordering::SeqCst));
        self.settle();
        trampoline::hand_off(vcpus::stray_stack_top(), u64::MAX);
        let answered = online && self.command(k, Cmd::Ping, [0; 2]);
        let (got, at_gate, ran) = (
            s.arrivals.load(Ordering::SeqCst) - arrivals,
            s.gate_reached.load(Ordering::SeqCst) - gate,
            trampoline::entries() - entries,
        );
        self.c.info(format_args!(
            "{} INIT+SIPI pairs to vCPU {k} in {}: trampoline begun {ran} times, gate reached {at_gate} times",
            self.storm,
            Ms(took as i64)
        ));
        if busy != 0 || !online || !answered || got != 1 || vcpus::is_up(k as u32) != 1 {
            why.set(format_args!(
                "ICR busy {busy} times; online {online}, answers {answered}, came through {got} times, VCPUOP_is_up {}",
                Rc(vcpus::is_up(k as u32))
            ));
        }
        why.report(&self.c, "INIT+SIPI storm restarts the vCPU once");
    }
}
