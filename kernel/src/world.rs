//! Every domain on the machine and the loop that runs them: the scheduler's picks,
//! keel's timer, Xen timers and poll timeouts, event delivery (the 2-level bits in
//! shared_info, the upcall vector), the domUs' console rings, and what happens when
//! a domain ends (its channels closed, its grants revoked, its frames freed).
//!
//! # The loop ([`World::run`])
//! 1. Fire what is due: singleshot and periodic timers raise VIRQ_TIMER, expired
//!    polls wake.
//! 2. Ask the policy (`keel_sched`) what runs next and for how long. Nothing: arm
//!    the timer for the next deadline and halt with interrupts on.
//! 3. Lend that domain out of the map, restore its lazy register state if another
//!    vCPU ran last, and run its vCPU: each entry first delivers a pending upcall
//!    (or asks for an interrupt window), and keel's timer is armed for the end of
//!    the slice or the next deadline, whichever is first. Exits are handled by
//!    `vmexit`; the slice ends on yield, block, poll, the timer, or the domain's end.
//! 4. Put it back (or destroy it), and go round.
//!
//! When Dom0 ends, the machine ends: the remaining domains are destroyed. Without a
//! Dom0, keel runs until the last domain has ended.
//!
//! # Locking
//! One CPU: the world is owned by the loop; the running domain is taken out of the
//! map so handlers can hold it and the world by `&mut` at once.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use keel_arch::hvm::HvmVcpu;
use keel_evtchn::two_level::{self, EventWords};
use keel_evtchn::{Hub, Notify};
use keel_grant::Grants;
use keel_hypercall::abi::domid::DOMID_XEN;
use keel_hypercall::abi::evtchn::VIRQ_TIMER;
use keel_hypercall::abi::xen::{VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT};
use keel_hypercall::dispatch::{ShutdownReason, update_secondary_system_time};
use keel_mm::layout::directmap_va;
use keel_sched::{Params, Policy, VcpuId};

use crate::clock;
use crate::domain::{Domain, Wait, earliest};
use crate::logger::say;
use crate::vmexit::{self, DomainEnd, Flow};

/// Event channels a domain may use unless its configuration says otherwise (xl's
/// default `max_event_channels`).
pub const DEFAULT_MAX_EVTCHN: u32 = 1023;
/// Grant-table frames a domain may have (Xen's default `gnttab_max_frames`).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
/// Grant mappings a domain may hold at once (Xen's default `gnttab_max_maptrack_frames`
/// of 1024 frames of 512 entries is far more than keel's guests need).
pub const DEFAULT_MAX_MAPTRACK: u32 = 4096;

/// How each domain ended, for the summary line.
pub struct Ended {
    pub id: u16,
    pub how: String,
    pub failed: bool,
}

/// Every domain and the machinery they share.
pub struct World {
    pub doms: BTreeMap<u16, Box<Domain>>,
    pub evtchn: Hub,
    pub grants: Grants,
    pub sched: Box<dyn Policy + Send>,
    /// keel's ends of the domUs' console channels (DOMID_XEN's table): port -> domid.
    pub console_ports: BTreeMap<u32, u16>,
    pub ended: Vec<Ended>,
    /// The vCPU whose lazy register state is in the CPU now.
    loaded: Option<u16>,
}

/// The 2-level event words of a domain: shared_info's bitmaps and vCPU 0's
/// vcpu_info, reached through the direct map with atomic operations (the guest
/// changes them concurrently, as on Xen).
pub struct SharedWords {
    shared: u64,
    vcpu_info: u64,
}

impl SharedWords {
    pub fn of(d: &Domain) -> SharedWords {
        SharedWords {
            shared: d.shared_info_va(),
            vcpu_info: d.vcpu_info_va(),
        }
    }

    fn word(&self, base: u64, port: u32) -> (&AtomicU64, u64) {
        let word = u64::from(port / 64) % 64;
        // SAFETY: `shared` is the direct-map address of the domain's shared_info
        // frame, which lives as long as the domain (and a SharedWords never outlives
        // the borrow that made it); base + 8 * word + 8 <= 0xC00 stays inside the
        // frame, 8-aligned. Atomics make the guest's concurrent writes harmless.
        let a = unsafe { AtomicU64::from_ptr((self.shared + base + 8 * word) as *mut u64) };
        (a, 1u64 << (port % 64))
    }

