//! The start of day: the `start_info` page, vCPU 0's registers, and writing the
//! whole domain into its frames.
//!
//! # start_info (`dom0_construct_pv`; libxg `start_info_x86_64`)
//!
//! `magic` "xen-3.0-x86_64" (Xen's Dom0 builder appends "p" when the kernel's
//! `PAE_MODE` is "yes" or "bimodal", as Linux's is; libxg never does), `nr_pages`,
//! the machine address of `shared_info`, `flags` (`SIF_PRIVILEGED |
//! SIF_INITDOMAIN` for Dom0, plus `SIF_MOD_START_PFN` when the initrd is not
//! mapped; Xen's Dom0 also gets the cpufreq bits of `SIF_PM_MASK`, keel has none),
//! for a domU the xenstore and console rings' machine frames and event channels
//! (for Dom0 `store_mfn` 0 and `console.dom0` empty: keel has no VGA console
//! information), `pt_base` (the L4's virtual address), `nr_pt_frames` (the boot
//! region's tables), `mfn_list` (the p2m's virtual address), `mod_start` (the
//! initrd's virtual address, or its first pfn with `SIF_MOD_START_PFN`) and
//! `mod_len` (its exact length; libxg gives it rounded up to pages), the command
//! line, and `first_p2m_pfn`/`nr_p2m_frames` (see [`crate::pv::layout`]).
//!
//! # Registers (`dom0_construct_pv`, "Initial register values"; libxg `vcpu_x86_64`)
//!
//! `RIP` = the entry, `RSP` = the end of the boot stack page, `RSI` = the
//! start info's virtual address, `RFLAGS` = IF only, `CS` = `FLAT_KERNEL_CS`,
//! `SS` = `FLAT_KERNEL_SS`, `DS`/`ES`/`FS`/`GS` = `FLAT_KERNEL_DS` (null), `CR3` =
//! the L4's machine address, every other general register 0; the vCPU starts in
//! kernel mode (libxg `VGCF_in_kernel`) with the kernel stack for ring transitions
//! (`kernel_ss:kernel_sp`) at the same place, as libxg sets it. Setting them, and
//! masking every vCPU's event upcalls in `shared_info` (both builders do), is the
//! caller's.
//!
//! # Writing (`load`)
//!
//! Through a [`GuestMemWriter`] at pseudo-physical addresses (`pfn << 12`): the
//! kernel's segments (their file bytes, then zeroes to `p_memsz`), the hypercall
//! page over the kernel's bytes there (its contents are the caller's: they depend
//! on how the hypervisor takes hypercalls), the initrd, the p2m list (`mfn_of(pfn)`
//! for every pfn below `nr_pages`, `!0` for one without a frame, as libxg writes
//! `INVALID_PFN`; zeroes after), zeroed xenstore, console and stack pages, the page
//! tables, and last the start info page. Nothing else: the caller hands over zeroed
//! frames.

use keel_hypercall::abi::start_info::{
    ConsoleDom0, ConsoleDomU, FLAT_KERNEL_CS, FLAT_KERNEL_DS, FLAT_KERNEL_SS, SIF_INITDOMAIN,
    SIF_MOD_START_PFN, SIF_PRIVILEGED, START_INFO_MAGIC_X86_64, StartInfo,
};

use super::kernel::{PaeMode, PvKernel};
use super::layout::{InitrdPlace, Page, PvLayout, PvSpec, Role, plan};
use super::pagetable::{self, for_each_page_table};
use super::{PAGE_SIZE, PvError};
use crate::pvh::GuestMemWriter;

/// `RFLAGS` at entry: `X86_EFLAGS_IF` (bit 9).
pub const ENTRY_RFLAGS: u64 = 1 << 9;
/// What the p2m list holds for a pfn without a machine frame (libxg `INVALID_PFN`).
pub const INVALID_P2M_ENTRY: u64 = !0;

/// What the hypervisor gives the new domain, besides its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvBoot<'h> {
    /// Machine address of the domain's `shared_info` page.
    pub shared_info_maddr: u64,
    /// A domU's xenstore event channel (ignored for Dom0).
    pub store_evtchn: u32,
    /// A domU's console event channel (ignored for Dom0).
    pub console_evtchn: u32,
    /// The hypercall page's contents, written where `XEN_ELFNOTE_HYPERCALL_PAGE`
    /// says (required when the kernel has that note).
    pub hypercall_page: Option<&'h [u8; PAGE_SIZE as usize]>,
}

