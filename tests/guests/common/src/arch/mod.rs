//! The instructions the checks need, once per operand width.
//!
//! Both modules offer the same functions, so the rest of the crate is written once:
//! the hypercall calling conventions (Xen's `xen-x86_64.h` / `xen-x86_32.h`), CPUID,
//! MSRs, port I/O, MMIO accesses with a fixed instruction encoding, control
//! registers, and the exception entry stubs with their saved-register frame.
//!
//! Every MMIO, port and MSR access is one `asm!` instruction rather than a volatile
//! pointer access, so the instruction the hypervisor has to decode (MMIO) or skip
//! (a faulting `rdmsr`, two bytes) is known exactly.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "x86")]
mod x86;
#[cfg(target_arch = "x86")]
pub use self::x86::*;

/// One CPUID leaf's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// CPUID `leaf`, sub-leaf `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    #[cfg(target_arch = "x86")]
    use core::arch::x86::__cpuid_count;
    #[cfg(target_arch = "x86_64")]
    use core::arch::x86_64::__cpuid_count;
    // SAFETY: CPUID exists on every CPU that can run this guest (PVH needs a 64-bit
    // capable CPU); it only reads. (The intrinsic is `unsafe` on older toolchains.)
    #[allow(unused_unsafe)]
    let r = unsafe { __cpuid_count(leaf, subleaf) };
    Cpuid {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Which hardware virtualization instruction a direct hypercall must use: Intel's
/// `vmcall` (0F 01 C1) or AMD's `vmmcall` (0F 01 D9), by CPUID vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel: `vmcall`.
    Intel,
    /// AuthenticAMD (or anything else): `vmmcall`.
    Amd,
}

impl Vendor {
    /// The CPU's vendor per CPUID leaf 0. Unknown vendors count as AMD (Hygon is
    /// AMD-compatible; Xen itself accepts either instruction).
    pub fn detect() -> Vendor {
        let c = cpuid(0, 0);
        if (c.ebx, c.edx, c.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e) {
            Vendor::Intel
        } else {
            Vendor::Amd
        }
    }

    /// The instruction's name.
    pub fn instruction(self) -> &'static str {
        match self {
            Vendor::Intel => "vmcall",
            Vendor::Amd => "vmmcall",
        }
    }
}

/// The all-ones value of an access `bytes` wide, as a u64 (what reads from unbacked
/// MMIO or I/O ports return on a PC).
pub const fn all_ones(bytes: u32) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}