    fn pending_sel(&self) -> &AtomicU64 {
        // SAFETY: vcpu_info is 8-aligned inside a frame the domain owns (checked at
        // registration); evtchn_pending_sel is at offset 8.
        unsafe { AtomicU64::from_ptr((self.vcpu_info + 8) as *mut u64) }
    }

    fn upcall_pending(&self) -> &AtomicU8 {
        // SAFETY: as above; evtchn_upcall_pending is the first byte.
        unsafe { AtomicU8::from_ptr(self.vcpu_info as *mut u8) }
    }

    fn upcall_mask(&self) -> &AtomicU8 {
        // SAFETY: as above; evtchn_upcall_mask is the second byte.
        unsafe { AtomicU8::from_ptr((self.vcpu_info + 1) as *mut u8) }
    }

    /// Whether vCPU 0 has an upcall pending.
    pub fn has_upcall(&self) -> bool {
        self.upcall_pending().load(Ordering::Acquire) != 0
    }

    /// Whether vCPU 0 masks upcalls (`evtchn_upcall_mask`).
    pub fn upcalls_masked(&self) -> bool {
        self.upcall_mask().load(Ordering::Acquire) != 0
    }

    /// Sets every selector bit and the upcall (after vcpu_info moved, so the
    /// guest rescans all of its ports, as Xen does).
    pub fn mark_all_pending(&mut self) {
        self.pending_sel().store(u64::MAX, Ordering::Release);
        self.upcall_pending().store(1, Ordering::Release);
    }

    /// Clears vCPU 0's event mask (SCHEDOP_block re-enables delivery).
    pub fn unmask_upcalls(&self) {
        self.upcall_mask().store(0, Ordering::Release);
    }
}

const PENDING: u64 = 0x800;
const MASK: u64 = 0xA00;

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

/// The `version` word of vCPU 0's `vcpu_time_info` (offset 32 of its vcpu_info).
fn time_version(d: &Domain) -> &core::sync::atomic::AtomicU32 {
    // SAFETY: the 32-byte vcpu_time_info lies inside the domain's vcpu_info frame
    // (offset 32..64 of a 64-byte, 8-aligned, in-frame vcpu_info); the frame is the
    // domain's, mapped by the direct map, and lives as long as the domain.
    unsafe { AtomicU32Ptr::at(d.vcpu_info_va() + 32) }
}

/// vCPU 0's `vcpu_time_info` as its vcpu_info holds it now (the guest could have
/// scribbled on the version there; only the version is read back).
pub fn current_time(d: &Domain) -> VcpuTimeInfo {
    VcpuTimeInfo {
        version: time_version(d).load(Ordering::Acquire),
        ..time_params()
    }
}

/// Writes the pvclock parameters into a domain's vcpu_info (Xen's version protocol:
/// odd while writing, `version_update_begin`/`_end`), then, as Xen's
/// `update_secondary_system_time`, the same data under the same odd version into
/// the secondary area the guest registered (`VCPUOP_register_vcpu_time_memory_area`),
/// if any, through the guest's page tables, ignoring faults.
pub fn publish_time(d: &mut Domain) {
    let t = time_params();
    let base = d.vcpu_info_va() + 32;
    let version = time_version(d);
    let begin = version.load(Ordering::Acquire).wrapping_add(1) | 1;
    version.store(begin, Ordering::Release);
    let bytes = t.to_bytes();
    for (i, b) in bytes.iter().enumerate().skip(4) {
        // SAFETY: as in `time_version`: base + 4..base + 32 lie inside the frame.
        unsafe { core::ptr::write_volatile((base + i as u64) as *mut u8, *b) };
    }
    version.store(begin.wrapping_add(1), Ordering::Release);
    if let Some(gva) = d.time_area {
        let t = VcpuTimeInfo {
            version: begin,
            ..t
        };
        update_secondary_system_time(gva, &t, |a, b| d.copy_to_guest(a, b));
    }
}

