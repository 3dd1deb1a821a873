//! `HYPERVISOR_hvm_op` commands, their arguments, the HVM parameter
//! space, and the initial vCPU state of an HVM/PVH vCPU
//! (`xen/include/public/hvm/hvm_op.h`, `hvm/params.h`, `hvm/hvm_vcpu.h`).
//!
//! `hvm_op(unsigned long op, void *arg)`. Every structure here has the same
//! layout for both widths.

/// Set an HVM parameter; `arg` is a [`XenHvmParam`].
pub const HVMOP_SET_PARAM: u32 = 0;
/// Get an HVM parameter; `arg` is a [`XenHvmParam`].
pub const HVMOP_GET_PARAM: u32 = 1;
pub const HVMOP_SET_PCI_INTX_LEVEL: u32 = 2;
pub const HVMOP_SET_ISA_IRQ_LEVEL: u32 = 3;
pub const HVMOP_SET_PCI_LINK_ROUTE: u32 = 4;
/// Flush every vCPU's TLB; `arg` must be NULL.
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

/// How event-channel upcalls for vCPU 0 are delivered: the decoded value of
/// `HVM_PARAM_CALLBACK_IRQ` ([`HvmCallbackVia::decode`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HvmCallbackVia {
    /// Not delivered: the value 0, a GSI of 0, or an unknown type.
    None,
    /// Assert this GSI (level) while an upcall is pending.
    Gsi(u8),
    /// Assert this PCI INTx line while an upcall is pending.
    PciIntx {
        /// PCI segment, bits 47:32.
        segment: u16,
        /// Bus, bits 31:16.
        bus: u16,
        /// Device and function, bits 15:8 (Xen uses the device, bits 7:3 of
        /// this byte).
        devfn: u8,
        /// INTA..INTD as 0..3, bits 1:0.
        intx: u8,
    },
    /// Inject this IDT vector (edge, like an MSI) when an upcall becomes
    /// pending.
    Vector(u8),
}

impl HvmCallbackVia {
    /// Decodes `HVM_PARAM_CALLBACK_IRQ` as Xen's `hvm_set_callback_via`:
    /// the type is bits 63:56; a GSI is the low 8 bits and 0 means none; a
    /// vector is the low 8 bits; a type above `VECTOR` means none.
    #[must_use]
    pub fn decode(value: u64) -> HvmCallbackVia {
        // The narrowing casts below keep exactly the bits the header names.
        let low8 = value as u8;
        match (value & HVM_PARAM_CALLBACK_IRQ_TYPE_MASK) >> 56 {
            HVM_PARAM_CALLBACK_TYPE_GSI if low8 != 0 => HvmCallbackVia::Gsi(low8),
            HVM_PARAM_CALLBACK_TYPE_PCI_INTX => HvmCallbackVia::PciIntx {
                segment: (value >> 32) as u16,
                bus: (value >> 16) as u16,
                devfn: (value >> 8) as u8,
                intx: (value & 3) as u8,
            },
            HVM_PARAM_CALLBACK_TYPE_VECTOR => HvmCallbackVia::Vector(low8),
            _ => HvmCallbackVia::None,
        }
    }

    /// The `HVM_PARAM_CALLBACK_IRQ` value that decodes to `self`.
    #[must_use]
    pub fn encode(self) -> u64 {
        match self {
            HvmCallbackVia::None => 0,
            HvmCallbackVia::Gsi(gsi) => u64::from(gsi),
            HvmCallbackVia::PciIntx {
                segment,
                bus,
                devfn,
                intx,
            } => {
                HVM_PARAM_CALLBACK_TYPE_PCI_INTX << 56
                    | u64::from(segment) << 32
                    | u64::from(bus) << 16
                    | u64::from(devfn) << 8
                    | u64::from(intx & 3)
            }
            HvmCallbackVia::Vector(v) => HVM_PARAM_CALLBACK_TYPE_VECTOR << 56 | u64::from(v),
        }
    }
}

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

/// `VCPU_HVM_MODE_32B`: [`VcpuHvmContext::cpu_regs`] holds a [`VcpuHvmX86_32`].
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// `VCPU_HVM_MODE_64B`: [`VcpuHvmContext::cpu_regs`] holds a [`VcpuHvmX86_64`].
pub const VCPU_HVM_MODE_64B: u32 = 1;

