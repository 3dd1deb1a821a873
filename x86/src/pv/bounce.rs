//! Delivering an event to a 64-bit PV guest kernel: the frame written to its stack
//! and the state it is entered with (Xen's "bounce").
//!
//! # What and why
//!
//! A PV guest's exception handlers, event callback and syscall callback are entered
//! the way a CPU would enter an interrupt gate, but by the hypervisor: it writes a
//! frame to the guest kernel's stack and returns to the guest at the handler. Xen's
//! `create_bounce_frame` ([`create_bounce_frame`]) does it for every exception,
//! software interrupt, event upcall, NMI/MCE callback and user-mode `syscall`:
//!
//! 1. From user mode, toggle to kernel mode and take the stack `stack_switch` gave
//!    (`kernel_sp`; `kernel_ss` is not used: the new SS is `FLAT_KERNEL_SS`). From
//!    kernel mode, stay on the interrupted RSP, and clear the RPL of the CS written
//!    to the frame: RPL 0 tells the guest it interrupted its kernel.
//! 2. Align the stack down to 16 bytes. If the aligned RSP is above
//!    `HYPERVISOR_VIRT_START` and below `HYPERVISOR_VIRT_END + 64`, crash the
//!    domain.
//! 3. Write, from the lowest address: RCX, R11, [error code], RIP, CS, RFLAGS,
//!    RSP, SS (the interrupted values; 7 or 8 words ending at the aligned RSP). The
//!    CS word holds the upcall mask as it was in bits 32..39. The RFLAGS word has
//!    IF = !upcall mask and IOPL = the virtual IOPL if the domain has
//!    `VMASST_TYPE_architectural_iopl`, else 0. A store that faults (non-canonical
//!    or unmapped) crashes the domain.
//! 4. Set the upcall mask's bit 0 if the bounce masks events (`TBF_INTERRUPT`).
//! 5. Enter the handler: RIP = its address (0, no handler, crashes the domain),
//!    CS = `FLAT_KERNEL_CS`, SS = `FLAT_KERNEL_SS`, RSP = the frame, RFLAGS with TF,
//!    NT, RF, VM and AC cleared; return with SYSRET ([`Exit::Sysret`]).
//!
//! The failsafe callback ([`failsafe_callback`], from `load_segments`) is entered
//! when loading the guest's DS, ES, FS or GS selector fails on a context switch in.
//! Its frame differs: four more words (DS, ES, FS, GS, the selectors that were to
//! be loaded) between R11 and RIP, never an error code, no range check but a
//! per-word one (`__addr_ok`), no check of the callback's address, IOPL cleared in
//! the new RFLAGS too, and the mask *set to 1* (not or-ed) iff
//! `VGCF_failsafe_disables_events`.
//!
//! # Invariants
//!
//! - A frame is written only to guest addresses: every word of an accepted frame
//!   is below the canonical hole or at/above `HYPERVISOR_VIRT_END` (tested over
//!   all inputs).
//! - The frame's RFLAGS.IF is the inverse of the upcall mask before the bounce;
//!   `iret` of an unmodified frame returns to the interrupted RIP, CS, RSP, SS and
//!   mask (property-tested against [`super::iret::do_iret`]).
//!
//! # Hazards for the caller
//!
//! - Toggle to kernel mode (kernel L4, kernel GS base) *before* writing the
//!   frame: Xen writes it through the guest kernel's page tables.
//! - Write the frame with a checked copy; any failure crashes the domain. Words
//!   are at `addr + 8 * i`, wrapping at 2^64 as Xen's stores do (a kernel RSP
//!   below 64 puts the upper words at the top of the address space).
//! - Xen takes bits 40..63 of the CS word from the three padding bytes that follow
//!   `evtchn_upcall_mask` in `vcpu_info` (it pushes a quadword from there); keel
//!   writes zero. A guest sees a difference only if it writes that padding.
//!
//! # Sources
//!
//! `xen/arch/x86/x86_64/entry.S`: `create_bounce_frame`, `switch_to_kernel`,
//! `lstar_enter`, `cstar_enter`, `restore_all_guest`; `xen/arch/x86/domain.c`:
//! `load_segments` (the failsafe frame); `xen/arch/x86/pv/misc-hypercalls.c`:
//! `do_stack_switch`; `xen/arch/x86/include/asm/x86_64/uaccess.h`: `__addr_ok`;
//! `xen/include/public/arch-x86/xen-x86_64.h`: `cpu_user_regs` ("rflags.IF ==
//! !saved_upcall_mask").
//!
//! # Locking
//!
//! None: values only. The caller runs on the vCPU's pCPU with the vCPU's state
//! its own (Xen: `current`).

