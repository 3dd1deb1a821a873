//! The run loop: one per pCPU ([`run_cpu`]). Each turn fires what is due, asks the
//! scheduler what this pCPU runs next, and runs that vCPU for a slice; exits are
//! handled by `vmexit`, which returns what should happen next ([`Flow`]) and the
//! vCPUs its work made runnable ([`Wakes`]); this loop is the one place that acts
//! on them (the scheduler's wakes, the domain's end).
//!
//! # A turn
//! 1. Fire what is due: singleshot and periodic timers raise VIRQ_TIMER, expired
//!    polls wake, local APIC timers fire.
//! 2. Ask the policy what runs next and for how long. Nothing: arm the timer for
//!    the next deadline and halt with interrupts on.
//! 3. Look the vCPU's domain up (a reference keeps it alive), lock the vCPU's
//!    hardware state, restore its lazy register state if another vCPU ran here
//!    last, and run it: each entry first delivers a pending upcall (or asks for an
//!    interrupt window), and keel's timer is armed for the end of the slice or
//!    the next deadline, whichever is first. The slice ends on yield, block, poll,
//!    the timer, or the domain's end.
//! 4. Tell the scheduler how the slice ended, or destroy the domain.
//!
//! When Dom0 ends, the machine ends: the remaining domains are destroyed. Without a
//! Dom0, keel runs until the last domain has ended.
//!
//! # Locking
//! The loop holds the running vCPU's `arch` lock for the slice and takes the other
//! locks only inside the handlers it calls (docs/architecture.md, "Lock order");
//! it holds none of them while halted. Per-CPU state (which vCPU's lazy state is
//! loaded here) is this pCPU's own.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use keel_arch::hvm::HvmVcpu;
use keel_hypercall::abi::evtchn::VIRQ_TIMER;
use keel_sched::VcpuId;

use crate::clock;
use crate::domain::Domain;
use crate::domains::{self, DomainEnd};
use crate::events::{self, Wakes};
use crate::logger::say;
use crate::percpu;
use crate::scheduler;
use crate::vcpu::{
    NOT_RUNNING, RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE, RUNSTATE_RUNNING, Vcpu,
    Wait, earliest,
};
use crate::vmexit::{self, Flow};

/// What a slice ended with.
enum SliceEnd {
    /// Time is up, something is due, or a woken vCPU deserves the pCPU.
    Preempted,
    Yield,
    Blocked,
    Ended(DomainEnd),
    /// The domain is being destroyed (by another pCPU): let the vCPU go.
    Gone,
}

/// Per-pCPU state of the loop.
struct Cpu {
    index: u32,
    /// The vCPU whose lazy register state is in this CPU now.
    loaded: Option<VcpuId>,
    /// Set when a wake asked for this pCPU to be preempted.
    preempt: bool,
    /// The earliest deadline of any vCPU, as of deadline generation `gen`
    /// (`vcpu::deadline_gen`), or `None` before the first look.
    deadlines: Option<(u64, Option<u64>)>,
}

impl Cpu {
    /// The earliest deadline as cached, recomputed only if a deadline was set
    /// since (the entry path: a cached deadline that has passed makes the timer
    /// fire at once, and the exit that follows recomputes with the clock).
    fn cached_deadline(&mut self) -> Option<u64> {
        match self.deadlines {
            Some((g, d)) if g == crate::vcpu::deadline_gen() => d,
            _ => self.next_deadline(0),
        }
    }

    /// The earliest deadline of any vCPU: cached, recomputed when a deadline
    /// was set since, or when the cached one has passed.
    fn next_deadline(&mut self, now: u64) -> Option<u64> {
        let now_gen = crate::vcpu::deadline_gen();
        match self.deadlines {
            Some((g, d)) if g == now_gen && d.is_none_or(|t| t > now) => d,
            _ => {
                let d = next_deadline();
                self.deadlines = Some((now_gen, d));
                d
            }
        }
    }
}