/// Writes the wall-clock time at system time 0 into a domain's shared_info
/// (`wc_*`, under `wc_version`: odd while writing).
pub fn publish_wallclock(d: &Domain) {
    let (secs, nsec) = clock::wallclock();
    let base = keel_mm::layout::directmap_va(d.shared_info.hpa());
    // SAFETY: shared_info is a whole frame the domain owns, mapped by the direct
    // map; wc_version..wc_sec_hi are four u32 at 3072..3088 (Xen's x86 layout).
    let word = |off: u64| unsafe { AtomicU32Ptr::at(base + off) };
    let version = word(3072);
    let v = version.load(Ordering::Acquire);
    version.store(v.wrapping_add(1) | 1, Ordering::Release);
    word(3076).store(secs as u32, Ordering::Relaxed);
    word(3080).store(nsec, Ordering::Relaxed);
    word(3084).store((secs >> 32) as u32, Ordering::Relaxed);
    version.store(v.wrapping_add(2) & !1, Ordering::Release);
}

/// An `AtomicU32` at a direct-map address.
struct AtomicU32Ptr;

impl AtomicU32Ptr {
    /// # Safety
    /// `va` is 4-aligned, inside a live frame, and not freed while the reference
    /// is used.
    unsafe fn at(va: u64) -> &'static core::sync::atomic::AtomicU32 {
        // SAFETY: per the contract.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(va as *mut u32) }
    }
}

/// Marks `port` pending for domain `d` and wakes it if that makes an upcall
/// pending, or if it polls the port.
pub fn raise(d: &mut Domain, port: u32, sched: &mut dyn Policy) {
    let mut w = SharedWords::of(d);
    let kick = two_level::set_pending(&mut w, port, 0);
    let wake = match &d.wait {
        Wait::None => false,
        Wait::Blocked => kick || w.has_upcall(),
        Wait::Polling { ports, .. } => {
            kick || w.has_upcall() || ports.is_empty() || ports.contains(&port)
        }
    };
    if wake {
        wake_vcpu(d, sched);
    }
}

/// keel's own time between slices (switching, scheduling), which the scheduler's
/// clock leaves out: a vCPU is charged for the time it ran (and exits handled in
/// its slice), not for keel's switch to or from it. Under emulation a switch can
/// cost as much as a short slice, and charging it would skew shares against
/// vCPUs with short slices.
static OVERHEAD: AtomicU64 = AtomicU64::new(0);

/// The scheduler's clock: system time less keel's switching overhead.
fn sched_clock() -> u64 {
    clock::now().saturating_sub(OVERHEAD.load(Ordering::Relaxed))
}

/// Set when the policy wants the running vCPU preempted (a woken vCPU deserves
/// the CPU now); the slice loop checks it after every exit.
static PREEMPT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Makes a blocked or polling vCPU runnable.
pub fn wake_vcpu(d: &mut Domain, sched: &mut dyn Policy) {
    if d.wait != Wait::None {
        d.wait = Wait::None;
        if sched
            .wake(VcpuId { dom: d.id, vcpu: 0 }, sched_clock())
            .is_some()
        {
            PREEMPT.store(true, Ordering::Relaxed);
        }
    }
}

/// What a slice ended with.
enum SliceEnd {
    /// Time is up or something is due: back to the scheduler.
    Preempted,
    Yield,
    Blocked,
    Ended(DomainEnd),
}

impl World {
    pub fn new(sched: Box<dyn Policy + Send>) -> World {
        let mut evtchn = Hub::new();
        // keel's own table, for its ends of the domUs' consoles.
        if let Err(e) = evtchn.add_domain(DOMID_XEN, DEFAULT_MAX_EVTCHN, 1) {
            log::error!("event channels: keel's own table: {e}");
        }
        World {
            doms: BTreeMap::new(),
            evtchn,
            grants: Grants::new(),
            sched,
            console_ports: BTreeMap::new(),
            ended: Vec::new(),
            loaded: None,
        }
    }