use core::fmt;

use keel_hypercall::abi::pv::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS32, FLAT_USER_SS32};
use keel_hypercall::abi::start_info::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};

use super::trap::{TRAP_INVALID_OP, TrapTable};
use super::{Exit, GuestMode, guest_addr_ok, is_canonical, rflags};

/// The most words a frame has (the failsafe frame).
pub const MAX_FRAME_WORDS: usize = 11;

/// RFLAGS bits cleared on entry to a bounce handler ("IA32 Ref. Vol. 3: TF, VM, RF
/// and NT flags are cleared on trap. Also clear AC").
pub const BOUNCE_CLEARED_RFLAGS: u64 =
    rflags::AC | rflags::VM | rflags::RF | rflags::NT | rflags::TF;
/// RFLAGS bits cleared on entry to the failsafe callback: those and IOPL.
pub const FAILSAFE_CLEARED_RFLAGS: u64 = BOUNCE_CLEARED_RFLAGS | rflags::IOPL;

/// The guest registers a bounce reads and replaces: the part of Xen's
/// `cpu_user_regs` that the guest-visible frame is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    pub rip: u64,
    pub cs: u16,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub rcx: u64,
    pub r11: u64,
}

/// The vCPU state a bounce reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BounceVcpu {
    /// The mode the guest is in when the event is delivered.
    pub mode: GuestMode,
    /// The guest kernel's stack for events from user mode (`stack_switch`).
    pub kernel_sp: u64,
    /// `vcpu_info.evtchn_upcall_mask`, all eight bits.
    pub upcall_mask: u8,
    /// The virtual IOPL in RFLAGS position (bits 12..13; Xen `arch.pv.iopl`).
    /// Other bits are ignored.
    pub iopl: u64,
    /// Whether the domain has `VMASST_TYPE_architectural_iopl`.
    pub architectural_iopl: bool,
}

/// Where to bounce to (Xen's `struct trap_bounce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapBounce {
    /// The handler's address; 0 is "no handler".
    pub eip: u64,
    /// `TBF_INTERRUPT`: mask events on entry (set bit 0 of the upcall mask).
    pub mask_events: bool,
    /// `TBF_EXCEPTION_ERRCODE` and the code: an error-code word in the frame.
    pub error_code: Option<u32>,
}

/// The words to write to the guest's stack, lowest address first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    addr: u64,
    words: [u64; MAX_FRAME_WORDS],
    len: usize,
}

impl Frame {
    /// The guest-virtual address of the lowest word: the handler's RSP.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The words; word `i` goes to `addr().wrapping_add(8 * i)`.
    pub fn words(&self) -> &[u64] {
        &self.words[..self.len]
    }

    /// The address of word `i` (wrapping, as Xen's stores).
    pub fn word_addr(&self, i: usize) -> u64 {
        self.addr.wrapping_add(8 * i as u64)
    }

    fn new(top: u64, words: &[u64]) -> Frame {
        let mut w = [0; MAX_FRAME_WORDS];
        let len = words.len().min(MAX_FRAME_WORDS);
        w[..len].copy_from_slice(&words[..len]);
        Frame {
            addr: top.wrapping_sub(8 * len as u64),
            words: w,
            len,
        }
    }
}

/// The result of a bounce: what to write and what to enter the guest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounced {
    pub frame: Frame,
    /// The registers to return to the guest with (RCX and R11 as they were; see
    /// `exit`).
    pub regs: GuestRegs,
    /// The new `vcpu_info.evtchn_upcall_mask`.
    pub upcall_mask: u8,
    /// The guest was in user mode: toggle to kernel mode before writing the frame.
    pub toggle_to_kernel: bool,
    /// How to return to the guest: always [`Exit::Sysret`] (Xen sets
    /// `TRAP_syscall`).
    pub exit: Exit,
}

