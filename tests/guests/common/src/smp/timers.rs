//! The smp mode's step 6: per-vCPU timers. Every vCPU binds its own
//! `VIRQ_TIMER` and arms its own single-shot timer (`VCPUOP_set_singleshot_timer`
//! works only on the caller); each must fire once, not early, on that vCPU.
//! vCPU 0 then sets and stops another vCPU's periodic timer, which any vCPU of
//! the domain may do.

use core::sync::atomic::Ordering;

use keel_hypercall::abi::Errno;

use super::vcpus::{self, Cmd, MAX_VCPUS, SLOTS};
use super::{EARLY_SLACK, PERIOD, PERIODIC_TICKS, Smp, TIMER_DELAY, Why, settle, timeout};
use crate::checks::Rc;
use crate::events;
use crate::time::{self, Ms, S};

impl Smp<'_> {
    pub(super) fn timers(&self) {
        let c = &self.c;
        let mut why = Why::new();
        self.need_all_online(&mut why);
        let wrong: [u32; MAX_VCPUS] =
            core::array::from_fn(|k| SLOTS[k].wrong_apic.load(Ordering::SeqCst));
        let seqs: [u32; MAX_VCPUS] = core::array::from_fn(|k| {
            if (1..self.n).contains(&k) && SLOTS[k].online.load(Ordering::SeqCst) {
                vcpus::post(k, Cmd::Timer, [TIMER_DELAY, 0])
            } else {
                0
            }
        });
        // vCPU 0 runs the same test on itself meanwhile.
        let own = vcpus::timer_test(self.xen, 0, TIMER_DELAY);
        let mut results = [[0i64; 4]; MAX_VCPUS];
        results[0] = own;
        for k in self.aps() {
            if self.wait(|| vcpus::done(k, seqs[k])) {
                results[k] = core::array::from_fn(|i| vcpus::result(k, i));
            } else {
                why.set(format_args!("vCPU {k} did not finish its timer test"));
                results[k] = [0, 0, vcpus::NEVER, 0];
            }
        }
        let mut fired = Why::new();
        let online = |k: usize| k == 0 || SLOTS[k].online.load(Ordering::SeqCst);
        for k in (0..self.n).filter(|&k| online(k)) {
            let [port, rc, late, count] = results[k];
            if port <= 0 {
                why.set(format_args!(
                    "vCPU {k}: bind_virq(VIRQ_TIMER, {k}) returned {}",
                    Rc(port)
                ));
                continue;
            }
            if late != vcpus::NEVER {
                c.info(format_args!(
                    "vCPU {k}: VIRQ_TIMER on port {port} came {} after the deadline",
                    Ms(late)
                ));
            }
            if rc != 0 {
                fired.set(format_args!(
                    "vCPU {k}: set_singleshot_timer returned {}",
                    Rc(rc)
                ));
            } else if late == vcpus::NEVER {
                fired.set(format_args!(
                    "vCPU {k}: no VIRQ_TIMER within {} s",
                    timeout() / S
                ));
            } else if late < -(EARLY_SLACK as i64) {
                fired.set(format_args!(
                    "vCPU {k}: fired {} before the deadline",
                    Ms(-late)
                ));
            } else if count != 1 {
                fired.set(format_args!("vCPU {k}: {count} timer events, expected 1"));
            } else if SLOTS[k].wrong_apic.load(Ordering::SeqCst) != wrong[k] {
                fired.set(format_args!(
                    "vCPU {k}: an interrupt ran while its local APIC ID register named another vCPU"
                ));
            }
        }
        why.report(c, "VIRQ_TIMER bound on every vCPU");
        self.need_all_online(&mut fired);
        fired.report(c, "singleshot timer fires on every vCPU");

        c.errno(
            "VCPUOP_set_singleshot_timer for another vCPU refused",
            time::set_singleshot_for(1, time::now() + TIMER_DELAY, false),
            Errno::EINVAL,
        );

        // The periodic timer of another vCPU, set and stopped by vCPU 0.
        let k = self.n - 1;
        let s = &SLOTS[k];
        let mut why = Why::new();
        let mut stopped = Why::new();
        if !online(k) || s.timer_port.load(Ordering::SeqCst) == 0 {
            why.set(format_args!(
                "vCPU {k} is not online with a VIRQ_TIMER port"
            ));
            stopped.set(format_args!(
                "vCPU {k} is not online with a VIRQ_TIMER port"
            ));
        } else {
            let (base, own0) = (
                s.timer_events.load(Ordering::SeqCst),
                SLOTS[0].timer_events.load(Ordering::SeqCst),
            );
            let rc = time::set_periodic_for(k as u32, PERIOD);
            let ticked = rc == 0
                && self.wait(|| {
                    s.timer_events.load(Ordering::SeqCst).wrapping_sub(base) >= PERIODIC_TICKS
                });
            let rc_stop = time::stop_periodic_for(k as u32);
            let ticks = s.timer_events.load(Ordering::SeqCst).wrapping_sub(base);
            let own = SLOTS[0]
                .timer_events
                .load(Ordering::SeqCst)
                .wrapping_sub(own0);
            if rc != 0 || !ticked || own != 0 {
                why.set(format_args!(
                    "set_periodic_timer(vCPU {k}) returned {}; {ticks} ticks there, {own} on vCPU 0",
                    Rc(rc)
                ));
            }
            // A tick on its way when the timer stopped may still arrive.
            vcpus::pause_for(self.xen, 2 * PERIOD);
            let after = s.timer_events.load(Ordering::SeqCst);
            vcpus::pause_for(self.xen, 5 * PERIOD + settle());
            let more = s.timer_events.load(Ordering::SeqCst).wrapping_sub(after);
            if rc_stop != 0 || more != 0 {
                stopped.set(format_args!(
                    "stop_periodic_timer(vCPU {k}) returned {}; {more} ticks after",
                    Rc(rc_stop)
                ));
            }
        }
        why.report(c, "periodic timer set for another vCPU fires there");
        stopped.report(c, "VCPUOP_stop_periodic_timer for another vCPU stops it");

        // The timer ports are not needed any more.
        for s in &SLOTS[..self.n] {
            let port = s.timer_port.swap(0, Ordering::SeqCst);
            if port != 0 {
                events::close(port);
                vcpus::disown(port);
            }
        }
    }
}