abi_struct! {
    /// `struct vcpu_hvm_x86_32`: a vCPU started in 32-bit protected mode
    /// (or, with EFER.LME/LMA, compatibility mode) with explicit segment
    /// bases, limits and attributes.
    #[repr(C)]
    pub struct VcpuHvmX86_32(120) {
        /// IN: general registers.
        pub eax: u32 => 0,
        pub ecx: u32 => 4,
        pub edx: u32 => 8,
        pub ebx: u32 => 12,
        pub esp: u32 => 16,
        pub ebp: u32 => 20,
        pub esi: u32 => 24,
        pub edi: u32 => 28,
        /// IN: instruction pointer and flags.
        pub eip: u32 => 32,
        pub eflags: u32 => 36,
        /// IN: control registers.
        pub cr0: u32 => 40,
        pub cr3: u32 => 44,
        pub cr4: u32 => 48,
        /// Padding.
        pub pad1: u32 => 52,
        /// IN: EFER, for NXE (paging on) or LME/LMA (compatibility mode).
        pub efer: u64 => 56,
        /// IN: segment bases.
        pub cs_base: u32 => 64,
        pub ds_base: u32 => 68,
        pub ss_base: u32 => 72,
        pub es_base: u32 => 76,
        pub tr_base: u32 => 80,
        /// IN: segment limits.
        pub cs_limit: u32 => 84,
        pub ds_limit: u32 => 88,
        pub ss_limit: u32 => 92,
        pub es_limit: u32 => 96,
        pub tr_limit: u32 => 100,
        /// IN: segment attributes (the descriptor's type, S, DPL, P, AVL,
        /// L, D/B, G bits packed into 12 bits, as in VMCB).
        pub cs_ar: u16 => 104,
        pub ds_ar: u16 => 106,
        pub ss_ar: u16 => 108,
        pub es_ar: u16 => 110,
        pub tr_ar: u16 => 112,
        /// Padding.
        pub pad2: [u16; 3] => 114,
    }
}

abi_struct! {
    /// `struct vcpu_hvm_x86_64`: a vCPU started directly in long mode with
    /// flat segments.
    #[repr(C)]
    pub struct VcpuHvmX86_64(112) {
        /// IN: general registers.
        pub rax: u64 => 0,
        pub rcx: u64 => 8,
        pub rdx: u64 => 16,
        pub rbx: u64 => 24,
        pub rsp: u64 => 32,
        pub rbp: u64 => 40,
        pub rsi: u64 => 48,
        pub rdi: u64 => 56,
        /// IN: instruction pointer and flags.
        pub rip: u64 => 64,
        pub rflags: u64 => 72,
        /// IN: control registers and EFER.
        pub cr0: u64 => 80,
        pub cr3: u64 => 88,
        pub cr4: u64 => 96,
        pub efer: u64 => 104,
    }
}

abi_struct! {
    /// `struct vcpu_hvm_context`: the argument of `VCPUOP_initialise` for
    /// an HVM/PVH domain. `cpu_regs` is the C union of [`VcpuHvmX86_32`]
    /// and [`VcpuHvmX86_64`] (120 bytes, the larger); `mode` says which.
    #[repr(C)]
    pub struct VcpuHvmContext(128) {
        /// IN: `VCPU_HVM_MODE_*`.
        pub mode: u32 => 0,
        /// Padding.
        pub pad: u32 => 4,
        /// IN: the union `cpu_regs`, as bytes.
        pub cpu_regs: [u8; 120] => 8,
    }
}

impl VcpuHvmContext {
    /// `cpu_regs.x86_32`.
    #[must_use]
    pub fn x86_32(&self) -> VcpuHvmX86_32 {
        VcpuHvmX86_32::from_bytes(&self.cpu_regs)
    }

    /// `cpu_regs.x86_64`: the first 112 bytes of the union.
    #[must_use]
    pub fn x86_64(&self) -> VcpuHvmX86_64 {
        let mut b = [0u8; VcpuHvmX86_64::SIZE];
        b.copy_from_slice(&self.cpu_regs[..VcpuHvmX86_64::SIZE]);
        VcpuHvmX86_64::from_bytes(&b)
    }
}
