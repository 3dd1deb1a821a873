//! The hypervisor CPUID leaves (`xen/include/public/arch-x86/cpuid.h`).
//!
//! Xen's leaves start at [`XEN_CPUID_FIRST_LEAF`] (0x4000_0000), or at a
//! multiple of 0x100 above it when another hypervisor's leaves (e.g.
//! Viridian) come first; guests scan in steps of 0x100 for the signature.
//! Leaf numbers below are offsets from that base, named as the header's
//! "Leaf 1".."Leaf 6" (offsets 0..5).

/// First leaf Xen may use.
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;

/// `XEN_CPUID_LEAF(i)` for base 0x4000_0000.
#[must_use]
pub const fn xen_cpuid_leaf(i: u32) -> u32 {
    XEN_CPUID_FIRST_LEAF + i
}

/// Offset 0: EAX = largest Xen leaf; EBX, ECX, EDX = signature.
pub const LEAF_SIGNATURE: u32 = 0;
/// Offset 1: EAX = major << 16 | minor; EBX..EDX zero.
pub const LEAF_VERSION: u32 = 1;
/// Offset 2: EAX = number of hypercall pages (always 1), EBX = MSR that
/// installs the hypercall page, ECX/EDX = `XEN_CPUID_FEAT1/2_*`.
pub const LEAF_HYPERCALL: u32 = 2;
/// Offset 3: time. Sub-leaf 0: EAX = `XEN_CPUID_TSC_EMULATED` etc.,
/// EBX = tsc_mode, ECX = guest TSC kHz, EDX = incarnation. Sub-leaf 1:
/// EAX/EBX = TSC offset low/high, ECX = mul, EDX = shift for TSC->ns.
/// Sub-leaf 2: EAX = host TSC kHz.
pub const LEAF_TIME: u32 = 3;
/// Offset 4: HVM features. EAX = `XEN_HVM_CPUID_*`, EBX = vCPU id (if
/// `XEN_HVM_CPUID_VCPU_ID_PRESENT`), ECX = domain id (if
/// `XEN_HVM_CPUID_DOMID_PRESENT`).
pub const LEAF_HVM: u32 = 4;
/// Offset 5: PV parameters. Sub-leaf 0: EAX = max sub-leaf, EBX bits 7:0 =
/// machine address width.
pub const LEAF_PV: u32 = 5;
/// `XEN_CPUID_MAX_NUM_LEAVES`: the largest offset defined (the value Xen
/// puts in EAX of the signature leaf is base + this).
pub const XEN_CPUID_MAX_NUM_LEAVES: u32 = 5;

/// "XenV".
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
/// "MMXe".
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// "nVMM".
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;

/// Leaf offset 2, ECX: `MMU_PT_UPDATE_PRESERVE_AD` supported.
pub const XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1 << 0;

// Leaf offset 3, sub-leaf 0, EAX.
pub const XEN_CPUID_TSC_EMULATED: u32 = 1 << 0;
pub const XEN_CPUID_HOST_TSC_RELIABLE: u32 = 1 << 1;
pub const XEN_CPUID_RDTSCP_INSTR_AVAIL: u32 = 1 << 2;

// Leaf offset 3, sub-leaf 0, EBX (tsc_mode).
pub const XEN_CPUID_TSC_MODE_DEFAULT: u32 = 0;
pub const XEN_CPUID_TSC_MODE_ALWAYS_EMULATE: u32 = 1;
pub const XEN_CPUID_TSC_MODE_NEVER_EMULATE: u32 = 2;
pub const XEN_CPUID_TSC_MODE_PVRDTSCP: u32 = 3;

/// Leaf offset 4, EAX: APIC registers are virtualized.
pub const XEN_HVM_CPUID_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// x2APIC accesses are virtualized.
pub const XEN_HVM_CPUID_X2APIC_VIRT: u32 = 1 << 1;
/// Memory mapped from other domains has valid IOMMU entries.
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;
/// EBX holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// ECX holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// 15-bit extended destination ids in IO-APIC RTEs and MSI addresses.
pub const XEN_HVM_CPUID_EXT_DEST_ID: u32 = 1 << 5;
/// Per-vCPU upcall vectors work with physical IRQs bound to event channels.
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

/// Leaf offset 5, sub-leaf 0, EBX: machine address width mask.
pub const XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK: u32 = 0xff;

/// The 12-byte signature as EBX, ECX, EDX spell it.
pub const XEN_CPUID_SIGNATURE: &[u8; 12] = b"XenVMMXenVMM";

const _: () = {
    let s = XEN_CPUID_SIGNATURE;
    assert!(XEN_CPUID_SIGNATURE_EBX == u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    assert!(XEN_CPUID_SIGNATURE_ECX == u32::from_le_bytes([s[4], s[5], s[6], s[7]]));
    assert!(XEN_CPUID_SIGNATURE_EDX == u32::from_le_bytes([s[8], s[9], s[10], s[11]]));
};
