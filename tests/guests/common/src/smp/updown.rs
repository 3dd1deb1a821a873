//! The smp mode's step 7: vCPUs going down and coming back — `VCPUOP_down` of
//! another vCPU and `VCPUOP_up` (it resumes where it was, no restart), a vCPU's
//! `VCPUOP_down` of itself (the call returns once another vCPU ups it), and HLT
//! with interrupts off (Xen's `hvm_hlt` takes the vCPU down) followed by INIT +
//! SIPI (a new start, through the trampoline).

use core::sync::atomic::Ordering;

use keel_hypercall::abi::vcpu::{VCPUOP_DOWN, VCPUOP_UP};

use super::vcpus::{self, Cmd, SLOTS};
use super::{Smp, Why, timeout, trampoline};
use crate::checks::Rc;
use crate::hypercall;
use crate::time::S;

impl Smp<'_> {
    pub(super) fn down_and_up(&self) {
        let c = &self.c;
        let k = self.n - 1;
        let s = &SLOTS[k];

        // VCPUOP_down of another vCPU, and VCPUOP_up.
        let mut down = Why::new();
        let mut up = Why::new();
        if !s.online.load(Ordering::SeqCst) {
            down.set(format_args!("vCPU {k} is not online"));
            up.set(format_args!("vCPU {k} is not online"));
        } else {
            let arrivals = s.arrivals.load(Ordering::SeqCst);
            let rc = hypercall::vcpu_op(VCPUOP_DOWN, k as u32, 0);
            let is_up = vcpus::is_up(k as u32);
            // Xen stops it "nosync": it may finish its instruction elsewhere.
            self.settle();
            let h1 = s.heartbeat.load(Ordering::SeqCst);
            self.settle();
            let h2 = s.heartbeat.load(Ordering::SeqCst);
            if rc != 0 || is_up != 0 || h1 != h2 {
                down.set(format_args!(
                    "returned {}, then VCPUOP_is_up {}; its idle loop went from {h1} to {h2} while down",
                    Rc(rc),
                    Rc(is_up)
                ));
            }
            let rc = hypercall::vcpu_op(VCPUOP_UP, k as u32, 0);
            let moved = self.wait(|| s.heartbeat.load(Ordering::SeqCst) != h2);
            let answered = self.command(k, Cmd::Ping, [0; 2]);
            let again = s.arrivals.load(Ordering::SeqCst) - arrivals;
            if rc != 0 || !moved || !answered || again != 0 || vcpus::is_up(k as u32) != 1 {
                up.set(format_args!(
                    "returned {}; running again {moved}, answers {answered}, restarted {again} times",
                    Rc(rc)
                ));
            }
        }
        down.report(c, "VCPUOP_down of another vCPU");
        up.report(c, "VCPUOP_up resumes a downed vCPU");

        // VCPUOP_down of itself (vCPU 1): returns once vCPU 0 ups it.
        let s = &SLOTS[1];
        let mut down = Why::new();
        let mut back = Why::new();
        if !s.online.load(Ordering::SeqCst) {
            down.set(format_args!("vCPU 1 is not online"));
            back.set(format_args!("vCPU 1 is not online"));
        } else {
            let seq = vcpus::post(1, Cmd::SelfDown, [0; 2]);
            let went = self.wait(|| s.downing.load(Ordering::SeqCst) && vcpus::is_up(1) == 0);
            self.settle();
            let early = s.resumed.load(Ordering::SeqCst);
            if !went || early {
                down.set(format_args!(
                    "VCPUOP_is_up(1) {} {} s after it called VCPUOP_down; the call returned: {early} ({})",
                    Rc(vcpus::is_up(1)),
                    timeout() / S,
                    Rc(vcpus::result(1, 0))
                ));
            }
            let rc = hypercall::vcpu_op(VCPUOP_UP, 1, 0);
            let resumed = self.wait(|| vcpus::done(1, seq));
            let ret = vcpus::result(1, 0);
            if rc != 0 || !resumed || ret != 0 || !s.resumed.load(Ordering::SeqCst) {
                back.set(format_args!(
                    "VCPUOP_up returned {}; the vCPU's VCPUOP_down returned: {resumed} ({})",
                    Rc(rc),
                    Rc(ret)
                ));
            }
            s.downing.store(false, Ordering::SeqCst);
        }
        down.report(c, "VCPUOP_down of itself");
        back.report(c, "self-down returns after VCPUOP_up");

        // HLT with interrupts off, then INIT + SIPI.
        let k = self.n - 1;
        let mut halted = Why::new();
        let mut back = Why::new();
        if !SLOTS[k].online.load(Ordering::SeqCst) {
            halted.set(format_args!("vCPU {k} is not online"));
            back.set(format_args!("vCPU {k} is not online"));
        } else if !trampoline::installed() {
            // Halted, it would come back only through a trampoline.
            halted.set(format_args!("no trampoline to bring vCPU {k} back"));
            back.set(format_args!("no trampoline"));
        } else {
            self.halt(k, &mut halted);
            if !halted.is_empty() {
                back.set(format_args!("vCPU {k} did not go down"));
            } else {
                self.init_sipi(k, &mut back);
                if back.is_empty() && !self.command(k, Cmd::Ping, [0; 2]) {
                    back.set(format_args!("vCPU {k} does not answer"));
                }
            }
        }
        halted.report(c, "HLT with interrupts off takes a vCPU down");
        back.report(c, "INIT+SIPI brings a halted vCPU back");
    }
}
