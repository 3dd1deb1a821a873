//! The smp mode's steps 3 and 4: vCPU 1 by `VCPUOP_initialise` + `VCPUOP_up`,
//! then the others by INIT + SIPI through [`super::trampoline`] (with two
//! vCPUs, vCPU 1 again: halted with interrupts off, then restarted that way).
//!
//! Every start is checked the same way: the AP came online within the timeout,
//! exactly once (its `arrivals` count), as the vCPU it was meant to be (RDI, the
//! stack it runs on, its local APIC ID register), with its upcall vector set.

use core::sync::atomic::Ordering;

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::memory::{E820_RAM, E820Entry, XENMEM_MEMORY_MAP, XenMemoryMap};
use keel_hypercall::abi::vcpu::VCPUOP_UP;

use super::vcpus::{self, Cmd, SLOTS, apic_id};
use super::{Smp, Why, lapic, timeout, trampoline};
use crate::checks::Rc;
use crate::start_info::BootInfo;
use crate::time::{self, Ms, S};
use crate::{arch, hypercall};

impl Smp<'_> {
    pub(super) fn start_vcpu1(&self) {
        let c = &self.c;
        let s = &SLOTS[1];
        let ctx = vcpus::context64(1);
        if !c.rc("VCPUOP_initialise vCPU 1", vcpus::initialise(1, &ctx), 0) {
            return;
        }
        c.rc(
            "initialised vCPU stays down until VCPUOP_up",
            vcpus::is_up(1),
            0,
        );
        let t0 = time::now();
        if !c.rc("VCPUOP_up vCPU 1", hypercall::vcpu_op(VCPUOP_UP, 1, 0), 0) {
            return;
        }
        let online = self.wait(|| s.online.load(Ordering::SeqCst));
        if !c.check(
            "vCPU 1 online",
            online && s.arrivals.load(Ordering::SeqCst) == 1,
            format_args!(
                "online {online}, {} arrivals ({} at the gate) within {} s; {} starts on a wrong stack (last RDI {:#x})",
                s.arrivals.load(Ordering::SeqCst),
                s.gate_reached.load(Ordering::SeqCst),
                timeout() / S,
                vcpus::BAD_STARTS.load(Ordering::SeqCst),
                vcpus::BAD_START_ARG.load(Ordering::SeqCst)
            ),
        ) {
            return;
        }
        c.info(format_args!(
            "vCPU 1 online {} after VCPUOP_up",
            Ms((time::now() - t0) as i64)
        ));
        let arg = s.entry_arg.load(Ordering::SeqCst);
        c.check(
            "vCPU 1 started with the registers it was given",
            arg == 1,
            format_args!("RDI was {arg:#x}"),
        );
        let seen = s.apic_id.load(Ordering::SeqCst);
        c.check(
            "vCPU 1 sees its own local APIC",
            seen == apic_id(1),
            format_args!("its APIC ID register says {seen}, the MADT {}", apic_id(1)),
        );
        c.rc(
            "vCPU 1 upcall vector set",
            s.upcall_rc.load(Ordering::SeqCst),
            0,
        );
        c.rc("VCPUOP_is_up vCPU 1", vcpus::is_up(1), 1);
        c.errno(
            "VCPUOP_initialise of an online vCPU refused",
            vcpus::initialise(1, &ctx),
            Errno::EEXIST,
        );
    }

    // ---------------------------------------------------------------------
    // 4. The rest by INIT + SIPI

    /// Whether the trampoline page is usable (checks printed).
    fn trampoline_ready(&self) -> bool {
        let c = &self.c;
        let (lo, hi) = (trampoline::PA, trampoline::PA + 4096);
        let r = &self.boot.raw;
        let inside = |pa: u64| pa != 0 && pa < hi && pa.saturating_add(4096) > lo;
        let mut why = Why::new();
        if trampoline::len() > 4096 {
            why.set(format_args!(
                "the trampoline is {} bytes",
                trampoline::len()
            ));
        }
        match ram_covers(self.boot, lo, hi) {
            Ok(true) => {}
            Ok(false) => why.set(format_args!(
                "{lo:#x}..{hi:#x} is not RAM in the memory map"
            )),
            Err(rc) => why.set(format_args!(
                "no memory map: XENMEM_memory_map returned {}",
                Rc(rc)
            )),
        }
        for (what, pa) in [
            ("hvm_start_info", self.boot.pa),
            ("the command line", r.cmdline_paddr),
            ("the module list", r.modlist_paddr),
            ("the memory map", r.memmap_paddr),
            ("the RSDP", r.rsdp_paddr),
        ] {
            if inside(pa) {
                why.set(format_args!("{what} is at {pa:#x}"));
            }
        }
        for m in self.boot.modules.iter().flatten() {
            if inside(m.entry.paddr) {
                why.set(format_args!("a module is at {:#x}", m.entry.paddr));
            }
        }
        let (start, _) = crate::image_range();
        if start < hi {
            why.set(format_args!("the image starts at {start:#x}"));
        }
        let free = why.report(c, "trampoline page is free RAM");
        let cr3 = arch::read_cr3() as u64;
        let low = c.check(
            "page tables below 4 GiB",
            cr3 < 1 << 32,
            format_args!("CR3 is {cr3:#x}: the trampoline loads it in 32-bit mode"),
        );
        if free && low {
            trampoline::install(cr3, vcpus::ap_entry(), vcpus::stray_stack_top());
        }
        free && low
    }

    /// INIT + SIPI to vCPU `k` and waits for it to come online, exactly once,
    /// as itself; records the reason in `why` if not. Prints an `info:` line.
    pub(super) fn init_sipi(&self, k: usize, why: &mut Why) {
        let s = &SLOTS[k];
        if !trampoline::installed() {
            why.set(format_args!("vCPU {k}: no trampoline to start it in"));
            return;
        }
        let (arrivals, entries) = (s.arrivals.load(Ordering::SeqCst), trampoline::entries());
        s.online.store(false, Ordering::SeqCst);
        trampoline::hand_off(vcpus::stack_top(k), k as u64);
        let t0 = time::now();
        if !lapic::send_init(apic_id(k)) || !lapic::send_startup(apic_id(k), trampoline::PAGE) {
            why.set(format_args!("vCPU {k}: the ICR stayed busy"));
        }
        let online = self.wait(|| s.online.load(Ordering::SeqCst));
        let took = time::now() - t0;
        self.settle();
        trampoline::hand_off(vcpus::stray_stack_top(), u64::MAX);
        let (got, ran) = (
            s.arrivals.load(Ordering::SeqCst) - arrivals,
            trampoline::entries() - entries,
        );
        self.c.info(format_args!(
            "vCPU {k}: online {online} after {}, trampoline begun {ran} times",
            Ms(took as i64)
        ));
        if !online {
            why.set(format_args!(
                "vCPU {k} not online within {} s (trampoline begun {ran} times, {} starts on a wrong stack)",
                timeout() / S,
                vcpus::BAD_STARTS.load(Ordering::SeqCst)
            ));
        } else if got != 1 || ran == 0 {
            why.set(format_args!(
                "vCPU {k} arrived {got} times, trampoline begun {ran} times"
            ));
        } else if s.entry_arg.load(Ordering::SeqCst) != k as u64 {
            why.set(format_args!(
                "vCPU {k} started as {}",
                s.entry_arg.load(Ordering::SeqCst)
            ));
        } else if s.apic_id.load(Ordering::SeqCst) != apic_id(k) {
            why.set(format_args!(
                "vCPU {k}'s APIC ID register says {}",
                s.apic_id.load(Ordering::SeqCst)
            ));
        } else if s.upcall_rc.load(Ordering::SeqCst) != 0 {
            why.set(format_args!(
                "vCPU {k}: HVMOP_set_evtchn_upcall_vector returned {}",
                Rc(s.upcall_rc.load(Ordering::SeqCst))
            ));
        }
    }

    /// Halts AP `k` with interrupts off and waits for `VCPUOP_is_up` to say 0;
    /// records the reason in `why` if it does not.
    pub(super) fn halt(&self, k: usize, why: &mut Why) {
        vcpus::post(k, Cmd::Halt, [0; 2]);
        if !self.wait(|| vcpus::is_up(k as u32) == 0) {
            why.set(format_args!(
                "vCPU {k} still up {} s after HLT with interrupts off (VCPUOP_is_up {})",
                timeout() / S,
                Rc(vcpus::is_up(k as u32))
            ));
        }
    }

    pub(super) fn start_by_init_sipi(&self) {
        let c = &self.c;
        let ready = self.trampoline_ready();
        let mut why = Why::new();
        if !ready {
            why.set(format_args!("no trampoline"));
        } else if self.n == 2 {
            // Nothing left to start: take vCPU 1 down the Linux hot-unplug way
            // (HLT with interrupts off) and bring it back by INIT + SIPI.
            if !SLOTS[1].online.load(Ordering::SeqCst) {
                why.set(format_args!("vCPU 1 is not online"));
            } else {
                self.halt(1, &mut why);
                if why.is_empty() {
                    self.init_sipi(1, &mut why);
                }
            }
        } else {
            for k in 2..self.n {
                self.init_sipi(k, &mut why);
            }
        }
        why.report(c, "vCPUs started by INIT+SIPI");

        // A SIPI without INIT to an online vCPU: Xen's hvm_vcpu_reset_state
        // ignores it (the vCPU is initialised).
        let k = self.n - 1;
        let s = &SLOTS[k];
        let mut why = Why::new();
        if !ready || !s.online.load(Ordering::SeqCst) {
            why.set(format_args!("vCPU {k} is not online"));
        } else {
            let (arrivals, entries) = (s.arrivals.load(Ordering::SeqCst), trampoline::entries());
            // Should it restart the vCPU after all, let it come back as itself.
            trampoline::hand_off(vcpus::stack_top(k), k as u64);
            lapic::send_startup(apic_id(k), trampoline::PAGE);
            self.settle();
            trampoline::hand_off(vcpus::stray_stack_top(), u64::MAX);
            let answered = self.command(k, Cmd::Ping, [0; 2]);
            let (got, ran) = (
                s.arrivals.load(Ordering::SeqCst) - arrivals,
                trampoline::entries() - entries,
            );
            if !answered || got != 0 || ran != 0 || vcpus::is_up(k as u32) != 1 {
                why.set(format_args!(
                    "vCPU {k}: answers {answered}, restarted {got} times, trampoline begun {ran} times, VCPUOP_is_up {}",
                    Rc(vcpus::is_up(k as u32))
                ));
            }
        }
        why.report(c, "SIPI to an online vCPU ignored");

        let mut why = Why::new();
        self.need_all_online(&mut why);
        if let Some(k) = (0..self.n as u32).find(|&k| vcpus::is_up(k) != 1) {
            why.set(format_args!(
                "VCPUOP_is_up({k}) returned {}",
                Rc(vcpus::is_up(k))
            ));
        }
        why.report(c, "every vCPU up");
    }
}