/// Hands the scheduler the vCPUs a handler made runnable; a wake that asks for
/// this pCPU preempts the running vCPU at its next exit, one for another pCPU
/// kicks it.
fn apply_wakes(cpu: &mut Cpu, wakes: &mut Wakes) {
    for v in wakes.0.drain(..) {
        if let Some(kick) = scheduler::wake(v) {
            if kick == cpu.index {
                cpu.preempt = true;
            } else {
                percpu::kick(kick);
            }
        }
    }
}

/// Runs every domain until none is left, or Dom0 has ended (the boot CPU).
pub fn run_cpu(index: u32) {
    let mut cpu = Cpu {
        index,
        loaded: None,
        preempt: false,
        deadlines: None,
    };
    let mut wakes = Wakes::default();
    // When the last slice (or idle period) ended: what follows until the next
    // guest entry is keel's overhead, left out of the scheduler's clock.
    let mut t_exit = clock::now();
    loop {
        if !domains::any() {
            clock::disarm();
            return;
        }
        let now = clock::now();
        scheduler::add_overhead(now.saturating_sub(t_exit));
        if cpu.next_deadline(now).is_some_and(|t| t <= now) {
            fire_due(now, None, &mut wakes);
            crate::vcpu::deadlines_changed();
            apply_wakes(&mut cpu, &mut wakes);
        }
        cpu.preempt = false;
        let decision = scheduler::pick(cpu.index);
        if let Some(k) = decision.kick {
            // The vCPU this pCPU ran last moved there; its state was saved when
            // its slice ended.
            percpu::kick(k);
        }
        let Some(v) = decision.next else {
            let t = clock::now();
            scheduler::add_overhead(t.saturating_sub(now));
            idle(&mut cpu, t, decision.slice_ns);
            t_exit = clock::now();
            continue;
        };
        let Some(d) = domains::get(v.dom) else {
            log::error!("scheduler picked d{} which does not exist", v.dom);
            scheduler::remove(v);
            t_exit = clock::now();
            continue;
        };
        let Some(vcpu) = d.vcpu(v.vcpu) else {
            log::error!(
                "scheduler picked d{}v{} which does not exist",
                v.dom,
                v.vcpu
            );
            scheduler::remove(v);
            t_exit = clock::now();
            continue;
        };
        let how = {
            let mut arch = vcpu.arch();
            vcpu.running_on.store(cpu.index, Ordering::Release);
            // This CPU's registers hold the vCPU's lazy state only if it ran here
            // last and nothing else ran here since.
            if cpu.loaded != Some(v) || vcpu.lazy_cpu.load(Ordering::Relaxed) != cpu.index {
                arch.restore_lazy_state();
                cpu.loaded = Some(v);
            }
            events::set_runstate(&d, &mut vcpu.st.lock(), RUNSTATE_RUNNING, now, &arch);
            let t_enter = clock::now();
            scheduler::add_overhead(t_enter.saturating_sub(now));
            let end = t_enter.saturating_add(decision.slice_ns);
            let how = run_slice(&mut cpu, &d, vcpu, &mut arch, end, &mut wakes);
            let now = clock::now();
            t_exit = now;
            arch.save_lazy_state();
            vcpu.lazy_cpu.store(cpu.index, Ordering::Relaxed);
            if !matches!(how, SliceEnd::Ended(_) | SliceEnd::Gone) {
                let mut st = vcpu.st.lock();
                let state = match how {
                    SliceEnd::Blocked if st.down => RUNSTATE_OFFLINE,
                    SliceEnd::Blocked => RUNSTATE_BLOCKED,
                    _ => RUNSTATE_RUNNABLE,
                };
                events::set_runstate(&d, &mut st, state, now, &arch);
            }
            vcpu.running_on.store(NOT_RUNNING, Ordering::Release);
            how
        };
        apply_wakes(&mut cpu, &mut wakes);
        match how {
            SliceEnd::Preempted | SliceEnd::Gone => {}
            SliceEnd::Yield => scheduler::yield_now(v),
            SliceEnd::Blocked => {
                scheduler::block(v);
                // An event from another pCPU may have made the vCPU runnable
                // between the slice's end and the block just now: its wake then
                // found the vCPU still running and did nothing. Look again.
                if vcpu.st.lock().runnable() {
                    wakes.push(v.dom, v.vcpu);
                    apply_wakes(&mut cpu, &mut wakes);
                }
            }
            SliceEnd::Ended(e) => {
                cpu.loaded = None;
                let was_dom0 = d.privileged && d.id == 0;
                drop(d);
                domains::destroy(v.dom, e);
                if was_dom0 {
                    domains::end_all("dom0 has ended", false);
                    return;
                }
            }
        }
    }
}

