//! What a guest sees when it executes CPUID: a pure function of the leaf, the vCPU's
//! context and the host's own answers.
//!
//! # Why a policy
//!
//! CPUID is how a guest decides what hardware it has. Everything it reports must be
//! something keel actually provides: a guest that sees VMX will try VMXON, one that sees
//! XSAVE will set CR4.OSXSAVE and execute XSETBV, one that sees TSC-deadline will use an
//! MSR keel does not emulate. So the host's answers are *filtered through allow-lists*: a feature
//! bit reaches the guest only if it is named below as one keel can stand behind, and a
//! bit the policy has never heard of (a future CPU's) stays hidden. This follows Xen's
//! model of a per-domain CPUID policy derived from the host's (xen/arch/x86/cpuid.c,
//! `guest_cpuid`): out-of-range leaves read as zeros (the AMD behaviour, which Xen
//! adopts for all vendors), and the hypervisor leaves at 0x40000000 identify Xen
//! (xen/include/public/arch-x86/cpuid.h).
//!
//! Bit positions: SDM Vol. 2A "CPUID—CPU Identification" (Tables 3-8, 3-10, 3-11 and the
//! leaf 07H and 80000001H tables) and APM Vol. 3 Appendix E "Obtaining Processor
//! Information Via the CPUID Instruction".
//!
//! # The policy
//!
//! | leaf | guest sees |
//! |---|---|
//! | 0 | EAX = min(host max, 0xD); vendor string from the host |
//! | 1 | EAX (signature) from the host. EBX: \[15:0\] (brand index, CLFLUSH size) from the host, \[23:16\] = 1 logical processor, \[31:24\] = initial APIC id = 2 x vcpu_id (low 8 bits; Xen's numbering). ECX: only SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND from the host, plus HYPERVISOR (31) and x2APIC (21: keel emulates it) always set. Hidden: MONITOR, DS-CPL, VMX, SMX, EST, TM2, CNXT-ID, SDBG, FMA, xTPR, PDCM, PCID, DCA, TSC-deadline, XSAVE, OSXSAVE, AVX, F16C, DTES64. EDX: only FPU, VME, DE, PSE, TSC, MSR, PAE, MCE, CX8, APIC, SEP, MTRR, PGE, MCA, CMOV, PAT, PSE36, CLFSH, MMX, FXSR, SSE, SSE2, SS from the host. Hidden: PSN, DS, ACPI, HTT, TM, PBE |
//! | 2 | Intel: host (cache descriptors). AMD: zero |
//! | 3 | zero (no processor serial number) |
//! | 4 | Intel: the host's subleaf with EAX\[31:14\] = 0 (one core per package, one thread per cache). AMD: zero |
//! | 5, 6 | zero (no MONITOR/MWAIT, no thermal/power management, no ARAT) |
//! | 7 | subleaf 0: EAX = 0 (no further subleaves). EBX: only FSGSBASE, BMI1, FDP_EXCPTN_ONLY, SMEP, BMI2, ERMS, FPU CS/DS deprecation, RDSEED, ADX, SMAP, CLFLUSHOPT, CLWB, SHA. ECX: nothing (PKU/OSPKE, WAITPKG, UMIP, LA57, RDPID, ... hidden). EDX: only FSRM, MD_CLEAR, SERIALIZE. Hidden among others: SGX, TSC_ADJUST, HLE, RTM, AVX2, INVPCID, MPX, PT, every AVX-512 bit, the speculation-control MSR bits. Subleaves != 0: zero |
//! | 8, 9, 0xA | zero (no direct cache access, no PMU) |
//! | 0xB | zero (no extended topology: a guest falls back to leaves 1 and 4) |
//! | 0xC | zero |
//! | 0xD | zero (XSAVE is hidden) |
//! | 0xE..=0x3FFFFFFF | zero (above the maximum basic leaf) |
//! | 0x40000000 | EAX = 0x40000004 (largest Xen leaf), EBX:ECX:EDX = "XenVMMXenVMM" |
//! | 0x40000001 | EAX = major << 16 \| minor |
//! | 0x40000002 | EAX = 1 hypercall page, EBX = the hypercall-page MSR, ECX = EDX = 0 (no feature flags: Xen's only one, MMU_PT_UPDATE_PRESERVE_AD, is for PV guests) |
//! | 0x40000003 | subleaf 0: EAX = 0 (TSC not emulated, host TSC reliability and RDTSCP not claimed), EBX = 0 (tsc_mode default), ECX = TSC kHz, EDX = 0 (incarnation). Subleaf 1 (offset, mul, shift): zero until keel has pvclock scaling. Subleaf 2: EAX = TSC kHz. Others zero |
//! | 0x40000004 | subleaf 0: EAX = VCPU_ID_PRESENT \| DOMID_PRESENT (no APIC/x2APIC virtualization, IOMMU or upcall-vector claims), EBX = vcpu_id, ECX = domid. Others zero |
//! | 0x40000005..=0x4FFFFFFF | zero (Xen's PV leaf 0x40000005 is not offered; no Viridian, so nothing at 0x40000100) |
//! | 0x80000000 | EAX = min(host max, 0x80000008) (zero everywhere if the host has no extended leaves); EBX..EDX from the host (AMD repeats its vendor string) |
//! | 0x80000001 | EAX (AMD signature) from the host, EBX = 0. ECX: only LAHF/SAHF, ABM/LZCNT, SSE4A, MisAlignSse, PREFETCHW. Hidden: SVM, CmpLegacy, ExtApicSpace, AltMovCr8, OSVW, IBS, XOP, SKINIT, WDT, LWP, FMA4, TCE, NodeId, TBM, TOPOEXT, the PerfCtr extensions, DataBreakpointExt, PerfTsc, MONITORX. EDX: only SYSCALL, NX, Page1GB, LM, and on AMD the bits mirroring leaf 1 EDX that leaf 1 keeps. Hidden: RDTSCP (QEMU TCG reports its exit as RDTSC without a next RIP, and VMX needs a secondary control for it), MmxExt, FFXSR, 3DNow!, 3DNowExt |
//! | 0x80000002..=0x80000004 | host (brand string) |
//! | 0x80000005, 0x80000006 | host (L1/L2 cache and TLB information) |
//! | 0x80000007 | EDX bit 8 (invariant TSC) from the host, everything else zero: guest TSC = host TSC + a constant offset, so it is invariant exactly when the host's is |
//! | 0x80000008 | EAX\[15:0\] (physical and linear address sizes) from the host; EAX\[31:16\], EBX (AMD IBPB/SSBD/... bits), ECX (core count: 0 means one core), EDX zero |
//! | 0x80000009.. | zero (above the maximum extended leaf: no SVM leaf 0x8000000A, no AMD topology or SEV leaves) |
//! | anything else | zero |
//!
//! # Invariants
//!
//! * VMX (leaf 1 ECX bit 5) and SVM (0x80000001 ECX bit 2) are never visible, nor any
//!   leaf describing them, so a guest cannot believe it can nest.
//! * HYPERVISOR (leaf 1 ECX bit 31) is always set.
//! * XSAVE, OSXSAVE and everything that needs XCR0 (AVX, AVX2, AVX-512, FMA, F16C,
//!   MPX, PKU, CET, AMX, XOP, FMA4, LWP) are hidden: keel does not context-switch
//!   extended state yet, so guests use FXSAVE. OSXSAVE would mirror the guest's
//!   CR4.OSXSAVE (as in Xen) once XSAVE is offered; until then the guest cannot set it.
//! * Features that exist only through MSRs or instructions keel does not handle (
//!   TSC-deadline, TSC_ADJUST, PCID/INVPCID, RDTSCP/RDPID, SPEC_CTRL, ARCH_CAPABILITIES,
//!   PMU, MONITOR/MWAIT, TSX) are hidden.
//! * Kept bits are kept only if the host has them: the policy is `host & allow`.
//! * The answer depends on nothing but the arguments; the same call gives the same
//!   answer on every pCPU (the host closure should answer for the boot CPU).
//!
//! # Hazards
//!
//! * The initial APIC id in leaf 1 is 8 bits wide and leaf 0xB (the x2APIC id) is
//!   not offered, so vcpu_ids above 127 would alias there. keel's domains have at
//!   most 32 vCPUs.
//! * Keeping MCE/MCA, MTRR, PAT and APIC means the MSR and APIC emulation must answer
//!   for them (MCG_CAP, MTRRcap, IA32_PAT, the local APIC page).

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl CpuidResult {
    /// The answer for every leaf the policy does not offer.
    pub const ZERO: CpuidResult = CpuidResult {
        eax: 0,
        ebx: 0,
        ecx: 0,
        edx: 0,
    };
}

