//! Getting things to a vCPU: Xen's 2-level event bits in `shared_info` and its
//! `vcpu_info` ([`SharedWords`]), raising a port by the domain's event ABI
//! ([`deliver`]: 2-level [`raise`], or the FIFO queues the event table keeps and
//! [`raise_fifo`]), the upcall vector at
//! the next entry ([`prepare_entry`]), and what keel publishes into guest memory:
//! pvclock ([`publish_time`]), the wall clock, the runstate.
//!
//! Raising an event never runs the scheduler: it marks the vCPU runnable in its
//! own state and records it in [`Wakes`], which the run loop hands to the
//! scheduler once the exit is handled (handlers return what should happen next,
//! and one place applies it).
//!
//! # Locking
//! [`raise`] and [`raise_fifo`] take vCPU `st` locks, one at a time; callers hold
//! the event-channel lock
//! that produced the notification (so that a concurrent close, which clears the
//! pending bit under the same lock, cannot be overtaken). The guest's words are
//! changed with atomics: the guest writes them concurrently, as on Xen.
//! [`prepare_entry`] runs with the vCPU's `st` held; for a PV vCPU it writes the
//! bounce frame to the guest's stack under the domain's `mem` (`pv.rs`), which
//! comes after `st` in the lock order.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use keel_arch::hvm::HvmVcpu;
use keel_evtchn::two_level::{self, EventWords};
use keel_evtchn::{Notify, Raised, Table};
use keel_hypercall::abi::xen::{VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT};
use keel_hypercall::dispatch::update_secondary_system_time;
use keel_mm::guest_walk::WalkCtx;
use keel_sched::VcpuId;

use crate::clock;
use crate::domain::Domain;
use crate::frames::Frame;
use crate::vcpu::{ArchVcpu, Vcpu, VcpuState, Wait};

/// vCPUs an operation made runnable, for the run loop to tell the scheduler.
#[derive(Debug, Default)]
pub struct Wakes(pub Vec<VcpuId>);

impl Wakes {
    pub fn push(&mut self, dom: u16, vcpu: u32) {
        let v = VcpuId { dom, vcpu };
        if !self.0.contains(&v) {
            self.0.push(v);
        }
    }
}

/// A domain's 2-level event words for one vCPU: shared_info's bitmaps and the
/// vCPU's `vcpu_info`, as atomics on the guest's frames.
pub struct SharedWords {
    shared: Frame,
    info: Frame,
    info_off: usize,
}

/// Offsets in shared_info (Xen's x86 layout): the pending and mask bitmaps.
const PENDING: usize = 0x800;
const MASK: usize = 0xA00;

impl SharedWords {
    /// The words of `d`'s vCPU whose state is `st`.
    pub fn of(d: &Domain, st: &VcpuState) -> SharedWords {
        let (info, info_off) = st.vcpu_info.frame();
        SharedWords {
            shared: d.shared_info_frame(),
            info,
            info_off,
        }
    }

    fn word(&self, base: usize, port: u32) -> (&AtomicU64, u64) {
        let word = (port / 64) as usize % 64;
        (self.shared.atomic_u64(base + 8 * word), 1u64 << (port % 64))
    }

    fn pending_sel(&self) -> &AtomicU64 {
        self.info.atomic_u64(self.info_off + 8)
    }

    fn upcall_pending(&self) -> &AtomicU8 {
        self.info.atomic_u8(self.info_off)
    }

    fn upcall_mask(&self) -> &AtomicU8 {
        self.info.atomic_u8(self.info_off + 1)
    }

    /// Whether the vCPU has an upcall pending.
    pub fn has_upcall(&self) -> bool {
        self.upcall_pending().load(Ordering::Acquire) != 0
    }

    /// Whether the vCPU masks upcalls (`evtchn_upcall_mask`).
    pub fn upcalls_masked(&self) -> bool {
        self.upcall_mask().load(Ordering::Acquire) != 0
    }

    /// `evtchn_upcall_mask`, all eight bits (a PV bounce saves them in the frame).
    pub fn upcall_mask_byte(&self) -> u8 {
        self.upcall_mask().load(Ordering::Acquire)
    }