/// vCPU 0's registers at the start of day; every register not named is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvRegs {
    pub rip: u64,
    pub rsp: u64,
    pub rsi: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    /// Machine address of the L4.
    pub cr3: u64,
    /// The stack a ring transition switches to (`HYPERVISOR_stack_switch` later).
    pub kernel_ss: u16,
    pub kernel_sp: u64,
}

fn page_end(p: Page) -> u64 {
    p.va.saturating_add(PAGE_SIZE)
}

/// vCPU 0's registers for `layout`, with the L4's machine frame from `mfn_of`.
pub fn initial_regs(
    layout: &PvLayout,
    mfn_of: impl Fn(u64) -> Option<u64>,
) -> Result<PvRegs, PvError> {
    let l4 = pagetable::mfn(&mfn_of, layout.pt_base().pfn)?;
    let rsp = page_end(layout.stack);
    Ok(PvRegs {
        rip: layout.entry,
        rsp,
        rsi: layout.start_info.va,
        rflags: ENTRY_RFLAGS,
        cs: FLAT_KERNEL_CS,
        ss: FLAT_KERNEL_SS,
        ds: FLAT_KERNEL_DS,
        es: FLAT_KERNEL_DS,
        fs: FLAT_KERNEL_DS,
        gs: FLAT_KERNEL_DS,
        cr3: l4 << 12,
        kernel_ss: FLAT_KERNEL_SS,
        kernel_sp: rsp,
    })
}

/// The `start_info` for `layout` (planned from `kernel` and `spec`).
pub fn start_info(
    kernel: &PvKernel<'_>,
    layout: &PvLayout,
    spec: &PvSpec<'_>,
    boot: &PvBoot<'_>,
    mfn_of: impl Fn(u64) -> Option<u64>,
) -> Result<StartInfo, PvError> {
    let mut si = StartInfo::default();
    let magic_p = layout.role == Role::Dom0 && kernel.pae != PaeMode::No;
    si.magic[..START_INFO_MAGIC_X86_64.len()].copy_from_slice(START_INFO_MAGIC_X86_64);
    if magic_p {
        si.magic[START_INFO_MAGIC_X86_64.len()] = b'p';
    }
    si.nr_pages = layout.nr_pages;
    si.shared_info = boot.shared_info_maddr;
    match layout.role {
        Role::Dom0 => {
            si.flags = SIF_PRIVILEGED | SIF_INITDOMAIN;
            si.console = ConsoleDom0::default().to_bytes();
        }
        Role::DomU => {
            let (Some(store), Some(console)) = (layout.xenstore, layout.console) else {
                return Err(PvError::LayoutMismatch);
            };
            si.store_mfn = pagetable::mfn(&mfn_of, store.pfn)?;
            si.store_evtchn = boot.store_evtchn;
            si.console = ConsoleDomU {
                mfn: pagetable::mfn(&mfn_of, console.pfn)?,
                evtchn: boot.console_evtchn,
                pad: 0,
            }
            .to_bytes();
        }
    }
    si.pt_base = layout.pt_base().va;
    si.nr_pt_frames = layout.nr_pt_frames;
    si.mfn_list = layout.p2m.va;
    match layout.initrd {
        InitrdPlace::None => {}
        InitrdPlace::Mapped { va, len, .. } => {
            si.mod_start = va;
            si.mod_len = len;
        }
        InitrdPlace::Unmapped { pfn, len } => {
            si.flags |= SIF_MOD_START_PFN;
            si.mod_start = pfn;
            si.mod_len = len;
        }
    }
    let cmdline = spec.cmdline.as_bytes();
    // `plan` bounded it below MAX_GUEST_CMDLINE: the NUL after it fits.
    let dst = si
        .cmd_line
        .get_mut(..cmdline.len())
        .ok_or(PvError::LayoutMismatch)?;
    dst.copy_from_slice(cmdline);
    si.first_p2m_pfn = layout.first_p2m_pfn;
    si.nr_p2m_frames = layout.nr_p2m_frames;
    Ok(si)
}

