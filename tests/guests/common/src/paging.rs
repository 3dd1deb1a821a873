//! The guest's page tables: identity mappings plus the mappings the probes need.
//!
//! PAE and 4-level paging share their lower levels (64-bit entries, 512 per table;
//! SDM Vol. 3A §4.4, §4.5), so one set of code builds, for both guests:
//!
//! - **Low 2 MiB in 4 KiB pages** ([`PT_LOW`]): identity, except page 0 (not present,
//!   so a null pointer faults) and [`ALIAS_VIEW`], whose virtual page is mapped to
//!   the *physical* page of [`ALIAS_BACKING`]. A hypervisor that walks the guest's
//!   tables reads and writes `ALIAS_BACKING` through that address; one that assumes
//!   guest-virtual = guest-physical touches `ALIAS_VIEW`'s own frame instead, which
//!   the guest can see through the window (below) and checks stayed untouched.
//! - **The window** ([`WINDOW_VA`], one page table of 4 KiB pages, see
//!   [`WindowPage`]): a not-present page; a page mapping guest-physical
//!   0xF000_0000 (beyond RAM); a page mapping unbacked MMIO uncached (PCD|PWT); a
//!   page mapping `ALIAS_VIEW`'s real frame; a mapped page followed by a
//!   not-present one, to bound the "huge length" console write; and the PV console
//!   ring, if the guest prints through one.
//!
//! pvh64's entry stub already runs on 4-level tables identity-mapping 4 GiB with
//! 2 MiB pages; [`setup`] splices the low page table and the window (at 4 GiB) into
//! them. pvh32 starts with paging off; [`setup`] builds PAE tables (identity for the
//! first GiB, the window at 1 GiB) and turns paging on.
//!
//! Hazard: the tables are edited while in use (pvh64). Replacing the first 2 MiB
//! page by 512 4 KiB pages with the same translations (but the two changed ones,
//! which map data the code is not using at that moment) keeps every fetch valid;
//! CR3 is reloaded afterwards to flush the TLB.

use core::cell::UnsafeCell;

/// A page-aligned 4 KiB page of guest memory that hypercalls may write.
///
/// Only ever accessed through raw pointers (volatile), never through references,
/// because the hypervisor writes it behind the compiler's back.
#[repr(C, align(4096))]
pub struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: a `Page` is only accessed through raw pointers, never references. Its
// byte accessors are used by one vCPU (vCPU 0, interrupts off; see the crate
// docs); the pages the smp mode's other vCPUs touch too are the hypercall page
// (executed, never written after the hypervisor filled it) and the shared-info
// page (atomics only, `crate::shared`).
unsafe impl Sync for Page {}

impl Page {
    /// A zeroed page (in `.bss`).
    pub const fn new() -> Page {
        Page(UnsafeCell::new([0; 4096]))
    }

    /// Its address (guest-virtual; guest-physical too while identity-mapped).
    pub fn addr(&self) -> usize {
        self.0.get() as usize
    }

    /// Byte `i`.
    pub fn get(&self, i: usize) -> u8 {
        assert!(i < 4096);
        // SAFETY: in bounds of the page; volatile because hypercalls write it.
        unsafe { core::ptr::read_volatile((self.addr() + i) as *const u8) }
    }

    /// Sets byte `i`.
    pub fn set(&self, i: usize, v: u8) {
        assert!(i < 4096);
        // SAFETY: in bounds of the page, which is ours.
        unsafe { core::ptr::write_volatile((self.addr() + i) as *mut u8, v) }
    }

    /// Copies `bytes` in at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            self.set(offset + i, b);
        }
    }

    /// Copies `out.len()` bytes out from `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.get(offset + i);
        }
    }

    /// Sets `len` bytes from `offset` to `v`.
    pub fn fill(&self, offset: usize, len: usize, v: u8) {
        for i in offset..offset + len {
            self.set(i, v);
        }
    }
}

