//! Intel VMX (SDM Vol. 3C chapters 23-31): what the CPU offers ([`caps`]), turning
//! VMX on ([`enable`]), and a hardware-virtualized vCPU for PVH guests
//! ([`VmxVcpu`], implementing `hvm::HvmVcpu`), beside its SVM twin.
//!
//! # Layout
//! - [`vmcs`]: field encodings typed by width (SDM appendix B) and the VMX
//!   instructions, each wrapper returning a `Result`;
//! - [`controls`]: the controls, CR0/CR4 ownership, MSR and I/O bitmaps, checked
//!   against the capability MSRs (pure, host-tested);
//! - [`exit`]: exit decoding into `hvm::Exit` (pure, host-tested);
//! - [`ept`]: the EPT entry format for `keel_mm::p2m` and the EPTP;
//! - [`cr`]: emulation of the CR0/CR4 writes that exit, and the CR0/CR4/EFER a
//!   whole new state loads with (pure, host-tested);
//! - `entry`: the VMLAUNCH/VMRESUME stub;
//! - `vcpu`: [`VmxVcpu`], which ties them together.
//!
//! # Invariants
//! - VMX operation is turned on once per CPU by [`enable`]; CR4.VMXE is the per-CPU
//!   record of it (keel sets VMXE nowhere else, and clears it again if VMXON fails).
//! - A [`VmxVcpu`] exists only on a CPU where VMX is on.
//! - At rest a VMCS is active on no CPU. The CPU that holds the vCPU makes it
//!   current (VMPTRLD) at its first access, rewriting the host state if another
//!   CPU's tables are in it and flushing the EPTP's translations if the guest last
//!   ran elsewhere, and VMCLEARs it when it lets the vCPU go
//!   (`HvmVcpu::release_cpu`, which the kernel calls whenever it unlocks a vCPU's
//!   hardware state). So a VMCS moves between CPUs only after VMCLEAR on the old
//!   one, and never needs another CPU's help to do so.
//! - The host state in a VMCS is captured from the CPU it is loaded on: keel's
//!   CR0/CR3/CR4 and IDT are the same on every CPU; GDT, TSS and GS base are each
//!   CPU's own and are rewritten when the VMCS moves.
//! - A VM exit sets the GDTR and IDTR limits to 0xFFFF (SDM §27.5.2). keel's
//!   descriptor tables are smaller, but keel never loads a selector or raises a vector
//!   beyond them, so the larger limits are harmless and are not restored.
//!
//! # Locking
//! None here: a vCPU is `&mut` while a CPU holds it, and VMX state is per CPU.

pub mod caps;
pub mod controls;
pub mod cr;
mod entry;
pub mod ept;
pub mod exit;
mod vcpu;
pub mod vmcs;

pub use vcpu::VmxVcpu;

use core::fmt;

use crate::hvm::FrameSource;
use caps::VmxCaps;
use controls::VmxMsrs;

/// Why VMX could not be turned on or a vCPU built. Each variant's doc is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// firmware locked VMX off (IA32_FEATURE_CONTROL locked without VMXON outside SMX)
    FeatureControlLockedOff,
    /// VMXON failed
    VmxonFailed(vmcs::VmcsError),
    /// VMX is not on on this CPU (vmx::enable has not run)
    NotEnabled,
    /// VMCLEAR of a new VMCS failed
    VmclearFailed(vmcs::VmcsError),
    /// VMPTRLD of a new VMCS failed
    VmptrldFailed(vmcs::VmcsError),
    /// writing a VMCS field failed
    VmwriteFailed {
        field: &'static str,
        error: vmcs::VmcsError,
    },
    /// the CPU lacks a VMX control or capability keel requires
    MissingControl(&'static str),
    /// VPID 0 belongs to the host; a guest needs a nonzero VPID
    ZeroVpid,
    /// keel has no task register loaded (VMX needs a host TR)
    NoHostTr,
    /// out of memory for VMX structures
    OutOfMemory,
    /// the start-of-day state does not load on this CPU
    StartState(crate::hvm::LoadContextError),
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::FeatureControlLockedOff => f.write_str(
                "firmware locked VMX off (IA32_FEATURE_CONTROL locked without VMXON outside SMX)",
            ),
            VmxError::VmxonFailed(e) => write!(f, "VMXON failed: {e}"),
            VmxError::NotEnabled => {
                f.write_str("VMX is not on on this CPU (vmx::enable has not run)")
            }
            VmxError::VmclearFailed(e) => write!(f, "VMCLEAR of a new VMCS failed: {e}"),
            VmxError::VmptrldFailed(e) => write!(f, "VMPTRLD of a new VMCS failed: {e}"),
            VmxError::VmwriteFailed { field, error } => {
                write!(f, "writing VMCS field {field} failed: {error}")
            }
            VmxError::MissingControl(what) => {
                write!(
                    f,
                    "the CPU lacks a VMX control or capability keel requires: {what}"
                )
            }
            VmxError::ZeroVpid => {
                f.write_str("VPID 0 belongs to the host; a guest needs a nonzero VPID")
            }
            VmxError::NoHostTr => {
                f.write_str("keel has no task register loaded (VMX needs a host TR)")
            }
            VmxError::OutOfMemory => f.write_str("out of memory for VMX structures"),
            VmxError::StartState(e) => {
                write!(f, "the start-of-day state does not load on this CPU: {e}")
            }
        }
    }
}