    /// Sets `evtchn_upcall_mask` (a PV bounce or `iret`).
    pub fn set_upcall_mask(&self, v: u8) {
        self.upcall_mask().store(v, Ordering::Release);
    }

    /// Writes `vcpu_info.arch.cr2` (offset 16; a PV guest's page-fault
    /// address, Xen's `arch_set_cr2`).
    pub fn set_cr2(&self, cr2: u64) {
        self.info
            .atomic_u64(self.info_off + 16)
            .store(cr2, Ordering::Release);
    }

    /// Sets every selector bit and the upcall (after vcpu_info moved, so the
    /// guest rescans all of its ports, as Xen does).
    pub fn mark_all_pending(&mut self) {
        self.pending_sel().store(u64::MAX, Ordering::Release);
        self.upcall_pending().store(1, Ordering::Release);
    }

    /// Clears the vCPU's event mask (SCHEDOP_block re-enables delivery).
    pub fn unmask_upcalls(&self) {
        self.upcall_mask().store(0, Ordering::Release);
    }

    /// The `version` word of the vCPU's `vcpu_time_info` (offset 32 of vcpu_info).
    fn time_version(&self) -> &AtomicU32 {
        self.info.atomic_u32(self.info_off + 32)
    }
}

impl EventWords for SharedWords {
    fn test_and_set_pending(&mut self, port: u32) -> bool {
        let (a, bit) = self.word(PENDING, port);
        a.fetch_or(bit, Ordering::AcqRel) & bit != 0
    }
    fn clear_pending(&mut self, port: u32) {
        let (a, bit) = self.word(PENDING, port);
        a.fetch_and(!bit, Ordering::AcqRel);
    }
    fn is_pending(&self, port: u32) -> bool {
        let (a, bit) = self.word(PENDING, port);
        a.load(Ordering::Acquire) & bit != 0
    }
    fn is_masked(&self, port: u32) -> bool {
        let (a, bit) = self.word(MASK, port);
        a.load(Ordering::Acquire) & bit != 0
    }
    fn test_and_clear_mask(&mut self, port: u32) -> bool {
        let (a, bit) = self.word(MASK, port);
        a.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }
    fn set_mask(&mut self, port: u32) {
        let (a, bit) = self.word(MASK, port);
        a.fetch_or(bit, Ordering::AcqRel);
    }
    fn test_and_set_pending_sel(&mut self, _vcpu: u32, word: u32) -> bool {
        let bit = 1u64 << (word % 64);
        self.pending_sel().fetch_or(bit, Ordering::AcqRel) & bit != 0
    }
    fn set_upcall_pending(&mut self, _vcpu: u32) -> bool {
        self.upcall_pending().swap(1, Ordering::AcqRel) != 0
    }
}

/// Delivers `n` to `d`, whose event table the caller holds (`t`), by the ABI
/// the domain uses: 2-level ([`raise`]) or FIFO ([`raise_fifo`]).
pub fn deliver(d: &Domain, t: &mut Table, n: Notify, wakes: &mut Wakes) {
    match t.fifo_mut() {
        None => raise(d, n.vcpu, n.port, wakes),
        Some(mut f) => {
            let r = f.set_pending(n.port, n.vcpu);
            raise_fifo(d, n.port, r, wakes);
        }
    }
}

/// Marks `port` pending for `d`'s vCPU `vcpu` (2-level) and, if that makes an
/// upcall pending or the vCPU polls the port, makes it runnable (recorded in
/// `wakes`).
pub fn raise(d: &Domain, vcpu: u32, port: u32, wakes: &mut Wakes) {
    let Some(v) = d.vcpu(vcpu).or_else(|| d.vcpu(0)) else {
        return;
    };
    let mut st = v.st.lock();
    let mut w = SharedWords::of(d, &st);
    let kick = two_level::set_pending(&mut w, port, v.id);
    let wake = match &st.wait {
        Wait::None => false,
        Wait::Blocked => kick || w.has_upcall(),
        Wait::Polling { ports, .. } => {
            kick || w.has_upcall() || ports.is_empty() || ports.contains(&port)
        }
    };
    if wake {
        wake_locked(v, &mut st, wakes);
    }
    drop(st);
    if kick {
        // An upcall is pending now: a vCPU in guest mode on another pCPU
        // exits to take it (Xen's vcpu_kick).
        v.notify();
    }
}