impl Default for Page {
    fn default() -> Page {
        Page::new()
    }
}

/// Reads `out.len()` bytes at virtual address `va` (volatile, byte by byte).
///
/// # Safety
///
/// `va..va+len` must be mapped.
pub unsafe fn read_virt(va: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: per the contract.
        *b = unsafe { core::ptr::read_volatile((va + i) as *const u8) };
    }
}

/// Writes `bytes` at virtual address `va`.
///
/// # Safety
///
/// `va..va+len` must be mapped, writable, and not memory Rust uses otherwise.
pub unsafe fn write_virt(va: usize, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: per the contract.
        unsafe { core::ptr::write_volatile((va + i) as *mut u8, b) };
    }
}

/// One page table (PML4, PDPT, PD or PT: 512 64-bit entries).
#[repr(C, align(4096))]
pub struct Table(UnsafeCell<[u64; 512]>);

// SAFETY: as for `Page`: one vCPU edits page tables (the smp mode's other
// vCPUs only run on them, after vCPU 0 has finished editing); see the crate docs.
unsafe impl Sync for Table {}

impl Table {
    /// An empty (all not-present) table.
    pub const fn new() -> Table {
        Table(UnsafeCell::new([0; 512]))
    }

    /// Its address (identity-mapped: guest-physical too).
    pub fn addr(&self) -> usize {
        self.0.get() as usize
    }

    /// Sets entry `i`.
    pub fn set(&self, i: usize, entry: u64) {
        assert!(i < 512);
        // SAFETY: in bounds; volatile because the MMU reads it.
        unsafe { core::ptr::write_volatile((self.addr() as *mut u64).add(i), entry) }
    }
}

impl Default for Table {
    fn default() -> Table {
        Table::new()
    }
}

/// Entry bits (SDM Vol. 3A Table 4-14 ff.).
pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// Page-level write-through.
pub const PWT: u64 = 1 << 3;
/// Page-level cache disable (with PWT and the default PAT: UC).
pub const PCD: u64 = 1 << 4;
/// A 2 MiB page (in a page directory).
pub const PAGE_SIZE_2M: u64 = 1 << 7;
/// The address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A guest-physical address well beyond any RAM the tests give dom0 (and below
/// the PCI hole's usual device ranges); the probes check the memory map agrees.
pub const BEYOND_RAM_PA: u64 = 0xF000_0000;

/// A guest-physical address where nothing is expected to be: not RAM, not the
/// IOAPIC (0xFEC0_0000), HPET (0xFED0_0000) or LAPIC (0xFEE0_0000). Reads must
/// return all-ones, writes must be dropped.
pub const UNBACKED_MMIO_PA: u64 = 0xFEB0_0000;

/// Where the window starts: above pvh64's 4 GiB identity map, or above pvh32's
/// 1 GiB one.
#[cfg(target_arch = "x86_64")]
pub const WINDOW_VA: usize = 0x1_0000_0000;
#[cfg(target_arch = "x86")]
pub const WINDOW_VA: usize = 0x4000_0000;

/// The pages of the window, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowPage {
    /// Not present.
    Unmapped = 0,
    /// Maps [`BEYOND_RAM_PA`].
    BeyondRam = 1,
    /// Maps [`UNBACKED_MMIO_PA`], uncached.
    Mmio = 2,
    /// Maps the frame behind [`ALIAS_VIEW`]'s identity address.
    AliasViewFrame = 3,
    /// Maps [`HUGE_TAIL`]; the next page is not present.
    HugeTail = 4,
    /// Not present (ends the huge-length write).
    UnmappedAfterTail = 5,
    /// Maps the PV console ring, if the guest uses one (pvh32's PAE phase reaches
    /// it here when it lies above the 1 GiB identity map; see [`crate::console`]).
    ConsoleRing = 6,
}

