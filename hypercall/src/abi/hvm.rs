//! `HYPERVISOR_hvm_op` commands, their arguments, and the HVM parameter
//! space (`xen/include/public/hvm/hvm_op.h`, `hvm/params.h`).
//!
//! `hvm_op(unsigned long op, void *arg)`.

/// Set an HVM parameter; `arg` is a [`XenHvmParam`].
pub const HVMOP_SET_PARAM: u32 = 0;
/// Get an HVM parameter; `arg` is a [`XenHvmParam`].
pub const HVMOP_GET_PARAM: u32 = 1;
pub const HVMOP_SET_PCI_INTX_LEVEL: u32 = 2;
pub const HVMOP_SET_ISA_IRQ_LEVEL: u32 = 3;
pub const HVMOP_SET_PCI_LINK_ROUTE: u32 = 4;
pub const HVMOP_FLUSH_TLBS: u32 = 5;
pub const HVMOP_PAGETABLE_DYING: u32 = 9;
pub const HVMOP_GET_TIME: u32 = 10;
pub const HVMOP_XENTRACE: u32 = 11;
pub const HVMOP_SET_MEM_ACCESS: u32 = 12;
pub const HVMOP_GET_MEM_ACCESS: u32 = 13;
pub const HVMOP_GET_MEM_TYPE: u32 = 15;
/// Per-vCPU event upcall vector; `arg` is a [`XenHvmEvtchnUpcallVector`].
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u32 = 23;
pub const HVMOP_GUEST_REQUEST_VM_EVENT: u32 = 24;
pub const HVMOP_ALTP2M: u32 = 25;

abi_struct! {
    /// `struct xen_hvm_param`. Same layout for both widths.
    #[repr(C)]
    pub struct XenHvmParam(16) {
        /// IN: target domain (`DOMID_SELF` for the caller).
        pub domid: u16 => 0,
        /// IN: padding, ignored.
        pub pad: u16 => 2,
        /// IN: `HVM_PARAM_*`, below [`HVM_NR_PARAMS`].
        pub index: u32 => 4,
        /// IN for set, OUT for get: the value.
        pub value: u64 => 8,
    }
}

abi_struct! {
    /// `struct xen_hvm_evtchn_upcall_vector`. Same layout for both widths.
    #[repr(C)]
    pub struct XenHvmEvtchnUpcallVector(8) {
        /// IN: vCPU id.
        pub vcpu: u32 => 0,
        /// IN: IDT vector for that vCPU's event upcalls.
        pub vector: u8 => 4,
        /// Padding the C compiler inserts at the end.
        pub pad: [u8; 3] => 5,
    }
}

/// Event-channel upcall for vCPU 0: 0 = none, else bits 63:56 are
/// `HVM_PARAM_CALLBACK_TYPE_*` and the low bits its argument.
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// Guest pfn of the xenstore ring.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// Event channel of the xenstore ring.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// Deprecated (tools only).
pub const HVM_PARAM_PAE_ENABLED: u32 = 4;
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
pub const HVM_PARAM_TIMER_MODE: u32 = 10;
pub const HVM_PARAM_HPET_ENABLED: u32 = 11;
/// Identity-map page table used by VMX when the guest runs with paging off.
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// Deprecated (tools only).
pub const HVM_PARAM_DM_DOMAIN: u32 = 13;
pub const HVM_PARAM_ACPI_S_STATE: u32 = 14;
pub const HVM_PARAM_VM86_TSS: u32 = 15;
pub const HVM_PARAM_VPT_ALIGN: u32 = 16;
/// Guest pfn of the PV console ring.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// Event channel of the PV console ring.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;

// Deprecated (tools only), 20..=26 and 30.
pub const HVM_PARAM_MEMORY_EVENT_CR0: u32 = 20;
pub const HVM_PARAM_MEMORY_EVENT_CR3: u32 = 21;
pub const HVM_PARAM_MEMORY_EVENT_CR4: u32 = 22;
pub const HVM_PARAM_MEMORY_EVENT_INT3: u32 = 23;
pub const HVM_PARAM_NESTEDHVM: u32 = 24;
pub const HVM_PARAM_MEMORY_EVENT_SINGLE_STEP: u32 = 25;
pub const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
pub const HVM_PARAM_MEMORY_EVENT_MSR: u32 = 30;
pub const HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
pub const HVM_PARAM_ALTP2M: u32 = 35;
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
pub const HVM_PARAM_MCA_CAP: u32 = 38;
/// Number of parameter indexes; an index at or above is `-EINVAL`.
pub const HVM_NR_PARAMS: u32 = 39;

/// Bits 63:56 of `HVM_PARAM_CALLBACK_IRQ`: the delivery type.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Bits 55:0 are a GSI (0 is not usable: it means "off").
pub const HVM_PARAM_CALLBACK_TYPE_GSI: u64 = 0;
/// Bits 55:0 are a PCI INTx line (domain 47:32, bus 31:16, devfn 15:8,
/// INTx 1:0).
pub const HVM_PARAM_CALLBACK_TYPE_PCI_INTX: u64 = 1;
/// Bits 7:0 are an IDT vector (x86; needs `XENFEAT_hvm_callback_vector`).
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2;

// `HVM_PARAM_TIMER_MODE` values.
pub const HVMPTM_DELAY_FOR_MISSED_TICKS: u64 = 0;
pub const HVMPTM_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;
pub const HVMPTM_NO_MISSED_TICKS_PENDING: u64 = 2;
pub const HVMPTM_ONE_MISSED_TICK_PENDING: u64 = 3;

// `HVM_PARAM_ALTP2M` values.
pub const XEN_ALTP2M_DISABLED: u64 = 0;
pub const XEN_ALTP2M_MIXED: u64 = 1;
pub const XEN_ALTP2M_EXTERNAL: u64 = 2;
pub const XEN_ALTP2M_LIMITED: u64 = 3;
