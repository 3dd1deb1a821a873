//! Domains: a guest's memory (the p2m over frames from keel's allocator), its vCPU,
//! and the per-domain state hypercalls touch (shared_info, HVM parameters, the
//! console line being assembled).
//!
//! Building a PVH domain: allocate and zero its RAM (2 MiB runs where the allocator
//! has them, so the p2m can use large pages), map it gfn 0.. in a p2m written as EPT
//! or NPT entries, load the kernel and modules through `keel_kernel::pvh`, and point
//! a vCPU at the PHYS32 entry with EBX = `hvm_start_info`.
//!
//! # Memory safety
//! Guest frames are reached only through [`DirectMapFrames`], and only at machine
//! frames the domain's p2m maps; the p2m maps only frames this module allocated for
//! the domain. So a guest-supplied address can name nothing but its own memory.
//!
//! # Locking
//! One CPU: domains are owned by the scheduler's world (`world.rs`), which lends
//! the running one out by `&mut`; nothing is shared across CPUs yet.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem::ManuallyDrop;

use keel_arch::hvm::{FrameSource, HvmSupport, PvhStart, Vcpu};
use keel_arch::paging::DirectMapTables;
use keel_arch::svm::npt::NptFormat;
use keel_arch::vmx::ept::EptFormat;
use keel_hypercall::abi::hvm::HVM_NR_PARAMS;
use keel_kernel::pvh;
use keel_mm::addr::{Gfn, Hpa, Mfn};
use keel_mm::guest_mem::{CopyError, FrameAccess, GuestPhys};
use keel_mm::guest_walk::WalkCtx;
use keel_mm::layout::directmap_va;
use keel_mm::p2m::{Access, P2m, P2mError};
use keel_mm::paging::PageSize;

use crate::memory::{FRAMES, zero_frames};

/// Allocates one zeroed page-table frame for a p2m (from anywhere in RAM: the direct
/// map covers all of it once keel runs on its own tables).
fn alloc_table_frame() -> Option<Hpa> {
    FRAMES.lock().as_mut()?.alloc().ok().map(|m| m.hpa())
}

type Tables = DirectMapTables<fn() -> Option<Hpa>>;

/// The p2m in the hardware's format.
pub enum HapP2m {
    Ept(P2m<Tables, EptFormat>),
    Npt(P2m<Tables, NptFormat>),
}

/// Runs `$body` with `$p` bound to the p2m, whatever its format.
macro_rules! with_p2m {
    ($p2m:expr, $p:ident => $body:expr) => {
        match $p2m {
            HapP2m::Ept($p) => $body,
            HapP2m::Npt($p) => $body,
        }
    };
}

impl HapP2m {
    fn new(hvm: &HvmSupport, limit: Gfn) -> Result<HapP2m, P2mError> {
        let alloc: fn() -> Option<Hpa> = alloc_table_frame;
        // SAFETY: alloc_table_frame hands out frames from keel's allocator, owned by
        // this p2m alone, and every frame is inside the direct map.
        let tables = unsafe { DirectMapTables::new(alloc) };
        Ok(match hvm {
            HvmSupport::Vmx(v) => {
                let max = if v.ept_1g {
                    PageSize::Size1G
                } else if v.ept_2m {
                    PageSize::Size2M
                } else {
                    PageSize::Size4K
                };
                HapP2m::Ept(P2m::new(tables, max, limit)?)
            }
            _ => HapP2m::Npt(P2m::new(tables, PageSize::Size2M, limit)?),
        })
    }

    pub fn root(&self) -> Hpa {
        with_p2m!(self, p => p.root())
    }

    pub fn map(&mut self, gfn: Gfn, mfn: Mfn, count: u64, access: Access) -> Result<(), P2mError> {
        with_p2m!(self, p => p.map(gfn, mfn, count, access))
    }

    pub fn set_entry(
        &mut self,
        gfn: Gfn,
        new: Option<(Mfn, Access)>,
    ) -> Result<Option<Mfn>, P2mError> {
        with_p2m!(self, p => p.set_entry(gfn, new))
    }

    pub fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)> {
        with_p2m!(self, p => p.translate(gfn))
    }
}

