//! The local APIC in xAPIC mode, through its MMIO page (SDM Vol. 3A §11.4-§11.6,
//! §11.8): what the smp mode needs to address other vCPUs and to take their
//! fixed IPIs.
//!
//! Every vCPU sees its *own* local APIC at the same guest-physical page,
//! [`BASE`] (Xen's `vlapic`, keel's `devices::vlapic`), so the functions here act
//! on the calling vCPU's APIC. Each access is one 32-bit `mov` ([`arch`]'s
//! `mmio_read`/`mmio_write32`), the form hypervisors decode.
//!
//! - [`enable`]: TPR 0 and the spurious-interrupt vector register's
//!   software-enable bit (bit 8) with [`trap::SPURIOUS_VECTOR`]. Until then the
//!   APIC accepts no fixed interrupts — and, on Xen, no per-vCPU event upcall
//!   either (`hvm_assert_evtchn_irq` asks `vlapic_enabled`).
//! - [`eoi`]: the end-of-interrupt write every fixed interrupt needs, the IPIs and
//!   (on Xen) the per-vCPU upcall vector; with nothing in service it does nothing.
//! - [`send`]: the interrupt command register, high half (destination APIC id in
//!   bits 31:24) then low half (vector, delivery mode, level, shorthand), which
//!   sends; then it waits (boundedly) for the delivery-status bit to clear.
//!
//! # Hazards
//!
//! - The ICR is two registers written one after the other: nothing else on the
//!   same vCPU may send in between. Only the smp mode's vCPUs send, from their
//!   main code with interrupts off; the handlers never send.
//! - pvh64's entry stub maps the APIC page with the rest of the low 4 GiB as
//!   write-back 2 MiB pages; [`map_uncached`] splits the 2 MiB page that holds
//!   it into 4 KiB pages with the same translations and makes only the APIC's
//!   uncached, as a device page should be (the hypervisor intercepts the page
//!   whatever its memory type, so this is correctness, not a workaround). Only
//!   that page: the same 2 MiB hold keel's special pages (the PV console ring,
//!   RAM the backend maps write-back), which must keep their memory type.

use crate::arch;
use crate::paging::{ADDR_MASK, PAGE_SIZE_2M, PCD, PRESENT, PWT, Table, WRITABLE};
use crate::trap;

/// The xAPIC page (the architectural default of `IA32_APIC_BASE`, and what the
/// MADT of a Xen PVH domain names).
pub const BASE: usize = 0xFEE0_0000;

/// Register offsets (SDM Vol. 3A Table 11-1).
mod reg {
    /// Local APIC ID (bits 31:24).
    pub const ID: usize = 0x20;
    /// Task priority.
    pub const TPR: usize = 0x80;
    /// End of interrupt.
    pub const EOI: usize = 0xB0;
    /// Spurious-interrupt vector.
    pub const SVR: usize = 0xF0;
    /// Interrupt command, low half (writing it sends).
    pub const ICR_LOW: usize = 0x300;
    /// Interrupt command, high half (destination).
    pub const ICR_HIGH: usize = 0x310;
}

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;

/// ICR delivery mode fixed (bits 10:8 = 000).
pub const FIXED: u32 = 0;
/// ICR delivery mode INIT (101).
pub const INIT: u32 = 5 << 8;
/// ICR delivery mode start-up (110): the vector is the start page number.
pub const STARTUP: u32 = 6 << 8;
/// ICR delivery status: send pending (read only).
pub const DELIVERY_PENDING: u32 = 1 << 12;
/// ICR level: assert (INIT de-assert is the only use of 0, and Xen ignores it).
pub const LEVEL_ASSERT: u32 = 1 << 14;
/// ICR destination shorthand self (bits 19:18 = 01).
pub const TO_SELF: u32 = 1 << 18;
/// ICR destination shorthand all excluding self (11).
pub const TO_ALL_EXCLUDING_SELF: u32 = 3 << 18;

/// Reads of the ICR after a send before it counts as stuck.
const SEND_POLLS: u32 = 100_000;

/// The register at `offset`.
fn read(offset: usize) -> u32 {
    // SAFETY: BASE is this vCPU's local APIC page, identity-mapped below 4 GiB
    // (pvh64's entry stub), never RAM; `offset` is a 16-aligned register inside
    // it, read with one 32-bit mov. Reading these registers has no side effects.
    unsafe { arch::mmio_read(BASE + offset, 4) as u32 }
}

