//! keel's GDT and TSS (SDM Vol. 3 §3.4.5, §8.7).
//!
//! The TSS carries Interrupt Stack Table entries so that the exceptions that can
//! arrive on a broken stack (#DF, NMI, #MC) get a known-good stack of their own: a
//! stack overflow then ends in a readable report, not a triple fault.
//!
//! Every CPU has its own GDT and TSS ([`CpuTables`]), laid out alike, so the
//! selectors are the same everywhere; the IDT is shared (`traps`). The layout is
//! Xen's (15 pages: 14 for a PV guest's own descriptors, then the reserved page
//! with keel's code and data at `0xe008`/`0xe010`, the flat ring-3 descriptors
//! PV guests run on at `0xe023`..`0xe033`, and the TSS at `0xe040`), so that
//! the same GDT will serve PV vCPUs and `SYSCALL`/`SYSRET` (docs/pv.md).
//!
//! # Locking
//! None: each CPU loads its own tables, once; the boot CPU's are guarded by a
//! one-shot flag.

use core::sync::atomic::{AtomicBool, Ordering};

use keel_x86::pv::descriptor::{
    HYPERVISOR_CS, HYPERVISOR_DS32, LAST_RESERVED_GDT_ENTRY, RESERVED_DESCRIPTORS, TSS_SELECTOR,
};
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (1-based in the IDT, 0-based in the TSS) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;

/// Size of each IST stack (the boot CPU's are in `.bss`; the kernel gives each AP
/// its own, [`init_ap`]).
pub const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [IstStack; 3] = [const { IstStack([0; IST_STACK_SIZE]) }; 3];

/// Entries of keel's GDT: Xen's layout for every pCPU, so that a PV guest's
/// selectors and `SYSCALL`/`SYSRET` work on it (docs/pv.md, "Step 2"): entries
/// 0..7168 (14 pages) are the guest's (`set_gdt`; zero until PV vCPUs run), then
/// the one reserved page (Xen's `FIRST_RESERVED_GDT_ENTRY` ..), whose first entries
/// are keel's own (`keel_x86::pv::descriptor::RESERVED_DESCRIPTORS`).
pub const GDT_ENTRIES: usize = LAST_RESERVED_GDT_ENTRY + 1;
/// The GDTR limit: the whole of the 15 pages (Xen's `LAST_RESERVED_GDT_BYTE`).
pub const GDT_LIMIT: u16 = (GDT_ENTRIES * 8 - 1) as u16;

/// keel's code segment (Xen's `__HYPERVISOR_CS`).
pub const CODE_SELECTOR: u16 = HYPERVISOR_CS;
/// keel's data and stack segment (Xen's `__HYPERVISOR_DS32`).
pub const DATA_SELECTOR: u16 = HYPERVISOR_DS32;
/// The TSS (Xen's `TSS_SELECTOR`).
pub const TSS_SEL: u16 = TSS_SELECTOR;

/// One CPU's GDT and TSS. Each CPU has its own: the TSS holds the CPU's IST stacks
/// and is marked busy in the GDT of the CPU that loaded it. 60 KiB of GDT, page
/// aligned (a later step maps its first 14 pages per PV vCPU).
#[repr(C, align(4096))]
pub struct CpuTables {
    gdt: [u64; GDT_ENTRIES],
    tss: TaskStateSegment,
    /// The PV entry stack (`TSS.RSP0`): an interrupt, exception or `syscall`
    /// from a PV guest in ring 3 leaves the guest's registers at its top, one
    /// frame, and keel goes on on its own stack (`crate::pv`). Ring-0 traps never
    /// switch to it.
    pv_entry: PvEntryStack,
}

/// One page, 16-byte aligned at its top (where the CPU aligns RSP0 anyway).
#[repr(C, align(4096))]
struct PvEntryStack([u8; 4096]);

impl CpuTables {
    /// Bytes a [`CpuTables`] takes (what [`CpuTables::from_zeroed`] needs).
    pub const SIZE: usize = core::mem::size_of::<CpuTables>();

    const fn new() -> CpuTables {
        CpuTables {
            gdt: [0; GDT_ENTRIES],
            tss: TaskStateSegment::new(),
            pv_entry: PvEntryStack([0; 4096]),
        }
    }

