//! Where everything of a new PV domain goes: which pseudo-physical frame (pfn)
//! holds what, at which virtual address.
//!
//! # The boot region (`xen.h`, "Start-of-day memory layout")
//!
//! One contiguous virtual region from `VIRT_BASE`, mapped 1:1 onto pfns from 0
//! (`va = VIRT_BASE + pfn * 4096`), holding, each part starting on a page boundary:
//!
//! 1. the kernel image (`virt_kstart..virt_kend`; the pages between `VIRT_BASE`
//!    and the kernel are part of the region and stay zero);
//! 2. the initrd, unless the kernel has `XEN_ELFNOTE_MOD_START_PFN` (then it is not
//!    mapped: see below);
//! 3. the p2m list (`mfn_list`, 8 bytes per page of the domain, rounded up to whole
//!    pages), unless `XEN_ELFNOTE_INIT_P2M` moves it (see below);
//! 4. the `start_info` page (`RSI` at entry; for Dom0 the console information
//!    would share it, keel has none);
//! 5. for a domU, the xenstore ring page, then the console ring page;
//! 6. the initial page tables (`pt_base`, `nr_pt_frames`; `CR3` is the first, the
//!    L4);
//! 7. the boot stack page (`RSP` = its end);
//! 8. padding: the region ends on a 4 MiB boundary, at least 512 KiB after the
//!    stack.
//!
//! The page tables map the whole region, padding included, with 4 KiB pages. How
//! many there are depends on how big the region is, which depends on how many there
//! are. Xen's Dom0 builder (`dom0_construct_pv`) takes the fewest `n >= 2` such
//! that, with `n` table pages, the stack after them and the region's end at the
//! next 4 MiB boundary above the stack (plus 4 MiB if that leaves less than 512
//! KiB of padding), one L4, one L3 per 512 GiB, one L2 per 1 GiB and one L1 per
//! 2 MiB block the region touches (its `NR()` macro) add up to at most `n`.
//! libxg (`alloc_pgtables_pv`, `count_pgtables`) iterates from the other side:
//! guess no tables, end the region at the end of the 4 MiB block holding
//! "stack + 512 KiB", count the tables that region needs, and grow until they fit.
//! Both settle on the least fixed point of "tables needed by the region those tables
//! make" (libxg's guesses never overshoot it, and stop on reaching it), so keel has
//! one implementation, `settle`, for both roles; the tests check it against
//! literal transcriptions of both loops. There are then exactly as many tables as
//! the region needs, all of which [`crate::pv::pagetable`] fills.
//!
//! # After the region
//!
//! The frames from `(v_end - VIRT_BASE) / 4096` on, in libxg's order (Xen's Dom0
//! builder allocates these differently; a guest cannot tell, it reads
//! `mod_start` and `first_p2m_pfn`):
//!
//! - an unmapped initrd (`SIF_MOD_START_PFN`, `mod_start` = its first pfn);
//! - with `INIT_P2M`, the p2m list's frames, mapped at the `INIT_P2M` address, then
//!   the page tables for that mapping which the region's tables do not already
//!   provide (L3s, L2s, L1s; the L4 is shared), reported as `first_p2m_pfn`,
//!   `nr_p2m_frames`. libxg ignores an `INIT_P2M` address that is not page-aligned
//!   or not below `VIRT_BASE` ([`Role::DomU`] does too); Xen's Dom0 builder uses it
//!   wherever it is, refusing one that overlaps the region ([`Role::Dom0`] does too,
//!   and refuses one not page-aligned). Xen's Dom0 builder maps it with 1 GiB and
//!   2 MiB pages where it can; keel uses 4 KiB pages only, which `elfnote.h` allows
//!   ("must be prepared for ... large pages").
//!
//! The rest of the domain's `nr_pages` are free memory for the kernel. Everything
//! placed must fit: `pages_used <= nr_pages`.
//!
//! # Refused
//!
//! A region or `INIT_P2M` mapping that is not within one canonical half of the
//! address space or overlaps `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END` (where
//! keel lives: L4 slots 256-271), an `INIT_P2M` mapping overlapping the region,
//! arithmetic overflow anywhere, too little memory, a command line of more than
//! 1023 bytes or with a NUL (Xen truncates; keel says so), and for Dom0 a kernel
//! whose `SUPPORTED_FEATURES` lack `XENFEAT_dom0` (`dom0_construct_pv`).
//!
//! Neither Xen builder's layout depends on the number of vCPUs, and neither does
//! this one: vCPUs other than 0 start down until the guest brings them up.