    /// Takes a freshly built domain in: its event-channel and grant tables, its
    /// console channel (domUs), its clock, and a place in the scheduler (runnable).
    pub fn admit(
        &mut self,
        mut d: Box<Domain>,
        max_evtchn: u32,
        max_grant_frames: u32,
    ) -> Result<(), String> {
        let id = d.id;
        // xl's max_event_channels is the highest port; the table holds one more.
        self.evtchn
            .add_domain(id, max_evtchn.saturating_add(1), 1)
            .map_err(|e| format!("event channels: {e}"))?;
        self.grants
            .add_domain(id, max_grant_frames, DEFAULT_MAX_MAPTRACK)
            .map_err(|e| format!("grant table: {e:?}"))?;
        // Xen starts every table with its first frame.
        self.grants
            .setup_table(id, keel_grant::INITIAL_NR_GRANT_FRAMES, || {
                d.alloc_owned(1).map(|m| m.as_u64())
            })
            .map_err(|e| format!("grant table: {e}"))?;
        if !d.privileged {
            self.attach_console(&mut d)?;
        }
        publish_time(&mut d);
        publish_wallclock(&d);
        let v = VcpuId { dom: id, vcpu: 0 };
        self.sched
            .add(
                v,
                Params {
                    weight: d.weight,
                    cap: d.cap,
                },
            )
            .map_err(|e| format!("scheduler: {e}"))?;
        self.sched.wake(v, sched_clock());
        self.doms.insert(id, d);
        Ok(())
    }