/// Why a bounce crashes the domain (every variant does, as in Xen). The doc comment
/// of each variant is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceError {
    /// the guest kernel's stack is in or just above the hypervisor's range
    /// (`create_bounce_frame_bad_sp`)
    StackInHypervisorRange { sp: u64 },
    /// a frame word's address is not canonical (Xen's store faults)
    NonCanonical { addr: u64 },
    /// a frame word's address is not one the guest may name (`put_guest` fails)
    NotGuestAddress { addr: u64 },
    /// no handler is registered for the event (`create_bounce_frame_bad_bounce_ip`)
    NoHandler,
}

impl fmt::Display for BounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BounceError::StackInHypervisorRange { sp } => write!(
                f,
                "the guest kernel's stack ({sp:#x}) is in or just above the hypervisor's range"
            ),
            BounceError::NonCanonical { addr } => {
                write!(f, "a frame word's address ({addr:#x}) is not canonical")
            }
            BounceError::NotGuestAddress { addr } => {
                write!(f, "a frame word's address ({addr:#x}) is not the guest's")
            }
            BounceError::NoHandler => f.write_str("no handler is registered for the event"),
        }
    }
}

/// The stack, the CS to save and whether to toggle, from the mode (steps 1 and the
/// alignment of 2; shared with the failsafe callback).
fn entry_stack(regs: &GuestRegs, vcpu: &BounceVcpu) -> (u64, u16, bool) {
    let (sp, cs, toggle) = match vcpu.mode {
        GuestMode::User => (vcpu.kernel_sp, regs.cs, true),
        // "andb $0xfc,UREGS_cs": indicate kernel context to the guest.
        GuestMode::Kernel => (regs.rsp, regs.cs & !3, false),
    };
    // "Stack frames are 16-byte aligned."
    (sp & !0xF, cs, toggle)
}

/// The RFLAGS word of a frame: IF from the upcall mask, IOPL virtual or 0.
fn frame_rflags(rflags_value: u64, vcpu: &BounceVcpu) -> u64 {
    let mut f = rflags_value & !(rflags::IF | rflags::IOPL);
    if vcpu.upcall_mask == 0 {
        f |= rflags::IF;
    }
    if vcpu.architectural_iopl {
        f |= vcpu.iopl & rflags::IOPL;
    }
    f
}

/// Xen's `create_bounce_frame` for a 64-bit guest: delivers `tb` to a vCPU in
/// `vcpu`'s state interrupted at `regs` (module doc, steps 1..5).
pub fn create_bounce_frame(
    regs: &GuestRegs,
    vcpu: &BounceVcpu,
    tb: &TrapBounce,
) -> Result<Bounced, BounceError> {
    let (sp, cs, toggle_to_kernel) = entry_stack(regs, vcpu);

    // "In +ve address space? Then okay. Above Xen private area? Then okay."
    if sp > HYPERVISOR_VIRT_START && sp < HYPERVISOR_VIRT_END + 64 {
        return Err(BounceError::StackInHypervisorRange { sp });
    }

    let cs_word = u64::from(cs) | (u64::from(vcpu.upcall_mask) << 32);
    // Xen loads EFLAGS with `movl`: bits 32..63 (reserved) are not copied.
    let rflags_word = frame_rflags(regs.rflags & 0xFFFF_FFFF, vcpu);
    let tail = [regs.rip, cs_word, rflags_word, regs.rsp, u64::from(regs.ss)];
    let frame = match tb.error_code {
        Some(ec) => {
            let [a, b, c, d, e] = tail;
            Frame::new(sp, &[regs.rcx, regs.r11, u64::from(ec), a, b, c, d, e])
        }
        None => {
            let [a, b, c, d, e] = tail;
            Frame::new(sp, &[regs.rcx, regs.r11, a, b, c, d, e])
        }
    };
    // Xen stores SS first, then downwards; a non-canonical address faults.
    for i in (0..frame.len).rev() {
        let addr = frame.word_addr(i);
        if !is_canonical(addr) {
            return Err(BounceError::NonCanonical { addr });
        }
    }

    if tb.eip == 0 {
        return Err(BounceError::NoHandler);
    }
    let upcall_mask = vcpu.upcall_mask | u8::from(tb.mask_events);
    Ok(Bounced {
        frame,
        regs: GuestRegs {
            rip: tb.eip,
            cs: FLAT_KERNEL_CS,
            rflags: regs.rflags & !BOUNCE_CLEARED_RFLAGS,
            rsp: frame.addr(),
            ss: FLAT_KERNEL_SS,
            rcx: regs.rcx,
            r11: regs.r11,
        },
        upcall_mask,
        toggle_to_kernel,
        exit: Exit::Sysret,
    })
}

