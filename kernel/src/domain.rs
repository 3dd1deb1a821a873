//! Domains (Xen: `struct domain`): a guest's memory (the p2m over frames from
//! keel's allocator), its vCPUs, and the per-domain state hypercalls touch
//! (shared_info, HVM parameters, the console line being assembled). A domain is
//! shared, not lent: `domains.rs` keeps each in an `Arc`, and whoever works on it
//! (the pCPU running one of its vCPUs, a peer's hypercall) holds a reference and
//! takes the lock of the part it changes.
//!
//! Building a PVH domain: allocate and zero its RAM (2 MiB runs where the allocator
//! has them, so the p2m can use large pages), map it gfn 0.. in a p2m written as EPT
//! or NPT entries, load the kernel and modules through `keel_builder::pvh`, and point
//! a vCPU at the PHYS32 entry with EBX = `hvm_start_info`.
//!
//! # Memory safety
//! Guest memory is reached only through the domain's paging mode (`paging.rs`),
//! and only at machine frames its p2m maps; the p2m maps only frames this module
//! allocated for the domain (or another domain granted). So a guest-supplied
//! address can name nothing but memory the domain may use.
//!
//! # Locking
//! What never changes after the build (id, name, RAM size, memory map, shared_info,
//! the vCPUs themselves) is read without a lock. [`Domain::mem`] guards the p2m and
//! the frames the domain owns; [`Domain::hvm_params`] and [`Domain::console`] their
//! own state (leaves). Two domains' `mem` locks are taken lower domid first; a
//! vCPU's `st` lock may be held while taking `mem` (copies to guest memory under
//! it), never the other way round; no domain lock is held while taking the
//! scheduler's (docs/architecture.md, "Lock order").
//!
//! # TLBs
//! [`Domain::flush_tlbs`] is the one way to say "a p2m entry went away": it returns
//! only when no pCPU can still use the old translation, so the frame behind it may
//! be freed or handed to another domain right after. [`Domain::stop_vcpus`] is what
//! destruction waits on: no vCPU of a dying domain runs again.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem::ManuallyDrop;

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};

use keel_arch::hvm::{FrameSource, HvmSupport, PvhStart, Vcpu as HwVcpu};
use keel_builder::pvh;
use keel_hypercall::abi::hvm::HVM_NR_PARAMS;
use keel_mm::addr::{Gfn, Hpa, Mfn};
use keel_mm::guest_mem::CopyError;
use keel_mm::guest_walk::WalkCtx;
use keel_mm::p2m::{Access, P2mError};

use crate::frames::Frame;
use crate::memory::{FRAMES, zero_frames};
use crate::paging::{HapP2m, Paging, PagingMode};
use crate::percpu;
use crate::vcpu::{ArchVcpu, NOT_RUNNING, Vcpu, VcpuInfoAt, VcpuState};

/// Frames for VMCB/VMCS and bitmaps, from keel's allocator.
pub struct KernelFrames;

impl FrameSource for KernelFrames {
    fn alloc_zeroed(&mut self, count: u64) -> Option<Hpa> {
        let align = count.next_power_of_two();
        let first = FRAMES
            .lock()
            .as_mut()?
            .alloc_contiguous(count, align)
            .ok()?;
        zero_frames(first, count);
        Some(first.hpa())
    }
}

/// Why a domain could not be built. The doc comment is the message.
#[derive(Debug)]
pub enum BuildError {
    /// not enough free memory for the domain's RAM
    OutOfMemory,
    /// the p2m could not be built
    P2m(P2mError),
    /// the kernel image cannot be loaded
    Kernel(pvh::PvhError),
    /// the vCPU could not be created
    Vcpu(String),
    /// this CPU has no hardware virtualization with second-level paging
    NoHap,
    /// the PV kernel cannot be laid out
    Pv(keel_builder::pv::PvError),
    /// the PV kernel's initial page tables are refused
    PvMmu(keel_mm::pv::PvError),
    /// the PV layout names pfn {pfn:#x}, beyond the domain's RAM (a keel bug)
    PvLayout { pfn: u64 },
    /// not a Xen kernel at all
    NotXen(keel_builder::pv::PvError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::OutOfMemory => f.write_str("not enough free memory for the domain's RAM"),
            BuildError::P2m(e) => write!(f, "building the p2m: {e}"),
            BuildError::Kernel(e) => write!(f, "{e}"),
            BuildError::Vcpu(e) => write!(f, "creating the vCPU: {e}"),
            BuildError::NoHap => f.write_str(
                "this CPU has no hardware virtualization with second-level paging (VMX+EPT or SVM+NPT): PVH guests cannot run",
            ),
            BuildError::NotXen(e) => write!(f, "{e}"),
            BuildError::Pv(e) => write!(f, "PV kernel: {e}"),
            BuildError::PvLayout { pfn } => write!(
                f,
                "PV kernel: the layout names pfn {pfn:#x}, beyond the domain's RAM (a keel bug)"
            ),
            BuildError::PvMmu(e) => write!(f, "PV kernel: its initial page tables are refused: {e}"),
        }
    }
}