/// The host CPU's vendor: it decides which vendor-specific leaves mean anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
}

/// Everything about the vCPU and domain that the guest's CPUID depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCpuidCtx {
    pub vendor: Vendor,
    pub domid: u16,
    pub vcpu_id: u32,
    pub xen_major: u16,
    pub xen_minor: u16,
    /// The MSR a guest writes its hypercall page's address to (Xen: 0x40000000).
    pub hypercall_msr: u32,
    pub tsc_khz: u32,
    /// The guest's CR4.OSXSAVE: reflected in leaf 1 ECX bit 27 once XSAVE is offered.
    pub guest_cr4_osxsave: bool,
}

/// The highest basic leaf a guest is offered.
pub const MAX_BASIC_LEAF: u32 = 0xD;
/// The highest extended leaf a guest is offered.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;
/// The first Xen leaf (no Viridian, so not shifted to 0x40000100).
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// The last Xen leaf keel answers: the HVM leaf.
pub const XEN_CPUID_LAST_LEAF: u32 = 0x4000_0004;
/// "XenVMMXenVMM" as EBX, ECX, EDX of leaf 0x40000000.
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;
/// Leaf 0x40000003 subleaf 0 EBX: "emulate the TSC if necessary".
pub const XEN_CPUID_TSC_MODE_DEFAULT: u32 = 0;
/// Leaf 0x40000004 EAX: EBX holds the vcpu id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf 0x40000004 EAX: ECX holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;

/// Whether XSAVE is offered. Not yet: keel does not manage XCR0 or extended state.
const XSAVE_OFFERED: bool = false;

/// Whether guests see x2APIC (leaf 1 ECX bit 21). keel's local APIC emulates
/// the x2APIC MSR interface whatever the host has (`keel_devices::vlapic`), so
/// the bit does not depend on the host; the kernel refuses `IA32_APIC_BASE.EXTD`
/// while this is off.
pub const X2APIC_OFFERED: bool = true;