    /// Gives a domU its PV console: a ring page at `CONSOLE_RING_GFN` and an event
    /// channel whose other end is keel's.
    fn attach_console(&mut self, d: &mut Domain) -> Result<(), String> {
        use keel_hypercall::abi::hvm::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN};
        use keel_kernel::pvh::CONSOLE_RING_GFN;
        if d.ram_bytes > keel_kernel::pvh::SPECIAL_PAGES_START {
            log::warn!("d{}: RAM reaches the special pages: no PV console", d.id);
            return Ok(());
        }
        let mfn = d
            .alloc_owned(1)
            .ok_or_else(|| String::from("no memory for the console ring"))?;
        let gfn = keel_mm::addr::Gfn::new(CONSOLE_RING_GFN).ok_or("console gfn")?;
        d.p2m
            .set_entry(gfn, Some((mfn, keel_mm::p2m::Access::RW)))
            .map_err(|e| format!("mapping the console ring: {e}"))?;
        let xen_port = self
            .evtchn
            .alloc_unbound(DOMID_XEN, true, DOMID_XEN, d.id)
            .map_err(|e| format!("console channel: {e}"))?;
        let (port, _) = self
            .evtchn
            .bind_interdomain(d.id, DOMID_XEN, xen_port)
            .map_err(|e| format!("console channel: {e}"))?;
        d.hvm_params[HVM_PARAM_CONSOLE_PFN as usize] = CONSOLE_RING_GFN;
        d.hvm_params[HVM_PARAM_CONSOLE_EVTCHN as usize] = u64::from(port);
        d.console_ring = Some(crate::domain::ConsoleRing { mfn, xen_port });
        self.console_ports.insert(xen_port, d.id);
        Ok(())
    }

    /// Delivers a notification. `cur` is the running domain (out of the map).
    pub fn deliver(&mut self, cur: &mut Domain, n: Notify) {
        if n.dom == DOMID_XEN {
            let Some(&id) = self.console_ports.get(&n.port) else {
                return;
            };
            if id == cur.id {
                self.serve_console(cur);
            } else if let Some(mut d) = self.doms.remove(&id) {
                self.serve_console(&mut d);
                self.doms.insert(id, d);
            }
            return;
        }
        if n.dom == cur.id {
            raise(cur, n.port, self.sched.as_mut());
        } else if let Some(d) = self.doms.get_mut(&n.dom) {
            raise(d, n.port, self.sched.as_mut());
        }
    }

    /// Prints what a domU wrote to its console ring, and tells it the ring has room.
    fn serve_console(&mut self, d: &mut Domain) {
        let Some(ring) = d.console_ring else { return };
        let base = directmap_va(ring.mfn.hpa());
        // struct xencons_interface: in[1024], out[2048], in_cons, in_prod,
        // out_cons, out_prod (io/console.h).
        const OUT: u64 = 1024;
        const OUT_SIZE: u32 = 2048;
        const OUT_CONS: u64 = 3072 + 8;
        const OUT_PROD: u64 = 3072 + 12;
        // SAFETY: the ring is a frame the domain owns, mapped by the direct map;
        // both indices are 4-aligned inside it.
        let (cons_a, prod_a) = unsafe {
            (
                AtomicU32Ptr::at(base + OUT_CONS),
                AtomicU32Ptr::at(base + OUT_PROD),
            )
        };
        let mut cons = cons_a.load(Ordering::Acquire);
        let prod = prod_a.load(Ordering::Acquire);
        // A guest may publish any index: take at most one ring's worth.
        let avail = prod.wrapping_sub(cons).min(OUT_SIZE);
        let mut buf = [0u8; 2048];
        for b in buf.iter_mut().take(avail as usize) {
            let at = base + OUT + u64::from(cons % OUT_SIZE);
            // SAFETY: inside the ring frame (OUT + 0..2048).
            *b = unsafe { core::ptr::read_volatile(at as *const u8) };
            cons = cons.wrapping_add(1);
        }
        cons_a.store(cons, Ordering::Release);
        d.console.push(d.id, &buf[..avail as usize]);
        if avail > 0
            && let Ok(Some(n)) = self.evtchn.send(DOMID_XEN, ring.xen_port)
        {
            raise(d, n.port, self.sched.as_mut());
        }
    }

    /// The earliest timer or poll deadline among the domains in the map and `cur`.
    fn next_deadline(&self, cur: Option<&Domain>) -> Option<u64> {
        self.doms
            .values()
            .map(|d| &**d)
            .chain(cur)
            .filter_map(deadline_of)
            .min()
    }

    /// Fires every due timer and poll timeout of the domains in the map.
    fn fire_due(&mut self, now: u64) {
        for d in self.doms.values_mut() {
            fire_due_in(&self.evtchn, self.sched.as_mut(), d, now);
        }
    }

    /// Runs every domain until none is left, or Dom0 has ended.
    pub fn run(&mut self) {
        // When the last slice (or idle period) ended: what follows until the next
        // guest entry is keel's overhead, left out of the scheduler's clock.
        let mut t_exit = clock::now();
        loop {
            if self.doms.is_empty() {
                clock::disarm();
                return;
            }
            let now = clock::now();
            OVERHEAD.fetch_add(now.saturating_sub(t_exit), Ordering::Relaxed);
            self.fire_due(now);
            PREEMPT.store(false, Ordering::Relaxed);
            let decision = self.sched.pick(0, sched_clock());
            let Some(v) = decision.next else {
                let t = clock::now();
                OVERHEAD.fetch_add(t.saturating_sub(now), Ordering::Relaxed);
                self.idle(t, decision.slice_ns);
                t_exit = clock::now();
                continue;
            };
            let Some(mut d) = self.doms.remove(&v.dom) else {
                log::error!("scheduler picked d{} which does not exist", v.dom);
                self.sched.remove(v, sched_clock());
                t_exit = clock::now();
                continue;
            };
            if self.loaded != Some(v.dom) {
                d.vcpu.restore_lazy_state();
                self.loaded = Some(v.dom);
            }
            set_runstate(&mut d, RUNSTATE_RUNNING, now);
            let t_enter = clock::now();
            OVERHEAD.fetch_add(t_enter.saturating_sub(now), Ordering::Relaxed);
            let end = t_enter.saturating_add(decision.slice_ns);
            let how = self.run_slice(&mut d, end);
            let now = clock::now();
            t_exit = now;
            d.vcpu.save_lazy_state();
            match how {
                SliceEnd::Preempted => set_runstate(&mut d, RUNSTATE_RUNNABLE, now),
                SliceEnd::Yield => {
                    set_runstate(&mut d, RUNSTATE_RUNNABLE, now);
                    self.sched.yield_now(v, sched_clock());
                }
                SliceEnd::Blocked => {
                    set_runstate(&mut d, RUNSTATE_BLOCKED, now);
                    self.sched.block(v, sched_clock());
                }
                SliceEnd::Ended(e) => {
                    self.loaded = None;
                    let was_dom0 = d.privileged && d.id == 0;
                    self.destroy(d, e);
                    if was_dom0 {
                        self.end_all("dom0 has ended", false);
                        return;
                    }
                    continue;
                }
            }
            self.doms.insert(v.dom, d);
        }
    }

    /// Nothing to run: sleep until the next deadline (or the policy's next look).
    fn idle(&mut self, now: u64, slice_ns: u64) {
        let next = self.next_deadline(None);
        let policy = (slice_ns != u64::MAX).then(|| now.saturating_add(slice_ns));
        let Some(until) = earliest(next, policy) else {
            // Every domain waits for an event nobody can send: nothing will ever
            // run again. End them rather than hang the machine.
            say!("Every domain is blocked with no timer or event that could wake it");
            self.end_all("blocked forever", true);
            return;
        };
        clock::arm(until);
        while clock::now() < until {
            keel_arch::cpu::enable_interrupts_and_halt();
            keel_arch::cpu::disable_interrupts();
        }
    }

    /// Runs `d` until its slice ends at `end` (system time).
    fn run_slice(&mut self, d: &mut Domain, end: u64) -> SliceEnd {
        loop {
            if d.wait != Wait::None {
                return SliceEnd::Blocked;
            }
            prepare_entry(d);
            let stop = self.next_deadline(Some(d)).map_or(end, |t| t.min(end));
            clock::arm(stop);
            let exit = d.vcpu.run();
            match vmexit::handle(self, d, exit) {
                Ok(Flow::Continue) => {
                    if PREEMPT.swap(false, Ordering::Relaxed) {
                        return SliceEnd::Preempted;
                    }
                }
                Ok(Flow::Yield) => return SliceEnd::Yield,
                Ok(Flow::Block) => {
                    if d.wait != Wait::None {
                        return SliceEnd::Blocked;
                    }
                }
                Ok(Flow::Interrupted) => {
                    keel_arch::cpu::interrupt_window();
                    let now = clock::now();
                    if now >= stop {
                        // The current domain's own timers fire here; others' in
                        // the main loop.
                        fire_due_in(&self.evtchn, self.sched.as_mut(), d, now);
                        return SliceEnd::Preempted;
                    }
                }
                Err(e) => return SliceEnd::Ended(e),
            }
        }
    }

    /// Ends a domain: says how, closes its channels, revokes and releases its
    /// grants, and frees everything it owned.
    pub fn destroy(&mut self, mut d: Box<Domain>, end: DomainEnd) {
        d.console.flush_if_pending(d.id);
        let (how, failed) = match &end {
            DomainEnd::Shutdown(r) => {
                say!("d{} shut down: {r}", d.id);
                (format!("{r}"), *r == ShutdownReason::Crash)
            }
            DomainEnd::Crashed(why) => {
                say!("d{} crashed: {why}", d.id);
                (String::from("crashed"), true)
            }
            DomainEnd::Destroyed(why) => {
                say!("d{} destroyed: {why}", d.id);
                (String::from("destroyed"), false)
            }
        };
        let id = d.id;
        self.sched
            .remove(VcpuId { dom: id, vcpu: 0 }, sched_clock());
        if let Some(ring) = d.console_ring {
            self.console_ports.remove(&ring.xen_port);
            let _ = self.evtchn.close(DOMID_XEN, ring.xen_port);
        }
        self.evtchn.remove_domain(id);
        let revoked = match self
            .grants
            .remove_domain(id, &mut crate::hypercalls::GrantFrames)
        {
            Ok(r) => r.revoked,
            Err(e) => {
                log::error!("d{id}: grant table: {e:?}");
                Vec::new()
            }
        };
        for r in revoked {
            if let Some(m) = self.doms.get_mut(&r.mapper)
                && let Some(gfn) = keel_mm::addr::Gfn::new(r.host_gfn)
            {
                let _ = m.p2m.set_entry(gfn, None);
                m.foreign.remove(&r.host_gfn);
                m.vcpu.flush_guest_tlb();
                log::debug!(
                    "d{}: grant mapping at gfn {:#x} revoked (d{id} ended)",
                    m.id,
                    r.host_gfn
                );
            }
        }
        log::debug!("d{id} ({}): resources freed", d.name);
        self.ended.push(Ended { id, how, failed });
        drop(d);
    }

    /// Destroys every remaining domain: Dom0 has ended (`failed` false), or
    /// nothing can ever run again (`failed` true: they are stuck).
    fn end_all(&mut self, why: &str, failed: bool) {
        while let Some((_, d)) = self.doms.pop_first() {
            let why = String::from(why);
            let end = if failed {
                DomainEnd::Crashed(why)
            } else {
                DomainEnd::Destroyed(why)
            };
            self.destroy(d, end);
        }
    }
}