extern crate alloc;

use alloc::vec::Vec;

use keel_hypercall::abi::features::{XENFEAT_DOM0, bit};
use keel_hypercall::abi::start_info::{
    HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, MAX_GUEST_CMDLINE,
};

use super::kernel::PvKernel;
use super::{Area, PAGE_SIZE, PvError};

/// 4 MiB: the boot region ends on such a boundary.
const REGION_ALIGN: u64 = 4 << 20;
/// The least padding after the boot stack.
const MIN_PADDING: u64 = 512 << 10;
/// Bytes per p2m entry (a 64-bit machine frame number).
const P2M_ENTRY_SIZE: u64 = 8;
/// Entries in a page-table page.
pub const PT_ENTRIES: u64 = 512;
/// Bits of virtual address a 4-level page table translates.
const VA_BITS: u32 = 48;
const VA_MASK: u64 = (1 << VA_BITS) - 1;
/// More rounds than either page-table count needs (a few, even for terabytes).
const MAX_ROUNDS: usize = 64;

/// Whose layout rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The initial domain: Xen's `dom0_construct_pv`.
    Dom0,
    /// Any other: libxenguest's `xc_dom_build_image` for x86_64 PV.
    DomU,
}

/// What the domain is built with, besides the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvSpec<'m> {
    pub role: Role,
    /// Pages of memory the domain gets (`start_info.nr_pages`, the p2m's length).
    pub nr_pages: u64,
    /// The initial ramdisk; empty for none.
    pub initrd: &'m [u8],
    /// The kernel's command line, at most 1023 bytes, no NUL.
    pub cmdline: &'m str,
}

/// One page: its pfn and the virtual address it is mapped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub pfn: u64,
    pub va: u64,
}

/// Where the initrd is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdPlace {
    /// No initrd.
    None,
    /// In the boot region, from page `pfn` at `va`; `len` bytes.
    Mapped { pfn: u64, va: u64, len: u64 },
    /// After the boot region, from page `pfn`, not mapped; `len` bytes.
    Unmapped { pfn: u64, len: u64 },
}

/// Where the p2m list is: `pages` frames from `pfn`, mapped at `va`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mPlace {
    pub pfn: u64,
    pub pages: u64,
    pub va: u64,
    /// In the boot region (no `INIT_P2M`), or after it with its own mapping.
    pub in_region: bool,
}

/// One page-table page: level 4 (the L4) down to 1 (an L1, whose entries map
/// pages), and which table of that level it is: `key` is the virtual address it
/// translates, less its sign extension, shifted right by the span of one such
/// table ([`PageTableFrame::span_shift`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageTableFrame {
    pub level: u8,
    pub key: u64,
    pub pfn: u64,
}

impl PageTableFrame {
    /// log2 of the bytes a table of `level` translates (an L1 2 MiB, an L4 all).
    pub fn span_shift(level: u8) -> u32 {
        12 + 9 * u32::from(level)
    }

    /// The lowest (canonical) virtual address this table translates.
    pub fn va_base(&self) -> u64 {
        canonical(
            self.key
                .checked_shl(Self::span_shift(self.level))
                .unwrap_or(0),
        )
    }
}

