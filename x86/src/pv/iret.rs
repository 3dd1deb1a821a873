//! The `iret` hypercall of a 64-bit PV guest: returning from a bounce frame, or
//! from the kernel to a process.
//!
//! # What and why
//!
//! A guest kernel in ring 3 cannot `iretq` to its processes (they share its ring
//! but not its page tables or GS base), and its handlers must restore the virtual
//! IF (the upcall mask) together with RFLAGS. So it jumps to the `iret` entry of
//! the hypercall page with an [`IretContext`] on its stack ([`super::hypercall_page`]),
//! and Xen's `do_iret` ([`do_iret`]) reads it at the RSP of the `syscall` and:
//!
//! 1. If the saved CS has RPL 3, returns to user mode: crash the domain if the
//!    guest has no user page table (`guest_table_user` null), else toggle to user
//!    mode. RPL 0..2 returns to kernel mode (no toggle).
//! 2. With `VMASST_TYPE_architectural_iopl`, the virtual IOPL becomes the saved
//!    RFLAGS.IOPL.
//! 3. RIP and RSP are taken as they are (a non-canonical RIP faults on the way
//!    out, and that fault is the guest's); CS and SS are truncated to 16 bits and
//!    get RPL 3; RFLAGS is the saved value with IOPL and VM cleared and IF set.
//!    Nothing else in RFLAGS is checked.
//! 4. Without `VGCF_in_syscall` in `flags`, RCX and R11 are restored and the
//!    return is with IRETQ; with it, RCX and R11 are discarded and the return is
//!    with SYSRET ([`Exit`]).
//! 5. The upcall mask becomes 1 if the saved RFLAGS.IF is clear, else 0.
//! 6. RAX becomes the saved RAX (the hypercall's return value).
//!
//! A fault reading the context from the guest stack also crashes the domain; that
//! read is the caller's.
//!
//! # Invariants
//!
//! The resulting CS and SS have RPL 3 and RFLAGS has IF set and IOPL and VM clear:
//! the guest runs at CPL 3 with interrupts on, whatever it asked for (tested over
//! all inputs).
//!
//! # Not modelled
//!
//! `async_exception_cleanup`: `do_iret` also restores the NMI/MCE mask saved when
//! an NMI or MCE callback was entered. That is vCPU state this model does not
//! carry; the caller must do it on every successful `iret`.
//!
//! # Sources
//!
//! `xen/arch/x86/pv/iret.c`: `do_iret`; `xen/include/public/arch-x86/
//! xen-x86_64.h`: `struct iret_context`, `VGCF_in_syscall`, the comment on
//! `HYPERVISOR_iret`; `xen/arch/x86/x86_64/entry.S`: `restore_all_guest`
//! (`TRAP_syscall` selects SYSRET).
//!
//! # Locking
//!
//! None: values only. The caller runs on the vCPU's pCPU (Xen: `current`).

use core::fmt;

use keel_hypercall::abi::pv::{IretContext, VGCF_IN_SYSCALL};

use super::{Exit, GuestMode, rflags};

/// The vCPU state `iret` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IretVcpu {
    /// The mode the hypercall was made from; Xen's hypercalls only come from
    /// kernel mode.
    pub mode: GuestMode,
    /// Whether the guest has a user page table (`MMUEXT_NEW_USER_BASEPTR`).
    pub has_user_pagetable: bool,
    /// Whether the domain has `VMASST_TYPE_architectural_iopl`.
    pub architectural_iopl: bool,
}

/// The state `iret` returns to the guest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iret {
    pub rip: u64,
    /// The saved CS's low 16 bits with RPL 3.
    pub cs: u16,
    /// The saved RFLAGS with IOPL and VM cleared and IF set.
    pub rflags: u64,
    pub rsp: u64,
    /// The saved SS's low 16 bits with RPL 3.
    pub ss: u16,
    /// RAX: the saved RAX.
    pub rax: u64,
    /// How to return, and with which RCX and R11.
    pub exit: Exit,
    /// The new `vcpu_info.evtchn_upcall_mask`: 1 iff the saved RFLAGS.IF is clear.
    pub upcall_mask: u8,
    /// The saved CS has RPL 3: toggle to user mode (user L4, user GS base).
    pub toggle_to_user: bool,
    /// The new virtual IOPL (RFLAGS bits 12..13), with architectural IOPL; else
    /// the virtual IOPL does not change.
    pub iopl: Option<u64>,
}

/// Why `iret` fails. The doc comment of each variant is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IretError {
    /// the guest switched to user mode with no user page table (Xen crashes the
    /// domain)
    NoUserPageTable,
    /// the iret hypercall was made from user mode (keel bug: a user-mode
    /// `syscall` goes to the guest kernel, not to the hypercall dispatcher)
    NotInKernelMode,
}

impl IretError {
    /// Whether Xen crashes the domain for this error. [`IretError::NotInKernelMode`]
    /// cannot happen in Xen and is keel's own bug, not the guest's.
    pub const fn crashes_domain(self) -> bool {
        matches!(self, IretError::NoUserPageTable)
    }
}

