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
//! One CPU, one domain for now: the domain is owned by the run loop, not shared.

use alloc::string::String;
use alloc::vec::Vec;

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

use crate::memory::FRAMES;

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

/// Zeroes `count` frames from `first`.
fn zero_frames(first: Mfn, count: u64) {
    // SAFETY: the frames were just allocated by the caller (nobody else holds them)
    // and the direct map covers all RAM.
    unsafe {
        core::ptr::write_bytes(
            directmap_va(first.hpa()) as *mut u8,
            0,
            (count * 4096) as usize,
        )
    };
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

/// One domain.
pub struct Domain {
    pub id: u16,
    pub privileged: bool,
    pub p2m: HapP2m,
    pub vcpu: Vcpu,
    /// RAM size in bytes (gfn 0 .. ram_bytes / 4096).
    pub ram_bytes: u64,
    /// The frame shared_info lives in (zeroed at build).
    pub shared_info: Mfn,
    /// Where the guest mapped shared_info, if it did.
    pub shared_info_gfn: Option<Gfn>,
    pub hvm_params: [u64; HVM_NR_PARAMS as usize],
    pub console: ConsoleLine,
    /// The memory map handed to the guest (start_info and XENMEM_memory_map).
    pub memmap: Vec<keel_hypercall::abi::memory::E820Entry>,
    /// Runs of frames this domain owns (first, count), returned when it dies.
    pub owned: Vec<(Mfn, u64)>,
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
    /// A dead domain's RAM, shared_info and p2m tables go back to the allocator.
    /// (Its VMCB/VMCS and bitmaps are kept for now: one vCPU per boot.)
    fn drop(&mut self) {
        let mut tables = Vec::new();
        with_p2m!(&self.p2m, p => p.for_each_table(|t| tables.push(t)));
        let mut g = FRAMES.lock();
        let Some(frames) = g.as_mut() else { return };
        for &(first, count) in &self.owned {
            if let Err(e) = frames.free_contiguous(first, count) {
                log::error!("d{}: freeing {count} frame(s) at {first:?}: {e}", self.id);
            }
        }
        for t in tables {
            if let Err(e) = frames.free(t.mfn()) {
                log::error!("d{}: freeing p2m table {t:?}: {e}", self.id);
            }
        }
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
    pub privileged: bool,
    pub kernel: &'a [u8],
    pub cmdline: &'a str,
    pub modules: &'a [pvh::ModuleSpec<'a>],
    pub ram_bytes: u64,
}

/// Builds a PVH domain ready to run.
pub fn build_pvh(hvm: &HvmSupport, spec: &PvhSpec<'_>) -> Result<Domain, BuildError> {
    if !hvm.has_hap() {
        return Err(BuildError::NoHap);
    }
    let kernel = pvh::parse(spec.kernel).map_err(BuildError::Kernel)?;
    let layout = pvh::plan(&kernel, spec.ram_bytes, spec.cmdline, spec.modules)
        .map_err(BuildError::Kernel)?;

    let limit = Gfn::new(spec.ram_bytes / 4096).ok_or(BuildError::OutOfMemory)?;
    let mut p2m = HapP2m::new(hvm, limit).map_err(BuildError::P2m)?;
    let mut owned = Vec::new();
    populate(&mut p2m, spec.ram_bytes, &mut owned)?;

    let shared_info = {
        let mut g = FRAMES.lock();
        let frames = g.as_mut().ok_or(BuildError::OutOfMemory)?;
        frames.alloc().map_err(|_| BuildError::OutOfMemory)?
    };
    zero_frames(shared_info, 1);
    owned.push((shared_info, 1));

    let flags = if spec.privileged {
        keel_hypercall::abi::start_info::SIF_PRIVILEGED
            | keel_hypercall::abi::start_info::SIF_INITDOMAIN
    } else {
        0
    };
    let mut writer = BuilderWriter { p2m: &p2m };
    pvh::load(
        &kernel,
        &layout,
        spec.cmdline,
        spec.modules,
        flags,
        &mut writer,
    )
    .map_err(BuildError::Kernel)?;

    let start = PvhStart {
        entry: layout.entry,
        start_info: layout.start_info_gpa as u32,
    };
    let mut frames = KernelFrames;
    let vcpu = match hvm {
        HvmSupport::Svm(caps) => {
            keel_arch::svm::enable(&mut frames, caps)
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            // SAFETY: `p2m` is this domain's NPT, built from frames keel owns and
            // mapping only the domain's RAM (module invariant); the Domain keeps it
            // alive for as long as the vCPU can run.
            let v =
                unsafe { keel_arch::svm::SvmVcpu::new(&mut frames, caps, p2m.root(), 1, start) }
                    .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            Vcpu::Svm(v)
        }
        HvmSupport::Vmx(caps) => {
            keel_arch::vmx::enable(&mut frames, caps)
                .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            // SAFETY: `p2m` is this domain's EPT, built from frames keel owns and
            // mapping only the domain's RAM (module invariant); the Domain keeps it
            // alive for as long as the vCPU can run.
            let v =
                unsafe { keel_arch::vmx::VmxVcpu::new(&mut frames, caps, p2m.root(), 1, start) }
                    .map_err(|e| BuildError::Vcpu(alloc::format!("{e}")))?;
            Vcpu::Vmx(v)
        }
        HvmSupport::None => return Err(BuildError::NoHap),
    };

    Ok(Domain {
        id: spec.id,
        privileged: spec.privileged,
        p2m,
        vcpu,
        ram_bytes: spec.ram_bytes,
        shared_info,
        shared_info_gfn: None,
        hvm_params: [0; HVM_NR_PARAMS as usize],
        console: ConsoleLine::default(),
        memmap: pvh::memory_map(spec.ram_bytes),
        owned,
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