/// IA32_FEATURE_CONTROL bits (SDM Vol. 3C §23.7): lock, VMXON outside SMX.
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// Turns VMX operation on on this CPU (SDM Vol. 3C §23.7, §23.8): checks (or, when
/// firmware left it unlocked, sets and locks) IA32_FEATURE_CONTROL, sets the CR0/CR4
/// bits VMX fixes (CR4.VMXE among them, and CR0.NE), and executes VMXON with a
/// revision-stamped region from `frames`. Idempotent per CPU: once VMX is on
/// (CR4.VMXE set), it returns `Ok` at once.
///
/// The VMXON region stays the CPU's for as long as VMX is on (forever, in keel).
pub fn enable(frames: &mut dyn FrameSource, caps: &VmxCaps) -> Result<(), VmxError> {
    use crate::cpu::{read_cr0, read_cr4};
    use crate::msr::{IA32_FEATURE_CONTROL, rdmsr, wrmsr};
    use controls::cr4::VMXE;

    if read_cr4() & VMXE != 0 {
        return Ok(());
    }
    if !caps.usable() {
        return Err(VmxError::FeatureControlLockedOff);
    }
    if !caps.feature_control_locked {
        // SAFETY: a VMX CPU has IA32_FEATURE_CONTROL; it is unlocked (checked), so
        // the write is allowed, and it only permits VMXON outside SMX and locks.
        unsafe {
            let fc = rdmsr(IA32_FEATURE_CONTROL);
            wrmsr(
                IA32_FEATURE_CONTROL,
                fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            );
        }
    }
    let m = VmxMsrs::read();
    let region = frames.alloc_zeroed(1).ok_or(VmxError::OutOfMemory)?;
    // SAFETY: the frame is fresh from the allocator, ours alone, and inside the
    // direct map; its first 4 bytes take the revision identifier (§24.11.5).
    unsafe {
        (keel_mm::layout::directmap_va(region) as *mut u32).write_volatile(m.revision());
    }

    let old_cr0 = read_cr0();
    let old_cr4 = read_cr4();
    // keel runs in long mode with paging and protection on; what VMX adds is NE
    // (native x87 error reporting: keel uses no x87) and VMXE.
    let cr0 = (old_cr0 | m.cr0_fixed0) & m.cr0_fixed1;
    let cr4 = (old_cr4 | m.cr4_fixed0 | VMXE) & m.cr4_fixed1;
    // SAFETY: only bits VMX requires are added (FIXED0) and only bits VMX forbids
    // removed (FIXED1); keel's PE, PG, PAE and WP are among the allowed bits, so
    // paging and protection are unchanged.
    unsafe {
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
    }
    // SAFETY: CR4.VMXE is set, IA32_FEATURE_CONTROL allows VMXON outside SMX, CR0 and
    // CR4 satisfy the fixed bits, and the region is a stamped frame keel gives up.
    match unsafe { vmcs::vmxon(region.as_u64()) } {
        Ok(()) => {
            log::debug!("VMX: on (VMXON region at {:#x})", region.as_u64());
            Ok(())
        }
        Err(e) => {
            // SAFETY: VMX is not on, so CR4.VMXE may be cleared again; restoring the
            // old CR4 keeps VMXE the record of "VMX is on".
            unsafe {
                core::arch::asm!("mov cr4, {}", in(reg) old_cr4, options(nostack, preserves_flags));
            }
            Err(VmxError::VmxonFailed(e))
        }
    }
}
