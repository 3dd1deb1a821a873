//! The smp mode's step 5: IPIs both ways, by event channel (`EVTCHNOP_bind_ipi`,
//! each AP binding its own ports) and by local APIC (fixed IPIs to an APIC id,
//! and the self and all-excluding-self shorthands).
//!
//! An IPI is a pending bit (event channel) or an IRR bit (local APIC): two sent
//! before the first is taken make one. So the counts are made exact by round
//! trips: vCPU 0 sends one, the AP answers once it has counted it, vCPU 0 sends
//! the next once it has counted the answer; and the shorthand checks send one.

use core::sync::atomic::Ordering;

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::evtchn::EVTCHNSTAT_IPI;

use super::vcpus::{self, Cmd, MAX_VCPUS, SLOTS, apic_id};
use super::{Smp, Why, lapic};
use crate::checks::Rc;
use crate::time::{self, Ms};
use crate::{events, trap};

impl Smp<'_> {
    pub(super) fn ipis(&self) {
        let c = &self.c;
        // Each AP binds its own ports, concurrently.
        let mut why = Why::new();
        self.need_all_online(&mut why);
        let seqs: [u32; MAX_VCPUS] = core::array::from_fn(|k| {
            if (1..self.n).contains(&k) && SLOTS[k].online.load(Ordering::SeqCst) {
                vcpus::post(k, Cmd::BindIpis, [0; 2])
            } else {
                0
            }
        });
        for k in self.aps() {
            if !self.wait(|| vcpus::done(k, seqs[k])) {
                why.set(format_args!("vCPU {k} did not answer"));
                continue;
            }
            for (i, what) in [(0, "to itself"), (1, "to vCPU 0")] {
                let rc = vcpus::result(k, i);
                if rc <= 0 {
                    why.set(format_args!(
                        "vCPU {k}: bind_ipi {what} returned {}",
                        Rc(rc)
                    ));
                }
            }
        }
        why.report(c, "EVTCHNOP_bind_ipi on every vCPU");

        let mut why = Why::new();
        for k in self.aps() {
            let s = &SLOTS[k];
            for (port, vcpu) in [
                (s.ipi_in.load(Ordering::SeqCst), k as u32),
                (s.ipi_out.load(Ordering::SeqCst), 0),
            ] {
                match events::status(DOMID_SELF, port) {
                    Ok(st) if st.status == EVTCHNSTAT_IPI && st.vcpu == vcpu => {}
                    Ok(st) => why.set(format_args!(
                        "port {port}: status {}, vcpu {}; expected IPI (5) on vCPU {vcpu}",
                        st.status, st.vcpu
                    )),
                    Err(rc) => why.set(format_args!("port {port}: returned {}", Rc(rc))),
                }
            }
        }
        why.report(c, "EVTCHNOP_status names each IPI port's vCPU");

        self.evtchn_round_trips();
        self.lapic_round_trips();
        self.shorthands();
    }

    fn evtchn_round_trips(&self) {
        let mut why = Why::new();
        self.need_all_online(&mut why);
        let rounds = u64::from(self.rounds);
        for k in self.aps() {
            let s = &SLOTS[k];
            let (inbound, outbound) = (
                s.ipi_in.load(Ordering::SeqCst),
                s.ipi_out.load(Ordering::SeqCst),
            );
            if inbound == 0 || outbound == 0 {
                why.set(format_args!("vCPU {k} has no IPI ports"));
                continue;
            }
            let (in0, out0) = (vcpus::port_events(inbound), vcpus::port_events(outbound));
            let t0 = time::now();
            let seq = vcpus::post(k, Cmd::EchoEvtchn, [rounds, u64::from(in0)]);
            let mut done = 0;
            for i in 0..rounds {
                let rc = events::send(inbound);
                if rc != 0 {
                    why.set(format_args!("vCPU {k}: send returned {}", Rc(rc)));
                    break;
                }
                let want = u64::from(out0) + i + 1;
                if !self.wait(|| u64::from(vcpus::port_events(outbound)) >= want) {
                    why.set(format_args!("vCPU {k}: no answer to round trip {}", i + 1));
                    break;
                }
                done += 1;
            }
            let finished = self.wait(|| vcpus::done(k, seq));
            self.settle();
            let (got_in, got_out) = (
                vcpus::port_events(inbound) - in0,
                vcpus::port_events(outbound) - out0,
            );
            self.c.info(format_args!(
                "vCPU {k}: {done} event-channel round trips in {}",
                Ms((time::now() - t0) as i64)
            ));
            if !finished || vcpus::result(k, 1) != 0 {
                why.set(format_args!(
                    "vCPU {k} answered {} times, then {}",
                    vcpus::result(k, 0),
                    Rc(vcpus::result(k, 1))
                ));
            }
            if u64::from(got_in) != rounds || u64::from(got_out) != rounds {
                why.set(format_args!(
                    "vCPU {k}: {got_in} events to it and {got_out} back, expected {rounds} each"
                ));
            }
        }
        why.report(&self.c, "event-channel IPI round trips");
    }

    fn lapic_round_trips(&self) {
        let mut why = Why::new();
        self.need_all_online(&mut why);
        let rounds = u64::from(self.rounds);
        let bsp = &SLOTS[0];
        for k in self.aps() {
            let s = &SLOTS[k];
            let (ap0, bsp0) = (
                s.lapic_ipis.load(Ordering::SeqCst),
                bsp.lapic_ipis.load(Ordering::SeqCst),
            );
            let t0 = time::now();
            let seq = vcpus::post(k, Cmd::EchoLapic, [rounds, u64::from(ap0)]);
            let mut done = 0;
            for i in 0..rounds {
                if !lapic::send_fixed(apic_id(k)) {
                    why.set(format_args!("vCPU {k}: the ICR stayed busy"));
                    break;
                }
                let want = u64::from(bsp0) + i + 1;
                if !self.wait(|| u64::from(bsp.lapic_ipis.load(Ordering::SeqCst)) >= want) {
                    why.set(format_args!("vCPU {k}: no answer to round trip {}", i + 1));
                    break;
                }
                done += 1;
            }
            let finished = self.wait(|| vcpus::done(k, seq));
            self.settle();
            let (got_ap, got_bsp) = (
                s.lapic_ipis.load(Ordering::SeqCst) - ap0,
                bsp.lapic_ipis.load(Ordering::SeqCst) - bsp0,
            );
            self.c.info(format_args!(
                "vCPU {k}: {done} fixed-IPI round trips to APIC id {} in {}",
                apic_id(k),
                Ms((time::now() - t0) as i64)
            ));
            if !finished || vcpus::result(k, 1) != 0 {
                why.set(format_args!(
                    "vCPU {k} answered {} times, then {}",
                    vcpus::result(k, 0),
                    Rc(vcpus::result(k, 1))
                ));
            }
            if u64::from(got_ap) != rounds || u64::from(got_bsp) != rounds {
                why.set(format_args!(
                    "vCPU {k}: {got_ap} IPIs to it and {got_bsp} back, expected {rounds} each"
                ));
            }
        }
        why.report(&self.c, "fixed IPI round trips");
    }

    /// Every vCPU's fixed-IPI count.
    pub(super) fn ipi_counts(&self) -> [u32; MAX_VCPUS] {
        core::array::from_fn(|k| SLOTS[k].lapic_ipis.load(Ordering::SeqCst))
    }

    /// Records in `why` every vCPU whose fixed-IPI count moved from `before` by
    /// other than `want(k)`.
    pub(super) fn ipi_deltas(
        &self,
        why: &mut Why,
        before: &[u32; MAX_VCPUS],
        want: impl Fn(usize) -> u32,
    ) {
        let now = self.ipi_counts();
        for k in 0..self.n {
            let got = now[k].wrapping_sub(before[k]);
            if got != want(k) {
                why.set(format_args!(
                    "vCPU {k} took {got} IPIs, expected {}",
                    want(k)
                ));
            }
        }
    }

    fn shorthands(&self) {
        let c = &self.c;
        // Self.
        let mut why = Why::new();
        let before = self.ipi_counts();
        if !lapic::send(
            0,
            lapic::FIXED | lapic::LEVEL_ASSERT | lapic::TO_SELF | u32::from(trap::IPI_VECTOR),
        ) {
            why.set(format_args!("the ICR stayed busy"));
        }
        self.wait(|| SLOTS[0].lapic_ipis.load(Ordering::SeqCst) != before[0]);
        self.settle();
        self.ipi_deltas(&mut why, &before, |k| u32::from(k == 0));
        why.report(c, "fixed IPI to self");

        // All excluding self.
        let mut why = Why::new();
        self.need_all_online(&mut why);
        let before = self.ipi_counts();
        if !lapic::send(
            0,
            lapic::FIXED
                | lapic::LEVEL_ASSERT
                | lapic::TO_ALL_EXCLUDING_SELF
                | u32::from(trap::IPI_VECTOR),
        ) {
            why.set(format_args!("the ICR stayed busy"));
        }
        self.wait(|| {
            self.aps()
                .all(|k| SLOTS[k].lapic_ipis.load(Ordering::SeqCst) != before[k])
        });
        self.settle();
        self.ipi_deltas(&mut why, &before, |k| u32::from(k != 0));
        why.report(c, "fixed IPI to all excluding self");
    }
}