/// Nothing to run: sleep until the next deadline (or the policy's next look), or
/// until this pCPU is kicked.
fn idle(cpu: &mut Cpu, now: u64, slice_ns: u64) {
    let next = cpu.next_deadline(now);
    let policy = (slice_ns != u64::MAX).then(|| now.saturating_add(slice_ns));
    let until = match earliest(next, policy) {
        Some(t) => t,
        None => {
            if cpu.index == 0 && all_waiting() {
                // Every vCPU waits for an event nobody can send: nothing will
                // ever run again. End them rather than hang the machine.
                say!("Every domain is blocked with no timer or event that could wake it");
                domains::end_all("blocked forever", true);
                return;
            }
            // Another pCPU is busy: a kick brings work; look again now and then.
            now.saturating_add(IDLE_RECHECK_NS)
        }
    };
    // Armed again on every turn: a one-shot count is clamped to 32 bits (about
    // 4 s of a 1 GHz local APIC timer), so a far deadline fires early, and a
    // halt after that with nothing armed would sleep until a kick that may
    // never come. `arm` does nothing while the timer is still armed for `until`.
    while clock::now() < until && !percpu::take_kicked() {
        clock::arm(until);
        keel_arch::cpu::enable_interrupts_and_halt();
        keel_arch::cpu::disable_interrupts();
    }
}

/// How long an idle pCPU with nothing to wait for sleeps before it looks again
/// (a kick wakes it sooner).
const IDLE_RECHECK_NS: u64 = 100_000_000;

/// Whether every vCPU of every domain is waiting (blocked or polling) and none is
/// held by a pCPU.
fn all_waiting() -> bool {
    domains::DOMAINS.read().values().all(|d| {
        d.vcpus.iter().all(|v| {
            v.running_on.load(Ordering::Acquire) == NOT_RUNNING && !v.st.lock().runnable()
        })
    })
}

/// Runs `vcpu` of `d` until its slice ends at `end` (system time).
fn run_slice(
    cpu: &mut Cpu,
    d: &Arc<Domain>,
    vcpu: &Vcpu,
    arch: &mut crate::vcpu::ArchVcpu,
    end: u64,
    wakes: &mut Wakes,
) -> SliceEnd {
    loop {
        // In guest mode from here (for what others see): a remote TLB flush
        // that sets the flag after this store waits for the exit below
        // (Domain::flush_tlbs), and whoever changes the vCPU's state after the
        // look below interrupts this pCPU (Vcpu::notify).
        vcpu.in_guest.store(true, Ordering::SeqCst);
        {
            let mut st = vcpu.st.lock();
            if !st.runnable() {
                drop(st);
                vcpu.in_guest.store(false, Ordering::SeqCst);
                return SliceEnd::Blocked;
            }
            if let Some(ctx) = st.start.take() {
                // VCPUOP_initialise or a SIPI gave it a new state: all of it,
                // x87/SSE included (which is in this CPU's registers now).
                arch.load_context(&ctx);
                arch.restore_lazy_state();
            }
            if let Some(init) = st.pv_start.take()
                && let Some(p) = crate::pv::pv_vcpu(arch)
            {
                // The same for a PV vCPU (`VCPUOP_initialise`).
                p.initialise(&init);
                arch.restore_lazy_state();
            }
            events::prepare_entry(d, &mut st, arch);
        }
        let stop = earliest(Some(end), cpu.cached_deadline()).unwrap_or(end);
        clock::arm(stop);
        vcpu.apply_flush(arch);
        let exit = arch.run();
        vcpu.in_guest.store(false, Ordering::SeqCst);
        vcpu.exits.fetch_add(1, Ordering::SeqCst);
        let flow = vmexit::handle(d, vcpu, arch, exit, wakes);
        if !wakes.0.is_empty() {
            apply_wakes(cpu, wakes);
        }
        // Kicks and the interrupts that tell a dying domain's pCPU to let go
        // arrive as host interrupts: they end in `Flow::Interrupted` (an IPI sent
        // while keel ran is pending at the next entry, which exits at once).
        match flow {
            Ok(Flow::Continue) => {
                if core::mem::take(&mut cpu.preempt) {
                    return SliceEnd::Preempted;
                }
            }
            Ok(Flow::Yield) => return SliceEnd::Yield,
            Ok(Flow::Block) => {
                if !vcpu.st.lock().runnable() {
                    return SliceEnd::Blocked;
                }
            }
            Ok(Flow::Interrupted) => {
                keel_arch::cpu::interrupt_window();
                if d.is_dying() {
                    return SliceEnd::Gone;
                }
                if percpu::take_kicked() {
                    return SliceEnd::Preempted;
                }
                let now = clock::now();
                if now >= stop {
                    // The running vCPU's own timers fire here; others' in the loop.
                    fire_due(now, Some((d, vcpu)), wakes);
                    crate::vcpu::deadlines_changed();
                    apply_wakes(cpu, wakes);
                    return SliceEnd::Preempted;
                }
            }
            Err(e) => return SliceEnd::Ended(e),
        }
    }
}