/// A domain's console output, assembled into lines.
#[derive(Default)]
pub struct ConsoleLine {
    buf: Vec<u8>,
}

/// The longest line keel prints for a guest before breaking it.
const CONSOLE_LINE_MAX: usize = 256;

impl ConsoleLine {
    /// Appends guest bytes, printing each complete line as `(dN) ...`. Control
    /// characters other than tab are shown as `?`: a guest must not be able to drive
    /// the user's terminal.
    pub fn push(&mut self, domid: u16, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => self.flush(domid),
                b'\r' => {}
                b'\t' | 0x20..=0x7E => self.buf.push(b),
                _ => self.buf.push(b'?'),
            }
            if self.buf.len() >= CONSOLE_LINE_MAX {
                self.flush(domid);
            }
        }
    }

    /// Prints a partial line, if there is one (the domain is ending).
    pub fn flush_if_pending(&mut self, domid: u16) {
        if !self.buf.is_empty() {
            self.flush(domid);
        }
    }

    /// Prints what is pending as one line.
    pub fn flush(&mut self, domid: u16) {
        // Only printable ASCII was pushed, so this never fails.
        let line = core::str::from_utf8(&self.buf).unwrap_or("?");
        keel_arch::console::write_fmt(format_args!("(d{domid}) {line}\n"));
        self.buf.clear();
    }
}

/// A domU's PV console ring, served by keel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleRing {
    pub mfn: Mfn,
    /// keel's end of the console event channel (in the DOMID_XEN table).
    pub xen_port: u32,
}

/// Xen's guest types. keel builds PVH domains today; PV and HVM join here, each
/// with its own rules where the types differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestType {
    /// Hardware-virtualized CPU and memory, PV interfaces for the rest.
    Pvh,
    /// A paravirtualized kernel in ring 3 on keel's own page-table rules
    /// (`pv.rs`, docs/pv.md).
    Pv,
}

impl GuestType {
    /// The name Xen's tools use.
    pub fn name(self) -> &'static str {
        match self {
            GuestType::Pvh => "PVH",
            GuestType::Pv => "PV",
        }
    }
}

/// The emulated devices a domain's MMIO exits go to, registered by range on its
/// bus ([`Domain::mmio`]). The bus names the kind; the instance is the exiting
/// vCPU's own where each vCPU has one (the local APIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDevice {
    /// The local APIC page at 0xFEE00000 (its base cannot move: `Vlapic`
    /// refuses that).
    LocalApic,
}

/// A domain's memory: its p2m and every frame it holds (see "Frame accounting"
/// in docs/architecture.md).
pub struct DomainMem {
    /// The p2m, behind the paging mode the domain uses (HAP now; shadow later).
    pub p2m: Paging,
    /// Runs of frames this domain owns (first, count), returned when it dies.
    pub owned: Vec<(Mfn, u64)>,
    /// RAM pages the domain holds now.
    pub tot_pages: u64,
    /// Where the guest mapped shared_info, if it did.
    pub shared_info_gfn: Option<Gfn>,
    /// Where the guest mapped its grant-table frames: index -> gfn. (The frames
    /// are in `owned`; the grant crate lists them.)
    pub grant_gfns: alloc::collections::BTreeMap<u32, u64>,
    /// Where the guest mapped its grant status frames (version 2): index -> gfn.
    pub status_gfns: alloc::collections::BTreeMap<u32, u64>,
    /// Guest frames that map another domain's frame (grant mappings): never
    /// grantable, never freed as this domain's.
    pub foreign: BTreeSet<u64>,
    /// The guest frames (exclusive bound) the p2m accepts.
    pub p2m_limit: u64,
}

