//! A vCPU, apart from its domain (Xen: `struct vcpu`): its hardware state, and the
//! state hypercalls, event delivery and timers change (where its `vcpu_info` is,
//! its upcall vector, its local APIC, its Xen timers, what it waits for, its
//! runstate).
//!
//! The hardware half ([`ArchVcpu`]) is behind one interface neutral to guest type:
//! `arch::hvm::HvmVcpu`, whose two implementations are VMX and SVM; a PV vCPU
//! becomes a third without the run loop changing.
//!
//! # Locking
//! - [`Vcpu::arch`] is held by the pCPU that runs the vCPU for as long as it runs
//!   it (a whole slice), and by nobody else: other CPUs never read a vCPU's
//!   registers (VMX would need the VMCS current on their CPU). Remote requests go
//!   through atomics ([`Vcpu::flush`]) that the running pCPU acts on at its next
//!   entry.
//! - [`Vcpu::st`] is short-lived: taken by the vCPU's own exits and hypercalls, by
//!   event delivery and IPIs from any CPU, and by the timer code. It is taken
//!   after the grant and event-channel locks and the domain's `online` lock,
//!   before its domain's `mem` and before the scheduler's; two vCPUs' are never
//!   held at once (docs/architecture.md, "Lock order"). Whatever blocks the vCPU
//!   (HLT, `SCHEDOP_block`, `SCHEDOP_poll`) checks for a pending event and sets
//!   [`VcpuState::wait`] under one hold of it, and event delivery sets the event
//!   and reads `wait` under one hold too: no wake-up is lost between them.
//! - `in_guest`, `exits`, `running_on`, `lazy_cpu` and `flush` are atomics any
//!   pCPU reads; only the pCPU holding the vCPU writes the first four.

use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use keel_arch::hvm::{GuestPaging, HvmVcpu, Vcpu as HwVcpu};
use keel_devices::vlapic::Vlapic;
use keel_mm::addr::{Hpa, Mfn};
use keel_mm::guest_walk::{PagingMode, WalkCtx};

use keel_x86::context::Context;

use crate::frames::Frame;

/// A vCPU's hardware state and the frames its backend uses (VMCS/VMCB, bitmaps),
/// freed after the backend is dropped.
pub struct ArchVcpu {
    hw: ManuallyDrop<HwVcpu>,
    frames: Vec<(Hpa, u64)>,
}

impl ArchVcpu {
    pub fn new(hw: HwVcpu, frames: Vec<(Hpa, u64)>) -> ArchVcpu {
        ArchVcpu {
            hw: ManuallyDrop::new(hw),
            frames,
        }
    }
}

impl ArchVcpu {
    /// The guest's paging state, for walking its page tables.
    pub fn walk_ctx(&self) -> WalkCtx {
        const CR0_WP: u64 = 1 << 16;
        const EFER_NXE: u64 = 1 << 11;
        let v = &*self.hw;
        let mode = match v.paging() {
            GuestPaging::Off => PagingMode::Off,
            GuestPaging::Bits32 { pse } => PagingMode::Bits32 { pse },
            GuestPaging::Pae => PagingMode::Pae,
            GuestPaging::Long4 => PagingMode::Long4,
        };
        WalkCtx {
            mode,
            cr3: v.cr3(),
            nxe: v.efer() & EFER_NXE != 0,
            wp: v.cr0() & CR0_WP != 0,
        }
    }
}

impl core::ops::Deref for ArchVcpu {
    type Target = HwVcpu;
    fn deref(&self) -> &HwVcpu {
        &self.hw
    }
}

impl core::ops::DerefMut for ArchVcpu {
    fn deref_mut(&mut self) -> &mut HwVcpu {
        &mut self.hw
    }
}

impl Drop for ArchVcpu {
    /// The backend goes first (VMX: VMCLEAR), then its frames.
    fn drop(&mut self) {
        // SAFETY: `hw` is never used again: this is its owner's destructor.
        unsafe { ManuallyDrop::drop(&mut self.hw) };
        crate::memory::free_runs(self.frames.iter().map(|&(h, n)| (h.mfn(), n)));
    }
}

/// Where a vCPU's `vcpu_info` lives: shared_info's slot, or where the guest
/// registered it (`VCPUOP_register_vcpu_info`). `offset` is 8-aligned and the 64
/// bytes fit in the frame, which the domain owns for as long as it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuInfoAt {
    pub mfn: Mfn,
    pub offset: u16,
}

impl VcpuInfoAt {
    /// The frame and offset, as memory.
    pub fn frame(&self) -> (Frame, usize) {
        // SAFETY: the frame is one the domain owns (shared_info, or RAM checked at
        // registration and kept while registered: `hypercalls::is_special`), and
        // the domain outlives its vCPUs' use of it.
        (unsafe { Frame::new(self.mfn) }, usize::from(self.offset))
    }
}

