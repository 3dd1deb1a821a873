//! Model-specific registers (SDM Vol. 4; APM Vol. 2 appendix A).
//!
//! Reading an MSR the CPU does not implement raises #GP, which in keel is fatal; so
//! callers check CPUID first. Known trap: Bochs does not implement VM_CR
//! (0xC0010114), so keel never reads it there (EMULATORS.md).

use core::arch::asm;

pub const IA32_APIC_BASE: u32 = 0x1B;
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const IA32_EFER: u32 = 0xC000_0080;
pub const IA32_GS_BASE: u32 = 0xC000_0101;
/// `SYSCALL`/`SYSRET` selectors (AMD APM Vol. 2 §6.1.1; SDM Vol. 3 §5.8.8).
pub const IA32_STAR: u32 = 0xC000_0081;
/// 64-bit `SYSCALL` entry point.
pub const IA32_LSTAR: u32 = 0xC000_0082;
/// Compatibility-mode `SYSCALL` entry point.
pub const IA32_CSTAR: u32 = 0xC000_0083;
/// RFLAGS bits `SYSCALL` clears.
pub const IA32_FMASK: u32 = 0xC000_0084;
/// FS base.
pub const IA32_FS_BASE: u32 = 0xC000_0100;
/// The GS base `SWAPGS` exchanges with GS's.
pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
/// x2APIC registers are MSRs 0x800 + (xAPIC MMIO offset >> 4) (SDM Vol. 3 §11.12.1).
pub const X2APIC_BASE: u32 = 0x800;

/// Reads MSR `msr`.
///
/// # Safety
/// The MSR must exist on this CPU (else #GP) and reading it must have no side effect
/// the caller does not intend.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; rdmsr touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes MSR `msr`.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; the write must not break an
/// invariant keel relies on (paging, segmentation, interrupt delivery).
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}