/// One domain.
pub struct Domain {
    pub id: u16,
    pub name: String,
    pub privileged: bool,
    pub guest_type: GuestType,
    /// RAM size at build, in bytes (gfn 0 .. ram_bytes / 4096).
    pub ram_bytes: u64,
    /// RAM pages the domain may hold at most.
    pub max_pages: u64,
    /// The frame shared_info lives in (zeroed at build, owned, never moves).
    pub shared_info: Mfn,
    /// The memory map handed to the guest (start_info and XENMEM_memory_map).
    pub memmap: Vec<keel_hypercall::abi::memory::E820Entry>,
    /// xl.cfg scheduling parameters.
    pub weight: u32,
    pub cap: u32,
    /// The vCPUs, by id (`maxvcpus` of them; those past `vcpus` start down).
    /// Dropped before `mem`'s frames are freed.
    pub vcpus: ManuallyDrop<Vec<Vcpu>>,
    /// Taken for every vCPU going up or down (`online.rs`, Xen's
    /// `domain_lock` there), so "is this the last vCPU up?" has one answer.
    pub online: spin::Mutex<()>,
    pub mem: spin::Mutex<DomainMem>,
    pub hvm_params: spin::Mutex<[u64; HVM_NR_PARAMS as usize]>,
    /// `HVM_PARAM_CALLBACK_IRQ` of type vector: 0x100 | vector, or 0 for none.
    /// Read at every entry, so an atomic rather than under `hvm_params`.
    pub callback_vector: AtomicU16,
    pub console: spin::Mutex<ConsoleLine>,
    /// Guest-physical ranges emulated devices answer (unbacked in the p2m, so
    /// accesses exit); fixed at build, so read without a lock.
    pub mmio: keel_devices::bus::MmioBus<MmioDevice>,
    /// The domain's event channels (Xen's `d->event_lock` and table; the
    /// protocol for two domains is `channels.rs`'s).
    pub evtchn: spin::Mutex<keel_evtchn::Table>,
    /// The domain's grant table (as granter) and maptrack (as mapper); two
    /// domains' are locked lower domid first ([`lock_pair`]).
    pub grants: spin::Mutex<keel_grant::DomainGrants>,
    /// A domU's console ring, set once when the domain is admitted.
    pub console_ring: spin::Once<ConsoleRing>,
    /// Set when the domain is being destroyed: the pCPUs running its vCPUs let
    /// them go at their next exit.
    dying: AtomicBool,
}

/// Domains built and not yet dropped (their frames not yet all returned).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many domains still hold frames.
pub fn live_domains() -> usize {
    LIVE.load(Ordering::Acquire)
}

impl Domain {
    /// vCPU `id`, if the domain has it.
    pub fn vcpu(&self, id: u32) -> Option<&Vcpu> {
        self.vcpus.get(id as usize)
    }

    /// The vector events are delivered on to `st`'s vCPU: its own
    /// (`HVMOP_set_evtchn_upcall_vector`), else the domain's callback vector.
    pub fn upcall_vector(&self, st: &VcpuState) -> Option<u8> {
        st.upcall_vector.or_else(|| {
            let v = self.callback_vector.load(Ordering::Relaxed);
            (v & 0x100 != 0).then_some(v as u8)
        })
    }

    /// Sets the domain-wide callback vector (`None`: events go nowhere).
    pub fn set_callback_vector(&self, v: Option<u8>) {
        self.callback_vector
            .store(v.map_or(0, |v| 0x100 | u16::from(v)), Ordering::Relaxed);
    }

    /// The shared_info frame.
    pub fn shared_info_frame(&self) -> Frame {
        // SAFETY: shared_info is a frame the domain owns from its build until it
        // is dropped, and a `&Domain` keeps it alive.
        unsafe { Frame::new(self.shared_info) }
    }

    /// Whether the domain is being destroyed.
    pub fn is_dying(&self) -> bool {
        self.dying.load(Ordering::Acquire)
    }

    /// Marks the domain dying and waits until no pCPU holds any of its vCPUs
    /// (each lets its vCPU go at its next exit; a kick forces that exit). The
    /// caller has taken them out of the scheduler first, so none is picked
    /// again. Called by `domains::destroy` before it tears down what the vCPUs
    /// could still be using.
    pub fn stop_vcpus(&self) {
        self.dying.store(true, Ordering::SeqCst);
        for v in self.vcpus.iter() {
            let mut last = NOT_RUNNING;
            let mut spins = 0u32;
            loop {
                let cpu = v.running_on.load(Ordering::SeqCst);
                if cpu == NOT_RUNNING || cpu == percpu::me() {
                    break;
                }
                // One interrupt per pCPU it is found on (again now and then, in
                // case that pCPU took it in keel just before it entered).
                if cpu != last || spins.is_multiple_of(1 << 16) {
                    percpu::interrupt(cpu);
                    last = cpu;
                }
                spins = spins.wrapping_add(1);
                keel_arch::cpu::pause();
            }
        }
    }

