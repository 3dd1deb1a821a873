//! keel's GDT and TSS (SDM Vol. 3 §3.4.5, §8.7).
//!
//! The TSS carries Interrupt Stack Table entries so that the exceptions that can
//! arrive on a broken stack (#DF, NMI, #MC) get a known-good stack of their own: a
//! stack overflow then ends in a readable report, not a triple fault.
//!
//! Every CPU has its own GDT and TSS ([`CpuTables`]), laid out alike, so the
//! selectors are the same everywhere; the IDT is shared (`traps`).
//!
//! # Locking
//! None: each CPU loads its own tables, once; the boot CPU's are guarded by a
//! one-shot flag.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
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

/// One CPU's GDT and TSS. Each CPU has its own: the TSS holds the CPU's IST stacks
/// and is marked busy in the GDT of the CPU that loaded it.
pub struct CpuTables {
    tss: TaskStateSegment,
    gdt: GlobalDescriptorTable,
}

impl CpuTables {
    pub const fn new() -> CpuTables {
        CpuTables {
            tss: TaskStateSegment::new(),
            gdt: GlobalDescriptorTable::new(),
        }
    }
}

impl Default for CpuTables {
    fn default() -> Self {
        CpuTables::new()
    }
}

static mut BSP_TABLES: CpuTables = CpuTables::new();
static BSP_DONE: AtomicBool = AtomicBool::new(false);

/// Selectors of keel's segments (the same on every CPU: every GDT is laid out
/// alike).
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    pub code: SegmentSelector,
    pub data: SegmentSelector,
    pub tss: SegmentSelector,
}

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
    let CpuTables { tss, gdt } = tables;
    for (slot, top) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
        .iter()
        .zip(ist_tops)
    {
        tss.interrupt_stack_table[usize::from(*slot - 1)] = VirtAddr::new(top);
    }
    let tss: &'static TaskStateSegment = tss;
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    let gdt: &'static GlobalDescriptorTable = gdt;
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives forever; the
    // code segment is 64-bit DPL0 and the data segment writable, so execution and
    // stack accesses continue unchanged; the TSS descriptor is valid and not busy
    // (this CPU's own, loaded once).
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(tss_sel);
    }
}
