//! The kernel's view of the online pCPUs: their areas by index (filled once by
//! `smp::bring_up`), and the ways to reach another pCPU: a kick (it should ask
//! the scheduler again soon), a plain interrupt (a vCPU it runs must leave guest
//! mode, e.g. for a TLB flush), and a remote call ([`call`], [`call_others`]: run
//! a function there and wait until it has run).
//!
//! # Locking
//! [`CPUS`] is written once, before any run loop starts, and read-only after.
//! [`KICKED`] has one flag per pCPU: any CPU sets it, only its owner clears it.
//! Each pCPU's [`MAILBOX`] takes one call at a time: a caller claims it (its
//! `busy` flag), fills it, interrupts the pCPU and waits for `done`. A caller
//! never waits with a request of its own unanswered: while it waits it runs
//! whatever is in its own mailbox, so two pCPUs calling each other (with
//! interrupts off) cannot deadlock. The function runs in interrupt context (or
//! in such a wait) on the target: it must not take locks the target might hold.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use keel_arch::percpu::{self, MAX_CPUS, PerCpu};
use keel_arch::{apic, traps};

/// Every online CPU's area, by index (0 = the boot CPU).
static CPUS: spin::Once<Vec<&'static PerCpu>> = spin::Once::new();

/// Set for a pCPU that must call the scheduler's `pick` again soon.
static KICKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// One pCPU's remote-call slot.
struct Mailbox {
    /// Claimed by a caller until its call has run.
    busy: AtomicBool,
    /// The function (as a `fn(u64)` address; 0: none) and its argument.
    func: AtomicUsize,
    arg: AtomicU64,
    /// Set by the target once the function has returned.
    done: AtomicBool,
}

static MAILBOX: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        busy: AtomicBool::new(false),
        func: AtomicUsize::new(0),
        arg: AtomicU64::new(0),
        done: AtomicBool::new(false),
    }
}; MAX_CPUS];

/// Runs what is in this pCPU's mailbox, if anything (the call IPI's handler,
/// and callers waiting on another pCPU).
pub fn run_mailbox() {
    let m = &MAILBOX[me() as usize % MAX_CPUS];
    let raw = m.func.swap(0, Ordering::AcqRel);
    if raw == 0 {
        return;
    }
    // SAFETY: only `post` stores a non-zero value, and it stores a `fn(u64)`.
    let f: fn(u64) = unsafe { core::mem::transmute::<usize, fn(u64)>(raw) };
    f(m.arg.load(Ordering::Acquire));
    m.done.store(true, Ordering::Release);
}

/// Leaves `f(arg)` in `cpu`'s mailbox and interrupts it; waits for the mailbox
/// to be free first. Returns the mailbox, to wait on.
fn post(cpu: u32, f: fn(u64), arg: u64) -> Option<&'static Mailbox> {
    let c = online().get(cpu as usize)?;
    let m = &MAILBOX[cpu as usize % MAX_CPUS];
    while m
        .busy
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        run_mailbox();
        keel_arch::cpu::pause();
    }
    m.done.store(false, Ordering::Relaxed);
    m.arg.store(arg, Ordering::Relaxed);
    m.func.store(f as usize, Ordering::Release);
    apic::send_fixed(c.apic_id(), traps::CALL_VECTOR);
    Some(m)
}

/// Waits until the call in `m` has run, and frees the mailbox.
fn wait(m: &Mailbox) {
    while !m.done.load(Ordering::Acquire) {
        run_mailbox();
        keel_arch::cpu::pause();
    }
    m.busy.store(false, Ordering::Release);
}

/// Runs `f(arg)` on pCPU `cpu` and returns once it has run (on this pCPU: at
/// once). `false` if there is no such online pCPU.
pub fn call(cpu: u32, f: fn(u64), arg: u64) -> bool {
    if cpu == me() {
        f(arg);
        return true;
    }
    match post(cpu, f, arg) {
        Some(m) => {
            wait(m);
            true
        }
        None => false,
    }
}

/// Runs `f(arg)` on every other online pCPU, all at once, and returns once it has
/// run everywhere; how many ran it.
pub fn call_others(f: fn(u64), arg: u64) -> u32 {
    let mut posted: Vec<&'static Mailbox> = Vec::new();
    for cpu in 0..nr_online() {
        if cpu != me()
            && let Some(m) = post(cpu, f, arg)
        {
            posted.push(m);
        }
    }
    for m in &posted {
        wait(m);
    }
    posted.len() as u32
}

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