/// A vCPU's Xen timers, as deadlines in system time (ns since keel booted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    /// `set_timer_op` / `VCPUOP_set_singleshot_timer`.
    pub singleshot: Option<u64>,
    /// `VCPUOP_set_periodic_timer`: (period, next deadline).
    pub periodic: Option<(u64, u64)>,
    /// Bumped whenever the guest sets or stops the single-shot timer, and the
    /// periodic one: a tick decided before a change is not delivered after it
    /// (`run::fire_due_in`).
    pub singleshot_changes: u64,
    pub periodic_changes: u64,
}

impl Timers {
    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<u64> {
        earliest(self.singleshot, self.periodic.map(|p| p.1))
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.into_iter().chain(b).min()
}

/// What the vCPU waits for, if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Runnable (or running).
    #[default]
    None,
    /// `SCHEDOP_block` or HLT: until an event is pending for it.
    Blocked,
    /// `SCHEDOP_poll`: until one of `ports` (any port if empty) is pending, an
    /// upcall is, or `deadline` (system time) passes.
    Polling {
        ports: Vec<u32>,
        deadline: Option<u64>,
    },
}

pub const RUNSTATE_RUNNING: i32 = 0;
pub const RUNSTATE_RUNNABLE: i32 = 1;
pub const RUNSTATE_BLOCKED: i32 = 2;
pub const RUNSTATE_OFFLINE: i32 = 3;

/// The vCPU's runstate accounting (`vcpu_runstate_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runstate {
    /// `RUNSTATE_*`.
    pub state: i32,
    pub entry_time: u64,
    pub time: [u64; 4],
    /// Where the guest asked keel to keep a copy (guest-virtual), if it did, and
    /// in which layout (`true`: the 32-bit one).
    pub area: Option<u64>,
    pub area_compat: bool,
}

/// What hypercalls, exits, event delivery and timers change.
pub struct VcpuState {
    pub vcpu_info: VcpuInfoAt,
    pub vcpu_info_registered: bool,
    /// `HVMOP_set_evtchn_upcall_vector`: this vCPU's own vector, which wins over
    /// the domain's `HVM_PARAM_CALLBACK_IRQ` vector.
    pub upcall_vector: Option<u8>,
    pub timers: Timers,
    /// The emulated local APIC (Xen gives PVH domains one too): its page at
    /// 0xFEE00000 is unbacked in the p2m, so accesses exit and `vmexit` forwards them.
    pub lapic: Vlapic,
    pub wait: Wait,
    pub runstate: Runstate,
    /// Where the guest asked keel to keep a copy of its `vcpu_time_info`
    /// (guest-virtual; `VCPUOP_register_vcpu_time_memory_area`), if it did.
    pub time_area: Option<u64>,
    /// Xen's `is_initialised`: the vCPU has a start state (vCPU 0 from the
    /// build, others from `VCPUOP_initialise` or a SIPI). An INIT clears it.
    pub initialised: bool,
    /// Xen's `_VPF_down`: the vCPU is offline (not yet brought up, or taken
    /// down by `VCPUOP_down`, an INIT, or HLT with interrupts off). Events
    /// still become pending; nothing wakes it but `VCPUOP_up`, a SIPI or an NMI.
    pub down: bool,
    /// A whole register state to load before the vCPU next enters the guest
    /// (`VCPUOP_initialise`, a SIPI). Loaded by the pCPU that runs it, so no
    /// CPU ever touches another's hardware vCPU state (VMX: the VMCS).
    pub start: Option<Context>,
    /// A PV vCPU's new state from `VCPUOP_initialise`, loaded at its next
    /// entry as `start` is.
    pub pv_start: Option<alloc::boxed::Box<keel_arch::pv::PvInit>>,
    /// An NMI waits for delivery (an NMI IPI, `VCPUOP_send_nmi`).
    pub nmi_pending: bool,
}

impl VcpuState {
    /// Whether the vCPU may run: online and not waiting.
    pub fn runnable(&self) -> bool {
        !self.down && self.wait == Wait::None
    }

    /// The next deadline the vCPU has: a timer, a poll timeout, its APIC timer.
    pub fn next_deadline(&self) -> Option<u64> {
        let poll = match &self.wait {
            Wait::Polling { deadline, .. } => *deadline,
            _ => None,
        };
        earliest(
            earliest(self.timers.next(), poll),
            self.lapic.timer_deadline(),
        )
    }
}

/// Bumped whenever a vCPU gets a deadline earlier than it had (a timer set, a poll
/// with a timeout, a local APIC write): the run loop keeps the earliest deadline
/// of all vCPUs cached and recomputes it only when this moved, or when the cached
/// one has passed (so a deadline that went away costs one recomputation).
static DEADLINE_GEN: AtomicU64 = AtomicU64::new(0);

/// Says that some vCPU's deadlines changed (see [`DEADLINE_GEN`]).
pub fn deadlines_changed() {
    DEADLINE_GEN.fetch_add(1, Ordering::Release);
}

/// The current deadline generation.
pub fn deadline_gen() -> u64 {
    DEADLINE_GEN.load(Ordering::Acquire)
}