/// Fires `d`'s due timers (raising VIRQ_TIMER) and its expired poll timeout.
fn fire_due_in(evtchn: &Hub, sched: &mut dyn Policy, d: &mut Domain, now: u64) {
    let mut fire = false;
    if d.timers.singleshot.is_some_and(|t| t <= now) {
        d.timers.singleshot = None;
        fire = true;
    }
    if let Some((period, next)) = d.timers.periodic
        && next <= now
    {
        // The next tick one period on; ticks missed while keel was busy are
        // dropped, not bunched (Xen does the same).
        let missed = (now - next) / period;
        d.timers.periodic = Some((period, next + (missed + 1) * period));
        fire = true;
    }
    if fire && let Some(n) = evtchn.virq(d.id, 0, VIRQ_TIMER) {
        raise(d, n.port, sched);
    }
    if let Wait::Polling {
        deadline: Some(t), ..
    } = d.wait
        && t <= now
    {
        wake_vcpu(d, sched);
    }
    // The local APIC timer: its interrupt wakes a halted vCPU (a poll waits for
    // event channels only).
    if d.lapic.timer_fire(now) && d.wait == Wait::Blocked && d.lapic.pending().is_some() {
        wake_vcpu(d, sched);
    }
}

/// A domain's next deadline: a timer or a poll timeout.
fn deadline_of(d: &Domain) -> Option<u64> {
    let poll = match &d.wait {
        Wait::Polling { deadline, .. } => *deadline,
        _ => None,
    };
    earliest(earliest(d.timers.next(), poll), d.lapic.timer_deadline())
}

