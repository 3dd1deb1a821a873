//! The CPU state transitions of a 64-bit PV guest, as Xen 4.17 defines them: what
//! keel's PV entry and exit paths (in `arch` and `kernel`) must do, decided here as
//! pure functions and tested on the host.
//!
//! # What
//!
//! A PV guest kernel runs in ring 3, beside its own processes, on keel's CPU
//! (`docs/pv.md`). It cannot take interrupts or exceptions itself, return from them
//! with `iretq` to user mode, or own a descriptor table, so Xen's ABI does each of
//! those for it:
//!
//! - [`hypercall_page`]: the page of `syscall` stubs a 64-bit PV guest calls, with
//!   the special `iret` entry.
//! - [`descriptor`]: which GDT/LDT descriptors a guest may install and how Xen
//!   rewrites them (`check_descriptor`), and the GDT page Xen reserves for itself.
//! - [`trap`]: the virtual IDT (`set_trap_table`) and which handler an exception or
//!   software interrupt is delivered to (`pv_inject_event`).
//! - [`bounce`]: delivering an event to the guest kernel: the frame written to its
//!   stack and the registers it is entered with (`create_bounce_frame`, and the
//!   failsafe callback of `load_segments`).
//! - [`iret`]: the `iret` hypercall that returns from such a frame (`do_iret`).
//!
//! # Vocabulary
//!
//! *Kernel mode* and *user mode* are the guest's, tracked by keel (Xen's
//! `TF_kernel_mode`): both run at CPL 3. Switching between them ([`GuestMode`]) is
//! Xen's `toggle_guest_mode`: swap the active GS base (`gs_base_kernel` /
//! `gs_base_user`, `swapgs`) and load the other of the guest's two L4 tables
//! (`guest_table` / `guest_table_user`). The functions here say *when* to toggle;
//! the caller does it.
//!
//! The *upcall mask* is `vcpu_info.evtchn_upcall_mask`, the guest's virtual IF:
//! Xen copies its inverse into the RFLAGS.IF a guest sees in a frame, and the IF a
//! guest hands `iret` back into it.
//!
//! # Invariants
//!
//! - Every function is total: any input (all of it is guest-controlled, or derived
//!   from guest-controlled values) gives a value or an error, never a panic
//!   (property tests in each submodule).
//! - An error that Xen answers with `domain_crash` is an error variant here whose
//!   doc says so; the caller crashes the domain (STYLE.md §4, rung 2). An error Xen
//!   returns to the guest carries the errno.
//! - Nothing here reads or writes guest memory: the caller copies in (the
//!   `iret_context`, `trap_info` records) and copies out (frames, rewritten
//!   descriptors) with the checked copies of STYLE.md §3.
//!
//! # Locking
//!
//! None: values in, values out. The caller holds whatever protects the vCPU it
//! works on (these run on the vCPU's own pCPU, as Xen's do on `current`).

pub mod bounce;
pub mod descriptor;
pub mod hypercall_page;
pub mod iret;
pub mod trap;

/// Which of its two modes a 64-bit PV guest is in (Xen: `TF_kernel_mode` set or
/// clear). Both run at CPL 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    /// The guest kernel: its kernel L4 and kernel GS base are active; hypercalls
    /// are made from here.
    Kernel,
    /// A guest process: its user L4 and user GS base are active; a `syscall` from
    /// here is bounced to the guest kernel's syscall callback.
    User,
}

/// How keel's exit path must return to the guest after a transition (Xen: whether
/// `TRAP_syscall` is set in the saved `entry_vector` when `restore_all_guest`
/// runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// With SYSRET: the guest's RCX and R11 become its RIP and its RFLAGS
    /// ([`exit_rflags`] of the saved value), as SYSRET leaves them. Xen takes this
    /// path after every bounce (the guest finds its own RCX and R11 in the frame)
    /// and after an `iret` with `VGCF_in_syscall`. A non-canonical RIP makes Xen
    /// use IRETQ instead, with RCX still set to the RIP (SYSRET to a
    /// non-canonical RIP would fault in ring 0, SDM Vol. 2B "SYSRET").
    Sysret,
    /// With IRETQ, RCX and R11 set to these values.
    Iret { rcx: u64, r11: u64 },
}

/// RFLAGS bits the PV paths touch (SDM Vol. 1 §3.4.3; Xen's `X86_EFLAGS_*`).
pub mod rflags {
    /// Trap flag (single step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction flag.
    pub const DF: u64 = 1 << 10;
    /// I/O privilege level, bits 12..13.
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume flag.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
}

/// The RFLAGS keel's exit path loads into the CPU when it returns to a PV guest,
/// from the value its saved frame holds: IOPL and VM cleared, IF set (Xen's
/// `restore_all_guest`: `andq $~(X86_EFLAGS_IOPL | X86_EFLAGS_VM)`, `orq
/// $X86_EFLAGS_IF` on both its SYSRET and its IRET path). A PV guest never runs
/// with hardware IF clear or with an IOPL that lets it touch ports; its virtual IF
/// is the upcall mask and its virtual IOPL is kept apart.
#[must_use]
pub const fn exit_rflags(saved: u64) -> u64 {
    (saved & !(rflags::IOPL | rflags::VM)) | rflags::IF
}

/// Xen's `is_canonical_address` (48-bit virtual addresses: bits 63..47 equal).
#[must_use]
pub const fn is_canonical(addr: u64) -> bool {
    ((addr as i64) >> 47) == ((addr as i64) >> 63)
}

/// Xen's `__addr_ok` for a 64-bit PV guest: an address the guest may name, below
/// the canonical hole or at or above `HYPERVISOR_VIRT_END`
/// (`xen/arch/x86/include/asm/x86_64/uaccess.h`). Such an address is canonical.
#[must_use]
pub const fn guest_addr_ok(addr: u64) -> bool {
    addr < (1 << 47) || addr >= keel_hypercall::abi::start_info::HYPERVISOR_VIRT_END
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_rflags_forces_if_and_drops_iopl_and_vm() {
        // entry.S restore_all_guest / iret_exit_to_guest.
        assert_eq!(exit_rflags(0x2), 0x202);
        assert_eq!(exit_rflags(0x3_3202 | rflags::AC), 0x1_0202 | rflags::AC);
    }

    #[test]
    fn canonical_and_guest_addresses() {
        assert!(is_canonical(0x0000_7FFF_FFFF_FFFF));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0xFFFF_7FFF_FFFF_FFFF));
        assert!(is_canonical(0xFFFF_8000_0000_0000));
        assert!(guest_addr_ok(0x0000_7FFF_FFFF_FFF8));
        assert!(!guest_addr_ok(0x0000_8000_0000_0000));
        assert!(!guest_addr_ok(0xFFFF_8000_0000_0000));
        assert!(!guest_addr_ok(0xFFFF_87FF_FFFF_FFF8));
        assert!(guest_addr_ok(0xFFFF_8800_0000_0000));
        assert!(guest_addr_ok(u64::MAX));
    }
}