/// The earliest timer, poll or APIC deadline of any vCPU.
fn next_deadline() -> Option<u64> {
    let doms = domains::DOMAINS.read();
    doms.values()
        .flat_map(|d| d.vcpus.iter())
        .filter_map(|v| v.st.lock().next_deadline())
        .min()
}

/// Fires every due timer and poll timeout: of `only` (a running vCPU), or of
/// every vCPU.
fn fire_due(now: u64, only: Option<(&Arc<Domain>, &Vcpu)>, wakes: &mut Wakes) {
    match only {
        Some((d, v)) => fire_due_in(d, v, now, wakes),
        None => {
            for d in domains::DOMAINS.read().values() {
                for v in d.vcpus.iter() {
                    fire_due_in(d, v, now, wakes);
                }
            }
        }
    }
}

/// Fires one vCPU's due timers (raising VIRQ_TIMER), its expired poll timeout
/// and its APIC timer.
fn fire_due_in(d: &Domain, v: &Vcpu, now: u64, wakes: &mut Wakes) {
    let mut fire = false;
    // The timers' change counts when a tick was decided (see below).
    let mut decided = (None, None);
    {
        let mut st = v.st.lock();
        if st.timers.singleshot.is_some_and(|t| t <= now) {
            st.timers.singleshot = None;
            decided.0 = Some(st.timers.singleshot_changes);
            fire = true;
        }
        if let Some((period, next)) = st.timers.periodic
            && next <= now
        {
            // The next tick one period on; ticks missed while keel was busy are
            // dropped, not bunched (Xen does the same).
            let missed = (now - next) / period;
            st.timers.periodic = Some((period, next + (missed + 1) * period));
            decided.1 = Some(st.timers.periodic_changes);
            fire = true;
        }
        if let Wait::Polling {
            deadline: Some(t), ..
        } = st.wait
            && t <= now
        {
            events::wake_locked(v, &mut st, wakes);
        }
        // The local APIC timer: its interrupt wakes a halted vCPU (a poll waits
        // for event channels only).
        if st.lapic.timer_fire(now) && st.wait == Wait::Blocked && st.lapic.pending().is_some() {
            events::wake_locked(v, &mut st, wakes);
        }
    }
    if fire {
        // Delivered under the table's lock (channels.rs, "Locking"), which the
        // timer hypercalls take too: a tick whose timer the guest set again or
        // stopped since it was decided above is dropped, so none arrives after
        // the hypercall that stopped its timer has returned.
        let mut t = d.evtchn.lock();
        let still = {
            let st = v.st.lock();
            decided.0 == Some(st.timers.singleshot_changes)
                || decided.1 == Some(st.timers.periodic_changes)
        };
        if !still {
            return;
        }
        if let Some(n) = t.virq(v.id, VIRQ_TIMER) {
            events::deliver(d, &mut t, n, wakes);
        }
    }
}