    /// Makes every vCPU drop its guest TLB entries (after a p2m entry was
    /// removed or changed), and returns only once none can use a stale one: a
    /// vCPU not in guest mode flushes before its next entry; one in guest mode on
    /// another pCPU is interrupted, and this waits until it has exited (its next
    /// entry flushes). This is what makes it safe to reuse or hand on a frame the
    /// p2m no longer maps.
    pub fn flush_tlbs(&self) {
        for v in self.vcpus.iter() {
            v.request_flush();
        }
        // The flags are set before any `in_guest` is read (and the run loop sets
        // `in_guest` before it reads the flag): either the vCPU sees the flag at
        // its entry, or this sees it in guest mode and waits for it to exit.
        core::sync::atomic::fence(Ordering::SeqCst);
        for v in self.vcpus.iter() {
            let exits = v.exits.load(Ordering::SeqCst);
            if !v.in_guest.load(Ordering::SeqCst) {
                continue;
            }
            let cpu = v.running_on.load(Ordering::SeqCst);
            if cpu == percpu::me() {
                continue;
            }
            percpu::interrupt(cpu);
            while v.in_guest.load(Ordering::SeqCst) && v.exits.load(Ordering::SeqCst) == exits {
                keel_arch::cpu::pause();
            }
        }
    }

    /// Copies from guest-virtual `gva` of the vCPU whose paging is `walk`
    /// (through its page tables and the p2m).
    pub fn copy_from_guest(
        &self,
        walk: &WalkCtx,
        gva: u64,
        buf: &mut [u8],
    ) -> Result<(), CopyError> {
        self.mem.lock().p2m.copy_from_guest(walk, gva, buf)
    }

    /// Copies to guest-virtual `gva`.
    pub fn copy_to_guest(&self, walk: &WalkCtx, gva: u64, data: &[u8]) -> Result<(), CopyError> {
        self.mem.lock().p2m.copy_to_guest(walk, gva, data)
    }

    /// Writes guest-physical memory (the hypercall page).
    pub fn write_gpa(&self, gpa: u64, data: &[u8]) -> Result<(), CopyError> {
        self.mem.lock().p2m.write_gpa(gpa, data)
    }
}

impl Drop for Domain {
    /// A dead domain's vCPUs go first (VMX: VMCLEAR; their VMCB/VMCS frames), then
    /// its RAM, shared_info, special pages, grant frames and p2m tables go back to
    /// the allocator.
    fn drop(&mut self) {
        // SAFETY: `vcpus` is never used again: this is the domain's destructor.
        unsafe { ManuallyDrop::drop(&mut self.vcpus) };
        let mem = self.mem.get_mut();
        if let Paging::Pv(pv) = &mut mem.p2m {
            // Page types first (they read the frames), while the frames are
            // still the domain's; no vCPU runs any more (`stop_vcpus`).
            pv.teardown(self.id);
        }
        let mut tables = Vec::new();
        mem.p2m.for_each_table(&mut |t| tables.push(t));
        free_all(self.id, &mem.owned, &tables, &[]);
        // Only now: the boot CPU counts the free frames once no domain is live,
        // and this drop may run on another pCPU at that very moment.
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Returns runs of frames, p2m tables and vCPU frames to the allocator.
fn free_all(id: u16, owned: &[(Mfn, u64)], tables: &[Hpa], vcpu_frames: &[(Hpa, u64)]) {
    let mut g = FRAMES.lock();
    let Some(frames) = g.as_mut() else { return };
    for &(first, count) in owned {
        if let Err(e) = frames.free_contiguous(first, count) {
            log::error!("d{id}: freeing {count} frame(s) at {first:?}: {e}");
        }
    }
    for t in tables {
        if let Err(e) = frames.free(t.mfn()) {
            log::error!("d{id}: freeing p2m table {t:?}: {e}");
        }
    }
    for &(first, count) in vcpu_frames {
        if let Err(e) = frames.free_contiguous(first.mfn(), count) {
            log::error!("d{id}: freeing vCPU frames {first:?}+{count}: {e}");
        }
    }
}

impl DomainMem {
    /// Gives one frame back to the allocator (`XENMEM_decrease_reservation`): the
    /// run holding it in `owned` is split around it.
    pub fn release_frame(&mut self, mfn: Mfn) -> bool {
        let m = mfn.as_u64();
        let Some(i) = self.owned_run(mfn) else {
            return false;
        };
        let (first, count) = self.owned.swap_remove(i);
        let f = first.as_u64();
        if m > f {
            self.owned.push((first, m - f));
        }
        if m + 1 < f + count
            && let Some(after) = Mfn::new(m + 1)
        {
            self.owned.push((after, f + count - m - 1));
        }
        let mut g = FRAMES.lock();
        if let Some(frames) = g.as_mut()
            && let Err(e) = frames.free(mfn)
        {
            log::error!("freeing {mfn:?}: {e}");
        }
        true
    }

    /// Which run of `owned` holds `mfn`, if the domain owns it.
    pub fn owned_run(&self, mfn: Mfn) -> Option<usize> {
        let m = mfn.as_u64();
        self.owned
            .iter()
            .position(|&(f, c)| (f.as_u64()..f.as_u64() + c).contains(&m))
    }

    /// Allocates one zeroed frame the domain owns (special pages, grant frames,
    /// `XENMEM_populate_physmap`).
    pub fn alloc_owned(&mut self, count: u64) -> Option<Mfn> {
        let mfn = FRAMES
            .lock()
            .as_mut()?
            .alloc_contiguous(count, count.next_power_of_two())
            .ok()?;
        zero_frames(mfn, count);
        self.owned.push((mfn, count));
        Some(mfn)
    }
}

/// Frames handed to the vCPU constructors, remembered so they can be freed.
struct RecordingFrames<'a> {
    got: &'a mut Vec<(Hpa, u64)>,
}

impl FrameSource for RecordingFrames<'_> {
    fn alloc_zeroed(&mut self, count: u64) -> Option<Hpa> {
        let hpa = KernelFrames.alloc_zeroed(count)?;
        self.got.push((hpa, count));
        Some(hpa)
    }
}

