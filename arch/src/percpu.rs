//! Per-CPU data (Xen: `DEFINE_PER_CPU`, `get_cpu_info()`): one [`PerCpu`] per CPU,
//! found through the GS base.
//!
//! # How a CPU finds its own
//! Every CPU's GS base points at its `PerCpu` from the first instruction of Rust it
//! runs: the boot assembly sets it for the boot CPU ([`BSP`]) and for each AP (the
//! area the kernel made for it, [`crate::smp`]). The first word of the area is its
//! own address, so [`this`] is one `mov` from `gs:[0]` and [`index`] one from
//! `gs:[8]`. keel never loads GS, and guests' GS never reaches keel: VMX
//! restores HOST_GS_BASE on every exit (written per CPU, see
//! `vmx::VmxVcpu::load_on_this_cpu`), SVM's entry stub VMLOADs this CPU's own
//! host save area ([`PerCpu::svm_host_vmcb`]) after every VMRUN, and a PV guest
//! runs with keel's pointer in `KERNEL_GS_BASE`: every entry from and return to
//! ring 3 executes SWAPGS, and nothing else does ([`crate::pv`]).
//!
//! # What lives here
//! What arch itself needs per CPU: the CPU's index (0 = the boot CPU, then APs in
//! the order they came up), its APIC id, whether it finished bring-up, its SVM
//! host state, and what the PV entry and exit paths keep per CPU. The kernel keeps its own per-CPU state in arrays indexed by
//! [`index`] (`kernel/src/percpu.rs`).
//!
//! # Locking
//! None: a CPU writes only its own area, except that the CPU that starts an AP fills
//! the AP's area before the AP runs and then only reads [`PerCpu::online`]. Fields
//! are atomics so that reading another CPU's (for a report) is sound.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The most CPUs keel brings up (Xen's default `NR_CPUS` is 256 on x86).
pub const MAX_CPUS: usize = 256;

/// One CPU's own data. The layout of the first two fields is fixed: the boot
/// assembly and [`this`]/[`index`] read them by offset.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PerCpu {
    /// Offset 0: this structure's own address (what `gs:[0]` reads).
    this: AtomicU64,
    /// Offset 8: the CPU's index.
    index: AtomicU32,
    /// The CPU's local APIC id (x2APIC id where the CPU has one).
    apic_id: AtomicU32,
    /// Set by the CPU itself once it has finished bring-up.
    online: AtomicBool,
    /// The physical address of this CPU's SVM host state (the VMCB `svm::enable`
    /// captured keel's VMLOAD/VMSAVE state into), 0 until SVM is on here.
    svm_host_vmcb: AtomicU64,
    /// The CPU's own stack, `[lo, hi)`, when it is not in keel's image (APs'
    /// stacks come from the frame allocator): for stack walks in fatal reports.
    stack_lo: AtomicU64,
    stack_hi: AtomicU64,
    /// The top of this CPU's PV entry stack (`TSS.RSP0`): where an interrupt,
    /// exception or `syscall` from a PV guest leaves the guest's registers
    /// (`crate::pv`). Read by the `syscall` entry by offset.
    pub(crate) pv_entry_top: AtomicU64,
    /// keel's stack pointer while a PV guest runs on this CPU (`crate::pv`'s
    /// entry saves it, its exits return to it). Read by offset.
    pub(crate) pv_host_rsp: AtomicU64,
    /// Scratch for the `syscall` entry (the guest's RSP, before the stack switch).
    pub(crate) pv_scratch: AtomicU64,
    /// The serial number of the PV vCPU that ran on this CPU last (0: none):
    /// another one's global TLB entries must go first (`crate::pv`).
    pub(crate) pv_last: AtomicU64,
    /// The generation of the guest GDT this CPU's GDT holds a copy of (0:
    /// none), and how many of its entries that copy used (`crate::pv`).
    pub(crate) pv_gdt_gen: AtomicU64,
    pub(crate) pv_gdt_used: AtomicU64,
}

impl PerCpu {
    /// A CPU's area, not yet installed anywhere.
    pub const fn new(index: u32, apic_id: u32) -> PerCpu {
        PerCpu {
            this: AtomicU64::new(0),
            index: AtomicU32::new(index),
            apic_id: AtomicU32::new(apic_id),
            online: AtomicBool::new(false),
            svm_host_vmcb: AtomicU64::new(0),
            stack_lo: AtomicU64::new(0),
            stack_hi: AtomicU64::new(0),
            pv_entry_top: AtomicU64::new(0),
            pv_host_rsp: AtomicU64::new(0),
            pv_scratch: AtomicU64::new(0),
            pv_last: AtomicU64::new(0),
            pv_gdt_gen: AtomicU64::new(0),
            pv_gdt_used: AtomicU64::new(0),
        }
    }