impl WindowPage {
    /// The page's virtual address.
    pub fn va(self) -> usize {
        WINDOW_VA + self as usize * 4096
    }
}

/// The low 2 MiB in 4 KiB pages.
static PT_LOW: Table = Table::new();
/// The window's page directory and page table.
static PD_WINDOW: Table = Table::new();
static PT_WINDOW: Table = Table::new();

/// A page whose virtual address is remapped to [`ALIAS_BACKING`]'s frame.
pub static ALIAS_VIEW: Page = Page::new();
/// The frame behind [`ALIAS_VIEW`]'s virtual address.
pub static ALIAS_BACKING: Page = Page::new();
/// The last mapped page before a hole in the window.
pub static HUGE_TAIL: Page = Page::new();

/// Whether [`setup`] has run (the paging-dependent probes need it).
static SET_UP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// True once the window and the alias exist.
pub fn is_set_up() -> bool {
    SET_UP.load(core::sync::atomic::Ordering::Relaxed)
}

/// Why [`setup`] could not build the tables.
#[derive(Clone, Copy, Debug)]
pub struct SetupError(pub &'static str);

/// Fills the low page table and the window (common to both modes).
fn fill_tables() -> Result<(), SetupError> {
    let view = ALIAS_VIEW.addr();
    let backing = ALIAS_BACKING.addr() as u64;
    if view >= 0x20_0000 || backing >= 0x20_0000 {
        return Err(SetupError(
            "the image reaches beyond 2 MiB: the alias pages are not in the low page table",
        ));
    }
    PT_LOW.set(0, 0);
    for i in 1..512 {
        PT_LOW.set(i, (i as u64 * 4096) | PRESENT | WRITABLE);
    }
    PT_LOW.set(view / 4096, backing | PRESENT | WRITABLE);

    PD_WINDOW.set(0, PT_WINDOW.addr() as u64 | PRESENT | WRITABLE);
    PT_WINDOW.set(WindowPage::Unmapped as usize, 0);
    PT_WINDOW.set(
        WindowPage::BeyondRam as usize,
        BEYOND_RAM_PA | PRESENT | WRITABLE,
    );
    PT_WINDOW.set(
        WindowPage::Mmio as usize,
        UNBACKED_MMIO_PA | PRESENT | WRITABLE | PCD | PWT,
    );
    PT_WINDOW.set(
        WindowPage::AliasViewFrame as usize,
        view as u64 | PRESENT | WRITABLE,
    );
    PT_WINDOW.set(
        WindowPage::HugeTail as usize,
        HUGE_TAIL.addr() as u64 | PRESENT | WRITABLE,
    );
    PT_WINDOW.set(WindowPage::UnmappedAfterTail as usize, 0);
    let ring = crate::console::ring_gfn().map_or(0, |gfn| (gfn << 12) | PRESENT | WRITABLE);
    PT_WINDOW.set(WindowPage::ConsoleRing as usize, ring);
    Ok(())
}

/// pvh64: splices the low page table and the window into the entry stub's tables.
#[cfg(target_arch = "x86_64")]
pub fn setup() -> Result<(), SetupError> {
    use crate::arch;
    fill_tables()?;
    let pml4 = arch::read_cr3() as u64 & ADDR_MASK;
    // SAFETY: the entry stub's tables are in .bss, identity-mapped: PML4[0] points
    // at the PDPT, PDPT[0] at the first page directory (see pvh64's entry stub).
    unsafe {
        let pdpt = core::ptr::read_volatile(pml4 as *const u64) & ADDR_MASK;
        let pd0 = core::ptr::read_volatile(pdpt as *const u64) & ADDR_MASK;
        core::ptr::write_volatile(pd0 as *mut u64, PT_LOW.addr() as u64 | PRESENT | WRITABLE);
        let window_slot = (WINDOW_VA >> 30) & 511;
        core::ptr::write_volatile(
            (pdpt as *mut u64).add(window_slot),
            PD_WINDOW.addr() as u64 | PRESENT | WRITABLE,
        );
        arch::write_cr3(arch::read_cr3());
    }
    SET_UP.store(true, core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// pvh32: the PAE page-directory-pointer table (4 entries used) and the page
/// directory identity-mapping the first GiB.
#[cfg(target_arch = "x86")]
static PAE_PDPT: Table = Table::new();
#[cfg(target_arch = "x86")]
static PAE_PD0: Table = Table::new();

/// pvh32: builds PAE tables and turns paging on.
#[cfg(target_arch = "x86")]
pub fn setup() -> Result<(), SetupError> {
    use crate::arch;
    fill_tables()?;
    PAE_PD0.set(0, PT_LOW.addr() as u64 | PRESENT | WRITABLE);
    for i in 1..512 {
        PAE_PD0.set(i, ((i as u64) << 21) | PRESENT | WRITABLE | PAGE_SIZE_2M);
    }
    // PAE PDPTEs have no R/W or U/S bits: those are reserved (SDM Vol. 3A §4.4.1).
    PAE_PDPT.set(0, PAE_PD0.addr() as u64 | PRESENT);
    PAE_PDPT.set(WINDOW_VA >> 30, PD_WINDOW.addr() as u64 | PRESENT);
    // SAFETY: the tables identity-map the first GiB, which holds the whole image
    // (code, stack, data), so execution continues across the switch.
    unsafe { arch::enable_pae_paging(PAE_PDPT.addr()) };
    if crate::console::ring_gfn().is_some_and(|gfn| gfn >= 1 << 18) {
        crate::console::move_ring(WindowPage::ConsoleRing.va());
    }
    SET_UP.store(true, core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// CR3 and the top-level entries that lead to the identity map and the window (for
/// a diagnostic line: what a hypervisor's page walker starts from).
pub fn top_entries() -> (usize, u64, u64) {
    let cr3 = crate::arch::read_cr3();
    #[cfg(target_arch = "x86_64")]
    let table = {
        // SAFETY: PML4[0] is the entry stub's, pointing at its PDPT (identity-mapped).
        let pml4e =
            unsafe { core::ptr::read_volatile((cr3 as u64 & ADDR_MASK) as usize as *const u64) };
        (pml4e & ADDR_MASK) as usize
    };
    #[cfg(target_arch = "x86")]
    let table = cr3 & !0x1F;
    // SAFETY: `table` is the (identity-mapped) PDPT the CPU is using.
    let (low, window) = unsafe {
        (
            core::ptr::read_volatile(table as *const u64),
            core::ptr::read_volatile((table as *const u64).add((WINDOW_VA >> 30) & 511)),
        )
    };
    (cr3, low, window)
}

/// One pass of the per-mode checks: pvh64 runs one (long mode), pvh32 two (paging
/// off, then PAE paging).
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// Index, for per-phase resources (shared-info target pages).
    pub index: usize,
    /// Printed before each check name (empty for pvh64).
    pub prefix: &'static str,
    /// Whether paging is on (with [`setup`] done) during the phase.
    pub paging: bool,
}

/// This guest's phases, in order.
#[cfg(target_arch = "x86_64")]
pub const PHASES: &[Phase] = &[Phase {
    index: 0,
    prefix: "",
    paging: true,
}];
#[cfg(target_arch = "x86")]
pub const PHASES: &[Phase] = &[
    Phase {
        index: 0,
        prefix: "paging off: ",
        paging: false,
    },
    Phase {
        index: 1,
        prefix: "PAE paging: ",
        paging: true,
    },
];

/// Makes `phase`'s paging state current: sets up (and, for pvh32, enables) paging
/// when a phase needs it. Phases only ever go from off to on.
pub fn enter(phase: &Phase) -> Result<(), SetupError> {
    if phase.paging && !is_set_up() {
        setup()
    } else {
        Ok(())
    }
}