/// Before an entry: if an event upcall is pending and the guest chose a vector,
/// inject it, or ask to be told when the guest can take it.
/// A local APIC interrupt competes with the upcall by vector, as the two would on
/// hardware: the higher goes first, the other waits for the next entry.
fn prepare_entry(d: &mut Domain) {
    let upcall = d.upcall_vector.filter(|_| SharedWords::of(d).has_upcall());
    let lapic = d.lapic.pending();
    let Some(vector) = higher_vector(upcall, lapic) else {
        return;
    };
    if d.vcpu.interrupt_ready() {
        if lapic == Some(vector) && upcall != Some(vector) {
            d.lapic.ack(vector);
        }
        d.vcpu.inject_interrupt(vector);
    } else {
        d.vcpu.set_interrupt_window_exit(true);
    }
}

/// The larger of two optional vectors.
fn higher_vector(a: Option<u8>, b: Option<u8>) -> Option<u8> {
    a.into_iter().chain(b).max()
}

pub const RUNSTATE_RUNNING: i32 = 0;
pub const RUNSTATE_RUNNABLE: i32 = 1;
pub const RUNSTATE_BLOCKED: i32 = 2;

/// Moves the vCPU's runstate accounting to `state` at `now`, and updates the
/// guest's copy if it registered one.
pub fn set_runstate(d: &mut Domain, state: i32, now: u64) {
    let r = &mut d.runstate;
    if let Some(slot) = r.time.get_mut(r.state as usize) {
        *slot = slot.wrapping_add(now.saturating_sub(r.entry_time));
    }
    r.state = state;
    r.entry_time = now;
    crate::hypercalls::write_runstate(d);
}