/// What a half-built domain holds: freed if the build fails.
struct Partial {
    id: u16,
    p2m: Option<Paging>,
    owned: Vec<(Mfn, u64)>,
    vcpu_frames: Vec<(Hpa, u64)>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        let mut tables = Vec::new();
        if let Some(p2m) = &self.p2m {
            p2m.for_each_table(&mut |t| tables.push(t));
        }
        free_all(self.id, &self.owned, &tables, &self.vcpu_frames);
    }
}

/// Allocates, zeroes and maps `ram_bytes` of guest RAM at gfn 0.
fn populate(
    p2m: &mut Paging,
    ram_bytes: u64,
    owned: &mut Vec<(Mfn, u64)>,
) -> Result<(), BuildError> {
    let total = ram_bytes / 4096;
    let mut gfn = 0u64;
    while gfn < total {
        let left = total - gfn;
        // A 2 MiB run when the guest frame is 2 MiB aligned and the allocator has one.
        let want = if gfn.is_multiple_of(512) && left >= 512 {
            512
        } else {
            1
        };
        let got = {
            let mut g = FRAMES.lock();
            let frames = g.as_mut().ok_or(BuildError::OutOfMemory)?;
            match frames.alloc_contiguous(want, want) {
                Ok(m) => Some((m, want)),
                Err(_) if want > 1 => frames.alloc().ok().map(|m| (m, 1)),
                Err(_) => None,
            }
        };
        let (mfn, count) = got.ok_or(BuildError::OutOfMemory)?;
        owned.push((mfn, count));
        zero_frames(mfn, count);
        let g = Gfn::new(gfn).ok_or(BuildError::OutOfMemory)?;
        p2m.map(g, mfn, count, Access::RWX)
            .map_err(BuildError::P2m)?;
        gfn += count;
    }
    Ok(())
}

/// A PVH kernel and what goes with it.
pub struct PvhSpec<'a> {
    pub id: u16,
    pub name: &'a str,
    pub privileged: bool,
    pub kernel: &'a [u8],
    pub cmdline: &'a str,
    pub modules: &'a [pvh::ModuleSpec<'a>],
    pub ram_bytes: u64,
    /// The most RAM the domain may hold (`maxmem`), at least `ram_bytes`.
    pub max_bytes: u64,
    pub weight: u32,
    pub cap: u32,
    /// xl's `max_event_channels`: the highest event-channel port.
    pub max_evtchn: u32,
    /// xl's `max_grant_frames`.
    pub max_grant_frames: u32,
    /// xl's `max_grant_version`: 1, or 2 (the default).
    pub max_grant_version: u32,
    /// vCPUs up at boot (xl's `vcpus`, Xen's `dom0_max_vcpus`), 1 ..= `max_vcpus`.
    pub vcpus: u32,
    /// vCPUs the domain has (xl's `maxvcpus`), at most [`MAX_VCPUS`].
    pub max_vcpus: u32,
}

