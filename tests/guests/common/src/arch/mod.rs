//! The instructions the checks need, once per operand width.
//!
//! Both modules offer the same functions (and this module holds the ones whose
//! encoding does not depend on the width), so the rest of the crate is written once:
//! the hypercall calling conventions (Xen's `xen-x86_64.h` / `xen-x86_32.h`), CPUID,
//! MSRs, port I/O, MMIO accesses with a fixed instruction encoding, control
//! registers, and the exception entry stubs with their saved-register frame.
//!
//! Every MMIO, port and MSR access is one `asm!` instruction rather than a volatile
//! pointer access, so the instruction the hypervisor has to decode (MMIO) or skip
//! (a faulting `rdmsr`, two bytes) is known exactly.

use core::arch::asm;

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

// The instructions below are the same in both widths.

/// `wrmsr`.
///
/// # Safety
///
/// Writing an MSR can change anything about the CPU; the caller knows what `msr` is.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// A bare two-byte `rdmsr`, with `edx:eax` preset to [`RDMSR_UNTOUCHED`] so that a
/// faulting read the #GP handler skipped is recognisable.
///
/// # Safety
///
/// An MSR the CPU does not have raises #GP: the caller must have armed
/// [`crate::trap::expect`] to skip it (2 bytes), or know the MSR exists.
pub unsafe fn rdmsr_raw(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the contract; `rdmsr` is exactly two bytes (0F 32).
    unsafe {
        asm!("rdmsr", in("ecx") msr,
             inlateout("eax") RDMSR_UNTOUCHED as u32 => lo,
             inlateout("edx") (RDMSR_UNTOUCHED >> 32) as u32 => hi,
             options(nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// What [`rdmsr_raw`] returns when the `rdmsr` was skipped by the #GP handler.
pub const RDMSR_UNTOUCHED: u64 = 0x5a5a_5a5a_a5a5_a5a5;

/// Port input of 1, 2 or 4 bytes, zero-extended.
///
/// # Safety
///
/// Reading a port can have side effects on the device behind it.
pub unsafe fn port_in(port: u16, bytes: u32) -> u32 {
    let v: u32;
    // SAFETY: per the contract.
    unsafe {
        match bytes {
            1 => {
                let b: u8;
                asm!("in al, dx", in("dx") port, out("al") b, options(nostack, preserves_flags));
                v = u32::from(b);
            }
            2 => {
                let w: u16;
                asm!("in ax, dx", in("dx") port, out("ax") w, options(nostack, preserves_flags));
                v = u32::from(w);
            }
            _ => {
                asm!("in eax, dx", in("dx") port, out("eax") v, options(nostack, preserves_flags));
            }
        }
    }
    v
}

/// Port output of 1, 2 or 4 bytes (the low bytes of `value`).
///
/// # Safety
///
/// Writing a port can do anything the device behind it does.
pub unsafe fn port_out(port: u16, bytes: u32, value: u32) {
    // SAFETY: per the contract.
    unsafe {
        match bytes {
            1 => {
                asm!("out dx, al", in("dx") port, in("al") value as u8, options(nostack, preserves_flags))
            }
            2 => {
                asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nostack, preserves_flags))
            }
            _ => {
                asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
            }
        }
    }
}

/// One `mov` store of 4 bytes to `addr`.
///
/// # Safety
///
/// As [`mmio_read`].
pub unsafe fn mmio_write32(addr: usize, value: u32) {
    // SAFETY: per the contract.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) value, options(nostack, preserves_flags));
    }
}

/// The time-stamp counter (`rdtsc`; `edx:eax` in both widths).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear: the guest runs at
    // CPL 0 anyway).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A spin-wait hint (`pause`).
pub fn pause() {
    // SAFETY: `pause` has no architectural effect.
    unsafe { asm!("pause", options(nomem, nostack, preserves_flags)) };
}

/// CR2 (the faulting address of the last page fault).
pub fn read_cr2() -> usize {
    let v: usize;
    // SAFETY: reading CR2 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Executes `ud2` (the triple-fault mode's last instruction).
pub fn ud2() -> ! {
    // SAFETY: raises #UD; with an empty IDT that ends in a triple fault, which is
    // the hypervisor's to handle.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// A `ud2` the #UD handler is expected to skip (2 bytes): tests the IDT path.
pub fn ud2_resumable() {
    // SAFETY: only called under `trap::expect(6, 2, ..)`, whose handler resumes
    // after the instruction; it touches no memory or registers.
    unsafe { asm!("ud2", options(nomem, nostack)) };
}

/// `sti; hlt; cli`: waits with interrupts enabled until one has been taken (its
/// handler has run by the time this returns), then disables them again.
///
/// STI enables interrupts only after the next instruction, so one that is already
/// pending, or becomes pending in between, is taken once HLT has begun and ends it:
/// no wake-up is lost between a check and the wait. A hypervisor sees the HLT with
/// interrupts enabled and blocks the vCPU until it has something to deliver (Xen's
/// `hvm_hlt`), so the pCPU can idle: how Linux idles a vCPU.
pub fn wait_for_interrupt() {
    // SAFETY: interrupts are enabled for the HLT only; the gates of every vector
    // that can arrive are installed (crate::trap) and their handlers save and
    // restore everything they touch, on the interrupted stack.
    unsafe { asm!("sti", "hlt", "cli") };
}

/// `cli; hlt` forever.
pub fn halt() -> ! {
    loop {
        // SAFETY: stops the CPU until an interrupt, and interrupts are off.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