/// The data segment selectors the vCPU was to load (Xen's saved `user_regs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSelectors {
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
}

/// The failsafe callback of Xen's `load_segments` for a 64-bit guest: entered at
/// `eip` when loading `sel` failed (each failing register is loaded with the null
/// selector first). `disables_events` is `VGCF_failsafe_disables_events`.
pub fn failsafe_callback(
    regs: &GuestRegs,
    sel: &DataSelectors,
    vcpu: &BounceVcpu,
    eip: u64,
    disables_events: bool,
) -> Result<Bounced, BounceError> {
    let (sp, cs, toggle_to_kernel) = entry_stack(regs, vcpu);
    let cs_word = u64::from(cs) | (u64::from(vcpu.upcall_mask) << 32);
    let frame = Frame::new(
        sp,
        &[
            regs.rcx,
            regs.r11,
            u64::from(sel.ds),
            u64::from(sel.es),
            u64::from(sel.fs),
            u64::from(sel.gs),
            regs.rip,
            cs_word,
            frame_rflags(regs.rflags, vcpu),
            regs.rsp,
            u64::from(regs.ss),
        ],
    );
    // put_guest: access_ok, i.e. __addr_ok, for each word.
    for i in (0..frame.len).rev() {
        let addr = frame.word_addr(i);
        if !guest_addr_ok(addr) {
            return Err(BounceError::NotGuestAddress { addr });
        }
    }
    Ok(Bounced {
        frame,
        regs: GuestRegs {
            rip: eip,
            cs: FLAT_KERNEL_CS,
            rflags: regs.rflags & !FAILSAFE_CLEARED_RFLAGS,
            rsp: frame.addr(),
            ss: FLAT_KERNEL_SS,
            rcx: regs.rcx,
            r11: regs.r11,
        },
        upcall_mask: if disables_events { 1 } else { vcpu.upcall_mask },
        toggle_to_kernel,
        exit: Exit::Sysret,
    })
}

/// Which `syscall` entry a guest process used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallFrom {
    /// 64-bit code (LSTAR).
    Long,
    /// 32-bit code (CSTAR).
    Compat,
}

/// The registered callbacks a user-mode `syscall` is bounced to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallCallbacks {
    /// `CALLBACKTYPE_syscall`'s address (0: none).
    pub syscall: u64,
    /// `CALLBACKTYPE_syscall32`'s address (0: none).
    pub syscall32: u64,
    /// `VGCF_syscall_disables_events`. Xen uses this flag for both entries; the
    /// separate `CALLBACKTYPE_syscall32` mask flag is not consulted here.
    pub disables_events: bool,
}

/// A `syscall` from guest user mode (Xen's `lstar_enter`/`cstar_enter` with
/// `TF_kernel_mode` clear, then `switch_to_kernel`): the interrupted state is RIP
/// = RCX, RFLAGS = R11, the guest's RSP, and the flat user CS/SS for the entry
/// used; it is bounced to the syscall callback, masking events iff
/// `disables_events`. With no callback (address 0), RIP is moved back onto the
/// 2-byte `syscall` and #UD is delivered to trap 6 instead, masking events iff
/// that entry has `TI_IF`. Either way DF is cleared on entry. `vcpu.mode` is
/// taken to be user mode whatever it says: from kernel mode a `syscall` is a
/// hypercall.
pub fn user_syscall(
    from: SyscallFrom,
    rcx: u64,
    r11: u64,
    rsp: u64,
    callbacks: &SyscallCallbacks,
    traps: &TrapTable,
    vcpu: &BounceVcpu,
) -> Result<Bounced, BounceError> {
    let (cs, ss, callback) = match from {
        // lstar_enter pushes FLAT_KERNEL_SS and FLAT_KERNEL_CS64, the same
        // selectors as the user ones.
        SyscallFrom::Long => (FLAT_KERNEL_CS, FLAT_KERNEL_SS, callbacks.syscall),
        SyscallFrom::Compat => (FLAT_USER_CS32, FLAT_USER_SS32, callbacks.syscall32),
    };
    let mut regs = GuestRegs {
        rip: rcx,
        cs,
        rflags: r11,
        rsp,
        ss,
        rcx,
        r11,
    };
    let vcpu = BounceVcpu {
        mode: GuestMode::User,
        ..*vcpu
    };
    let tb = if callback == 0 {
        // "TB_eip == 0 => #UD": subq $2, UREGS_rip.
        regs.rip = regs.rip.wrapping_sub(2);
        let ud = traps.get(TRAP_INVALID_OP);
        TrapBounce {
            eip: ud.address,
            mask_events: ud.masks_events(),
            error_code: None,
        }
    } else {
        TrapBounce {
            eip: callback,
            mask_events: callbacks.disables_events,
            error_code: None,
        }
    };
    let mut b = create_bounce_frame(&regs, &vcpu, &tb)?;
    // switch_to_kernel: "andl $~X86_EFLAGS_DF,UREGS_eflags(%rsp)".
    b.regs.rflags &= !rflags::DF;
    Ok(b)
}