/// The most vCPUs a domain may have: one per `vcpu_info` slot in shared_info
/// (Xen's `XEN_LEGACY_MAX_VCPUS`), so that every vCPU has a `vcpu_info` from
/// the start. (Xen allows up to `HVM_MAX_VCPUS`, 128, giving the vCPUs past 32
/// a dummy until the guest registers one; keel does not yet.)
pub const MAX_VCPUS: u32 = 32;

/// VPIDs (VMX) and ASIDs (SVM) handed out so far: one per vCPU, never 0 (the
/// host's). Tags of a destroyed domain are not reused yet: keel builds its
/// domains at boot, far below the 65535 VPIDs (and the CPU's ASID count,
/// checked at build).
static NEXT_TAG: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// Grant mappings a domain may hold at once (Xen's default
/// `gnttab_max_maptrack_frames` of 1024 frames of 512 entries is far more than
/// keel's guests need).
pub const DEFAULT_MAX_MAPTRACK: u32 = 4096;

/// Locks the same lock of two different domains, the lower domid first (the
/// lock order); returns (a's guard, b's guard).
pub fn lock_pair<'a, T>(
    a: &'a spin::Mutex<T>,
    a_id: u16,
    b: &'a spin::Mutex<T>,
    b_id: u16,
) -> (spin::MutexGuard<'a, T>, spin::MutexGuard<'a, T>) {
    if a_id < b_id {
        let ga = a.lock();
        (ga, b.lock())
    } else {
        let gb = b.lock();
        (a.lock(), gb)
    }
}

/// The highest guest frame (exclusive) a domain's p2m accepts: its RAM or 4 GiB,
/// whichever is more, plus 1 GiB for grant mappings and ballooning. Tables are
/// allocated only where something is mapped, so the bound costs nothing.
fn p2m_limit(ram_bytes: u64) -> u64 {
    (ram_bytes / 4096).max(1 << 20) + (1 << 18)
}

/// Turns on VMX or SVM on this CPU (once; later calls do nothing), before any
/// domain is built.
pub fn enable_hvm(hvm: &HvmSupport) -> Result<(), String> {
    match hvm {
        HvmSupport::Svm(caps) => {
            keel_arch::svm::enable(&mut KernelFrames, caps).map_err(|e| alloc::format!("{e}"))
        }
        HvmSupport::Vmx(caps) => {
            keel_arch::vmx::enable(&mut KernelFrames, caps).map_err(|e| alloc::format!("{e}"))
        }
        HvmSupport::None => Ok(()),
    }
}