/// Where everything goes. Only [`plan`] makes one; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvLayout {
    pub role: Role,
    pub nr_pages: u64,
    /// The boot region: `v_start` (= `VIRT_BASE`, pfn 0) to `v_end` (4 MiB-aligned).
    pub v_start: u64,
    pub v_end: u64,
    /// The kernel's virtual range (`virt_kstart..virt_kend`).
    pub kernel: (u64, u64),
    pub initrd: InitrdPlace,
    pub p2m: P2mPlace,
    pub start_info: Page,
    /// A domU's xenstore ring page.
    pub xenstore: Option<Page>,
    /// A domU's console ring page.
    pub console: Option<Page>,
    /// Every page-table page: first the region's `nr_pt_frames` (the L4, its L3s,
    /// L2s, L1s, each level in address order, on consecutive pfns), then those of
    /// an `INIT_P2M` mapping (L3s, L2s, L1s).
    pub page_tables: Vec<PageTableFrame>,
    pub nr_pt_frames: u64,
    pub stack: Page,
    /// `XEN_ELFNOTE_HYPERCALL_PAGE`, inside the kernel.
    pub hypercall_page: Option<Page>,
    /// Where vCPU 0 starts.
    pub entry: u64,
    /// `start_info.first_p2m_pfn` / `nr_p2m_frames`: the p2m frames and their page
    /// tables when `INIT_P2M` is used, else 0 and 0.
    pub first_p2m_pfn: u64,
    pub nr_p2m_frames: u64,
    /// The builder places things in pfns `0..pages_used` only.
    pub pages_used: u64,
}

impl PvLayout {
    /// The L4: `pt_base`, and `CR3`'s frame.
    pub fn pt_base(&self) -> Page {
        let pfn = self.page_tables.first().map_or(0, |t| t.pfn);
        Page {
            pfn,
            va: self.v_start.saturating_add(pfn.saturating_mul(PAGE_SIZE)),
        }
    }

    /// Pages in the boot region.
    pub fn region_pages(&self) -> u64 {
        self.v_end.saturating_sub(self.v_start) / PAGE_SIZE
    }

    /// The pfn mapped at `va` by the initial page tables, if any.
    pub fn pfn_at(&self, va: u64) -> Option<u64> {
        if (self.v_start..self.v_end).contains(&va) {
            return Some((va - self.v_start) / PAGE_SIZE);
        }
        let p = &self.p2m;
        let off = va.checked_sub(p.va)?;
        if p.in_region || off / PAGE_SIZE >= p.pages {
            return None;
        }
        p.pfn.checked_add(off / PAGE_SIZE)
    }
}

/// Sign-extends a 48-bit virtual address (bits above 48 are dropped).
pub(super) fn canonical(va48: u64) -> u64 {
    (((va48 << (64 - VA_BITS)) as i64) >> (64 - VA_BITS)) as u64
}

fn is_canonical(va: u64) -> bool {
    canonical(va & VA_MASK) == va
}

/// Checks that `start..end` (non-empty) lies in one canonical half and clear of
/// the hypervisor's range.
pub(super) fn check_va_range(area: Area, start: u64, end: u64) -> Result<(), PvError> {
    let last = end.checked_sub(1).filter(|&l| l >= start);
    let Some(last) = last else {
        return Err(PvError::NonCanonical { area, start, end });
    };
    if !is_canonical(start) || !is_canonical(last) || (start >> 63) != (last >> 63) {
        return Err(PvError::NonCanonical { area, start, end });
    }
    if start < HYPERVISOR_VIRT_END && end > HYPERVISOR_VIRT_START {
        return Err(PvError::InHypervisorHole { area, start, end });
    }
    Ok(())
}

/// The keys of the level-`level` tables translating `start..end` (non-empty, in
/// one canonical half), as an inclusive range.
fn keys(level: u8, start: u64, end: u64) -> (u64, u64) {
    let shift = PageTableFrame::span_shift(level);
    let key = |va: u64| (va & VA_MASK).checked_shr(shift).unwrap_or(0);
    (key(start), key(end - 1))
}