/// Writes `data` at pseudo-physical address `gpa`.
fn write(mem: &mut impl GuestMemWriter, gpa: u64, data: &[u8]) -> Result<(), PvError> {
    mem.write(gpa, data).map_err(|_| PvError::GuestWrite {
        gpa,
        len: data.len() as u64,
    })
}

fn pfn_addr(pfn: u64) -> Result<u64, PvError> {
    pfn.checked_mul(PAGE_SIZE)
        .ok_or(PvError::Overflow("a pseudo-physical address"))
}

static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

fn write_zeroes(mem: &mut impl GuestMemWriter, gpa: u64, len: u64) -> Result<(), PvError> {
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(PAGE_SIZE);
        // chunk <= PAGE_SIZE, the length of ZERO_PAGE.
        write(mem, gpa.saturating_add(done), &ZERO_PAGE[..chunk as usize])?;
        done += chunk;
    }
    Ok(())
}

/// Writes the domain's start-of-day memory as `layout` (from [`plan`] with the same
/// `kernel` and `spec`) says; see the module docs for what and in which order.
pub fn load(
    kernel: &PvKernel<'_>,
    layout: &PvLayout,
    spec: &PvSpec<'_>,
    boot: &PvBoot<'_>,
    mfn_of: impl Fn(u64) -> Option<u64>,
    mem: &mut impl GuestMemWriter,
) -> Result<(), PvError> {
    if plan(kernel, spec)? != *layout {
        return Err(PvError::LayoutMismatch);
    }
    // Compute everything that can fail before writing anything.
    let si = start_info(kernel, layout, spec, boot, &mfn_of)?;
    let hypercall = match (layout.hypercall_page, boot.hypercall_page) {
        (Some(p), Some(bytes)) => Some((p, bytes)),
        (Some(_), None) => return Err(PvError::NoHypercallPage),
        (None, _) => None,
    };

    for s in &kernel.segments {
        // `parse` checked the segment against these very bytes and placed it
        // inside the kernel, below `virt_kend`.
        let data = s
            .file_bytes(kernel.bytes())
            .ok_or(PvError::LayoutMismatch)?;
        let gpa = kernel.segment_offset(s);
        write(mem, gpa, data)?;
        write_zeroes(
            mem,
            gpa.saturating_add(s.filesz),
            s.memsz.saturating_sub(s.filesz),
        )?;
    }
    if let Some((page, bytes)) = hypercall {
        write(mem, pfn_addr(page.pfn)?, bytes)?;
    }
    match layout.initrd {
        InitrdPlace::Mapped { pfn, .. } | InitrdPlace::Unmapped { pfn, .. } => {
            write(mem, pfn_addr(pfn)?, spec.initrd)?;
        }
        InitrdPlace::None => {}
    }

    // The p2m list, a page of entries at a time.
    let per_page = PAGE_SIZE / 8;
    for i in 0..layout.p2m.pages {
        let mut buf = [0u8; PAGE_SIZE as usize];
        for (j, entry) in buf.as_chunks_mut::<8>().0.iter_mut().enumerate() {
            let pfn = i * per_page + j as u64;
            if pfn >= layout.nr_pages {
                break;
            }
            let mfn = mfn_of(pfn).unwrap_or(INVALID_P2M_ENTRY);
            *entry = mfn.to_le_bytes();
        }
        write(mem, pfn_addr(layout.p2m.pfn + i)?, &buf)?;
    }

    for page in [layout.xenstore, layout.console, Some(layout.stack)]
        .into_iter()
        .flatten()
    {
        write_zeroes(mem, pfn_addr(page.pfn)?, PAGE_SIZE)?;
    }
    for_each_page_table(layout, &mfn_of, |table, entries| {
        let mut buf = [0u8; PAGE_SIZE as usize];
        for (chunk, e) in buf.as_chunks_mut::<8>().0.iter_mut().zip(entries.iter()) {
            *chunk = e.to_le_bytes();
        }
        write(mem, pfn_addr(table.pfn)?, &buf)
    })?;

    let mut page = [0u8; PAGE_SIZE as usize];
    page[..StartInfo::SIZE].copy_from_slice(&si.to_bytes());
    write(mem, pfn_addr(layout.start_info.pfn)?, &page)
}
