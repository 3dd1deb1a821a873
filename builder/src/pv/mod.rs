//! The x86_64 PV domain builder's portable part: read a PV kernel ELF, decide what
//! goes in which pseudo-physical frame of the new domain and at which virtual
//! address, make the initial page tables, the `start_info` page and the registers
//! vCPU 0 starts with.
//!
//! # What
//!
//! A PV ("paravirtualized") x86_64 kernel runs in ring 3 on page tables that
//! translate to *machine* frames, which the hypervisor validates; it knows that it
//! is virtualized and asks for privileged things by hypercall. It starts in 64-bit
//! mode at the virtual address its `XEN_ELFNOTE_ENTRY` note names, on page tables
//! the builder made, which map one contiguous virtual region beginning at
//! `XEN_ELFNOTE_VIRT_BASE`, with `RSI` = the virtual address of a `start_info`
//! (`xen/include/public/xen.h`, "Start-of-day memory layout"). Its memory is a list
//! of machine frames, the p2m: pseudo-physical frame `pfn` is machine frame
//! `p2m[pfn]`; the region maps pfn 0, 1, ... in order.
//!
//! Four steps, each a pure function so that all of it runs on the host:
//! [`parse`] checks the image and reads its Xen notes ([`PvKernel`]); [`plan`] lays
//! out the domain for its role, memory size, initrd and command line
//! ([`PvLayout`], in pfns and virtual addresses only); [`for_each_page_table`]
//! produces the page-table pages and [`start_info`] / [`initial_regs`] the start of
//! day, given the machine frames through a `pfn -> mfn` closure, since only the
//! hypervisor knows them; [`load`] writes everything through a
//! [`GuestMemWriter`](crate::pvh::GuestMemWriter) at pseudo-physical addresses
//! (`pfn << 12`). [`classify`] tells the launch path whether an image is a PV kernel,
//! a PVH kernel, both or neither.
//!
//! # Sources
//!
//! - Notes and their checks: libelf (`xen/common/libelf/libelf-dominfo.c`,
//!   `elf_xen_parse` with `hvm = false`) and the note definitions in
//!   `xen/include/public/elfnote.h`; see [`kernel`].
//! - Layout: Xen's Dom0 builder (`xen/arch/x86/pv/dom0_build.c`,
//!   `dom0_construct_pv`) for [`Role::Dom0`], libxenguest (`tools/libs/guest/
//!   xg_dom_core.c` `xc_dom_build_image`, `xg_dom_x86.c` `alloc_pgtables_pv`,
//!   `alloc_p2m_list_x86_64`, `alloc_magic_pages_pv`) for [`Role::DomU`]; see
//!   [`layout`].
//! - Page-table entries: `dom0_build.c` (`L1_PROT` ... `L4_PROT`,
//!   `mark_pv_pt_pages_rdonly`), `xg_dom_x86.c` (`x86_64_params`, `get_pg_prot`) and
//!   Xen's validation of what libxg writes (`adjust_guest_l*e`, `xen/arch/x86/mm.c`);
//!   see [`pagetable`].
//! - `start_info` and registers: `dom0_build.c` and `xg_dom_x86.c`
//!   (`start_info_x86_64`, `vcpu_x86_64`); see [`boot`].
//!
//! # Invariants and hazards
//!
//! - A [`PvKernel`] is only built by `parse`; its segments are checked, pairwise
//!   disjoint, and its virtual range, entry and hypercall page are consistent and
//!   outside the hypervisor's range.
//! - A [`PvLayout`] is only built by `plan`: the things it places occupy disjoint
//!   pfns below `pages_used <= nr_pages`, everything in the boot region is mapped by
//!   its page tables, and the region (and an `INIT_P2M` mapping) is canonical and
//!   clear of `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END` (L4 slots 256-271, where
//!   keel lives). `load` re-plans and refuses a layout that does not match.
//! - Arithmetic on guest-controlled values is checked everywhere; nothing here
//!   panics on any input (property-tested).
//! - The builder never writes the region's gaps (below the kernel, the padding
//!   after the stack): the caller hands over zeroed frames, as Xen's allocator does.
//!
//! # Locking
//!
//! None: pure functions over their arguments.