/// Builds a PVH domain ready to run.
pub fn build_pvh(hvm: &HvmSupport, spec: &PvhSpec<'_>) -> Result<Domain, BuildError> {
    use keel_builder::pv::{self, XenKernelKind};
    // What kind of Xen kernel this is decides the message; a malformed image
    // gets the PVH parser's more precise one below.
    match pv::classify(spec.kernel) {
        Ok(XenKernelKind::PvOnly) => return crate::pv::build(spec),
        Ok(XenKernelKind::Neither) => return Err(BuildError::NotXen(pv::PvError::NotXenKernel)),
        _ => {}
    }
    if !hvm.has_hap() {
        return Err(BuildError::NoHap);
    }
    let kernel = pvh::parse(spec.kernel).map_err(BuildError::Kernel)?;
    let layout = pvh::plan(&kernel, spec.ram_bytes, spec.cmdline, spec.modules)
        .map_err(BuildError::Kernel)?;

    let mut part = Partial {
        id: spec.id,
        p2m: None,
        owned: Vec::new(),
        vcpu_frames: Vec::new(),
    };
    let limit = Gfn::new(p2m_limit(spec.ram_bytes)).ok_or(BuildError::OutOfMemory)?;
    let p2m = part.p2m.insert(Paging::Hap(
        HapP2m::new(hvm, limit).map_err(BuildError::P2m)?,
    ));
    populate(p2m, spec.ram_bytes, &mut part.owned)?;

    let shared_info = {
        let mut g = FRAMES.lock();
        let frames = g.as_mut().ok_or(BuildError::OutOfMemory)?;
        frames.alloc().map_err(|_| BuildError::OutOfMemory)?
    };
    part.owned.push((shared_info, 1));
    zero_frames(shared_info, 1);

    let flags = if spec.privileged {
        keel_hypercall::abi::start_info::SIF_PRIVILEGED
            | keel_hypercall::abi::start_info::SIF_INITDOMAIN
    } else {
        0
    };
    let mut writer = BuilderWriter { p2m };
    // The ACPI tables Xen gives a PVH domain: its vCPUs and local APIC (MADT) on
    // a hardware-reduced platform. Linux takes its Xen timer path only with them.
    let (tables, rsdp) = keel_builder::acpi_tables::build(
        &keel_builder::acpi_tables::PvhAcpi {
            vcpus: spec.max_vcpus,
            online: spec.vcpus,
            lapic_base: keel_builder::acpi_tables::LAPIC_BASE,
        },
        pvh::ACPI_TABLES_GPA,
    )
    .map_err(|e| BuildError::Vcpu(alloc::format!("ACPI tables: {e}")))?;
    p2m.write_gpa(pvh::ACPI_TABLES_GPA, &tables)
        .map_err(|_| BuildError::OutOfMemory)?;
    pvh::load(
        &kernel,
        &layout,
        spec.cmdline,
        spec.modules,
        flags,
        rsdp,
        &mut writer,
    )
    .map_err(BuildError::Kernel)?;

    if spec.vcpus == 0 || spec.vcpus > spec.max_vcpus || spec.max_vcpus > MAX_VCPUS {
        return Err(BuildError::Vcpu(alloc::format!(
            "{} vCPUs up of {}: 1 ..= maxvcpus <= {MAX_VCPUS} are possible",
            spec.vcpus, spec.max_vcpus
        )));
    }
    let start = PvhStart {
        entry: layout.entry,
        start_info: layout.start_info_gpa as u32,
    };
    let root = p2m.root();
    // Each vCPU's hardware state, with the frames it uses; vCPU 0 starts at the
    // PVH entry, the others get their state when the guest brings them up.
    let mut arch_vcpus = Vec::with_capacity(spec.max_vcpus as usize);
    for _ in 0..spec.max_vcpus {
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        let mut frames = RecordingFrames {
            got: &mut part.vcpu_frames,
        };
        let hw = new_hw_vcpu(hvm, &mut frames, root, tag, start)?;
        arch_vcpus.push(ArchVcpu::new(hw, core::mem::take(&mut part.vcpu_frames)));
    }

    let (evtchn, grants) = channel_tables(spec)?;
    let mut mmio = keel_devices::bus::MmioBus::default();
    mmio.insert(
        keel_devices::vlapic::APIC_BASE_ADDR,
        4096,
        MmioDevice::LocalApic,
    )
    .map_err(|e| BuildError::Vcpu(alloc::format!("device bus: {e}")))?;
    let p2m = part.p2m.take().ok_or(BuildError::OutOfMemory)?;
    let owned = core::mem::take(&mut part.owned);
    Ok(assemble(
        spec,
        Parts {
            guest_type: GuestType::Pvh,
            shared_info,
            memmap: pvh::memory_map(spec.ram_bytes),
            arch_vcpus,
            p2m,
            owned,
            p2m_limit: p2m_limit(spec.ram_bytes),
            mmio,
            evtchn,
            grants,
        },
    ))
}

/// A domain's event-channel table and grant table, as `spec` sizes them.
pub(crate) fn channel_tables(
    spec: &PvhSpec<'_>,
) -> Result<(keel_evtchn::Table, keel_grant::DomainGrants), BuildError> {
    // xl's max_event_channels is the highest port; the table holds one more.
    let mut evtchn =
        keel_evtchn::Table::new(spec.id, spec.max_evtchn.saturating_add(1), spec.max_vcpus)
            .map_err(|e| BuildError::Vcpu(alloc::format!("event channels: {e}")))?;
    // FIFO event channels on offer: the guest's frames, through the direct map.
    evtchn.enable_fifo(alloc::boxed::Box::new(crate::frames::GuestFrames));
    let grants = keel_grant::DomainGrants::with_max_version(
        spec.id,
        spec.max_grant_frames,
        DEFAULT_MAX_MAPTRACK,
        spec.max_grant_version,
    )
    .map_err(|e| BuildError::Vcpu(alloc::format!("grant table: {e:?}")))?;
    Ok((evtchn, grants))
}

/// What differs between the guest types' builds, handed to [`assemble`].
pub(crate) struct Parts {
    pub guest_type: GuestType,
    pub shared_info: Mfn,
    pub memmap: Vec<keel_hypercall::abi::memory::E820Entry>,
    pub arch_vcpus: Vec<ArchVcpu>,
    pub p2m: Paging,
    pub owned: Vec<(Mfn, u64)>,
    pub p2m_limit: u64,
    pub mmio: keel_devices::bus::MmioBus<MmioDevice>,
    pub evtchn: keel_evtchn::Table,
    pub grants: keel_grant::DomainGrants,
}