/// Writes the register at `offset`.
fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; writes to the local APIC change only interrupt
    // state (the callers here know which).
    unsafe { arch::mmio_write32(BASE + offset, value) }
}

/// This vCPU's local APIC id.
pub fn id() -> u32 {
    read(reg::ID) >> 24
}

/// The spurious-interrupt vector register.
pub fn svr() -> u32 {
    read(reg::SVR)
}

/// Software-enables this vCPU's local APIC: TPR 0 (accept every vector), SVR =
/// enable | [`trap::SPURIOUS_VECTOR`].
pub fn enable() {
    write(reg::TPR, 0);
    write(reg::SVR, SVR_ENABLE | u32::from(trap::SPURIOUS_VECTOR));
}

/// End of interrupt.
pub fn eoi() {
    write(reg::EOI, 0);
}

/// Sends an IPI: `dest` (a physical APIC id; ignored with a shorthand in `low`)
/// and `low` (vector | delivery mode | level | shorthand). Returns false if the
/// delivery status stayed "pending" for `SEND_POLLS` reads.
pub fn send(dest: u32, low: u32) -> bool {
    write(reg::ICR_HIGH, (dest & 0xFF) << 24);
    write(reg::ICR_LOW, low);
    (0..SEND_POLLS).any(|_| read(reg::ICR_LOW) & DELIVERY_PENDING == 0)
}

/// A fixed IPI on [`trap::IPI_VECTOR`] to APIC id `dest`.
pub fn send_fixed(dest: u32) -> bool {
    send(dest, FIXED | LEVEL_ASSERT | u32::from(trap::IPI_VECTOR))
}

/// INIT to APIC id `dest`.
pub fn send_init(dest: u32) -> bool {
    send(dest, INIT | LEVEL_ASSERT)
}

/// Start-up to APIC id `dest`: real mode at `page << 12` (page < 0x100).
pub fn send_startup(dest: u32, page: u8) -> bool {
    send(dest, STARTUP | LEVEL_ASSERT | u32::from(page))
}

/// The 4 KiB page table that replaces the 2 MiB page holding [`BASE`].
static SPLIT: Table = Table::new();

/// Maps the page at [`BASE`] uncached (PCD|PWT) in the current page tables
/// (pvh64's: PML4 -> PDPT -> four page directories of 2 MiB pages), through
/// `SPLIT`; the rest of its 2 MiB keep their translation and memory type.
pub fn map_uncached() -> Result<(), &'static str> {
    /// Entry `index` of the (identity-mapped) table at `table`.
    fn entry(table: u64, index: usize) -> *mut u64 {
        ((table & ADDR_MASK) as usize as *mut u64).wrapping_add(index & 511)
    }
    /// Reads a page-table entry.
    fn read(at: *mut u64) -> u64 {
        // SAFETY: `at` is an entry of one of pvh64's page tables (in its .bss,
        // identity-mapped), reached from CR3 through present entries only.
        unsafe { core::ptr::read_volatile(at) }
    }
    let pml4e = read(entry(arch::read_cr3() as u64, 0));
    if pml4e & PRESENT == 0 {
        return Err("PML4[0] is not present");
    }
    let pdpte = read(entry(pml4e, BASE >> 30));
    if pdpte & PRESENT == 0 || pdpte & PAGE_SIZE_2M != 0 {
        return Err("the local APIC's PDPT entry does not lead to a page directory");
    }
    let pde_at = entry(pdpte, BASE >> 21);
    let pde = read(pde_at);
    let region = (BASE & !0x1F_FFFF) as u64;
    if pde & PRESENT == 0 || pde & PAGE_SIZE_2M == 0 || pde & ADDR_MASK != region {
        return Err("the local APIC page is not identity-mapped by a 2 MiB page");
    }
    let flags = pde & (PRESENT | WRITABLE);
    for i in 0..512 {
        SPLIT.set(i, (region + i as u64 * 4096) | flags);
    }
    SPLIT.set((BASE >> 12) & 511, BASE as u64 | flags | PCD | PWT);
    // SAFETY: the 2 MiB page's entry, checked above, becomes a table with the
    // same translations in 4 KiB pages (only the APIC page's memory type
    // changes), so nothing in use moves; reloading CR3 flushes the old entry.
    unsafe {
        core::ptr::write_volatile(pde_at, SPLIT.addr() as u64 | PRESENT | WRITABLE);
        arch::write_cr3(arch::read_cr3());
    }
    Ok(())
}