/// `stack_switch(ss, sp)`: the kernel stack for events from user mode. Xen
/// raises the selector's RPL to 3 and checks nothing else (the stack is checked
/// when a frame is written to it); it always returns 0.
pub const fn stack_switch(ss: u64, sp: u64) -> (u64, u64) {
    (ss | 3, sp)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const USER_CS: u16 = 0xe033;
    const USER_SS: u16 = 0xe02b;

    fn vcpu(mode: GuestMode, mask: u8) -> BounceVcpu {
        BounceVcpu {
            mode,
            kernel_sp: 0xFFFF_C900_0001_0008,
            upcall_mask: mask,
            iopl: 0,
            architectural_iopl: false,
        }
    }

    fn regs() -> GuestRegs {
        GuestRegs {
            rip: 0x40_1000,
            cs: USER_CS,
            rflags: 0x247 | rflags::TF | rflags::AC | rflags::NT | rflags::RF | rflags::IOPL,
            rsp: 0x7FFF_FFFF_E008,
            ss: USER_SS,
            rcx: 0xC,
            r11: 0x11,
        }
    }

    fn tb(error_code: Option<u32>, mask_events: bool) -> TrapBounce {
        TrapBounce {
            eip: 0xFFFF_FFFF_8100_2000,
            mask_events,
            error_code,
        }
    }

    #[test]
    fn from_user_mode_uses_kernel_sp_and_toggles() {
        // create_bounce_frame: "Push new frame at registered guest-OS stack base."
        let b = create_bounce_frame(&regs(), &vcpu(GuestMode::User, 0), &tb(None, true)).unwrap();
        assert!(b.toggle_to_kernel);
        // kernel_sp 0x...0008 aligned down to 0x...0000, 7 words below.
        assert_eq!(b.frame.addr(), 0xFFFF_C900_0001_0000 - 56);
        assert_eq!(
            b.frame.words(),
            &[
                0xC,
                0x11,
                0x40_1000,
                u64::from(USER_CS), // RPL 3 kept: user mode was interrupted
                0x247 | rflags::TF | rflags::AC | rflags::NT | rflags::RF, // IF from mask 0
                0x7FFF_FFFF_E008,
                u64::from(USER_SS),
            ]
        );
        assert_eq!(b.upcall_mask, 1, "TBF_INTERRUPT -> set upcall mask");
        assert_eq!(b.regs.rip, 0xFFFF_FFFF_8100_2000);
        assert_eq!((b.regs.cs, b.regs.ss), (FLAT_KERNEL_CS, FLAT_KERNEL_SS));
        assert_eq!(b.regs.rsp, b.frame.addr());
        // "TF, VM, RF and NT flags are cleared on trap. Also clear AC." IOPL and IF
        // are left for the exit path.
        assert_eq!(b.regs.rflags, 0x247 | rflags::IOPL);
        assert_eq!((b.regs.rcx, b.regs.r11), (0xC, 0x11));
        assert_eq!(b.exit, Exit::Sysret);
    }

    #[test]
    fn from_kernel_mode_stays_on_the_stack_and_clears_cs_rpl() {
        // create_bounce_frame: "In kernel context already: push new frame at
        // existing %rsp." / "andb $0xfc,UREGS_cs+8(%rsp)".
        let r = GuestRegs {
            rsp: 0xFFFF_C900_0000_3FF8,
            ..regs()
        };
        let b =
            create_bounce_frame(&r, &vcpu(GuestMode::Kernel, 1), &tb(Some(0x1234), false)).unwrap();
        assert!(!b.toggle_to_kernel);
        assert_eq!(b.frame.addr(), 0xFFFF_C900_0000_3FF0 - 64);
        let w = b.frame.words();
        assert_eq!(w.len(), 8);
        assert_eq!(w[2], 0x1234, "the error code between R11 and RIP");
        assert_eq!(
            w[4],
            0xe030 | (1 << 32),
            "CS RPL 0; saved mask in bits 32..39"
        );
        assert_eq!(w[5] & rflags::IF, 0, "IF = !saved_upcall_mask");
        assert_eq!(w[6], 0xFFFF_C900_0000_3FF8, "the unaligned interrupted RSP");
        assert_eq!(b.upcall_mask, 1);
    }

    #[test]
    fn upcall_mask_is_or_ed_not_set() {
        // "orb %ch,VCPUINFO_upcall_mask(%rax)".
        let b =
            create_bounce_frame(&regs(), &vcpu(GuestMode::User, 0x80), &tb(None, true)).unwrap();
        assert_eq!(b.upcall_mask, 0x81);
        assert_eq!(b.frame.words()[3] >> 32, 0x80);
        let b =
            create_bounce_frame(&regs(), &vcpu(GuestMode::User, 0x80), &tb(None, false)).unwrap();
        assert_eq!(b.upcall_mask, 0x80);
    }

    #[test]
    fn architectural_iopl_goes_into_the_frame() {
        // "cmovnzl VCPU_iopl(%rbx),%ecx # Bits 13:12 (EFLAGS.IOPL)".
        let mut v = vcpu(GuestMode::User, 0);
        v.iopl = 0x1000;
        let off = create_bounce_frame(&regs(), &v, &tb(None, false)).unwrap();
        assert_eq!(off.frame.words()[4] & rflags::IOPL, 0);
        v.architectural_iopl = true;
        let on = create_bounce_frame(&regs(), &v, &tb(None, false)).unwrap();
        assert_eq!(on.frame.words()[4] & rflags::IOPL, 0x1000);
    }

    #[test]
    fn reserved_rflags_bits_are_not_copied() {
        // "movl UREGS_eflags+8(%rsp),%eax": 32 bits.
        let r = GuestRegs {
            rflags: 0xFFFF_0000_0000_0002,
            ..regs()
        };
        let b = create_bounce_frame(&r, &vcpu(GuestMode::User, 0), &tb(None, false)).unwrap();
        assert_eq!(b.frame.words()[4], 0x202);
    }

    #[test]
    fn stacks_near_the_hypervisor_crash_the_domain() {
        // create_bounce_frame_bad_sp: HYPERVISOR_VIRT_START < sp < VIRT_END + 64.
        let bad = |sp: u64| {
            let r = GuestRegs { rsp: sp, ..regs() };
            create_bounce_frame(&r, &vcpu(GuestMode::Kernel, 0), &tb(None, false))
        };
        assert!(
            bad(HYPERVISOR_VIRT_START).is_err(),
            "non-canonical words below it"
        );
        assert_eq!(
            bad(HYPERVISOR_VIRT_START + 0x10),
            Err(BounceError::StackInHypervisorRange {
                sp: HYPERVISOR_VIRT_START + 0x10
            })
        );
        assert_eq!(
            bad(HYPERVISOR_VIRT_END + 0x38),
            Err(BounceError::StackInHypervisorRange {
                sp: HYPERVISOR_VIRT_END + 0x30
            }),
            "refused even though a 7-word frame would fit"
        );
        assert!(bad(HYPERVISOR_VIRT_END + 0x40).is_ok());
        assert_eq!(
            bad(0x0000_8000_0000_0020),
            Err(BounceError::NonCanonical {
                addr: 0x0000_8000_0000_0018
            })
        );
        // The frame ends just below the hole: fine.
        assert!(bad(0x0000_8000_0000_0000).is_ok());
    }

    #[test]
    fn no_handler_crashes_the_domain() {
        // create_bounce_frame_bad_bounce_ip.
        let t = TrapBounce {
            eip: 0,
            mask_events: false,
            error_code: None,
        };
        assert_eq!(
            create_bounce_frame(&regs(), &vcpu(GuestMode::User, 0), &t),
            Err(BounceError::NoHandler)
        );
    }

    #[test]
    fn failsafe_frame() {
        // load_segments: rsp-1 .. rsp-11.
        let v = vcpu(GuestMode::Kernel, 0);
        let r = GuestRegs {
            cs: 0xe033,
            rsp: 0xFFFF_C900_0000_4008,
            ..regs()
        };
        let sel = DataSelectors {
            ds: 0x2b,
            es: 0x2b,
            fs: 0x63,
            gs: 0x6b,
        };
        let b = failsafe_callback(&r, &sel, &v, 0, true).unwrap();
        assert_eq!(b.frame.addr(), 0xFFFF_C900_0000_4000 - 88);
        assert_eq!(
            b.frame.words(),
            &[
                0xC,
                0x11,
                0x2b,
                0x2b,
                0x63,
                0x6b,
                0x40_1000,
                0xe030,
                0x247 | rflags::TF | rflags::AC | rflags::NT | rflags::RF | rflags::IF,
                0xFFFF_C900_0000_4008,
                u64::from(USER_SS),
            ]
        );
        assert_eq!(
            b.upcall_mask, 1,
            "VGCF_failsafe_disables_events sets it to 1"
        );
        assert_eq!(b.regs.rip, 0, "the address is not checked");
        assert_eq!(b.regs.rflags & (rflags::IOPL | BOUNCE_CLEARED_RFLAGS), 0);
        let keep =
            failsafe_callback(&r, &sel, &vcpu(GuestMode::User, 0x42), 0x5000, false).unwrap();
        assert_eq!(keep.upcall_mask, 0x42);
        assert!(keep.toggle_to_kernel);
        let bad = GuestRegs {
            rsp: HYPERVISOR_VIRT_END + 0x20,
            ..r
        };
        assert_eq!(
            failsafe_callback(&bad, &sel, &v, 0x5000, false),
            Err(BounceError::NotGuestAddress {
                addr: HYPERVISOR_VIRT_END - 8
            })
        );
    }

    #[test]
    fn user_syscall_bounces_to_the_callback_with_df_clear() {
        // switch_to_kernel.
        let cbs = SyscallCallbacks {
            syscall: 0xFFFF_FFFF_8100_3000,
            syscall32: 0xFFFF_FFFF_8100_4000,
            disables_events: true,
        };
        let t = TrapTable::new();
        let v = vcpu(GuestMode::User, 0);
        let r11 = 0x246 | rflags::DF;
        let b = user_syscall(SyscallFrom::Long, 0x40_2002, r11, 0x7FF0, &cbs, &t, &v).unwrap();
        assert_eq!(b.regs.rip, 0xFFFF_FFFF_8100_3000);
        assert_eq!(b.regs.rflags & rflags::DF, 0);
        assert_eq!(b.upcall_mask, 1);
        let w = b.frame.words();
        assert_eq!(
            (w[2], w[3], w[4], w[5], w[6]),
            (0x40_2002, 0xe033, r11, 0x7FF0, 0xe02b)
        );
        let c = user_syscall(SyscallFrom::Compat, 0x8002, 0x202, 0x7FF0, &cbs, &t, &v).unwrap();
        assert_eq!(c.regs.rip, 0xFFFF_FFFF_8100_4000);
        assert_eq!(c.frame.words()[3], u64::from(FLAT_USER_CS32));
    }

    #[test]
    fn user_syscall_without_callback_is_ud_at_the_syscall() {
        // switch_to_kernel, syscall_no_callback: "subq $2, UREGS_rip".
        let cbs = SyscallCallbacks {
            syscall: 0,
            syscall32: 0,
            disables_events: false,
        };
        let mut t = TrapTable::new();
        t.set_trap(keel_hypercall::abi::pv::TrapInfo {
            vector: 6,
            flags: keel_hypercall::abi::pv::TI_IF,
            cs: 0xe033,
            pad: 0,
            address: 0x6000,
        })
        .unwrap();
        let v = vcpu(GuestMode::User, 0);
        let b = user_syscall(SyscallFrom::Long, 0x40_2002, 0x202, 0x7FF0, &cbs, &t, &v).unwrap();
        assert_eq!(b.regs.rip, 0x6000);
        assert_eq!(b.frame.words()[2], 0x40_2000);
        assert_eq!(b.upcall_mask, 1, "trap 6 has TI_IF");
        let none = TrapTable::new();
        assert_eq!(
            user_syscall(SyscallFrom::Long, 0x40_2002, 0x202, 0x7FF0, &cbs, &none, &v),
            Err(BounceError::NoHandler)
        );
    }

    #[test]
    fn stack_switch_only_fixes_the_rpl() {
        assert_eq!(stack_switch(0xe028, 0x1234), (0xe02b, 0x1234));
        assert_eq!(stack_switch(u64::MAX, 0), (u64::MAX, 0));
    }

    /// Stack pointers: arbitrary ones (mostly non-canonical), and canonical ones with
    /// the edges of the canonical halves, the hypervisor range and 0 weighted in.
    pub(crate) fn arb_sp() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0..(1u64 << 47),
            0xFFFF_8000_0000_0000u64..=u64::MAX,
            0u64..256,
            ((1u64 << 47) - 256)..((1u64 << 47) + 256),
            (HYPERVISOR_VIRT_START - 256)..(HYPERVISOR_VIRT_START + 256),
            (HYPERVISOR_VIRT_END - 256)..(HYPERVISOR_VIRT_END + 256),
            (u64::MAX - 256)..=u64::MAX,
        ]
    }

    fn arb_vcpu() -> impl Strategy<Value = BounceVcpu> {
        (
            any::<bool>(),
            arb_sp(),
            any::<u8>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(user, kernel_sp, upcall_mask, iopl, architectural_iopl)| {
                BounceVcpu {
                    mode: if user {
                        GuestMode::User
                    } else {
                        GuestMode::Kernel
                    },
                    kernel_sp,
                    upcall_mask,
                    iopl,
                    architectural_iopl,
                }
            })
    }

    fn arb_regs() -> impl Strategy<Value = GuestRegs> {
        (
            any::<u64>(),
            any::<u16>(),
            any::<u64>(),
            arb_sp(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(rip, cs, rflags, rsp, ss, rcx, r11)| GuestRegs {
                rip,
                cs,
                rflags,
                rsp,
                ss,
                rcx,
                r11,
            })
    }

    proptest! {
        #[test]
        fn bounce_is_total_and_writes_only_guest_addresses(
            regs in arb_regs(), vcpu in arb_vcpu(),
            eip in any::<u64>(), mask_events in any::<bool>(), ec in any::<Option<u32>>(),
        ) {
            let tb = TrapBounce { eip, mask_events, error_code: ec };
            if let Ok(b) = create_bounce_frame(&regs, &vcpu, &tb) {
                prop_assert_eq!(b.frame.words().len(), 7 + usize::from(ec.is_some()));
                prop_assert_eq!(b.frame.addr() % 8, 0);
                for i in 0..b.frame.words().len() {
                    prop_assert!(guest_addr_ok(b.frame.word_addr(i)));
                }
                let rf = b.frame.words()[b.frame.words().len() - 3];
                prop_assert_eq!(rf & rflags::IF != 0, vcpu.upcall_mask == 0);
                prop_assert_eq!(b.regs.rflags & BOUNCE_CLEARED_RFLAGS, 0);
                prop_assert_eq!(b.upcall_mask & 1 == 1, mask_events || vcpu.upcall_mask & 1 == 1);
            }
        }

        #[test]
        fn failsafe_is_total_and_writes_only_guest_addresses(
            regs in arb_regs(), vcpu in arb_vcpu(), eip in any::<u64>(),
            dis in any::<bool>(), s in any::<[u16; 4]>(),
        ) {
            let sel = DataSelectors { ds: s[0], es: s[1], fs: s[2], gs: s[3] };
            if let Ok(b) = failsafe_callback(&regs, &sel, &vcpu, eip, dis) {
                prop_assert_eq!(b.frame.words().len(), 11);
                for i in 0..11 {
                    prop_assert!(guest_addr_ok(b.frame.word_addr(i)));
                }
                prop_assert_eq!(b.regs.rip, eip);
            }
        }

        #[test]
        fn user_syscall_is_total(
            rcx in any::<u64>(), r11 in any::<u64>(), rsp in arb_sp(),
            cb in any::<(u64, u64, bool)>(), vcpu in arb_vcpu(), compat in any::<bool>(),
        ) {
            let cbs = SyscallCallbacks { syscall: cb.0, syscall32: cb.1, disables_events: cb.2 };
            let from = if compat { SyscallFrom::Compat } else { SyscallFrom::Long };
            let _ = user_syscall(from, rcx, r11, rsp, &cbs, &TrapTable::new(), &vcpu);
        }
    }
}