/// Guest frames through keel's direct map.
pub struct DirectMapFrames;

impl FrameAccess for DirectMapFrames {
    fn read(&self, hpa: Hpa, buf: &mut [u8]) {
        assert!(
            (hpa.as_u64() & 0xFFF) + buf.len() as u64 <= 4096,
            "frame read crosses a page"
        );
        // SAFETY: callers (mm::guest_mem) pass only frames the domain's p2m maps,
        // which this module allocated for the domain (module invariant); the range
        // stays inside one frame (checked above) and the direct map covers all RAM.
        unsafe {
            core::ptr::copy_nonoverlapping(
                directmap_va(hpa) as *const u8,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
    }

    fn write(&mut self, hpa: Hpa, data: &[u8]) {
        assert!(
            (hpa.as_u64() & 0xFFF) + data.len() as u64 <= 4096,
            "frame write crosses a page"
        );
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), directmap_va(hpa) as *mut u8, data.len())
        };
    }

    fn read_u64(&self, hpa: Hpa) -> u64 {
        assert!(hpa.as_u64().is_multiple_of(8), "misaligned frame read");
        // SAFETY: as in `read`; 8-aligned, so the 8 bytes stay inside the frame. The
        // guest may change them meanwhile: a volatile load reads them once.
        unsafe { (directmap_va(hpa) as *const u64).read_volatile() }
    }
}

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

/// Where a vCPU's `vcpu_info` lives: shared_info's slot, or where the guest
/// registered it (`VCPUOP_register_vcpu_info`). `offset` is 8-aligned and the 64
/// bytes fit in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuInfoAt {
    pub mfn: Mfn,
    pub offset: u16,
}

/// A vCPU's Xen timers, as deadlines in system time (ns since keel booted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    /// `set_timer_op` / `VCPUOP_set_singleshot_timer`.
    pub singleshot: Option<u64>,
    /// `VCPUOP_set_periodic_timer`: (period, next deadline).
    pub periodic: Option<(u64, u64)>,
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

/// A domU's PV console ring, served by keel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleRing {
    pub mfn: Mfn,
    /// keel's end of the console event channel (in the DOMID_XEN table).
    pub xen_port: u32,
}

/// One domain.
pub struct Domain {
    pub id: u16,
    pub name: String,
    pub privileged: bool,
    pub p2m: HapP2m,
    /// Dropped by hand in `Drop`, before its frames are freed.
    pub vcpu: ManuallyDrop<Vcpu>,
    /// RAM size at build, in bytes (gfn 0 .. ram_bytes / 4096).
    pub ram_bytes: u64,
    /// RAM pages the domain holds now, and may hold at most.
    pub tot_pages: u64,
    pub max_pages: u64,
    /// The frame shared_info lives in (zeroed at build).
    pub shared_info: Mfn,
    /// Where the guest mapped shared_info, if it did.
    pub shared_info_gfn: Option<Gfn>,
    /// vCPU 0's `vcpu_info`.
    pub vcpu_info: VcpuInfoAt,
    pub vcpu_info_registered: bool,
    pub hvm_params: [u64; HVM_NR_PARAMS as usize],
    /// The vector events are delivered on (`HVM_PARAM_CALLBACK_IRQ` of type vector,
    /// or `HVMOP_set_evtchn_upcall_vector`), if the guest chose one.
    pub upcall_vector: Option<u8>,
    pub console: ConsoleLine,
    pub console_ring: Option<ConsoleRing>,
    /// The memory map handed to the guest (start_info and XENMEM_memory_map).
    pub memmap: Vec<keel_hypercall::abi::memory::E820Entry>,
    /// Runs of frames this domain owns (first, count), returned when it dies.
    pub owned: Vec<(Mfn, u64)>,
    /// Frames of the vCPU's VMCB/VMCS and bitmaps, freed after the vCPU.
    pub vcpu_frames: Vec<(Hpa, u64)>,
    /// Where the guest mapped its grant-table frames: index -> gfn. (The frames
    /// are in `owned`; the grant crate lists them.)
    pub grant_gfns: alloc::collections::BTreeMap<u32, u64>,
    /// Guest frames that map another domain's frame (grant mappings): never
    /// grantable, never freed as this domain's.
    pub foreign: BTreeSet<u64>,
    pub timers: Timers,
    /// The emulated local APIC (Xen gives PVH domains one too): its page at
    /// 0xFEE00000 is unbacked in the p2m, so accesses exit and `vmexit` forwards them.
    pub lapic: keel_arch::x86::vlapic::Vlapic,
    pub wait: Wait,
    pub runstate: Runstate,
    /// Where the guest asked keel to keep a copy of vCPU 0's `vcpu_time_info`
    /// (guest-virtual; `VCPUOP_register_vcpu_time_memory_area`), if it did.
    pub time_area: Option<u64>,
    /// xl.cfg scheduling parameters.
    pub weight: u32,
    pub cap: u32,
}

