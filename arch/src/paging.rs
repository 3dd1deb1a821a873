//! The hardware side of keel's own page tables: frames reached through the direct
//! map (as `mm::paging::TableMemory`), loading CR3, and the fixmap for device pages.
//!
//! `mm` decides what maps where; this module only touches memory and CR3.
//!
//! Hazard: while keel builds its final tables it still runs on the boot tables,
//! whose direct map covers only the low 4 GiB, so table frames must come from there
//! (the kernel allocates them below 4 GiB).

use keel_mm::Hpa;
use keel_mm::layout::{IMAGE_VIRT_BASE, IMAGE_WINDOW_SIZE, directmap_va};
use keel_mm::paging::{MapError, TableMemory};

/// The fixmap: single 4 KiB pages for device registers (uncached), just past the
/// image window. Slot `n` is at `FIXMAP_BASE + n * 4096`.
pub const FIXMAP_BASE: u64 = IMAGE_VIRT_BASE + IMAGE_WINDOW_SIZE;
/// Fixmap slot of the xAPIC's register page.
pub const FIXMAP_LAPIC: u64 = FIXMAP_BASE;

/// Page-table frames reached through the direct map, allocated by `alloc`.
pub struct DirectMapTables<F: FnMut() -> Option<Hpa>> {
    alloc: F,
}

impl<F: FnMut() -> Option<Hpa>> DirectMapTables<F> {
    /// # Safety
    /// Every frame `alloc` returns must be RAM owned by the caller for use as a page
    /// table (not aliased by anything else) and mapped by the direct map that is active
    /// while this value is used.
    pub unsafe fn new(alloc: F) -> Self {
        DirectMapTables { alloc }
    }

    fn entry_ptr(table: Hpa, index: usize) -> *mut u64 {
        assert!(index < 512, "page-table index {index} out of range");
        (directmap_va(table) + index as u64 * 8) as *mut u64
    }
}

impl<F: FnMut() -> Option<Hpa>> TableMemory for DirectMapTables<F> {
    fn alloc_table(&mut self) -> Result<Hpa, MapError> {
        let hpa = (self.alloc)().ok_or(MapError::OutOfMemory)?;
        let va = directmap_va(hpa) as *mut u8;
        // SAFETY: per `new`'s contract the frame is ours and mapped; 4 KiB is one frame.
        unsafe { core::ptr::write_bytes(va, 0, 4096) };
        Ok(hpa)
    }

    fn read_entry(&self, table: Hpa, index: usize) -> u64 {
        // SAFETY: `table` came from `alloc_table` (per `new`'s contract, mapped and
        // ours); the index is bounds-checked.
        unsafe { Self::entry_ptr(table, index).read_volatile() }
    }

    fn write_entry(&mut self, table: Hpa, index: usize, value: u64) {
        // SAFETY: as in `read_entry`. The tables are not live (CR3) while built.
        unsafe { Self::entry_ptr(table, index).write_volatile(value) }
    }
}

/// Loads `root` into CR3.
///
/// # Safety
/// `root` must be a complete PML4 that maps everything keel will touch from now on
/// (its image, stacks, direct map, device pages) with the permissions its code needs.
pub unsafe fn activate(root: Hpa) {
    // SAFETY: the caller guarantees the new tables map all live code and data.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) root.as_u64(), options(nostack, preserves_flags))
    };
}