/// Applies what the FIFO ABI asked after raising or unmasking `port` of `d`:
/// Xen's `vcpu_mark_events_pending` on `r.mark` (set `evtchn_upcall_pending`;
/// if that was clear, kick the vCPU), and, if the port became pending, Xen's
/// `evtchn_check_pollers` (every vCPU of the domain polling it, or polling
/// any port, is woken).
pub fn raise_fifo(d: &Domain, port: u32, r: Raised, wakes: &mut Wakes) {
    if let Some(v) = r.mark.and_then(|m| d.vcpu(m)) {
        let mut st = v.st.lock();
        let mut w = SharedWords::of(d, &st);
        let kick = !w.set_upcall_pending(v.id);
        // Its upcall is pending: a blocked or polling vCPU wakes (Xen's
        // vcpu_kick unblocks both).
        wake_locked(v, &mut st, wakes);
        drop(st);
        if kick {
            v.notify();
        }
    }
    if r.newly_pending {
        for v in d.vcpus.iter() {
            let mut st = v.st.lock();
            if let Wait::Polling { ports, .. } = &st.wait
                && (ports.is_empty() || ports.contains(&port))
            {
                wake_locked(v, &mut st, wakes);
            }
        }
    }
}

/// Makes a blocked or polling vCPU runnable (its `st` already locked), unless
/// it is down: then it only stops waiting.
pub fn wake_locked(v: &Vcpu, st: &mut VcpuState, wakes: &mut Wakes) {
    if st.wait != Wait::None {
        st.wait = Wait::None;
        if !st.down {
            wakes.push(v.domid, v.id);
        }
    }
}

/// The pvclock parameters keel gives every vCPU, `version` left 0. keel's TSC is
/// invariant and never rescaled, so they never change: `system_time` 0 at the TSC
/// value keel's clock started at.
fn time_params() -> VcpuTimeInfo {
    let s = clock::scale();
    VcpuTimeInfo {
        version: 0,
        pad0: 0,
        tsc_timestamp: clock::boot_tsc(),
        system_time: 0,
        tsc_to_system_mul: s.mul,
        tsc_shift: s.shift,
        flags: XEN_PVCLOCK_TSC_STABLE_BIT,
        pad1: [0; 2],
    }
}

/// The vCPU's `vcpu_time_info` as its vcpu_info holds it now (the guest could have
/// scribbled on the version there; only the version is read back).
pub fn current_time(d: &Domain, st: &VcpuState) -> VcpuTimeInfo {
    VcpuTimeInfo {
        version: SharedWords::of(d, st)
            .time_version()
            .load(Ordering::Acquire),
        ..time_params()
    }
}

/// Writes the pvclock parameters into a vCPU's vcpu_info (Xen's version protocol:
/// odd while writing, `version_update_begin`/`_end`), then, as Xen's
/// `update_secondary_system_time`, the same data under the same odd version into
/// the secondary area the guest registered (`VCPUOP_register_vcpu_time_memory_area`),
/// if any, through the guest's page tables (`walk`: the vCPU's paging; the area is
/// skipped without it), ignoring faults.
pub fn publish_time(d: &Domain, st: &VcpuState, walk: Option<&WalkCtx>) {
    let t = time_params();
    let w = SharedWords::of(d, st);
    let version = w.time_version();
    let begin = version.load(Ordering::Acquire).wrapping_add(1) | 1;
    version.store(begin, Ordering::Release);
    let bytes = t.to_bytes();
    w.info.write(w.info_off + 32 + 4, &bytes[4..]);
    version.store(begin.wrapping_add(1), Ordering::Release);
    if let (Some(gva), Some(walk)) = (st.time_area, walk) {
        let t = VcpuTimeInfo {
            version: begin,
            ..t
        };
        update_secondary_system_time(gva, &t, |a, b| d.copy_to_guest(walk, a, b));
    }
}