/// Page-table pages mapping `start..end`: one L4 and, per lower level, one table
/// per block touched (Xen's `NR()`, libxg's `count_pgtables`).
pub(super) fn count_tables(start: u64, end: u64) -> u64 {
    1 + (1..=3u8)
        .map(|l| {
            let (a, b) = keys(l, start, end);
            b - a + 1
        })
        .sum::<u64>()
}

fn align_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE)
}

/// Checked `a + b` naming what overflowed.
fn add(a: u64, b: u64, what: &'static str) -> Result<u64, PvError> {
    a.checked_add(b).ok_or(PvError::Overflow(what))
}

/// Checked `n` pages in bytes.
fn page_bytes(n: u64, what: &'static str) -> Result<u64, PvError> {
    n.checked_mul(PAGE_SIZE).ok_or(PvError::Overflow(what))
}

const REGION_OVERFLOW: PvError = PvError::Overflow("the boot region");

/// `base + pages` pages, if that is an address.
fn after_pages(base: u64, pages: u64) -> Result<u64, PvError> {
    pages
        .checked_mul(PAGE_SIZE)
        .and_then(|bytes| base.checked_add(bytes))
        .ok_or(REGION_OVERFLOW)
}

/// The boot region's end and its number of page-table pages, the tables starting
/// at `pt_start` (see the module docs).
pub(super) fn settle(v_start: u64, pt_start: u64) -> Result<(u64, u64), PvError> {
    let region_end = |n: u64| -> Result<u64, PvError> {
        let stack_end = after_pages(pt_start, n.checked_add(1).ok_or(REGION_OVERFLOW)?)?;
        let end = align_up(stack_end, REGION_ALIGN).ok_or(REGION_OVERFLOW)?;
        if end - stack_end < MIN_PADDING {
            end.checked_add(REGION_ALIGN).ok_or(REGION_OVERFLOW)
        } else {
            Ok(end)
        }
    };
    // Xen tries n = 2, 3, ...; skipping to the count just found skips no answer,
    // since the count only grows with n. So the answer has exactly n tables.
    let mut n = 2u64;
    for _ in 0..MAX_ROUNDS {
        let end = region_end(n)?;
        // The region only grows from here: one that is not canonical, or reaches
        // the hole, now will still be at the end. (And only canonical ranges have
        // table keys that count.)
        check_va_range(Area::BootRegion, v_start, end)?;
        let need = count_tables(v_start, end);
        if need <= n {
            return Ok((end, n));
        }
        n = need;
    }
    Err(PvError::PageTablesUnsettled { v_start })
}

/// The region's tables: the L4, then per level 3, 2, 1 one per block of
/// `v_start..v_end`, on consecutive pfns from `first_pfn`.
fn region_tables(v_start: u64, v_end: u64, first_pfn: u64) -> Vec<PageTableFrame> {
    let mut out = Vec::new();
    out.push(PageTableFrame {
        level: 4,
        key: 0,
        pfn: first_pfn,
    });
    for level in (1..=3u8).rev() {
        let (a, b) = keys(level, v_start, v_end);
        for key in a..=b {
            let pfn = first_pfn + out.len() as u64;
            out.push(PageTableFrame { level, key, pfn });
        }
    }
    out
}

/// The keys of the level-`level` tables an `INIT_P2M` mapping of `start..end`
/// needs beyond the region's (`v_start..v_end`, disjoint from it): its blocks less
/// the region's (libxg's `count_pgtables` for a second mapping). The region's keys
/// are one interval, so this is at most two: those below it and those above it
/// (either possibly empty, `start >= end`). Keys are below 2^48: `+ 1` is safe.
fn p2m_keys(
    level: u8,
    (start, end): (u64, u64),
    (v_start, v_end): (u64, u64),
) -> [core::ops::Range<u64>; 2] {
    let (a, b) = keys(level, start, end);
    let (lo, hi) = keys(level, v_start, v_end);
    [a..(b + 1).min(lo), a.max(hi + 1)..b + 1]
}