#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use core::fmt;

use crate::elfnotes::NoteError;
use crate::image::{ImageError, SegmentError};

pub mod boot;
pub mod kernel;
pub mod layout;
pub mod pagetable;

#[cfg(test)]
mod testelf;
#[cfg(test)]
mod tests;

pub use boot::{PvBoot, PvRegs, initial_regs, load, start_info};
pub use kernel::{Features, PaeMode, PvKernel, XenKernelKind, classify, parse};
pub use layout::{InitrdPlace, P2mPlace, Page, PageTableFrame, PvLayout, PvSpec, Role, plan};
pub use pagetable::{for_each_page_table, page_table_entries};

/// Bytes in a page (x86 4 KiB pages: Xen maps PV start-of-day memory with no others).
pub const PAGE_SIZE: u64 = 0x1000;

/// What a range of virtual addresses is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// The kernel image, from `VIRT_BASE` to its end.
    Kernel,
    /// The whole boot region, from `VIRT_BASE` to the end of the padding.
    BootRegion,
    /// The p2m list mapped at `XEN_ELFNOTE_INIT_P2M`.
    P2m,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Area::Kernel => "the kernel",
            Area::BootRegion => "the boot region",
            Area::P2m => "the p2m list",
        })
    }
}

/// Why a PV domain cannot be built. The variant's doc is the message.
#[derive(Clone, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum PvError {
    /// {0}
    Image(ImageError),
    /// {0}
    Segment(SegmentError),
    /// {0}
    Note(NoteError),
    /// the ELF is big-endian; x86 kernels are little-endian
    BigEndian,
    /// the kernel is a 32-bit ELF: keel runs 64-bit PV kernels only
    Elf32,
    /// ELF machine {0} is not x86-64 (62)
    WrongMachine(u16),
    /// ELF type {0} is neither an executable (ET_EXEC) nor a shared object (ET_DYN)
    WrongType(u16),
    /// loadable segments {first} ({first_start:#x}..{first_end:#x}) and {second} ({second_start:#x}..{second_end:#x}) overlap
    SegmentsOverlap {
        first: usize,
        first_start: u64,
        first_end: u64,
        second: usize,
        second_start: u64,
        second_end: u64,
    },
    /// the Xen ELF note of type {kind} has a {descsz}-byte value; a numeric note has 1, 2, 4 or 8 bytes
    BadNumericNote { kind: u32, descsz: usize },
    /// XEN_ELFNOTE_SUPPORTED_FEATURES has {descsz} bytes; it must be a non-empty array of 32-bit words
    BadSupportedFeatures { descsz: usize },
    /// the Xen ELF note of type {kind} is not a UTF-8 string
    BadNoteString { kind: u32 },
    /// XEN_ELFNOTE_FEATURES requires "{name}", a feature Xen's loader does not know
    UnknownRequiredFeature { name: String },
    /// the kernel requires XENFEAT_supervisor_mode_kernel (a kernel in ring 0); PV kernels run in ring 3
    SupervisorModeKernel,
    /// the kernel requires Xen features {missing:#x} (XENFEAT_* bits) that are not offered
    UnsupportedFeatures { missing: u32 },
    /// neither a PV nor a PVH entry: not a Xen kernel
    NotXenKernel,
    /// the kernel has a PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) but no PV entry (XEN_ELFNOTE_ENTRY): boot it as PVH
    PvhOnly,
    /// the kernel describes itself in a legacy __xen_guest section, which keel does not read; it needs Xen ELF notes
    LegacyXenGuest,
    /// the kernel is neither for the generic loader (XEN_ELFNOTE_LOADER "generic") nor Linux (XEN_ELFNOTE_GUEST_OS "linux"): loader {loader:?}, guest OS {guest_os:?}
    WrongLoader {
        loader: Option<String>,
        guest_os: Option<String>,
    },
    /// the kernel is built for Xen {found:?}; only "xen-3.0" kernels can be loaded (XEN_ELFNOTE_XEN_VERSION)
    WrongXenVersion { found: Option<String> },
    /// XEN_ELFNOTE_PADDR_OFFSET is given without XEN_ELFNOTE_VIRT_BASE
    PaddrOffsetWithoutVirtBase,
    /// the kernel's virtual addresses (physical {pstart:#x}..{pend:#x} + VIRT_BASE {virt_base:#x} - PADDR_OFFSET {paddr_offset:#x}) fall outside the address space
    VirtOverflow {
        pstart: u64,
        pend: u64,
        virt_base: u64,
        paddr_offset: u64,
    },
    /// XEN_ELFNOTE_VIRT_BASE {0:#x} is not page-aligned
    VirtBaseMisaligned(u64),
    /// XEN_ELFNOTE_VIRT_BASE {virt_base:#x} lies above the kernel's first byte {kstart:#x}
    VirtBaseAboveKernel { virt_base: u64, kstart: u64 },
    /// the entry point {entry:#x} is not inside the file-backed part of any loadable segment
    EntryOutsideKernel { entry: u64 },
    /// XEN_ELFNOTE_INIT_P2M {p2m_base:#x} lies inside the kernel {kstart:#x}..{kend:#x}
    P2mBaseInKernel {
        p2m_base: u64,
        kstart: u64,
        kend: u64,
    },
    /// XEN_ELFNOTE_INIT_P2M {0:#x} is not page-aligned
    P2mBaseMisaligned(u64),
    /// XEN_ELFNOTE_HYPERCALL_PAGE {va:#x} is not a page-aligned address inside the kernel {kstart:#x}..{kend:#x}
    BadHypercallPage { va: u64, kstart: u64, kend: u64 },
    /// XEN_ELFNOTE_HV_START_LOW {0:#x} is above 0xffff800000000000, where the hypervisor's range starts on x86_64
    HvStartLowTooHigh(u64),
    /// {area} ({start:#x}..{end:#x}) is not in one half of the canonical address space
    NonCanonical { area: Area, start: u64, end: u64 },
    /// {area} ({start:#x}..{end:#x}) overlaps the hypervisor's range 0xffff800000000000..0xffff880000000000
    InHypervisorHole { area: Area, start: u64, end: u64 },
    /// the p2m list at {p2m_start:#x}..{p2m_end:#x} (XEN_ELFNOTE_INIT_P2M) overlaps the boot region {v_start:#x}..{v_end:#x}
    P2mOverlapsRegion {
        p2m_start: u64,
        p2m_end: u64,
        v_start: u64,
        v_end: u64,
    },
    /// the kernel's XEN_ELFNOTE_SUPPORTED_FEATURES lack XENFEAT_dom0: it cannot run as Dom0
    NotDom0Capable,
    /// a PV domain needs memory: {0} pages given
    NoMemory(u64),
    /// {0} overflows the address space
    Overflow(&'static str),
    /// the command line is {len} bytes long; at most 1023 fit in start_info.cmd_line
    CmdlineTooLong { len: usize },
    /// the command line contains a NUL byte
    CmdlineHasNul,
    /// the boot region, initrd and p2m list need {needed:#x} pages, but the domain has {nr_pages:#x}
    DoesNotFit { needed: u64, nr_pages: u64 },
    /// the page-table count did not settle (boot region from {v_start:#x})
    PageTablesUnsettled { v_start: u64 },
    /// pseudo-physical frame {pfn:#x} has no machine frame
    MfnMissing { pfn: u64 },
    /// machine frame {mfn:#x} (of pseudo-physical frame {pfn:#x}) does not fit in a page-table entry
    MfnTooLarge { pfn: u64, mfn: u64 },
    /// the kernel has a hypercall page (XEN_ELFNOTE_HYPERCALL_PAGE) but no page contents were given
    NoHypercallPage,
    /// the layout was planned for a different kernel, role, memory size, initrd or command line
    LayoutMismatch,
    /// writing {len:#x} bytes to pseudo-physical address {gpa:#x} failed
    GuestWrite { gpa: u64, len: u64 },
}

impl From<ImageError> for PvError {
    fn from(e: ImageError) -> Self {
        PvError::Image(e)
    }
}

impl From<SegmentError> for PvError {
    fn from(e: SegmentError) -> Self {
        PvError::Segment(e)
    }
}

impl From<NoteError> for PvError {
    fn from(e: NoteError) -> Self {
        PvError::Note(e)
    }
}