/// The domain, from its built parts: from here on it counts as live, and
/// dropping it returns every frame.
pub(crate) fn assemble(spec: &PvhSpec<'_>, p: Parts) -> Domain {
    LIVE.fetch_add(1, Ordering::AcqRel);
    let shared_info = p.shared_info;
    // vCPU n's vcpu_info starts in shared_info's slot n (64 bytes each, at the
    // page's start; MAX_VCPUS keeps n within the 32 slots). Only vCPU 0 starts
    // up: the guest brings the others up (INIT/SIPI or VCPUOP_up), as on Xen.
    let vcpus = p
        .arch_vcpus
        .into_iter()
        .zip(0u16..)
        .map(|(arch, id)| {
            Vcpu::new(
                spec.id,
                u32::from(id),
                arch,
                VcpuInfoAt {
                    mfn: shared_info,
                    offset: id * 64,
                },
                id == 0,
            )
        })
        .collect();
    Domain {
        id: spec.id,
        name: String::from(spec.name),
        privileged: spec.privileged,
        guest_type: p.guest_type,
        ram_bytes: spec.ram_bytes,
        max_pages: spec.max_bytes.max(spec.ram_bytes) / 4096,
        shared_info,
        memmap: p.memmap,
        weight: spec.weight,
        cap: spec.cap,
        vcpus: ManuallyDrop::new(vcpus),
        online: spin::Mutex::new(()),
        mem: spin::Mutex::new(DomainMem {
            p2m: p.p2m,
            owned: p.owned,
            tot_pages: spec.ram_bytes / 4096,
            shared_info_gfn: None,
            grant_gfns: alloc::collections::BTreeMap::new(),
            status_gfns: alloc::collections::BTreeMap::new(),
            foreign: BTreeSet::new(),
            p2m_limit: p.p2m_limit,
        }),
        hvm_params: spin::Mutex::new([0; HVM_NR_PARAMS as usize]),
        callback_vector: AtomicU16::new(0),
        console: spin::Mutex::new(ConsoleLine::default()),
        mmio: p.mmio,
        evtchn: spin::Mutex::new(p.evtchn),
        grants: spin::Mutex::new(p.grants),
        console_ring: spin::Once::new(),
        dying: AtomicBool::new(false),
    }
}

/// One hardware vCPU of this CPU's backend, starting at `start`, tagged `tag`
/// (VPID/ASID), on the second-level tables rooted at `root`.
fn new_hw_vcpu(
    hvm: &HvmSupport,
    frames: &mut RecordingFrames<'_>,
    root: Hpa,
    tag: u32,
    start: PvhStart,
) -> Result<HwVcpu, BuildError> {
    match hvm {
        HvmSupport::Svm(caps) => {
            if tag >= caps.asids {
                return Err(BuildError::Vcpu(alloc::format!(
                    "out of ASIDs (the CPU has {})",
                    caps.asids
                )));
            }
            keel_arch::svm::enable(&mut KernelFrames, caps)
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            // SAFETY: `root` is this domain's NPT, built from frames keel owns and
            // mapping only the domain's memory (module invariant); the Domain keeps
            // it alive for as long as the vCPU can run.
            let v = unsafe { keel_arch::svm::SvmVcpu::new(frames, caps, root, tag, start) }
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            Ok(HwVcpu::Svm(v))
        }
        HvmSupport::Vmx(caps) => {
            let vpid = u16::try_from(tag)
                .map_err(|_| BuildError::Vcpu(String::from("out of VPIDs")))?;
            keel_arch::vmx::enable(&mut KernelFrames, caps)
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            // SAFETY: as for SVM: `root` is this domain's EPT.
            let v = unsafe { keel_arch::vmx::VmxVcpu::new(frames, caps, root, vpid, start) }
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            Ok(HwVcpu::Vmx(v))
        }
        HvmSupport::None => Err(BuildError::NoHap),
    }
}

/// The builder's view of guest memory: guest-physical writes through the p2m.
struct BuilderWriter<'a> {
    p2m: &'a Paging,
}

impl pvh::GuestMemWriter for BuilderWriter<'_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), pvh::PvhError> {
        self.p2m
            .write_gpa(gpa, data)
            .map_err(|_| pvh::PvhError::GuestWrite {
                gpa,
                len: data.len() as u64,
            })
    }
}
