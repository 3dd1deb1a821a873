//! The kernel's view of the online pCPUs: their areas by index (filled once by
//! `smp::bring_up`), and the two ways to reach another pCPU: a kick (it should
//! ask the scheduler again soon) and a plain interrupt (a vCPU it runs must leave
//! guest mode, e.g. for a TLB flush).
//!
//! # Locking
//! [`CPUS`] is written once, before any run loop starts, and read-only after.
//! [`KICKED`] has one flag per pCPU: any CPU sets it, only its owner clears it.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use keel_arch::percpu::{self, MAX_CPUS, PerCpu};
use keel_arch::{apic, traps};

/// Every online CPU's area, by index (0 = the boot CPU).
static CPUS: spin::Once<Vec<&'static PerCpu>> = spin::Once::new();

/// Set for a pCPU that must call the scheduler's `pick` again soon.
static KICKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Records the online CPUs (once, by the boot CPU).
pub fn set_online(cpus: Vec<&'static PerCpu>) {
    CPUS.call_once(|| cpus);
}

/// The online CPUs' areas, by index.
pub fn online() -> &'static [&'static PerCpu] {
    CPUS.get().map_or(&[], |v| v.as_slice())
}

/// How many CPUs are online (at least the boot CPU).
pub fn nr_online() -> u32 {
    online().len().max(1) as u32
}

/// This CPU's index.
pub fn me() -> u32 {
    percpu::index()
}

/// Interrupts pCPU `cpu` (not this one): a guest it runs exits, a halt ends.
pub fn interrupt(cpu: u32) {
    if cpu != me()
        && let Some(c) = online().get(cpu as usize)
    {
        apic::send_fixed(c.apic_id(), traps::KICK_VECTOR);
    }
}

/// Tells pCPU `cpu` to ask the scheduler again soon, interrupting it if it is
/// another one.
pub fn kick(cpu: u32) {
    if let Some(flag) = KICKED.get(cpu as usize) {
        flag.store(true, Ordering::Release);
        interrupt(cpu);
    }
}

/// Whether this pCPU was kicked since it last asked; clears the flag.
pub fn take_kicked() -> bool {
    let flag = &KICKED[me() as usize % MAX_CPUS];
    flag.load(Ordering::Acquire) && flag.swap(false, Ordering::AcqRel)
}
