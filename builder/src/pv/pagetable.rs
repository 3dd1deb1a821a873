//! The initial page tables' contents: 4-level, 4 KiB pages only, entries holding
//! machine frame numbers the caller supplies (`pfn -> mfn`).
//!
//! # Entries
//!
//! What Xen leaves in a 64-bit PV guest's start-of-day tables:
//!
//! - L4, L3 and L2 entries: present, writable, accessed, dirty, user
//!   (`dom0_build.c` `L4_PROT`/`L3_PROT`/`L2_PROT`; libxg's `lvl_prot[1..3]` in
//!   `xg_dom_x86.c` are the same).
//! - L1 entries: present, writable, accessed, user and `_PAGE_GUEST_KERNEL`
//!   (bit 52, a software bit: "this user-accessible page is the guest kernel's",
//!   since the PV kernel runs in ring 3 and so cannot use the user bit for that;
//!   `xen/arch/x86/include/asm/x86_64/page.h`). Xen's Dom0 builder writes exactly
//!   this (`L1_PROT`); libxg writes present, writable, accessed, and Xen turns it
//!   into the same when it validates the tables (`adjust_guest_l1e`: an entry
//!   without the user bit gets user and guest-kernel).
//! - The L1 entries mapping the page-table pages themselves lose the writable bit:
//!   a PV guest may not write its page tables directly (`mark_pv_pt_pages_rdonly`;
//!   libxg `get_pg_prot`). The p2m mapping's own tables are not mapped at all
//!   (`elfnote.h`: the kernel "must also be able to handle the page table pages
//!   used for this mapping not being accessible through the initial mapping").
//! - No NX, no global bit, no large pages, nothing else present. The L4 slots of
//!   the hypervisor's range (256-271) are left empty: the hypervisor installs its
//!   own entries there when it takes the L4 as a guest's root table (Xen
//!   `init_xen_l4_slots`).
//!
//! A machine frame must fit the entry's address field (bits 12-51): below 2^40.

extern crate alloc;

use alloc::vec::Vec;

use super::PvError;
use super::layout::{PT_ENTRIES, PageTableFrame, PvLayout, canonical};

/// Present (SDM Vol. 3A, 4.5 "4-level paging").
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// User-mode accessible.
pub const PTE_USER: u64 = 1 << 2;
/// Accessed.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Dirty.
pub const PTE_DIRTY: u64 = 1 << 6;
/// Xen's `_PAGE_GUEST_KERNEL`: bit 52, ignored by the hardware.
pub const PTE_GUEST_KERNEL: u64 = 1 << 52;
/// Execute-disable (never set at start of day).
pub const PTE_NX: u64 = 1 << 63;
/// The address field of an entry.
pub const PTE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Flags of an L4, L3 or L2 entry.
pub const UPPER_FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY | PTE_USER;
/// Flags of an L1 entry mapping a page other than a page table.
pub const LEAF_FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_USER | PTE_GUEST_KERNEL;
/// The largest machine frame an entry can hold.
pub const MAX_MFN: u64 = (1 << 40) - 1;

/// `mfn_of(pfn)`, checked to fit an entry.
pub(super) fn mfn(mfn_of: &impl Fn(u64) -> Option<u64>, pfn: u64) -> Result<u64, PvError> {
    let mfn = mfn_of(pfn).ok_or(PvError::MfnMissing { pfn })?;
    if mfn > MAX_MFN {
        return Err(PvError::MfnTooLarge { pfn, mfn });
    }
    Ok(mfn)
}

/// The layout's tables sorted by (level, key), and their pfns sorted.
struct Index {
    tables: Vec<PageTableFrame>,
    pfns: Vec<u64>,
}

impl Index {
    fn new(layout: &PvLayout) -> Index {
        let mut tables = layout.page_tables.clone();
        tables.sort_unstable();
        let mut pfns: Vec<u64> = tables.iter().map(|t| t.pfn).collect();
        pfns.sort_unstable();
        Index { tables, pfns }
    }

    fn is_table(&self, pfn: u64) -> bool {
        self.pfns.binary_search(&pfn).is_ok()
    }

    /// Tables of `level` whose keys are in `first..first + 512`.
    fn children(&self, level: u8, first: u64) -> &[PageTableFrame] {
        let lo = self
            .tables
            .partition_point(|t| (t.level, t.key) < (level, first));
        let end = first.saturating_add(PT_ENTRIES);
        let hi = self
            .tables
            .partition_point(|t| (t.level, t.key) < (level, end));
        &self.tables[lo..hi.max(lo)]
    }
}

fn entries(
    layout: &PvLayout,
    index: &Index,
    table: &PageTableFrame,
    mfn_of: &impl Fn(u64) -> Option<u64>,
) -> Result<[u64; PT_ENTRIES as usize], PvError> {
    let mut out = [0u64; PT_ENTRIES as usize];
    // Keys are below 2^48 for tables `plan` made; for others, nothing matches.
    let Some(first) = table.key.checked_mul(PT_ENTRIES) else {
        return Ok(out);
    };
    if table.level > 1 {
        for child in index.children(table.level - 1, first) {
            // `children` only returns keys in first..first + 512.
            let slot = (child.key - first) as usize;
            out[slot] = (mfn(mfn_of, child.pfn)? << 12) | UPPER_FLAGS;
        }
        return Ok(out);
    }
    if table.level == 0 {
        return Ok(out);
    }
    for (slot, entry) in out.iter_mut().enumerate() {
        let Some(va48) = first
            .checked_add(slot as u64)
            .and_then(|page_key| page_key.checked_mul(1 << 12))
        else {
            break;
        };
        if let Some(pfn) = layout.pfn_at(canonical(va48)) {
            let flags = if index.is_table(pfn) {
                LEAF_FLAGS & !PTE_RW
            } else {
                LEAF_FLAGS
            };
            *entry = (mfn(mfn_of, pfn)? << 12) | flags;
        }
    }
    Ok(out)
}

/// The 512 entries of `table` (one of `layout.page_tables`), with machine frames
/// from `mfn_of`. Builds an index of the layout's tables on every call: to fill
/// them all, use [`for_each_page_table`].
pub fn page_table_entries(
    layout: &PvLayout,
    table: &PageTableFrame,
    mfn_of: impl Fn(u64) -> Option<u64>,
) -> Result<[u64; PT_ENTRIES as usize], PvError> {
    entries(layout, &Index::new(layout), table, &mfn_of)
}

/// Calls `f` with each of the layout's page-table pages and its entries, in
/// `layout.page_tables` order.
pub fn for_each_page_table(
    layout: &PvLayout,
    mfn_of: impl Fn(u64) -> Option<u64>,
    mut f: impl FnMut(&PageTableFrame, &[u64; PT_ENTRIES as usize]) -> Result<(), PvError>,
) -> Result<(), PvError> {
    let index = Index::new(layout);
    for table in &layout.page_tables {
        f(table, &entries(layout, &index, table, &mfn_of)?)?;
    }
    Ok(())
}
