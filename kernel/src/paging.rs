//! Paging modes (Xen: `struct paging_mode`, implemented by `mm/hap/` and
//! `mm/shadow/`): how a domain's guest-physical memory is translated to machine
//! memory and how keel reaches it. [`PagingMode`] is the one interface; [`Paging`]
//! is the enum of its implementations a domain holds. Today there is one,
//! [`HapP2m`]: hardware-assisted paging, the p2m written as EPT or NPT entries
//! that the CPU walks itself. Shadow paging (for CPUs without EPT/NPT) becomes a
//! second variant; nothing above this module changes for it.
//!
//! # Memory safety
//! Guest frames are reached only through [`DirectMapFrames`], and only at machine
//! frames the domain's p2m maps; the p2m maps only frames `domain.rs` allocated
//! for the domain (or, for a grant mapping, that another domain granted and keeps
//! alive while mapped). So a guest-supplied address can name nothing but memory
//! the domain may use.
//!
//! # Locking
//! None here: a domain's paging lives in its `mem` lock (`domain.rs`), held around
//! every call, copies included.

use keel_arch::hvm::HvmSupport;
use keel_arch::paging::DirectMapTables;
use keel_arch::svm::npt::NptFormat;
use keel_arch::vmx::ept::EptFormat;
use keel_mm::addr::{Gfn, Gpa, Gva, Hpa, Mfn};
use keel_mm::guest_mem::{CopyError, FrameAccess, GuestPhys};
use keel_mm::guest_walk::WalkCtx;
use keel_mm::p2m::{Access, P2m, P2mError};
use keel_mm::paging::PageSize;

use crate::frames::Frame;
use crate::memory::FRAMES;

/// What a paging mode does for a domain: the p2m's entries, its tables (to free
/// them), and guest memory reached through it.
pub trait PagingMode {
    /// The root the hardware walks (EPTP/nCR3 base; shadow: none of the guest's).
    fn root(&self) -> Hpa;
    /// Maps `count` frames from `mfn` at `gfn`.
    fn map(&mut self, gfn: Gfn, mfn: Mfn, count: u64, access: Access) -> Result<(), P2mError>;
    /// Sets or clears one entry; the frame it mapped before.
    fn set_entry(&mut self, gfn: Gfn, new: Option<(Mfn, Access)>) -> Result<Option<Mfn>, P2mError>;
    /// What `gfn` maps to.
    fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)>;
    /// Every table frame the mode allocated (to free them when the domain dies).
    fn for_each_table(&self, f: &mut dyn FnMut(Hpa));
    /// Copies from guest-virtual `gva` of a vCPU whose paging is `walk`.
    fn copy_from_guest(&self, walk: &WalkCtx, gva: u64, buf: &mut [u8]) -> Result<(), CopyError>;
    /// Copies to guest-virtual `gva`.
    fn copy_to_guest(&self, walk: &WalkCtx, gva: u64, data: &[u8]) -> Result<(), CopyError>;
    /// Writes guest-physical memory.
    fn write_gpa(&self, gpa: u64, data: &[u8]) -> Result<(), CopyError>;
}

/// Allocates one zeroed page-table frame for a p2m (from anywhere in RAM: the direct
/// map covers all of it once keel runs on its own tables).
fn alloc_table_frame() -> Option<Hpa> {
    FRAMES.lock().as_mut()?.alloc().ok().map(|m| m.hpa())
}

type Tables = DirectMapTables<fn() -> Option<Hpa>>;

/// Hardware-assisted paging: the p2m in the hardware's format.
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
    /// An empty p2m for guest frames below `limit`, in the format `hvm` walks.
    pub fn new(hvm: &HvmSupport, limit: Gfn) -> Result<HapP2m, P2mError> {
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
}

impl PagingMode for HapP2m {
    fn root(&self) -> Hpa {
        with_p2m!(self, p => p.root())
    }

    fn map(&mut self, gfn: Gfn, mfn: Mfn, count: u64, access: Access) -> Result<(), P2mError> {
        with_p2m!(self, p => p.map(gfn, mfn, count, access))
    }

    fn set_entry(&mut self, gfn: Gfn, new: Option<(Mfn, Access)>) -> Result<Option<Mfn>, P2mError> {
        with_p2m!(self, p => p.set_entry(gfn, new))
    }

    fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)> {
        with_p2m!(self, p => p.translate(gfn))
    }

    fn for_each_table(&self, f: &mut dyn FnMut(Hpa)) {
        with_p2m!(self, p => p.for_each_table(&mut *f))
    }

    fn copy_from_guest(&self, walk: &WalkCtx, gva: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        let mut frames = DirectMapFrames;
        with_p2m!(self, p => {
            let g = GuestPhys { p2m: p, frames: &mut frames };
            keel_mm::guest_mem::copy_from_guest(&g, walk, Gva::new(gva), buf)
        })
    }

    fn copy_to_guest(&self, walk: &WalkCtx, gva: u64, data: &[u8]) -> Result<(), CopyError> {
        let mut frames = DirectMapFrames;
        with_p2m!(self, p => {
            let mut g = GuestPhys { p2m: p, frames: &mut frames };
            keel_mm::guest_mem::copy_to_guest(&mut g, walk, Gva::new(gva), data)
        })
    }

    fn write_gpa(&self, gpa: u64, data: &[u8]) -> Result<(), CopyError> {
        let gpa = Gpa::new(gpa).ok_or(CopyError::Overflow)?;
        let mut frames = DirectMapFrames;
        with_p2m!(self, p => {
            let mut g = GuestPhys { p2m: p, frames: &mut frames };
            g.write(gpa, data)
        })
    }
}

/// The paging mode a domain uses.
pub enum Paging {
    /// Hardware-assisted paging (EPT/NPT).
    Hap(HapP2m),
    /// A PV guest's own page tables, on machine frames, under the PV MMU's
    /// rules (`pv.rs`): no p2m the hardware walks; a guest frame number is a
    /// machine frame number (Xen: not `paging_mode_translate`).
    Pv(crate::pv::PvPaging),
}

/// Runs `$body` with `$m` bound to the mode's implementation.
macro_rules! with_mode {
    ($paging:expr, $m:ident => $body:expr) => {
        match $paging {
            Paging::Hap($m) => $body,
            Paging::Pv($m) => $body,
        }
    };
}

impl PagingMode for Paging {
    #[inline]
    fn root(&self) -> Hpa {
        with_mode!(self, m => m.root())
    }
    #[inline]
    fn map(&mut self, gfn: Gfn, mfn: Mfn, count: u64, access: Access) -> Result<(), P2mError> {
        with_mode!(self, m => m.map(gfn, mfn, count, access))
    }
    #[inline]
    fn set_entry(&mut self, gfn: Gfn, new: Option<(Mfn, Access)>) -> Result<Option<Mfn>, P2mError> {
        with_mode!(self, m => m.set_entry(gfn, new))
    }
    #[inline]
    fn translate(&self, gfn: Gfn) -> Option<(Mfn, Access)> {
        with_mode!(self, m => m.translate(gfn))
    }
    fn for_each_table(&self, f: &mut dyn FnMut(Hpa)) {
        with_mode!(self, m => m.for_each_table(f))
    }
    #[inline]
    fn copy_from_guest(&self, walk: &WalkCtx, gva: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        with_mode!(self, m => m.copy_from_guest(walk, gva, buf))
    }
    #[inline]
    fn copy_to_guest(&self, walk: &WalkCtx, gva: u64, data: &[u8]) -> Result<(), CopyError> {
        with_mode!(self, m => m.copy_to_guest(walk, gva, data))
    }
    #[inline]
    fn write_gpa(&self, gpa: u64, data: &[u8]) -> Result<(), CopyError> {
        with_mode!(self, m => m.write_gpa(gpa, data))
    }
}

/// Guest frames through keel's direct map.
pub struct DirectMapFrames;

impl DirectMapFrames {
    fn frame(hpa: Hpa) -> (Frame, usize) {
        // SAFETY: callers (mm::guest_mem) pass only frames a domain's p2m maps
        // (module doc, "Memory safety"), which stay allocated while the domain's
        // `mem` lock, held around every copy, keeps its p2m as it is.
        unsafe { Frame::containing(hpa) }
    }
}

impl FrameAccess for DirectMapFrames {
    fn read(&self, hpa: Hpa, buf: &mut [u8]) {
        let (f, off) = Self::frame(hpa);
        f.read(off, buf);
    }

    fn write(&mut self, hpa: Hpa, data: &[u8]) {
        let (f, off) = Self::frame(hpa);
        f.write(off, data);
    }

    fn read_u64(&self, hpa: Hpa) -> u64 {
        let (f, off) = Self::frame(hpa);
        f.read_u64(off)
    }
}