    /// The tables in memory the caller zeroed (an AP's, from the frame
    /// allocator: too big for a stack or keel's heap). All-zero bytes are a
    /// valid `CpuTables` (integers only).
    ///
    /// # Safety
    /// `va` is 4096-aligned, mapped, zeroed, [`CpuTables::SIZE`] bytes long,
    /// never freed, and referenced by nothing else.
    pub unsafe fn from_zeroed(va: u64) -> &'static mut CpuTables {
        // SAFETY: the caller's contract: aligned, valid (zero is a valid bit
        // pattern for every field), exclusive and 'static.
        unsafe { &mut *(va as *mut CpuTables) }
    }
}

static mut BSP_TABLES: CpuTables = CpuTables::new();
static BSP_DONE: AtomicBool = AtomicBool::new(false);

/// Loads the boot CPU's GDT and TSS and reloads the segment registers. Once; later
/// calls do nothing.
pub fn init() {
    if BSP_DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let mut tops = [0u64; 3];
    for (i, top) in tops.iter_mut().enumerate() {
        // SAFETY: only the address of the static is taken; the stacks are used by
        // the CPU alone, never referenced from Rust.
        let base = unsafe { core::ptr::addr_of!(IST_STACKS[i]) } as u64;
        *top = base + IST_STACK_SIZE as u64;
    }
    // SAFETY: BSP_DONE makes this the one and only reference to BSP_TABLES.
    let tables = unsafe { &mut *core::ptr::addr_of_mut!(BSP_TABLES) };
    load(tables, tops);
}

/// Loads an AP's own GDT and TSS, with IST stacks ending at `ist_tops` (#DF, NMI,
/// #MC, in that order), on the calling CPU.
pub fn init_ap(tables: &'static mut CpuTables, ist_tops: [u64; 3]) {
    load(tables, ist_tops);
}

fn load(tables: &'static mut CpuTables, ist_tops: [u64; 3]) {
    let CpuTables { gdt, tss, pv_entry } = tables;
    // No I/O permission bitmap: its base lies past the TSS's limit, so every
    // port access from ring 3 (a PV guest) faults. An AP's tables come from
    // zeroed frames, where a base of 0 would make the TSS's own fields the
    // bitmap, and zero bits in them would let a PV guest reach those ports.
    tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
    let pv_top = pv_entry.0.as_ptr() as u64 + pv_entry.0.len() as u64;
    tss.privilege_stack_table[0] = VirtAddr::new(pv_top);
    crate::percpu::this()
        .pv_entry_top
        .store(pv_top, Ordering::Relaxed);
    for (slot, top) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
        .iter()
        .zip(ist_tops)
    {
        tss.interrupt_stack_table[usize::from(*slot - 1)] = VirtAddr::new(top);
    }
    let tss: &'static TaskStateSegment = tss;
    for (sel, desc) in RESERVED_DESCRIPTORS {
        gdt[usize::from(sel >> 3)] = desc;
    }
    let tss_index = usize::from(TSS_SEL >> 3);
    if let Descriptor::SystemSegment(low, high) = Descriptor::tss_segment(tss) {
        gdt[tss_index] = low;
        gdt[tss_index + 1] = high;
    }
    let gdt: &'static [u64; GDT_ENTRIES] = gdt;
    let ptr = DescriptorTablePointer {
        limit: GDT_LIMIT,
        base: VirtAddr::new(gdt.as_ptr() as u64),
    };
    // SAFETY: the GDT lives forever (a static, or frames never freed) and holds
    // the code, data and TSS descriptors the selectors below index: a 64-bit
    // DPL0 code segment and a writable data segment, so execution and stack
    // accesses continue unchanged; the TSS descriptor is valid and not busy
    // (this CPU's own, loaded once).
    unsafe {
        lgdt(&ptr);
        CS::set_reg(SegmentSelector(CODE_SELECTOR));
        SS::set_reg(SegmentSelector(DATA_SELECTOR));
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(SegmentSelector(TSS_SEL));
    }
}

/// This CPU's GDT's address (`SGDT`).
#[cfg(target_os = "none")]
pub fn this_cpu_gdt_base() -> u64 {
    x86_64::instructions::tables::sgdt().base.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_xens() {
        assert_eq!(GDT_LIMIT, 0xefff);
        assert_eq!(CODE_SELECTOR, 0xe008);
        assert_eq!(DATA_SELECTOR, 0xe010);
        assert_eq!(TSS_SEL, 0xe040);
        assert_eq!(CpuTables::SIZE % 4096, 0);
        const { assert!(CpuTables::SIZE >= GDT_ENTRIES * 8 + 104) };
    }
}