impl Domain {
    /// Guest-physical memory of this domain, for checked copies.
    pub fn walk_ctx(&self) -> WalkCtx {
        crate::vmexit::walk_ctx(&self.vcpu)
    }

    /// Copies from guest-virtual `gva` (through the guest's page tables and the p2m).
    pub fn copy_from_guest(&self, gva: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        let walk = self.walk_ctx();
        let mut frames = DirectMapFrames;
        with_p2m!(&self.p2m, p => {
            let mem = GuestPhys { p2m: p, frames: &mut frames };
            keel_mm::guest_mem::copy_from_guest(&mem, &walk, keel_mm::addr::Gva::new(gva), buf)
        })
    }

    /// Copies to guest-virtual `gva`.
    pub fn copy_to_guest(&mut self, gva: u64, data: &[u8]) -> Result<(), CopyError> {
        let walk = self.walk_ctx();
        let mut frames = DirectMapFrames;
        with_p2m!(&self.p2m, p => {
            let mut mem = GuestPhys { p2m: p, frames: &mut frames };
            keel_mm::guest_mem::copy_to_guest(&mut mem, &walk, keel_mm::addr::Gva::new(gva), data)
        })
    }

    /// Writes guest-physical memory (the hypercall page).
    pub fn write_gpa(&mut self, gpa: u64, data: &[u8]) -> Result<(), CopyError> {
        write_gpa(&self.p2m, gpa, data)
    }
}

/// Writes `data` at guest-physical `gpa` of the domain whose p2m is `p2m`.
fn write_gpa(p2m: &HapP2m, gpa: u64, data: &[u8]) -> Result<(), CopyError> {
    let gpa = keel_mm::addr::Gpa::new(gpa).ok_or(CopyError::Overflow)?;
    let mut frames = DirectMapFrames;
    with_p2m!(p2m, p => {
        let mut mem = GuestPhys { p2m: p, frames: &mut frames };
        mem.write(gpa, data)
    })
}