    /// Records where the CPU's stack is (before the CPU starts).
    pub fn set_stack(&self, lo: u64, hi: u64) {
        self.stack_lo.store(lo, Ordering::Relaxed);
        self.stack_hi.store(hi, Ordering::Relaxed);
    }

    /// Whether `[at, at + len)` lies inside the CPU's recorded stack.
    pub fn stack_contains(&self, at: u64, len: u64) -> bool {
        let (lo, hi) = (
            self.stack_lo.load(Ordering::Relaxed),
            self.stack_hi.load(Ordering::Relaxed),
        );
        at >= lo && at.checked_add(len).is_some_and(|end| end <= hi)
    }

    pub fn index(&self) -> u32 {
        self.index.load(Ordering::Relaxed)
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Records the boot CPU's APIC id once the APIC is up (the BSP's area is made
    /// before anything knows it).
    pub fn set_apic_id(&self, id: u32) {
        self.apic_id.store(id, Ordering::Relaxed);
    }

    /// Whether the CPU has finished bring-up.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Called by the CPU itself when it is ready for work.
    pub fn set_online(&self) {
        self.online.store(true, Ordering::Release);
    }

    /// This CPU's SVM host save VMCB, if SVM is on here.
    pub fn svm_host_vmcb(&self) -> Option<u64> {
        match self.svm_host_vmcb.load(Ordering::Relaxed) {
            0 => None,
            pa => Some(pa),
        }
    }

    pub(crate) fn set_svm_host_vmcb(&self, pa: u64) {
        self.svm_host_vmcb.store(pa, Ordering::Relaxed);
    }

    /// Makes the area self-describing (`gs:[0]`) at its final address; the caller
    /// then points a CPU's GS base at it.
    pub fn seal(&'static self) -> u64 {
        let at = self as *const PerCpu as u64;
        self.this.store(at, Ordering::Release);
        at
    }
}

/// The boot CPU's area (index 0). Its GS base is set by the boot assembly, which
/// also writes the self pointer.
#[unsafe(no_mangle)]
pub static KEEL_BSP_PERCPU: PerCpu = PerCpu::new(0, 0);

/// The boot CPU's area, by its Rust name.
pub static BSP: &PerCpu = &KEEL_BSP_PERCPU;

/// This CPU's area.
#[cfg(target_os = "none")]
#[inline]
pub fn this() -> &'static PerCpu {
    let p: u64;
    // SAFETY: GS base points at this CPU's `PerCpu` from the first Rust instruction
    // (module doc), whose first word is its own address; the areas live forever.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, preserves_flags, readonly));
        &*(p as *const PerCpu)
    }
}

/// This CPU's index (0 = the boot CPU).
#[cfg(target_os = "none")]
#[inline]
pub fn index() -> u32 {
    let i: u32;
    // SAFETY: as in `this`; offset 8 is `index` (repr(C), fixed layout).
    unsafe {
        core::arch::asm!("mov {:e}, gs:[8]", out(reg) i, options(nostack, preserves_flags, readonly))
    };
    i
}

/// On the host (unit tests) there is one CPU.
#[cfg(not(target_os = "none"))]
pub fn this() -> &'static PerCpu {
    &KEEL_BSP_PERCPU
}

/// On the host (unit tests) there is one CPU.
#[cfg(not(target_os = "none"))]
pub fn index() -> u32 {
    0
}

/// Points this CPU's GS base at `area` (already [`PerCpu::seal`]ed).
///
/// # Safety
/// `area` is no other CPU's area; from now on this CPU's per-CPU accesses go there.
pub unsafe fn install(area: &'static PerCpu) {
    let at = area.seal();
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; keel never uses GS otherwise
    // (module doc), so only per-CPU lookups change meaning, as the caller intends.
    unsafe { crate::msr::wrmsr(crate::msr::IA32_GS_BASE, at) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_assembly_offsets_hold() {
        assert_eq!(core::mem::offset_of!(PerCpu, this), 0);
        assert_eq!(core::mem::offset_of!(PerCpu, index), 8);
        assert_eq!(KEEL_BSP_PERCPU.index(), 0);
    }
}