/// CPUID.01H:ECX (SDM Vol. 2A Table 3-10).
pub mod leaf1_ecx {
    pub const SSE3: u32 = 1 << 0;
    pub const PCLMULQDQ: u32 = 1 << 1;
    pub const DTES64: u32 = 1 << 2;
    pub const MONITOR: u32 = 1 << 3;
    pub const DS_CPL: u32 = 1 << 4;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const EST: u32 = 1 << 7;
    pub const TM2: u32 = 1 << 8;
    pub const SSSE3: u32 = 1 << 9;
    pub const CNXT_ID: u32 = 1 << 10;
    pub const SDBG: u32 = 1 << 11;
    pub const FMA: u32 = 1 << 12;
    pub const CX16: u32 = 1 << 13;
    pub const XTPR: u32 = 1 << 14;
    pub const PDCM: u32 = 1 << 15;
    pub const PCID: u32 = 1 << 17;
    pub const DCA: u32 = 1 << 18;
    pub const SSE4_1: u32 = 1 << 19;
    pub const SSE4_2: u32 = 1 << 20;
    pub const X2APIC: u32 = 1 << 21;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const AES: u32 = 1 << 25;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const AVX: u32 = 1 << 28;
    pub const F16C: u32 = 1 << 29;
    pub const RDRAND: u32 = 1 << 30;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// CPUID.01H:EDX (SDM Vol. 2A Table 3-11).
pub mod leaf1_edx {
    pub const FPU: u32 = 1 << 0;
    pub const VME: u32 = 1 << 1;
    pub const DE: u32 = 1 << 2;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const MCE: u32 = 1 << 7;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const SEP: u32 = 1 << 11;
    pub const MTRR: u32 = 1 << 12;
    pub const PGE: u32 = 1 << 13;
    pub const MCA: u32 = 1 << 14;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const PSE36: u32 = 1 << 17;
    pub const PSN: u32 = 1 << 18;
    pub const CLFSH: u32 = 1 << 19;
    pub const DS: u32 = 1 << 21;
    pub const ACPI: u32 = 1 << 22;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
    pub const SS: u32 = 1 << 27;
    pub const HTT: u32 = 1 << 28;
    pub const TM: u32 = 1 << 29;
    pub const PBE: u32 = 1 << 31;
}

/// CPUID.(EAX=07H,ECX=0) (SDM Vol. 2A Table 3-8, leaf 07H).
pub mod leaf7 {
    // EBX
    pub const FSGSBASE: u32 = 1 << 0;
    pub const TSC_ADJUST: u32 = 1 << 1;
    pub const SGX: u32 = 1 << 2;
    pub const BMI1: u32 = 1 << 3;
    pub const HLE: u32 = 1 << 4;
    pub const AVX2: u32 = 1 << 5;
    pub const FDP_EXCPTN_ONLY: u32 = 1 << 6;
    pub const SMEP: u32 = 1 << 7;
    pub const BMI2: u32 = 1 << 8;
    pub const ERMS: u32 = 1 << 9;
    pub const INVPCID: u32 = 1 << 10;
    pub const RTM: u32 = 1 << 11;
    pub const PQM: u32 = 1 << 12;
    pub const FPU_CSDS_DEPRECATED: u32 = 1 << 13;
    pub const MPX: u32 = 1 << 14;
    pub const PQE: u32 = 1 << 15;
    pub const AVX512F: u32 = 1 << 16;
    pub const AVX512DQ: u32 = 1 << 17;
    pub const RDSEED: u32 = 1 << 18;
    pub const ADX: u32 = 1 << 19;
    pub const SMAP: u32 = 1 << 20;
    pub const AVX512_IFMA: u32 = 1 << 21;
    pub const CLFLUSHOPT: u32 = 1 << 23;
    pub const CLWB: u32 = 1 << 24;
    pub const PT: u32 = 1 << 25;
    pub const AVX512PF: u32 = 1 << 26;
    pub const AVX512ER: u32 = 1 << 27;
    pub const AVX512CD: u32 = 1 << 28;
    pub const SHA: u32 = 1 << 29;
    pub const AVX512BW: u32 = 1 << 30;
    pub const AVX512VL: u32 = 1 << 31;
    // ECX
    pub const ECX_PREFETCHWT1: u32 = 1 << 0;
    pub const ECX_AVX512_VBMI: u32 = 1 << 1;
    pub const ECX_UMIP: u32 = 1 << 2;
    pub const ECX_PKU: u32 = 1 << 3;
    pub const ECX_OSPKE: u32 = 1 << 4;
    pub const ECX_WAITPKG: u32 = 1 << 5;
    pub const ECX_CET_SS: u32 = 1 << 7;
    pub const ECX_LA57: u32 = 1 << 16;
    pub const ECX_RDPID: u32 = 1 << 22;
    // EDX
    pub const EDX_FSRM: u32 = 1 << 4;
    pub const EDX_MD_CLEAR: u32 = 1 << 10;
    pub const EDX_SERIALIZE: u32 = 1 << 14;
    pub const EDX_CET_IBT: u32 = 1 << 20;
    pub const EDX_IBRS_IBPB: u32 = 1 << 26;
    pub const EDX_STIBP: u32 = 1 << 27;
    pub const EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
    pub const EDX_SSBD: u32 = 1 << 31;
}

/// CPUID.80000001H (APM Vol. 3 Appendix E.4.2; SDM Vol. 2A leaf 80000001H).
pub mod ext1 {
    // ECX
    pub const ECX_LAHF_SAHF: u32 = 1 << 0;
    pub const ECX_CMP_LEGACY: u32 = 1 << 1;
    pub const ECX_SVM: u32 = 1 << 2;
    pub const ECX_EXT_APIC_SPACE: u32 = 1 << 3;
    pub const ECX_ALT_MOV_CR8: u32 = 1 << 4;
    pub const ECX_ABM: u32 = 1 << 5;
    pub const ECX_SSE4A: u32 = 1 << 6;
    pub const ECX_MISALIGN_SSE: u32 = 1 << 7;
    pub const ECX_PREFETCHW: u32 = 1 << 8;
    pub const ECX_OSVW: u32 = 1 << 9;
    pub const ECX_IBS: u32 = 1 << 10;
    pub const ECX_XOP: u32 = 1 << 11;
    pub const ECX_SKINIT: u32 = 1 << 12;
    pub const ECX_WDT: u32 = 1 << 13;
    pub const ECX_LWP: u32 = 1 << 15;
    pub const ECX_FMA4: u32 = 1 << 16;
    pub const ECX_TOPOEXT: u32 = 1 << 22;
    pub const ECX_MONITORX: u32 = 1 << 29;
    // EDX
    pub const EDX_SYSCALL: u32 = 1 << 11;
    pub const EDX_NX: u32 = 1 << 20;
    pub const EDX_MMXEXT: u32 = 1 << 22;
    pub const EDX_FFXSR: u32 = 1 << 25;
    pub const EDX_PAGE1GB: u32 = 1 << 26;
    pub const EDX_RDTSCP: u32 = 1 << 27;
    pub const EDX_LM: u32 = 1 << 29;
    pub const EDX_3DNOWEXT: u32 = 1 << 30;
    pub const EDX_3DNOW: u32 = 1 << 31;
    /// On AMD, the EDX bits that repeat CPUID.01H:EDX (APM Vol. 3 E.4.2): 0-9, 12-17,
    /// 23, 24.
    pub const EDX_AMD_LEAF1_MIRROR: u32 = 0x0183_F3FF;
}

/// CPUID.80000007H:EDX bit 8.
pub const EXT7_EDX_INVARIANT_TSC: u32 = 1 << 8;

/// Leaf 1 ECX bits a guest may see (besides HYPERVISOR and OSXSAVE).
pub const LEAF1_ECX_ALLOW: u32 = leaf1_ecx::SSE3
    | leaf1_ecx::PCLMULQDQ
    | leaf1_ecx::SSSE3
    | leaf1_ecx::CX16
    | leaf1_ecx::SSE4_1
    | leaf1_ecx::SSE4_2
    | leaf1_ecx::MOVBE
    | leaf1_ecx::POPCNT
    | leaf1_ecx::AES
    | leaf1_ecx::RDRAND;

/// Leaf 1 EDX bits a guest may see.
pub const LEAF1_EDX_ALLOW: u32 = leaf1_edx::FPU
    | leaf1_edx::VME
    | leaf1_edx::DE
    | leaf1_edx::PSE
    | leaf1_edx::TSC
    | leaf1_edx::MSR
    | leaf1_edx::PAE
    | leaf1_edx::MCE
    | leaf1_edx::CX8
    | leaf1_edx::APIC
    | leaf1_edx::SEP
    | leaf1_edx::MTRR
    | leaf1_edx::PGE
    | leaf1_edx::MCA
    | leaf1_edx::CMOV
    | leaf1_edx::PAT
    | leaf1_edx::PSE36
    | leaf1_edx::CLFSH
    | leaf1_edx::MMX
    | leaf1_edx::FXSR
    | leaf1_edx::SSE
    | leaf1_edx::SSE2
    | leaf1_edx::SS;

/// Leaf 7 subleaf 0 EBX bits a guest may see.
pub const LEAF7_EBX_ALLOW: u32 = leaf7::FSGSBASE
    | leaf7::BMI1
    | leaf7::FDP_EXCPTN_ONLY
    | leaf7::SMEP
    | leaf7::BMI2
    | leaf7::ERMS
    | leaf7::FPU_CSDS_DEPRECATED
    | leaf7::RDSEED
    | leaf7::ADX
    | leaf7::SMAP
    | leaf7::CLFLUSHOPT
    | leaf7::CLWB
    | leaf7::SHA;

/// Leaf 7 subleaf 0 ECX bits a guest may see: none yet.
pub const LEAF7_ECX_ALLOW: u32 = 0;

/// Leaf 7 subleaf 0 EDX bits a guest may see.
pub const LEAF7_EDX_ALLOW: u32 = leaf7::EDX_FSRM | leaf7::EDX_MD_CLEAR | leaf7::EDX_SERIALIZE;

/// Leaf 0x80000001 ECX bits a guest may see.
pub const EXT1_ECX_ALLOW: u32 = ext1::ECX_LAHF_SAHF
    | ext1::ECX_ABM
    | ext1::ECX_SSE4A
    | ext1::ECX_MISALIGN_SSE
    | ext1::ECX_PREFETCHW;

/// Leaf 0x80000001 EDX bits a guest may see, on both vendors.
pub const EXT1_EDX_ALLOW: u32 = ext1::EDX_SYSCALL | ext1::EDX_NX | ext1::EDX_PAGE1GB | ext1::EDX_LM;

/// The guest's CPUID answer for `leaf`/`subleaf`. `host` executes CPUID on the host
/// (or fakes it in tests); it is asked only for leaves the policy passes through.
pub fn guest_cpuid(
    leaf: u32,
    subleaf: u32,
    ctx: &GuestCpuidCtx,
    host: &dyn Fn(u32, u32) -> CpuidResult,
) -> CpuidResult {
    match leaf {
        0..=0x3FFF_FFFF => basic_leaf(leaf, subleaf, ctx, host),
        // Intel reserves 0x40000000-0x4FFFFFFF for hypervisors.
        XEN_CPUID_FIRST_LEAF..=0x4FFF_FFFF => xen_leaf(leaf, subleaf, ctx),
        0x8000_0000..=0x8FFF_FFFF => extended_leaf(leaf, subleaf, ctx, host),
        _ => CpuidResult::ZERO,
    }
}

fn basic_leaf(
    leaf: u32,
    subleaf: u32,
    ctx: &GuestCpuidCtx,
    host: &dyn Fn(u32, u32) -> CpuidResult,
) -> CpuidResult {
    let max = host(0, 0).eax.min(MAX_BASIC_LEAF);
    if leaf > max {
        return CpuidResult::ZERO;
    }
    let intel = ctx.vendor == Vendor::Intel;
    match leaf {
        0 => CpuidResult {
            eax: max,
            ..host(0, 0)
        },
        1 => {
            let h = host(1, 0);
            let osxsave = if XSAVE_OFFERED && ctx.guest_cr4_osxsave {
                leaf1_ecx::OSXSAVE
            } else {
                0
            };
            CpuidResult {
                eax: h.eax,
                ebx: (h.ebx & 0x0000_FFFF)
                    | (1 << 16)
                    | ((ctx.vcpu_id.wrapping_mul(2) & 0xFF) << 24),
                ecx: (h.ecx & LEAF1_ECX_ALLOW)
                    | leaf1_ecx::HYPERVISOR
                    | osxsave
                    | if X2APIC_OFFERED { leaf1_ecx::X2APIC } else { 0 },
                edx: h.edx & LEAF1_EDX_ALLOW,
            }
        }
        2 if intel => host(2, 0),
        4 if intel => {
            let h = host(4, subleaf);
            // EAX[31:26]: cores per package - 1; EAX[25:14]: logical processors
            // sharing this cache - 1. Zero: one of each.
            CpuidResult {
                eax: h.eax & 0x0000_3FFF,
                ..h
            }
        }
        7 if subleaf == 0 => {
            let h = host(7, 0);
            CpuidResult {
                eax: 0,
                ebx: h.ebx & LEAF7_EBX_ALLOW,
                ecx: h.ecx & LEAF7_ECX_ALLOW,
                edx: h.edx & LEAF7_EDX_ALLOW,
            }
        }
        _ => CpuidResult::ZERO,
    }
}

fn xen_leaf(leaf: u32, subleaf: u32, ctx: &GuestCpuidCtx) -> CpuidResult {
    match leaf {
        0x4000_0000 => CpuidResult {
            eax: XEN_CPUID_LAST_LEAF,
            ebx: XEN_CPUID_SIGNATURE_EBX,
            ecx: XEN_CPUID_SIGNATURE_ECX,
            edx: XEN_CPUID_SIGNATURE_EDX,
        },
        0x4000_0001 => CpuidResult {
            eax: (u32::from(ctx.xen_major) << 16) | u32::from(ctx.xen_minor),
            ..CpuidResult::ZERO
        },
        0x4000_0002 => CpuidResult {
            eax: 1,
            ebx: ctx.hypercall_msr,
            ..CpuidResult::ZERO
        },
        0x4000_0003 => match subleaf {
            0 => CpuidResult {
                eax: 0,
                ebx: XEN_CPUID_TSC_MODE_DEFAULT,
                ecx: ctx.tsc_khz,
                edx: 0,
            },
            2 => CpuidResult {
                eax: ctx.tsc_khz,
                ..CpuidResult::ZERO
            },
            // Subleaf 1 (offset, tsc->ns mul and shift): zero until pvclock exists.
            _ => CpuidResult::ZERO,
        },
        0x4000_0004 if subleaf == 0 => CpuidResult {
            eax: XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT,
            ebx: ctx.vcpu_id,
            ecx: u32::from(ctx.domid),
            edx: 0,
        },
        _ => CpuidResult::ZERO,
    }
}

fn extended_leaf(
    leaf: u32,
    subleaf: u32,
    ctx: &GuestCpuidCtx,
    host: &dyn Fn(u32, u32) -> CpuidResult,
) -> CpuidResult {
    let host_max = host(0x8000_0000, 0).eax;
    if host_max < 0x8000_0000 {
        // No extended leaves at all.
        return CpuidResult::ZERO;
    }
    let max = host_max.min(MAX_EXTENDED_LEAF);
    if leaf > max {
        return CpuidResult::ZERO;
    }
    match leaf {
        0x8000_0000 => CpuidResult {
            eax: max,
            ..host(leaf, 0)
        },
        0x8000_0001 => {
            let h = host(leaf, 0);
            let edx_allow = match ctx.vendor {
                Vendor::Amd => EXT1_EDX_ALLOW | (ext1::EDX_AMD_LEAF1_MIRROR & LEAF1_EDX_ALLOW),
                Vendor::Intel => EXT1_EDX_ALLOW,
            };
            CpuidResult {
                eax: h.eax,
                ebx: 0,
                ecx: h.ecx & EXT1_ECX_ALLOW,
                edx: h.edx & edx_allow,
            }
        }
        0x8000_0002..=0x8000_0006 => host(leaf, subleaf),
        0x8000_0007 => CpuidResult {
            edx: host(leaf, 0).edx & EXT7_EDX_INVARIANT_TSC,
            ..CpuidResult::ZERO
        },
        0x8000_0008 => CpuidResult {
            eax: host(leaf, 0).eax & 0xFFFF,
            ..CpuidResult::ZERO
        },
        _ => CpuidResult::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn r(eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidResult {
        CpuidResult { eax, ebx, ecx, edx }
    }

    /// Packs 16 bytes of a brand string as CPUID returns them.
    fn brand(s: &[u8; 48], part: usize) -> CpuidResult {
        let w = |i: usize| {
            let o = part * 16 + i * 4;
            u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]])
        };
        r(w(0), w(1), w(2), w(3))
    }