/// How many tables [`p2m_tables`] makes.
fn p2m_table_count(p2m: (u64, u64), region: (u64, u64)) -> u64 {
    (1..=3u8)
        .flat_map(|level| p2m_keys(level, p2m, region))
        .map(|r| r.end.saturating_sub(r.start))
        .sum()
}

/// The tables an `INIT_P2M` mapping needs beyond the region's: per level 3, 2, 1
/// ([`p2m_keys`]), on consecutive pfns from `first_pfn`.
fn p2m_tables(p2m: (u64, u64), region: (u64, u64), first_pfn: u64) -> Vec<PageTableFrame> {
    let mut out: Vec<PageTableFrame> = Vec::new();
    for level in (1..=3u8).rev() {
        for key in p2m_keys(level, p2m, region).into_iter().flatten() {
            let pfn = first_pfn + out.len() as u64;
            out.push(PageTableFrame { level, key, pfn });
        }
    }
    out
}

/// Where everything of a PV domain for `kernel` with `spec` goes (see the module
/// docs for the rules and the refusals).
pub fn plan(kernel: &PvKernel<'_>, spec: &PvSpec<'_>) -> Result<PvLayout, PvError> {
    let nr_pages = spec.nr_pages;
    if nr_pages == 0 {
        return Err(PvError::NoMemory(nr_pages));
    }
    if spec.cmdline.len() >= MAX_GUEST_CMDLINE {
        return Err(PvError::CmdlineTooLong {
            len: spec.cmdline.len(),
        });
    }
    if spec.cmdline.as_bytes().contains(&0) {
        return Err(PvError::CmdlineHasNul);
    }
    if spec.role == Role::Dom0
        && kernel.features.supported_note
        && kernel.features.supported & bit(XENFEAT_DOM0) == 0
    {
        return Err(PvError::NotDom0Capable);
    }

    // What `parse` checked, again: the fields are public, and what follows relies
    // on every address below being at or above `virt_base`.
    let v_start = kernel.virt_base;
    let (kstart, kend) = (kernel.virt_kstart, kernel.virt_kend);
    if !v_start.is_multiple_of(PAGE_SIZE) {
        return Err(PvError::VirtBaseMisaligned(v_start));
    }
    if v_start > kstart || kstart >= kend {
        return Err(PvError::VirtBaseAboveKernel {
            virt_base: v_start,
            kstart,
        });
    }
    check_va_range(Area::Kernel, v_start, kend)?;
    if let Some(va) = kernel.hypercall_page
        && (va < kstart || va >= kend || !va.is_multiple_of(PAGE_SIZE))
    {
        return Err(PvError::BadHypercallPage { va, kstart, kend });
    }

    let region = "the boot region";
    let mut cursor = align_up(kend, PAGE_SIZE).ok_or(REGION_OVERFLOW)?;
    let initrd_len = spec.initrd.len() as u64;
    let initrd_pages = pages_for(initrd_len);
    let mapped_initrd = initrd_len > 0 && !kernel.mod_start_pfn;
    let initrd_va = cursor;
    if mapped_initrd {
        cursor = add(cursor, page_bytes(initrd_pages, region)?, region)?;
    }

    let p2m_bytes = nr_pages
        .checked_mul(P2M_ENTRY_SIZE)
        .ok_or(PvError::Overflow("the p2m list"))?;
    let p2m_pages = pages_for(p2m_bytes);
    let init_p2m = match (kernel.p2m_base, spec.role) {
        (None, _) => None,
        // libxg (`xc_dom_build_image`) quietly puts the list in the region then.
        (Some(b), Role::DomU) if b >= v_start || !b.is_multiple_of(PAGE_SIZE) => None,
        (Some(b), Role::Dom0) if !b.is_multiple_of(PAGE_SIZE) => {
            return Err(PvError::P2mBaseMisaligned(b));
        }
        (Some(b), _) => Some(b),
    };
    let p2m_in_region_va = cursor;
    if init_p2m.is_none() {
        cursor = add(cursor, page_bytes(p2m_pages, region)?, region)?;
    }
    let start_info_va = cursor;
    cursor = add(cursor, PAGE_SIZE, region)?;
    let rings_va = cursor;
    if spec.role == Role::DomU {
        cursor = add(cursor, 2 * PAGE_SIZE, region)?;
    }
    let pt_va = cursor;
    let (v_end, nr_pt) = settle(v_start, pt_va)?;
    let stack_va = pt_va + nr_pt * PAGE_SIZE;
    let region_pages = (v_end - v_start) / PAGE_SIZE;
    let page = |va: u64| Page {
        pfn: (va - v_start) / PAGE_SIZE,
        va,
    };

    let mut next_pfn = region_pages;
    let initrd = if initrd_len == 0 {
        InitrdPlace::None
    } else if mapped_initrd {
        InitrdPlace::Mapped {
            pfn: page(initrd_va).pfn,
            va: initrd_va,
            len: initrd_len,
        }
    } else {
        let pfn = next_pfn;
        next_pfn = add(next_pfn, initrd_pages, "the initrd")?;
        InitrdPlace::Unmapped {
            pfn,
            len: initrd_len,
        }
    };

    // Count first, then make the table lists: their length is bounded by the
    // domain's memory only once that is checked.
    let p2m_span = match init_p2m {
        None => None,
        Some(base) => {
            let p2m_end = add(base, page_bytes(p2m_pages, "the p2m list")?, "the p2m list")?;
            check_va_range(Area::P2m, base, p2m_end)?;
            if base < v_end && p2m_end > v_start {
                return Err(PvError::P2mOverlapsRegion {
                    p2m_start: base,
                    p2m_end,
                    v_start,
                    v_end,
                });
            }
            Some((base, p2m_end))
        }
    };
    let p2m_pfn = next_pfn;
    if let Some(span) = p2m_span {
        let tables = p2m_table_count(span, (v_start, v_end));
        next_pfn = add(next_pfn, p2m_pages, "the p2m list")?;
        next_pfn = add(next_pfn, tables, "the p2m list")?;
    }
    if next_pfn > nr_pages {
        return Err(PvError::DoesNotFit {
            needed: next_pfn,
            nr_pages,
        });
    }

    let mut page_tables = region_tables(v_start, v_end, page(pt_va).pfn);
    if page_tables.len() as u64 != nr_pt {
        // `settle` settles on exactly the tables the region needs.
        return Err(PvError::PageTablesUnsettled { v_start });
    }
    let (p2m, first_p2m_pfn, nr_p2m_frames) = match p2m_span {
        None => (
            P2mPlace {
                pfn: page(p2m_in_region_va).pfn,
                pages: p2m_pages,
                va: p2m_in_region_va,
                in_region: true,
            },
            0,
            0,
        ),
        Some(span) => {
            // Fits: counted above.
            let extra = p2m_tables(span, (v_start, v_end), p2m_pfn + p2m_pages);
            page_tables.extend(extra);
            (
                P2mPlace {
                    pfn: p2m_pfn,
                    pages: p2m_pages,
                    va: span.0,
                    in_region: false,
                },
                p2m_pfn,
                next_pfn - p2m_pfn,
            )
        }
    };

    let domu = spec.role == Role::DomU;
    Ok(PvLayout {
        role: spec.role,
        nr_pages,
        v_start,
        v_end,
        kernel: (kstart, kend),
        initrd,
        p2m,
        start_info: page(start_info_va),
        xenstore: domu.then(|| page(rings_va)),
        console: domu.then(|| page(rings_va + PAGE_SIZE)),
        page_tables,
        nr_pt_frames: nr_pt,
        stack: page(stack_va),
        hypercall_page: kernel.hypercall_page.map(page),
        entry: kernel.virt_entry,
        first_p2m_pfn,
        nr_p2m_frames,
        pages_used: next_pfn,
    })
}