/// Whether one RAM entry of the memory map covers `[lo, hi)`: the map in
/// `hvm_start_info` if it has one, else `XENMEM_memory_map`'s (the start info's
/// map is optional, `start_info.h`; Xen gives a PVH Dom0 none).
fn ram_covers(boot: &BootInfo, lo: u64, hi: u64) -> Result<bool, i64> {
    if !boot.memmap().is_empty() {
        return Ok(boot.ram_covers(lo, hi));
    }
    const N: usize = 64;
    let mut entries = [0u8; N * E820Entry::SIZE];
    let arg = XenMemoryMap {
        nr_entries: N as u32,
        pad: 0,
        buffer: entries.as_mut_ptr() as u64,
    };
    let (rc, out) = hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::memory_op(XENMEM_MEMORY_MAP, a)
    });
    if rc != 0 {
        return Err(rc);
    }
    let n = (XenMemoryMap::from_bytes(&out).nr_entries as usize).min(N);
    // SAFETY: a live local array; read volatilely because the hypervisor wrote
    // it behind the compiler's back (its address went out in `arg`).
    let entries = unsafe { core::ptr::read_volatile(&raw const entries) };
    Ok(entries
        .as_chunks::<{ E820Entry::SIZE }>()
        .0
        .iter()
        .take(n)
        .map(E820Entry::from_bytes)
        .any(|e| {
            e.type_ == E820_RAM
                && e.addr <= lo
                && e.addr.checked_add(e.size).is_some_and(|t| hi <= t)
        }))
}