    const QEMU_BRAND: &[u8; 48] =
        b"QEMU TCG CPU version 2.5+\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    const BOCHS_BRAND: &[u8; 48] = b"Intel(R) Core(TM) i7-7800X CPU @ 3.50GHz\0\0\0\0\0\0\0\0";

    /// An invented but plausible `qemu-system-x86_64 -accel tcg -cpu max` (AMD vendor).
    fn qemu_max_amd(leaf: u32, subleaf: u32) -> CpuidResult {
        use ext1::*;
        match (leaf, subleaf) {
            (0, _) => r(0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            (1, _) => r(
                0x00a0_0f11,
                0x0000_0800,
                leaf1_ecx::SSE3
                    | leaf1_ecx::PCLMULQDQ
                    | leaf1_ecx::MONITOR
                    | leaf1_ecx::SSSE3
                    | leaf1_ecx::FMA
                    | leaf1_ecx::CX16
                    | leaf1_ecx::SSE4_1
                    | leaf1_ecx::SSE4_2
                    | leaf1_ecx::X2APIC
                    | leaf1_ecx::MOVBE
                    | leaf1_ecx::POPCNT
                    | leaf1_ecx::AES
                    | leaf1_ecx::XSAVE
                    | leaf1_ecx::AVX
                    | leaf1_ecx::F16C
                    | leaf1_ecx::RDRAND
                    | leaf1_ecx::HYPERVISOR,
                0x178b_fbff,
            ),
            (7, 0) => r(
                0,
                leaf7::FSGSBASE
                    | leaf7::BMI1
                    | leaf7::AVX2
                    | leaf7::SMEP
                    | leaf7::BMI2
                    | leaf7::ERMS
                    | leaf7::INVPCID
                    | leaf7::RDSEED
                    | leaf7::ADX
                    | leaf7::SMAP
                    | leaf7::CLFLUSHOPT
                    | leaf7::CLWB
                    | leaf7::SHA,
                leaf7::ECX_UMIP
                    | leaf7::ECX_PKU
                    | leaf7::ECX_OSPKE
                    | leaf7::ECX_LA57
                    | leaf7::ECX_RDPID,
                leaf7::EDX_FSRM,
            ),
            (0xd, 0) => r(0x7, 0x240, 0x340, 0),
            (0xd, 1) => r(0x1, 0, 0, 0),
            (0x8000_0000, _) => r(0x8000_001f, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            (0x8000_0001, _) => r(
                0x00a0_0f11,
                0x4000_0000,
                ECX_LAHF_SAHF
                    | ECX_SVM
                    | ECX_ABM
                    | ECX_SSE4A
                    | ECX_MISALIGN_SSE
                    | ECX_PREFETCHW
                    | ECX_TOPOEXT
                    | ECX_MONITORX,
                (0x178b_fbff & EDX_AMD_LEAF1_MIRROR)
                    | EDX_SYSCALL
                    | EDX_NX
                    | EDX_MMXEXT
                    | EDX_FFXSR
                    | EDX_PAGE1GB
                    | EDX_RDTSCP
                    | EDX_LM,
            ),
            (0x8000_0002, _) => brand(QEMU_BRAND, 0),
            (0x8000_0003, _) => brand(QEMU_BRAND, 1),
            (0x8000_0004, _) => brand(QEMU_BRAND, 2),
            (0x8000_0005, _) => r(0x01ff_01ff, 0x01ff_01ff, 0x4002_0140, 0x4002_0140),
            (0x8000_0006, _) => r(0, 0x4200_4200, 0x0200_8140, 0x0080_8140),
            (0x8000_0007, _) => r(0, 0, 0, 0),
            (0x8000_0008, _) => r(0x0030_3030, 0x0100_d000, 0x0000_000f, 0),
            (0x8000_000a, _) => r(1, 0x10, 0, 0x0000_00ff),
            (0x8000_001f, _) => r(1, 0, 0, 0),
            _ => CpuidResult::ZERO,
        }
    }

    /// An invented but plausible Bochs `corei7_skylake_x`.
    fn bochs_skylake(leaf: u32, subleaf: u32) -> CpuidResult {
        match (leaf, subleaf) {
            (0, _) => r(0x16, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            (1, _) => r(0x0005_0654, 0x0010_0800, 0x7ffe_fbff, 0xbfeb_fbff),
            (2, _) => r(0x00fe_ff01, 0x0000_00f0, 0, 0),
            (4, 0) => r(0x1c00_4121, 0x01c0_003f, 0x0000_003f, 0),
            (4, 1) => r(0x1c00_4122, 0x01c0_003f, 0x0000_003f, 0),
            (4, 2) => r(0x1c00_4143, 0x03c0_003f, 0x0000_03ff, 0),
            (4, 3) => r(0x1c03_c163, 0x0280_003f, 0x0000_6fff, 4),
            (5, _) => r(0x40, 0x40, 3, 0x2020),
            (6, _) => r(0x77, 2, 9, 0),
            (7, 0) => r(
                0,
                leaf7::FSGSBASE
                    | leaf7::TSC_ADJUST
                    | leaf7::BMI1
                    | leaf7::HLE
                    | leaf7::AVX2
                    | leaf7::FDP_EXCPTN_ONLY
                    | leaf7::SMEP
                    | leaf7::BMI2
                    | leaf7::ERMS
                    | leaf7::INVPCID
                    | leaf7::RTM
                    | leaf7::PQM
                    | leaf7::FPU_CSDS_DEPRECATED
                    | leaf7::MPX
                    | leaf7::PQE
                    | leaf7::AVX512F
                    | leaf7::AVX512DQ
                    | leaf7::RDSEED
                    | leaf7::ADX
                    | leaf7::SMAP
                    | leaf7::CLFLUSHOPT
                    | leaf7::CLWB
                    | leaf7::PT
                    | leaf7::AVX512CD
                    | leaf7::AVX512BW
                    | leaf7::AVX512VL,
                leaf7::ECX_PKU | leaf7::ECX_OSPKE,
                leaf7::EDX_MD_CLEAR
                    | leaf7::EDX_IBRS_IBPB
                    | leaf7::EDX_STIBP
                    | leaf7::EDX_ARCH_CAPABILITIES
                    | leaf7::EDX_SSBD,
            ),
            (7, 1) => r(0x20, 0, 0, 0),
            (0xa, _) => r(0x0730_0404, 0, 0, 0x603),
            (0xb, 0) => r(1, 2, 0x100, 0),
            (0xb, 1) => r(4, 0x10, 0x201, 0),
            (0xd, 0) => r(0xff, 0xa88, 0xa88, 0),
            (0x16, _) => r(0x0dac, 0x0fa0, 0x0064, 0),
            (0x8000_0000, _) => r(0x8000_0008, 0, 0, 0),
            (0x8000_0001, _) => r(0, 0, 0x121, 0x2c10_0800),
            (0x8000_0002, _) => brand(BOCHS_BRAND, 0),
            (0x8000_0003, _) => brand(BOCHS_BRAND, 1),
            (0x8000_0004, _) => brand(BOCHS_BRAND, 2),
            (0x8000_0006, _) => r(0, 0, 0x0400_8040, 0),
            (0x8000_0007, _) => r(0, 0, 0, 0x100),
            (0x8000_0008, _) => r(0x0000_302e, 0, 0, 0),
            _ => CpuidResult::ZERO,
        }
    }

    fn all_ones(_leaf: u32, _subleaf: u32) -> CpuidResult {
        r(u32::MAX, u32::MAX, u32::MAX, u32::MAX)
    }

    fn ctx(vendor: Vendor) -> GuestCpuidCtx {
        GuestCpuidCtx {
            vendor,
            domid: 7,
            vcpu_id: 3,
            xen_major: 4,
            xen_minor: 19,
            hypercall_msr: 0x4000_0000,
            tsc_khz: 2_500_000,
            guest_cr4_osxsave: false,
        }
    }

    type Host = fn(u32, u32) -> CpuidResult;

    /// Each host with the vendor keel would detect on it.
    const HOSTS: [(Host, Vendor); 4] = [
        (qemu_max_amd, Vendor::Amd),
        (bochs_skylake, Vendor::Intel),
        (all_ones, Vendor::Amd),
        (all_ones, Vendor::Intel),
    ];

    fn q(leaf: u32, subleaf: u32) -> CpuidResult {
        guest_cpuid(leaf, subleaf, &ctx(Vendor::Amd), &qemu_max_amd)
    }

    fn b(leaf: u32, subleaf: u32) -> CpuidResult {
        guest_cpuid(leaf, subleaf, &ctx(Vendor::Intel), &bochs_skylake)
    }

    #[test]
    fn xen_leaves_are_exact_on_every_host() {
        for (host, vendor) in HOSTS {
            let c = ctx(vendor);
            let g = |leaf, sub| guest_cpuid(leaf, sub, &c, &host);
            assert_eq!(
                g(0x4000_0000, 0),
                r(0x4000_0004, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e)
            );
            assert_eq!(g(0x4000_0001, 0), r(0x0004_0013, 0, 0, 0));
            assert_eq!(g(0x4000_0002, 0), r(1, 0x4000_0000, 0, 0));
            assert_eq!(g(0x4000_0003, 0), r(0, 0, 2_500_000, 0));
            assert_eq!(g(0x4000_0003, 1), CpuidResult::ZERO);
            assert_eq!(g(0x4000_0003, 2), r(2_500_000, 0, 0, 0));
            assert_eq!(g(0x4000_0003, 3), CpuidResult::ZERO);
            assert_eq!(g(0x4000_0004, 0), r(0x18, 3, 7, 0));
            assert_eq!(g(0x4000_0004, 1), CpuidResult::ZERO);
        }
    }

    #[test]
    fn signature_spells_xenvmmxenvmm() {
        let s = q(0x4000_0000, 0);
        let mut text = [0u8; 12];
        text[0..4].copy_from_slice(&s.ebx.to_le_bytes());
        text[4..8].copy_from_slice(&s.ecx.to_le_bytes());
        text[8..12].copy_from_slice(&s.edx.to_le_bytes());
        assert_eq!(&text, b"XenVMMXenVMM");
    }

    #[test]
    fn hvm_leaf_carries_this_vcpu_and_domain() {
        let c = GuestCpuidCtx {
            domid: 0x7ff0,
            vcpu_id: 1234,
            ..ctx(Vendor::Intel)
        };
        let l = guest_cpuid(0x4000_0004, 0, &c, &bochs_skylake);
        assert_eq!(
            l.eax,
            XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT
        );
        assert_eq!((l.ebx, l.ecx, l.edx), (1234, 0x7ff0, 0));
        // No APIC_ACCESS_VIRT (bit 0), X2APIC_VIRT (bit 1), IOMMU_MAPPINGS (bit 2).
        assert_eq!(l.eax & 0x7, 0);
    }

    #[test]
    fn hypervisor_range_beyond_the_xen_leaves_is_zero() {
        for leaf in [
            0x4000_0005,
            0x4000_00ff,
            0x4000_0100,
            0x4000_0104,
            0x4fff_ffff,
        ] {
            for (host, vendor) in HOSTS {
                assert_eq!(guest_cpuid(leaf, 0, &ctx(vendor), &host), CpuidResult::ZERO);
            }
        }
    }

    #[test]
    fn vmx_and_svm_are_never_visible() {
        for (host, vendor) in HOSTS {
            let c = ctx(vendor);
            for sub in 0..4 {
                assert_eq!(guest_cpuid(1, sub, &c, &host).ecx & leaf1_ecx::VMX, 0);
                assert_eq!(guest_cpuid(1, sub, &c, &host).ecx & leaf1_ecx::SMX, 0);
                assert_eq!(
                    guest_cpuid(0x8000_0001, sub, &c, &host).ecx & ext1::ECX_SVM,
                    0
                );
                assert_eq!(guest_cpuid(0x8000_000a, sub, &c, &host), CpuidResult::ZERO);
            }
        }
    }

    #[test]
    fn hypervisor_bit_is_always_set() {
        for (host, vendor) in HOSTS {
            let l = guest_cpuid(1, 0, &ctx(vendor), &host);
            assert_ne!(l.ecx & leaf1_ecx::HYPERVISOR, 0);
        }
        // Even on a host that reports nothing at all in leaf 1.
        let bare = |leaf: u32, _| {
            if leaf == 0 {
                r(1, 0, 0, 0)
            } else {
                CpuidResult::ZERO
            }
        };
        assert_eq!(
            guest_cpuid(1, 0, &ctx(Vendor::Intel), &bare).ecx,
            leaf1_ecx::HYPERVISOR | leaf1_ecx::X2APIC
        );
    }

    #[test]
    fn x2apic_is_offered_whatever_the_host() {
        // keel emulates the x2APIC MSRs itself; hosts without x2APIC (QEMU's
        // AMD model) still give guests the bit.
        for l in [q(1, 0), b(1, 0)] {
            assert_ne!(l.ecx & leaf1_ecx::X2APIC, 0, "{l:x?}");
        }
    }

    #[test]
    fn leaf1_hides_what_keel_cannot_back() {
        use leaf1_ecx::*;
        let hidden_ecx = MONITOR
            | DS_CPL
            | VMX
            | SMX
            | EST
            | TM2
            | PDCM
            | TSC_DEADLINE
            | XSAVE
            | OSXSAVE
            | AVX
            | FMA
            | F16C
            | PCID
            | DCA
            | XTPR;
        let hidden_edx = leaf1_edx::DS
            | leaf1_edx::ACPI
            | leaf1_edx::TM
            | leaf1_edx::PBE
            | leaf1_edx::PSN
            | leaf1_edx::HTT;
        for l in [q(1, 0), b(1, 0)] {
            assert_eq!(l.ecx & hidden_ecx, 0, "{l:x?}");
            assert_eq!(l.edx & hidden_edx, 0, "{l:x?}");
            let kept = SSE3 | PCLMULQDQ | SSSE3 | CX16 | SSE4_1 | SSE4_2 | MOVBE | POPCNT | AES;
            assert_eq!(l.ecx & kept, kept);
            let kept = leaf1_edx::FPU
                | leaf1_edx::TSC
                | leaf1_edx::MSR
                | leaf1_edx::PAE
                | leaf1_edx::CX8
                | leaf1_edx::APIC
                | leaf1_edx::MCE
                | leaf1_edx::MCA
                | leaf1_edx::FXSR
                | leaf1_edx::SSE2
                | leaf1_edx::CMOV
                | leaf1_edx::PAT;
            assert_eq!(l.edx & kept, kept);
        }
        // Signature passes through.
        assert_eq!(b(1, 0).eax, 0x0005_0654);
        assert_eq!(q(1, 0).eax, 0x00a0_0f11);
    }

    #[test]
    fn leaf1_ebx_names_this_vcpu_alone() {
        let c = GuestCpuidCtx {
            vcpu_id: 5,
            ..ctx(Vendor::Intel)
        };
        let l = guest_cpuid(1, 0, &c, &bochs_skylake);
        assert_eq!(l.ebx >> 24, 10, "initial APIC id: 2 x vcpu_id");
        assert_eq!((l.ebx >> 16) & 0xff, 1, "logical processor count");
        assert_eq!(l.ebx & 0xffff, 0x0800, "CLFLUSH line size from the host");
    }

    #[test]
    fn osxsave_stays_clear_while_xsave_is_hidden() {
        for (host, vendor) in HOSTS {
            let c = GuestCpuidCtx {
                guest_cr4_osxsave: true,
                ..ctx(vendor)
            };
            let l = guest_cpuid(1, 0, &c, &host);
            assert_eq!(
                l.ecx & (leaf1_ecx::XSAVE | leaf1_ecx::OSXSAVE | leaf1_ecx::AVX),
                0
            );
            for sub in 0..4 {
                assert_eq!(guest_cpuid(0xd, sub, &c, &host), CpuidResult::ZERO);
            }
        }
    }

    #[test]
    fn leaf7_keeps_only_the_allow_list() {
        use leaf7::*;
        let bl = b(7, 0);
        assert_eq!(bl.eax, 0, "no subleaves beyond 0");
        let hidden = SGX
            | TSC_ADJUST
            | HLE
            | RTM
            | AVX2
            | INVPCID
            | MPX
            | PT
            | PQM
            | PQE
            | AVX512F
            | AVX512DQ
            | AVX512CD
            | AVX512BW
            | AVX512VL
            | AVX512_IFMA;
        assert_eq!(bl.ebx & hidden, 0);
        let kept = FSGSBASE | BMI1 | SMEP | BMI2 | ERMS | RDSEED | ADX | SMAP | CLFLUSHOPT | CLWB;
        assert_eq!(bl.ebx & kept, kept);
        assert_eq!(bl.ecx, 0, "PKU/OSPKE hidden");
        assert_eq!(bl.edx, EDX_MD_CLEAR, "speculation-control MSR bits hidden");

        let ql = q(7, 0);
        assert_eq!(
            ql.ecx & (ECX_PKU | ECX_OSPKE | ECX_WAITPKG | ECX_LA57 | ECX_RDPID),
            0
        );
        assert_eq!(ql.ebx & (AVX2 | INVPCID), 0);
        assert_eq!(ql.ebx & SHA, SHA);
        assert_eq!(ql.edx, EDX_FSRM);

        assert_eq!(b(7, 1), CpuidResult::ZERO);
        assert_eq!(q(7, 1), CpuidResult::ZERO);
    }

    #[test]
    fn max_leaves_are_clamped() {
        // Intel host offers 0x16: the guest sees 0xD, and nothing above it.
        let l0 = b(0, 0);
        assert_eq!(l0.eax, MAX_BASIC_LEAF);
        assert_eq!(
            (l0.ebx, l0.edx, l0.ecx),
            (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
        );
        assert_eq!(b(0x16, 0), CpuidResult::ZERO);
        assert_eq!(b(0xe, 0), CpuidResult::ZERO);
        assert_eq!(b(0x1f, 0), CpuidResult::ZERO);
        // AMD host offers extended leaves up to 0x8000001F: the guest sees 0x80000008.
        let e0 = q(0x8000_0000, 0);
        assert_eq!(e0.eax, MAX_EXTENDED_LEAF);
        assert_eq!(e0.ebx, 0x6874_7541, "AMD repeats its vendor string");
        assert_eq!(q(0x8000_001f, 0), CpuidResult::ZERO);
        assert_eq!(q(0x8000_000a, 0), CpuidResult::ZERO);
        assert_eq!(b(0x8000_0000, 0).eax, 0x8000_0008);
        // A host below the clamp keeps its own maximum.
        let small = |leaf: u32, sub: u32| match leaf {
            0 => r(7, 0, 0, 0),
            0x8000_0000 => r(0x8000_0004, 0, 0, 0),
            _ => bochs_skylake(leaf, sub),
        };
        let c = ctx(Vendor::Intel);
        assert_eq!(guest_cpuid(0, 0, &c, &small).eax, 7);
        assert_eq!(guest_cpuid(0xd, 0, &c, &small), CpuidResult::ZERO);
        assert_ne!(guest_cpuid(7, 0, &c, &small), CpuidResult::ZERO);
        assert_eq!(guest_cpuid(0x8000_0000, 0, &c, &small).eax, 0x8000_0004);
        assert_eq!(guest_cpuid(0x8000_0008, 0, &c, &small), CpuidResult::ZERO);
        // A host with no extended leaves.
        let none = |leaf: u32, sub: u32| match leaf {
            0x8000_0000 => r(0x1c, 0, 0, 0),
            _ => bochs_skylake(leaf, sub),
        };
        for leaf in 0x8000_0000..0x8000_0010 {
            assert_eq!(guest_cpuid(leaf, 0, &c, &none), CpuidResult::ZERO);
        }
    }

    #[test]
    fn power_pmu_and_topology_leaves_are_zero() {
        for leaf in [3, 5, 6, 8, 9, 0xa, 0xb, 0xc, 0xd] {
            for sub in 0..3 {
                assert_eq!(b(leaf, sub), CpuidResult::ZERO, "leaf {leaf:#x}.{sub}");
                assert_eq!(q(leaf, sub), CpuidResult::ZERO, "leaf {leaf:#x}.{sub}");
            }
        }
    }

    #[test]
    fn leaf4_claims_one_core_and_one_thread_per_cache() {
        for sub in 0..4 {
            let h = bochs_skylake(4, sub);
            let g = b(4, sub);
            assert_eq!(g.eax >> 14, 0);
            assert_eq!(g.eax & 0x3fff, h.eax & 0x3fff, "cache type and level kept");
            assert_eq!((g.ebx, g.ecx, g.edx), (h.ebx, h.ecx, h.edx));
        }
        assert_eq!(b(4, 4), CpuidResult::ZERO, "end of the cache list");
        // Leaf 4 is Intel's; on AMD it is reserved.
        assert_eq!(q(4, 0), CpuidResult::ZERO);
        assert_eq!(b(2, 0), bochs_skylake(2, 0));
        assert_eq!(q(2, 0), CpuidResult::ZERO);
    }

    #[test]
    fn extended_features_are_filtered() {
        use ext1::*;
        for l in [q(0x8000_0001, 0), b(0x8000_0001, 0)] {
            assert_eq!(
                l.ecx & (ECX_SVM | ECX_MONITORX | ECX_EXT_APIC_SPACE | ECX_TOPOEXT),
                0
            );
            assert_eq!(
                l.edx & EDX_RDTSCP,
                0,
                "RDTSCP hidden (QEMU TCG has no next RIP)"
            );
            let kept = EDX_SYSCALL | EDX_NX | EDX_LM | EDX_PAGE1GB;
            assert_eq!(l.edx & kept, kept);
            assert_eq!(l.ecx & ECX_LAHF_SAHF, ECX_LAHF_SAHF);
            assert_eq!(l.ebx, 0);
        }
        let ql = q(0x8000_0001, 0);
        assert_eq!(ql.edx & (EDX_MMXEXT | EDX_FFXSR), 0);
        assert_eq!(
            ql.ecx,
            ECX_LAHF_SAHF | ECX_ABM | ECX_SSE4A | ECX_MISALIGN_SSE | ECX_PREFETCHW
        );
        // AMD's mirror of leaf 1 EDX follows leaf 1's filtering.
        assert_eq!(
            ql.edx & EDX_AMD_LEAF1_MIRROR,
            q(1, 0).edx & EDX_AMD_LEAF1_MIRROR
        );
        assert_eq!(
            b(0x8000_0001, 0).ecx,
            ECX_LAHF_SAHF | ECX_ABM | ECX_PREFETCHW
        );
    }

    #[test]
    fn brand_string_and_cache_leaves_pass_through() {
        for leaf in 0x8000_0002..=0x8000_0006 {
            assert_eq!(q(leaf, 0), qemu_max_amd(leaf, 0));
            assert_eq!(b(leaf, 0), bochs_skylake(leaf, 0));
        }
    }

    #[test]
    fn power_and_address_size_leaves() {
        assert_eq!(b(0x8000_0007, 0), r(0, 0, 0, EXT7_EDX_INVARIANT_TSC));
        assert_eq!(q(0x8000_0007, 0), CpuidResult::ZERO);
        assert_eq!(b(0x8000_0008, 0), r(0x302e, 0, 0, 0));
        // GuestPhysAddrSize, the AMD feature bits and the core count are not passed on.
        assert_eq!(q(0x8000_0008, 0), r(0x3030, 0, 0, 0));
    }

    #[test]
    fn an_all_ones_host_yields_exactly_the_allow_lists() {
        for vendor in [Vendor::Intel, Vendor::Amd] {
            let c = ctx(vendor);
            let g = |leaf, sub| guest_cpuid(leaf, sub, &c, &all_ones);
            assert_eq!(g(0, 0).eax, MAX_BASIC_LEAF);
            let l1 = g(1, 0);
            assert_eq!(
                l1.ecx,
                LEAF1_ECX_ALLOW | leaf1_ecx::HYPERVISOR | leaf1_ecx::X2APIC
            );
            assert_eq!(l1.edx, LEAF1_EDX_ALLOW);
            assert_eq!(l1.ebx, 0x0601_ffff);
            let l7 = g(7, 0);
            assert_eq!(l7, r(0, LEAF7_EBX_ALLOW, LEAF7_ECX_ALLOW, LEAF7_EDX_ALLOW));
            let e1 = g(0x8000_0001, 0);
            assert_eq!(e1.ecx, EXT1_ECX_ALLOW);
            let mirror = match vendor {
                Vendor::Amd => ext1::EDX_AMD_LEAF1_MIRROR & LEAF1_EDX_ALLOW,
                Vendor::Intel => 0,
            };
            assert_eq!(e1.edx, EXT1_EDX_ALLOW | mirror);
            assert_eq!(g(0x8000_0000, 0).eax, MAX_EXTENDED_LEAF);
            assert_eq!(g(0x8000_0007, 0), r(0, 0, 0, EXT7_EDX_INVARIANT_TSC));
            assert_eq!(g(0x8000_0008, 0), r(0xffff, 0, 0, 0));
        }
    }

    #[test]
    fn leaves_outside_every_range_are_zero() {
        for leaf in [
            0x2000_0000,
            0x5000_0000,
            0x7fff_ffff,
            0x9000_0000,
            0xc000_0000,
            u32::MAX,
        ] {
            for (host, vendor) in HOSTS {
                assert_eq!(guest_cpuid(leaf, 0, &ctx(vendor), &host), CpuidResult::ZERO);
            }
        }
    }
}
