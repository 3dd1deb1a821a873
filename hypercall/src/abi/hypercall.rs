//! Hypercall numbers (`__HYPERVISOR_*`, `xen/include/public/xen.h`).
//!
//! A guest puts the number in `rax`/`eax` and executes `vmcall`/`vmmcall`,
//! usually through the hypercall page: entry `n` of that page lives at byte
//! `n * HYPERCALL_PAGE_ENTRY_SIZE` and loads `n` into `eax` itself. Names
//! drop the `__HYPERVISOR_` prefix; the numbers are Xen's. Gaps in the
//! numbering (11, 43..=47) were never assigned; `*_COMPAT` entries are the
//! pre-3.0.2 forms Xen keeps for old PV guests.

/// Size in bytes of one entry of the hypercall page (`call hypercall_page +
/// nr * 32`, `arch-x86/xen-x86_64.h`).
pub const HYPERCALL_PAGE_ENTRY_SIZE: usize = 32;

/// Number of entries in the hypercall page (one 4 KiB page of 32-byte stubs).
pub const HYPERCALL_PAGE_ENTRIES: usize = 4096 / HYPERCALL_PAGE_ENTRY_SIZE;

pub const SET_TRAP_TABLE: u32 = 0;
pub const MMU_UPDATE: u32 = 1;
pub const SET_GDT: u32 = 2;
pub const STACK_SWITCH: u32 = 3;
pub const SET_CALLBACKS: u32 = 4;
pub const FPU_TASKSWITCH: u32 = 5;
/// Legacy `sched_op(int cmd, unsigned long arg)`; compat since 0x00030101.
pub const SCHED_OP_COMPAT: u32 = 6;
/// Formerly `dom0_op`.
pub const PLATFORM_OP: u32 = 7;
pub const SET_DEBUGREG: u32 = 8;
pub const GET_DEBUGREG: u32 = 9;
pub const UPDATE_DESCRIPTOR: u32 = 10;
pub const MEMORY_OP: u32 = 12;
pub const MULTICALL: u32 = 13;
pub const UPDATE_VA_MAPPING: u32 = 14;
pub const SET_TIMER_OP: u32 = 15;
/// Legacy event-channel op; compat since 0x00030202.
pub const EVENT_CHANNEL_OP_COMPAT: u32 = 16;
pub const XEN_VERSION: u32 = 17;
pub const CONSOLE_IO: u32 = 18;
/// Legacy physdev op; compat since 0x00030202.
pub const PHYSDEV_OP_COMPAT: u32 = 19;
pub const GRANT_TABLE_OP: u32 = 20;
pub const VM_ASSIST: u32 = 21;
pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u32 = 22;
/// x86 PV only.
pub const IRET: u32 = 23;
pub const VCPU_OP: u32 = 24;
/// x86-64 PV only.
pub const SET_SEGMENT_BASE: u32 = 25;
pub const MMUEXT_OP: u32 = 26;
pub const XSM_OP: u32 = 27;
pub const NMI_OP: u32 = 28;
pub const SCHED_OP: u32 = 29;
pub const CALLBACK_OP: u32 = 30;
/// Dropped in Xen 4.22; the number stays reserved.
pub const XENOPROF_OP: u32 = 31;
pub const EVENT_CHANNEL_OP: u32 = 32;
pub const PHYSDEV_OP: u32 = 33;
pub const HVM_OP: u32 = 34;
pub const SYSCTL: u32 = 35;
pub const DOMCTL: u32 = 36;
pub const KEXEC_OP: u32 = 37;
/// Removed from Xen; the number stays reserved.
pub const TMEM_OP: u32 = 38;
pub const ARGO_OP: u32 = 39;
pub const XENPMU_OP: u32 = 40;
pub const DM_OP: u32 = 41;
pub const HYPFS_OP: u32 = 42;

/// Architecture-specific hypercalls 48..=55 (`__HYPERVISOR_arch_0..7`).
pub const ARCH_0: u32 = 48;
pub const ARCH_1: u32 = 49;
pub const ARCH_2: u32 = 50;
pub const ARCH_3: u32 = 51;
pub const ARCH_4: u32 = 52;
pub const ARCH_5: u32 = 53;
pub const ARCH_6: u32 = 54;
pub const ARCH_7: u32 = 55;
/// x86: machine-check hypercall (`__HYPERVISOR_mca`, `arch-x86/xen.h`).
pub const MCA: u32 = ARCH_0;

/// Xen's name for a hypercall number, for logs (`None` if unassigned).
#[must_use]
pub fn name(nr: u64) -> Option<&'static str> {
    Some(match nr {
        0 => "set_trap_table",
        1 => "mmu_update",
        2 => "set_gdt",
        3 => "stack_switch",
        4 => "set_callbacks",
        5 => "fpu_taskswitch",
        6 => "sched_op_compat",
        7 => "platform_op",
        8 => "set_debugreg",
        9 => "get_debugreg",
        10 => "update_descriptor",
        12 => "memory_op",
        13 => "multicall",
        14 => "update_va_mapping",
        15 => "set_timer_op",
        16 => "event_channel_op_compat",
        17 => "xen_version",
        18 => "console_io",
        19 => "physdev_op_compat",
        20 => "grant_table_op",
        21 => "vm_assist",
        22 => "update_va_mapping_otherdomain",
        23 => "iret",
        24 => "vcpu_op",
        25 => "set_segment_base",
        26 => "mmuext_op",
        27 => "xsm_op",
        28 => "nmi_op",
        29 => "sched_op",
        30 => "callback_op",
        31 => "xenoprof_op",
        32 => "event_channel_op",
        33 => "physdev_op",
        34 => "hvm_op",
        35 => "sysctl",
        36 => "domctl",
        37 => "kexec_op",
        38 => "tmem_op",
        39 => "argo_op",
        40 => "xenpmu_op",
        41 => "dm_op",
        42 => "hypfs_op",
        48 => "mca",
        49..=55 => "arch",
        _ => return None,
    })
}