impl Drop for Domain {
    /// A dead domain's vCPU goes first (VMX: VMCLEAR), then its RAM, shared_info,
    /// special pages, grant frames, p2m tables and VMCB/VMCS frames go back to the
    /// allocator.
    fn drop(&mut self) {
        // SAFETY: `vcpu` is never used again: this is the domain's destructor.
        unsafe { ManuallyDrop::drop(&mut self.vcpu) };
        let mut tables = Vec::new();
        with_p2m!(&self.p2m, p => p.for_each_table(|t| tables.push(t)));
        free_all(self.id, &self.owned, &tables, &self.vcpu_frames);
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

impl Domain {
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
            log::error!("d{}: freeing {mfn:?}: {e}", self.id);
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

    /// The guest frames (exclusive bound) the p2m accepts.
    pub fn p2m_limit(&self) -> u64 {
        p2m_limit(self.ram_bytes)
    }

    /// Where vCPU 0's vcpu_info is, as a direct-map address.
    pub fn vcpu_info_va(&self) -> u64 {
        directmap_va(self.vcpu_info.mfn.hpa()) + u64::from(self.vcpu_info.offset)
    }

    /// The shared_info frame, as a direct-map address.
    pub fn shared_info_va(&self) -> u64 {
        directmap_va(self.shared_info.hpa())
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
    p2m: Option<HapP2m>,
    owned: Vec<(Mfn, u64)>,
    vcpu_frames: Vec<(Hpa, u64)>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        let mut tables = Vec::new();
        if let Some(p2m) = &self.p2m {
            with_p2m!(p2m, p => p.for_each_table(|t| tables.push(t)));
        }
        free_all(self.id, &self.owned, &tables, &self.vcpu_frames);
    }
}

/// Allocates, zeroes and maps `ram_bytes` of guest RAM at gfn 0.
fn populate(
    p2m: &mut HapP2m,
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
    let p2m = part
        .p2m
        .insert(HapP2m::new(hvm, limit).map_err(BuildError::P2m)?);
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
    let (tables, rsdp) = keel_kernel::acpi_tables::build(
        &keel_kernel::acpi_tables::PvhAcpi {
            vcpus: 1,
            lapic_base: keel_kernel::acpi_tables::LAPIC_BASE,
        },
        pvh::ACPI_TABLES_GPA,
    )
    .map_err(|e| BuildError::Vcpu(alloc::format!("ACPI tables: {e}")))?;
    write_gpa(p2m, pvh::ACPI_TABLES_GPA, &tables).map_err(|_| BuildError::OutOfMemory)?;
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

    let start = PvhStart {
        entry: layout.entry,
        start_info: layout.start_info_gpa as u32,
    };
    // ASIDs and VPIDs: one per domain, never 0 (the host's).
    let tag = u32::from(spec.id) + 1;
    let root = p2m.root();
    let mut frames = RecordingFrames {
        got: &mut part.vcpu_frames,
    };
    let vcpu = match hvm {
        HvmSupport::Svm(caps) => {
            keel_arch::svm::enable(&mut KernelFrames, caps)
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            // SAFETY: `root` is this domain's NPT, built from frames keel owns and
            // mapping only the domain's memory (module invariant); the Domain keeps
            // it alive for as long as the vCPU can run.
            let v = unsafe { keel_arch::svm::SvmVcpu::new(&mut frames, caps, root, tag, start) }
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            Vcpu::Svm(v)
        }
        HvmSupport::Vmx(caps) => {
            keel_arch::vmx::enable(&mut KernelFrames, caps)
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            // SAFETY: as for SVM: `root` is this domain's EPT.
            let v =
                unsafe { keel_arch::vmx::VmxVcpu::new(&mut frames, caps, root, tag as u16, start) }
                    .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            Vcpu::Vmx(v)
        }
        HvmSupport::None => return Err(BuildError::NoHap),
    };

    let p2m = part.p2m.take().ok_or(BuildError::OutOfMemory)?;
    let owned = core::mem::take(&mut part.owned);
    let vcpu_frames = core::mem::take(&mut part.vcpu_frames);
    Ok(Domain {
        id: spec.id,
        name: String::from(spec.name),
        privileged: spec.privileged,
        p2m,
        vcpu: ManuallyDrop::new(vcpu),
        ram_bytes: spec.ram_bytes,
        tot_pages: spec.ram_bytes / 4096,
        max_pages: spec.max_bytes.max(spec.ram_bytes) / 4096,
        shared_info,
        shared_info_gfn: None,
        vcpu_info: VcpuInfoAt {
            mfn: shared_info,
            offset: 0,
        },
        vcpu_info_registered: false,
        hvm_params: [0; HVM_NR_PARAMS as usize],
        upcall_vector: None,
        console: ConsoleLine::default(),
        console_ring: None,
        memmap: pvh::memory_map(spec.ram_bytes),
        owned,
        vcpu_frames,
        grant_gfns: alloc::collections::BTreeMap::new(),
        foreign: BTreeSet::new(),
        timers: Timers::default(),
        lapic: keel_arch::x86::vlapic::Vlapic::new(0, true),
        wait: Wait::None,
        runstate: Runstate::default(),
        time_area: None,
        weight: spec.weight,
        cap: spec.cap,
    })
}

/// The builder's view of guest memory: guest-physical writes through the p2m.
struct BuilderWriter<'a> {
    p2m: &'a HapP2m,
}

impl pvh::GuestMemWriter for BuilderWriter<'_> {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), pvh::PvhError> {
        write_gpa(self.p2m, gpa, data).map_err(|_| pvh::PvhError::GuestWrite {
            gpa,
            len: data.len() as u64,
        })
    }
}