/// Writes the wall-clock time at system time 0 into a domain's shared_info
/// (`wc_*`, under `wc_version`: odd while writing).
pub fn publish_wallclock(d: &Domain) {
    let (secs, nsec) = clock::wallclock();
    let f = d.shared_info_frame();
    // wc_version..wc_sec_hi are four u32 at 3072..3088 (Xen's x86 layout).
    let version = f.atomic_u32(3072);
    let v = version.load(Ordering::Acquire);
    version.store(v.wrapping_add(1) | 1, Ordering::Release);
    f.atomic_u32(3076).store(secs as u32, Ordering::Relaxed);
    f.atomic_u32(3080).store(nsec, Ordering::Relaxed);
    f.atomic_u32(3084)
        .store((secs >> 32) as u32, Ordering::Relaxed);
    version.store(v.wrapping_add(2) & !1, Ordering::Release);
}

/// Moves the vCPU's runstate accounting to `state` at `now`, and updates the
/// guest's copy if it registered one (through `arch`'s paging).
pub fn set_runstate(d: &Domain, st: &mut VcpuState, state: i32, now: u64, arch: &ArchVcpu) {
    let r = &mut st.runstate;
    if let Some(slot) = r.time.get_mut(r.state as usize) {
        *slot = slot.wrapping_add(now.saturating_sub(r.entry_time));
    }
    r.state = state;
    r.entry_time = now;
    if st.runstate.area.is_some() {
        write_runstate(d, st, &arch.walk_ctx());
    }
}

/// Writes the vCPU's runstate to the area the guest registered, if any (Xen's
/// `update_runstate_area`, native layout: state, pad, state_entry_time, time[4]).
/// A bad area is the guest's problem: the write is dropped, as in Xen.
pub fn write_runstate(d: &Domain, st: &VcpuState, walk: &WalkCtx) {
    let Some(gva) = st.runstate.area else { return };
    let r = st.runstate;
    // The 32-bit layout is packed: no pad after `state` (44 bytes).
    let (at, len) = if r.area_compat { (4, 44) } else { (8, 48) };
    let mut buf = [0u8; 48];
    buf[0..4].copy_from_slice(&r.state.to_le_bytes());
    buf[at..at + 8].copy_from_slice(&r.entry_time.to_le_bytes());
    for (i, t) in r.time.iter().enumerate() {
        buf[at + 8 + 8 * i..at + 16 + 8 * i].copy_from_slice(&t.to_le_bytes());
    }
    let _ = d.copy_to_guest(walk, gva, &buf[..len]);
}

/// Before an entry: if an event upcall is pending and the guest chose a vector,
/// inject it, or ask to be told when the guest can take it.
/// A local APIC interrupt competes with the upcall by vector, as the two would on
/// hardware: the higher goes first, the other waits for the next entry.
pub fn prepare_entry(d: &Domain, st: &mut VcpuState, arch: &mut ArchVcpu) {
    // A PV vCPU takes its events through its callback, on its own stack.
    if crate::pv::pv_vcpu(arch).is_some() {
        if let Err(e) = crate::pv::deliver_events(d, st, arch) {
            log::warn!("d{}: {e}", d.id);
            if let Some(p) = crate::pv::pv_vcpu(arch) {
                p.fail("the PV guest's event callback cannot be entered (its kernel stack is not writable or not canonical)", 0);
            }
        }
        return;
    }
    // An NMI goes before any interrupt; what else is pending asks for the
    // window after it. An NMI the vCPU cannot take now (in its NMI handler, an
    // STI shadow, an event already queued) waits for a later entry: keel asks
    // for no NMI-window exits, and an interrupt window would exit at once, over
    // and over, while the guest sat in an NMI handler with interrupts on.
    let mut nmi_injected = false;
    if st.nmi_pending && arch.nmi_ready() {
        arch.inject_nmi();
        st.nmi_pending = false;
        nmi_injected = true;
    }
    let upcall = d
        .upcall_vector(st)
        .filter(|_| SharedWords::of(d, st).has_upcall());
    let lapic = st.lapic.pending();
    let Some(vector) = upcall.into_iter().chain(lapic).max() else {
        return;
    };
    if !nmi_injected && arch.interrupt_ready() {
        if lapic == Some(vector) && upcall != Some(vector) {
            st.lapic.ack(vector);
        }
        arch.inject_interrupt(vector);
    } else {
        arch.set_interrupt_window_exit(true);
    }
}