impl fmt::Display for IretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IretError::NoUserPageTable => "the guest switched to user mode with no user page table",
            IretError::NotInKernelMode => "the iret hypercall was made from user mode",
        })
    }
}

/// Xen's `do_iret` for a 64-bit guest (module doc, steps 1..6), from the context
/// read at the guest's RSP.
pub fn do_iret(ctx: &IretContext, vcpu: &IretVcpu) -> Result<Iret, IretError> {
    if vcpu.mode != GuestMode::Kernel {
        return Err(IretError::NotInKernelMode);
    }
    // "Returning to user mode?"
    let toggle_to_user = ctx.cs & 3 == 3;
    if toggle_to_user && !vcpu.has_user_pagetable {
        return Err(IretError::NoUserPageTable);
    }
    let exit = if ctx.flags & VGCF_IN_SYSCALL != 0 {
        Exit::Sysret
    } else {
        // "regs->entry_vector &= ~TRAP_syscall; regs->r11 = ...; regs->rcx = ..."
        Exit::Iret {
            rcx: ctx.rcx,
            r11: ctx.r11,
        }
    };
    Ok(Iret {
        rip: ctx.rip,
        // "force guest privilege"; cpu_user_regs.cs and .ss are 16 bits.
        cs: ctx.cs as u16 | 3,
        rflags: (ctx.rflags & !(rflags::IOPL | rflags::VM)) | rflags::IF,
        rsp: ctx.rsp,
        ss: ctx.ss as u16 | 3,
        rax: ctx.rax,
        exit,
        // "Restore upcall mask from supplied EFLAGS.IF."
        upcall_mask: u8::from(ctx.rflags & rflags::IF == 0),
        toggle_to_user,
        iopl: vcpu.architectural_iopl.then_some(ctx.rflags & rflags::IOPL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pv::bounce::tests::arb_sp;
    use crate::pv::bounce::{BounceVcpu, GuestRegs, TrapBounce, create_bounce_frame};
    use proptest::prelude::*;

    const KERNEL: IretVcpu = IretVcpu {
        mode: GuestMode::Kernel,
        has_user_pagetable: true,
        architectural_iopl: false,
    };

    fn ctx() -> IretContext {
        IretContext {
            rax: 0xAA,
            r11: 0x11,
            rcx: 0xCC,
            flags: 0,
            rip: 0x40_1000,
            cs: 0xe033,
            rflags: 0x246,
            rsp: 0x7FFF_0000,
            ss: 0xe02b,
        }
    }

    #[test]
    fn return_to_user_mode() {
        // do_iret: "(iret_saved.cs & 3) == 3" -> toggle_guest_mode.
        let r = do_iret(&ctx(), &KERNEL).unwrap();
        assert!(r.toggle_to_user);
        assert_eq!(
            (r.rip, r.cs, r.rsp, r.ss, r.rax),
            (0x40_1000, 0xe033, 0x7FFF_0000, 0xe02b, 0xAA)
        );
        assert_eq!(
            r.exit,
            Exit::Iret {
                rcx: 0xCC,
                r11: 0x11
            }
        );
        assert_eq!(r.upcall_mask, 0);
        assert_eq!(r.iopl, None);
    }

    #[test]
    fn return_to_kernel_mode_forces_rpl_3() {
        // do_iret: "regs->cs = iret_saved.cs | 3; /* force guest privilege */".
        for rpl in 0..3 {
            let c = IretContext {
                cs: 0xe030 | rpl,
                ss: 0xe028,
                ..ctx()
            };
            let no_user = IretVcpu {
                has_user_pagetable: false,
                ..KERNEL
            };
            let r = do_iret(&c, &no_user).unwrap();
            assert!(!r.toggle_to_user);
            assert_eq!((r.cs, r.ss), (0xe033, 0xe02b));
        }
    }

    #[test]
    fn user_mode_without_user_page_table_crashes() {
        // do_iret: "Guest switching to user mode with no user page tables".
        let v = IretVcpu {
            has_user_pagetable: false,
            ..KERNEL
        };
        let e = do_iret(&ctx(), &v).unwrap_err();
        assert_eq!(e, IretError::NoUserPageTable);
        assert!(e.crashes_domain());
        let user = IretVcpu {
            mode: GuestMode::User,
            ..KERNEL
        };
        assert_eq!(do_iret(&ctx(), &user), Err(IretError::NotInKernelMode));
        assert!(!IretError::NotInKernelMode.crashes_domain());
    }

    #[test]
    fn rflags_lose_iopl_and_vm_and_gain_if() {
        // do_iret: "((iret_saved.rflags & ~(X86_EFLAGS_IOPL|X86_EFLAGS_VM)) |
        // X86_EFLAGS_IF)"; nothing else is filtered.
        let c = IretContext {
            rflags: !rflags::IF,
            ..ctx()
        };
        let r = do_iret(&c, &KERNEL).unwrap();
        assert_eq!(r.rflags, !(rflags::IOPL | rflags::VM));
        // "Restore upcall mask from supplied EFLAGS.IF."
        assert_eq!(r.upcall_mask, 1);
    }

    #[test]
    fn architectural_iopl_takes_the_saved_iopl() {
        // do_iret: "v->arch.pv.iopl = iret_saved.rflags & X86_EFLAGS_IOPL".
        let v = IretVcpu {
            architectural_iopl: true,
            ..KERNEL
        };
        let c = IretContext {
            rflags: 0x2202,
            ..ctx()
        };
        let r = do_iret(&c, &v).unwrap();
        assert_eq!(r.iopl, Some(0x2000));
        assert_eq!(r.rflags & rflags::IOPL, 0);
    }

    #[test]
    fn in_syscall_discards_rcx_r11_and_returns_with_sysret() {
        // do_iret: "if ( !(iret_saved.flags & VGCF_in_syscall) )" only then
        // restores them; xen-x86_64.h: "Discard R11, RCX, CS, SS."
        let c = IretContext {
            flags: VGCF_IN_SYSCALL,
            ..ctx()
        };
        assert_eq!(do_iret(&c, &KERNEL).unwrap().exit, Exit::Sysret);
        let other = IretContext {
            flags: !VGCF_IN_SYSCALL,
            ..ctx()
        };
        assert!(matches!(
            do_iret(&other, &KERNEL).unwrap().exit,
            Exit::Iret { .. }
        ));
    }

    #[test]
    fn selectors_are_truncated_to_16_bits() {
        let c = IretContext {
            cs: 0x1_0000_e030,
            ss: 0xFFFF_0000,
            ..ctx()
        };
        let r = do_iret(&c, &KERNEL).unwrap();
        assert_eq!((r.cs, r.ss), (0xe033, 3));
        assert!(!r.toggle_to_user);
    }

    proptest! {
        #[test]
        fn iret_is_total_and_always_returns_to_ring_3_with_if(
            w in any::<[u64; 9]>(), user in any::<bool>(), pt in any::<bool>(), iopl in any::<bool>(),
        ) {
            let c = IretContext {
                rax: w[0], r11: w[1], rcx: w[2], flags: w[3], rip: w[4],
                cs: w[5], rflags: w[6], rsp: w[7], ss: w[8],
            };
            let v = IretVcpu {
                mode: if user { GuestMode::User } else { GuestMode::Kernel },
                has_user_pagetable: pt,
                architectural_iopl: iopl,
            };
            if let Ok(r) = do_iret(&c, &v) {
                prop_assert_eq!(r.cs & 3, 3);
                prop_assert_eq!(r.ss & 3, 3);
                prop_assert_eq!(r.rflags & (rflags::IF | rflags::IOPL | rflags::VM), rflags::IF);
                prop_assert!(r.upcall_mask <= 1);
            }
        }

        /// A handler that returns with `iret` from the frame it was given, unchanged
        /// (RAX, R11, RCX popped; flags 0), resumes the interrupted state.
        #[test]
        fn iret_of_a_bounce_frame_resumes_the_interrupted_state(
            rip in any::<u64>(), cs_index in any::<u16>(), rflags_in in any::<u32>(),
            rsp in arb_sp(), ss in any::<u16>(), rcx in any::<u64>(), r11 in any::<u64>(),
            user in any::<bool>(), mask in 0..=1u8, ec in any::<Option<u32>>(),
            kernel_sp in arb_sp(), rax in any::<u64>(),
        ) {
            let regs = GuestRegs {
                rip, cs: cs_index | 3, rflags: u64::from(rflags_in), rsp, ss, rcx, r11,
            };
            let vcpu = BounceVcpu {
                mode: if user { GuestMode::User } else { GuestMode::Kernel },
                kernel_sp,
                upcall_mask: mask,
                iopl: 0,
                architectural_iopl: false,
            };
            let tb = TrapBounce { eip: 0x1000, mask_events: true, error_code: ec };
            let b = create_bounce_frame(&regs, &vcpu, &tb);
            // Most generated stacks are usable; proptest fails if too few are.
            prop_assume!(b.is_ok());
            if let Ok(b) = b {
                let w = b.frame.words();
                let hw = &w[w.len() - 5..];
                let c = IretContext {
                    rax, r11: w[1], rcx: w[0], flags: 0,
                    rip: hw[0], cs: hw[1], rflags: hw[2], rsp: hw[3], ss: hw[4],
                };
                let r = do_iret(&c, &IretVcpu {
                    mode: GuestMode::Kernel,
                    has_user_pagetable: true,
                    architectural_iopl: false,
                }).unwrap();
                prop_assert_eq!((r.rip, r.cs, r.rsp, r.ss), (rip, regs.cs, rsp, ss | 3));
                prop_assert_eq!(r.exit, Exit::Iret { rcx, r11 });
                prop_assert_eq!(r.upcall_mask, mask);
                prop_assert_eq!(r.toggle_to_user, user);
            }
        }
    }
}