/// One vCPU.
pub struct Vcpu {
    pub id: u32,
    pub domid: u16,
    arch: spin::Mutex<ArchVcpu>,
    pub st: spin::Mutex<VcpuState>,
    /// Set by anyone who changed the domain's p2m: flush the guest TLB before
    /// the next entry.
    pub flush: AtomicBool,
    /// Whether the vCPU is in guest mode now (set before the flush check of an
    /// entry, cleared as soon as it exits), and how many times it has exited:
    /// what a remote TLB flush waits on ([`crate::domain::Domain::flush_tlbs`]).
    pub in_guest: AtomicBool,
    pub exits: AtomicU64,
    /// The pCPU holding the vCPU now, [`NOT_RUNNING`] if none.
    pub running_on: AtomicU32,
    /// The pCPU whose registers got the vCPU's lazy state (x87/SSE...) when it
    /// last left one: only there may the run loop skip restoring it.
    pub lazy_cpu: AtomicU32,
}

/// The local APIC id of vCPU `id`: 2 x id, as Xen gives HVM and PVH vCPUs
/// (CPUID leaf 1, the MADT and the APIC ID register agree on it).
pub fn apic_id(id: u32) -> u32 {
    id.saturating_mul(2)
}

/// [`Vcpu::running_on`] when no pCPU holds the vCPU.
pub const NOT_RUNNING: u32 = u32::MAX;

/// A vCPU's hardware state, held by one pCPU; when the guard goes, that pCPU lets
/// the vCPU go (`HvmVcpu::release_cpu`: VMX VMCLEARs), so any other may take it.
pub struct ArchGuard<'a>(spin::MutexGuard<'a, ArchVcpu>);

impl core::ops::Deref for ArchGuard<'_> {
    type Target = ArchVcpu;
    fn deref(&self) -> &ArchVcpu {
        &self.0
    }
}

impl core::ops::DerefMut for ArchGuard<'_> {
    fn deref_mut(&mut self) -> &mut ArchVcpu {
        &mut self.0
    }
}

impl Drop for ArchGuard<'_> {
    fn drop(&mut self) {
        self.0.release_cpu();
    }
}

impl Vcpu {
    /// vCPU `id` of domain `domid`, over `arch`, its `vcpu_info` at `vcpu_info`
    /// (shared_info's slot until the guest registers another place). `up`: it
    /// starts online with the state `arch` was built with (vCPU 0); otherwise
    /// it is down and not initialised until the guest brings it up.
    pub fn new(domid: u16, id: u32, arch: ArchVcpu, vcpu_info: VcpuInfoAt, up: bool) -> Vcpu {
        Vcpu {
            id,
            domid,
            arch: spin::Mutex::new(arch),
            st: spin::Mutex::new(VcpuState {
                vcpu_info,
                vcpu_info_registered: false,
                upcall_vector: None,
                timers: Timers::default(),
                lapic: Vlapic::new(apic_id(id), id == 0),
                wait: Wait::None,
                runstate: Runstate {
                    state: if up { RUNSTATE_RUNNABLE } else { RUNSTATE_OFFLINE },
                    ..Runstate::default()
                },
                time_area: None,
                initialised: up,
                down: !up,
                start: None,
                pv_start: None,
                nmi_pending: false,
            }),
            flush: AtomicBool::new(false),
            in_guest: AtomicBool::new(false),
            exits: AtomicU64::new(0),
            running_on: AtomicU32::new(NOT_RUNNING),
            lazy_cpu: AtomicU32::new(NOT_RUNNING),
        }
    }

    /// Takes the vCPU's hardware state on this pCPU.
    pub fn arch(&self) -> ArchGuard<'_> {
        ArchGuard(self.arch.lock())
    }

    /// Makes the vCPU look at its state soon (an event or interrupt for it, an
    /// NMI, going down): if it is in guest mode on another pCPU, that pCPU is
    /// interrupted, so the vCPU exits and looks before it enters again. The
    /// run loop sets `in_guest` before it looks at the vCPU's state for an
    /// entry, and the caller changed that state before calling this: either
    /// the entry sees the change, or this sees `in_guest` (the fence orders
    /// the caller's stores before the load, as the loop's store is ordered
    /// before its look by the `st` lock's locked instruction).
    pub fn notify(&self) {
        core::sync::atomic::fence(Ordering::SeqCst);
        if !self.in_guest.load(Ordering::SeqCst) {
            return;
        }
        let cpu = self.running_on.load(Ordering::SeqCst);
        if cpu != NOT_RUNNING && cpu != crate::percpu::me() {
            crate::percpu::interrupt(cpu);
        }
    }

    /// Asks for the guest TLB to be flushed before the vCPU next runs.
    pub fn request_flush(&self) {
        self.flush.store(true, Ordering::Release);
    }

    /// Applies a requested flush to the hardware state (the running pCPU, before
    /// an entry).
    pub fn apply_flush(&self, arch: &mut ArchVcpu) {
        if self.flush.load(Ordering::Acquire) && self.flush.swap(false, Ordering::AcqRel) {
            arch.flush_guest_tlb();
        }
    }
}
