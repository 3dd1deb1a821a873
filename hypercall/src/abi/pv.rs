//! The x86-64 PV vCPU ABI: the virtual IDT (`struct trap_info`), the `iret`
//! hypercall's stack frame (`struct iret_context`), the `VGCF_*` flags,
//! `set_segment_base`'s `SEGBASE_*`, the flat selectors Xen keeps in its
//! reserved part of every GDT, and where that part starts
//! (`xen/include/public/arch-x86/xen.h`, `arch-x86/xen-x86_64.h`).
//!
//! These are native (64-bit caller) layouts. A 32-bit PV guest's `trap_info`
//! (`compat_trap_info`, 8 bytes) and its `iret` frame differ; keel runs 64-bit PV
//! guests only, so they are not described here.
//!
//! `FLAT_KERNEL_CS`, `FLAT_KERNEL_SS` and `FLAT_KERNEL_DS` are defined next to the
//! start-of-day layout ([`super::start_info`]) and re-exported here.

pub use super::start_info::{FLAT_KERNEL_CS, FLAT_KERNEL_DS, FLAT_KERNEL_SS};

// --- The reserved GDT area (arch-x86/xen.h) ---

/// `FIRST_RESERVED_GDT_PAGE`: the guest's GDT is at most this many pages; the
/// next page of every GDT is Xen's.
pub const FIRST_RESERVED_GDT_PAGE: usize = 14;
/// `FIRST_RESERVED_GDT_BYTE`.
pub const FIRST_RESERVED_GDT_BYTE: usize = FIRST_RESERVED_GDT_PAGE * 4096;
/// `FIRST_RESERVED_GDT_ENTRY`: the first descriptor index that is Xen's (7168,
/// selector `0xe000`). `set_gdt` takes at most this many entries.
pub const FIRST_RESERVED_GDT_ENTRY: usize = FIRST_RESERVED_GDT_BYTE / 8;

// --- Flat selectors (xen-x86_64.h) ---
//
// Xen's header comments call these "GDT index 260..262", numbers from before the
// reserved area moved; the indices are 7168 + 4..6 (the selector shifted right by 3).

/// `FLAT_RING3_CS32`: ring-3 compatibility-mode code (index 7172).
pub const FLAT_RING3_CS32: u16 = 0xe023;
/// `FLAT_RING3_CS64`: ring-3 64-bit code (index 7174).
pub const FLAT_RING3_CS64: u16 = 0xe033;
/// `FLAT_RING3_DS32`: ring-3 flat data (index 7173).
pub const FLAT_RING3_DS32: u16 = 0xe02b;
/// `FLAT_RING3_DS64`: the null selector (64-bit mode needs no data segment).
pub const FLAT_RING3_DS64: u16 = 0x0000;
/// `FLAT_RING3_SS32`: the ring-3 data descriptor again.
pub const FLAT_RING3_SS32: u16 = 0xe02b;
/// `FLAT_RING3_SS64`: the ring-3 data descriptor again.
pub const FLAT_RING3_SS64: u16 = 0xe02b;

/// `FLAT_KERNEL_CS32` (= `FLAT_RING3_CS32`): the kernel runs in ring 3 too.
pub const FLAT_KERNEL_CS32: u16 = FLAT_RING3_CS32;
/// `FLAT_KERNEL_CS64` (= `FLAT_RING3_CS64`).
pub const FLAT_KERNEL_CS64: u16 = FLAT_RING3_CS64;
/// `FLAT_KERNEL_DS32`.
pub const FLAT_KERNEL_DS32: u16 = FLAT_RING3_DS32;
/// `FLAT_KERNEL_DS64`.
pub const FLAT_KERNEL_DS64: u16 = FLAT_RING3_DS64;
/// `FLAT_KERNEL_SS32`.
pub const FLAT_KERNEL_SS32: u16 = FLAT_RING3_SS32;
/// `FLAT_KERNEL_SS64`.
pub const FLAT_KERNEL_SS64: u16 = FLAT_RING3_SS64;

/// `FLAT_USER_CS32`: what Xen's `cstar_enter` records as a 32-bit process's CS.
pub const FLAT_USER_CS32: u16 = FLAT_RING3_CS32;
/// `FLAT_USER_CS64`.
pub const FLAT_USER_CS64: u16 = FLAT_RING3_CS64;
/// `FLAT_USER_CS` (= `FLAT_USER_CS64`).
pub const FLAT_USER_CS: u16 = FLAT_USER_CS64;
/// `FLAT_USER_DS32`.
pub const FLAT_USER_DS32: u16 = FLAT_RING3_DS32;
/// `FLAT_USER_DS64`.
pub const FLAT_USER_DS64: u16 = FLAT_RING3_DS64;
/// `FLAT_USER_DS` (= `FLAT_USER_DS64`).
pub const FLAT_USER_DS: u16 = FLAT_USER_DS64;
/// `FLAT_USER_SS32`.
pub const FLAT_USER_SS32: u16 = FLAT_RING3_SS32;
/// `FLAT_USER_SS64`.
pub const FLAT_USER_SS64: u16 = FLAT_RING3_SS64;
/// `FLAT_USER_SS` (= `FLAT_USER_SS64`).
pub const FLAT_USER_SS: u16 = FLAT_USER_SS64;

// The aliases start_info.rs defines agree with the header's definitions here.
const _: () = {
    assert!(FLAT_KERNEL_CS == FLAT_KERNEL_CS64);
    assert!(FLAT_KERNEL_SS == FLAT_KERNEL_SS64);
    assert!(FLAT_KERNEL_DS == FLAT_KERNEL_DS64);
};

// --- set_segment_base (xen-x86_64.h) ---

/// `SEGBASE_FS`: `set_segment_base` sets the FS base.
pub const SEGBASE_FS: u32 = 0;
/// `SEGBASE_GS_USER`: the GS base user mode will run with (the inactive one
/// while the guest kernel runs).
pub const SEGBASE_GS_USER: u32 = 1;
/// `SEGBASE_GS_KERNEL`: the GS base of the guest kernel (the active one).
pub const SEGBASE_GS_KERNEL: u32 = 2;
/// `SEGBASE_GS_USER_SEL`: load user mode's GS from the selector in
/// `base[15:0]`.
pub const SEGBASE_GS_USER_SEL: u32 = 3;

// --- vcpu_guest_context.flags (arch-x86/xen.h, xen-x86_64.h) ---

/// `VGCF_i387_valid`: `fpu_ctxt` holds a valid FPU state.
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// `VGCF_in_kernel`: the vCPU is in guest kernel mode.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_failsafe_disables_events`: entering the failsafe callback masks events
/// (`CALLBACKF_mask_events` on `CALLBACKTYPE_failsafe`).
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `VGCF_syscall_disables_events`: entering the syscall callback masks events
/// (`CALLBACKF_mask_events` on `CALLBACKTYPE_syscall`).
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `VGCF_online`: the vCPU is up.
pub const VGCF_ONLINE: u64 = 1 << 5;
/// `VGCF_in_syscall` (x86-64 only), in [`IretContext::flags`]: the guest is
/// returning from a `syscall`; Xen may return with SYSRET and discards the saved
/// RCX, R11, CS and SS.
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

// --- trap_info (arch-x86/xen.h) ---

/// `TI_GET_DPL`'s mask in [`TrapInfo::flags`]: the lowest privilege level that
/// may raise the vector with `int $n` (0: nobody, 1 or 2: the guest kernel,
/// 3: everyone). The header's comment says "0-3: privilege level", but the field
/// is bits 0..1.
pub const TI_DPL_MASK: u8 = 3;
/// `TI_SET_IF`'s bit in [`TrapInfo::flags`]: entering the handler masks events
/// (sets `evtchn_upcall_mask`), as an interrupt gate clears IF. The header calls
/// it bit "4"; it is the value 4, bit 2.
pub const TI_IF: u8 = 1 << 2;

abi_struct! {
    /// `struct trap_info`, native: one entry of a PV vCPU's virtual IDT. An array
    /// of these, ended by one whose `address` is 0, is `set_trap_table`'s argument.
    #[repr(C)]
    pub struct TrapInfo(16) {
        /// IN: the vector (0..=255) this entry is for.
        pub vector: u8 => 0,
        /// IN: [`TI_DPL_MASK`] and [`TI_IF`].
        pub flags: u8 => 1,
        /// IN: the code selector. Ignored for 64-bit guests' bounces (Xen always
        /// enters with `FLAT_KERNEL_CS`), but stored with its RPL raised to 3.
        pub cs: u16 => 2,
        /// Padding the C compiler inserts before `address`.
        pub pad: u32 => 4,
        /// IN: the handler's address (canonical); 0 ends the array.
        pub address: u64 => 8,
    }
}

impl TrapInfo {
    /// `TI_GET_DPL`.
    #[must_use]
    pub const fn dpl(&self) -> u8 {
        self.flags & TI_DPL_MASK
    }

    /// `TI_GET_IF`: whether entering the handler masks events.
    #[must_use]
    pub const fn masks_events(&self) -> bool {
        self.flags & TI_IF != 0
    }
}

abi_struct! {
    /// `struct iret_context`: what a 64-bit PV guest leaves on its stack for the
    /// `iret` hypercall. The guest pushes `flags` and the hardware-style frame
    /// (`rip` .. `ss`), then jumps to the `iret` entry of the hypercall page, which
    /// pushes RCX, R11 and RAX and makes the hypercall; Xen reads this structure at
    /// the RSP of the `syscall`.
    #[repr(C)]
    pub struct IretContext(72) {
        /// IN: RAX to return with (the hypercall's "return value").
        pub rax: u64 => 0,
        /// IN: R11 to return with, unless `flags` has [`VGCF_IN_SYSCALL`].
        pub r11: u64 => 8,
        /// IN: RCX to return with, unless `flags` has [`VGCF_IN_SYSCALL`].
        pub rcx: u64 => 16,
        /// IN: [`VGCF_IN_SYSCALL`] or 0.
        pub flags: u64 => 24,
        /// IN: RIP.
        pub rip: u64 => 32,
        /// IN: CS; RPL 3 returns to user mode, RPL 0..2 to kernel mode.
        pub cs: u64 => 40,
        /// IN: RFLAGS; its IF becomes the inverse of `evtchn_upcall_mask`.
        pub rflags: u64 => 48,
        /// IN: RSP.
        pub rsp: u64 => 56,
        /// IN: SS.
        pub ss: u64 => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_info_bytes() {
        let ti = TrapInfo {
            vector: 14,
            flags: TI_IF | 3,
            cs: FLAT_KERNEL_CS,
            pad: 0,
            address: 0xFFFF_FFFF_8100_1230,
        };
        let b = ti.to_bytes();
        assert_eq!(b[0], 14);
        assert_eq!(b[1], 7);
        assert_eq!(b[2..4], 0xe033u16.to_le_bytes());
        assert_eq!(b[4..8], [0; 4]);
        assert_eq!(b[8..16], 0xFFFF_FFFF_8100_1230u64.to_le_bytes());
        assert_eq!(TrapInfo::from_bytes(&b), ti);
        assert_eq!(ti.dpl(), 3);
        assert!(ti.masks_events());
        assert!(!TrapInfo::default().masks_events());
    }

    #[test]
    fn iret_context_is_nine_words_top_of_stack_first() {
        let words: [u64; 9] = core::array::from_fn(|i| 0x1111 * (i as u64 + 1));
        let mut b = [0u8; 72];
        for (w, chunk) in words.iter().zip(b.as_chunks_mut::<8>().0) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let c = IretContext::from_bytes(&b);
        assert_eq!(
            [
                c.rax, c.r11, c.rcx, c.flags, c.rip, c.cs, c.rflags, c.rsp, c.ss
            ],
            words
        );
        assert_eq!(c.to_bytes(), b);
    }

    #[test]
    fn selectors_and_reserved_area() {
        assert_eq!(FIRST_RESERVED_GDT_ENTRY, 7168);
        assert_eq!(usize::from(0xe000u16 >> 3), FIRST_RESERVED_GDT_ENTRY);
        for (sel, index) in [
            (FLAT_RING3_CS32, 7172),
            (FLAT_RING3_DS32, 7173),
            (FLAT_RING3_CS64, 7174),
        ] {
            assert_eq!(usize::from(sel >> 3), index);
            assert_eq!(sel & 3, 3, "every flat selector has RPL 3");
            assert_eq!(sel & 4, 0, "and is in the GDT");
        }
        assert_eq!(FLAT_USER_CS, FLAT_KERNEL_CS);
        assert_eq!(FLAT_USER_SS, FLAT_KERNEL_SS);
        assert_eq!(VGCF_IN_SYSCALL, 0x100);
        assert_eq!(
            [
                SEGBASE_FS,
                SEGBASE_GS_USER,
                SEGBASE_GS_KERNEL,
                SEGBASE_GS_USER_SEL
            ],
            [0, 1, 2, 3]
        );
    }
}

abi_struct! {
    /// `struct cpu_user_regs`, x86_64 (`arch-x86/xen-x86_64.h`): a PV vCPU's
    /// registers in a [`VcpuGuestContext`].
    #[repr(C)]
    pub struct CpuUserRegs(200) {
        pub r15: u64 => 0,
        pub r14: u64 => 8,
        pub r13: u64 => 16,
        pub r12: u64 => 24,
        pub rbp: u64 => 32,
        pub rbx: u64 => 40,
        pub r11: u64 => 48,
        pub r10: u64 => 56,
        pub r9: u64 => 64,
        pub r8: u64 => 72,
        pub rax: u64 => 80,
        pub rcx: u64 => 88,
        pub rdx: u64 => 96,
        pub rsi: u64 => 104,
        pub rdi: u64 => 112,
        /// Private to Xen.
        pub error_code: u32 => 120,
        /// Private to Xen.
        pub entry_vector: u32 => 124,
        pub rip: u64 => 128,
        pub cs: u16 => 136,
        pub pad0: u16 => 138,
        pub saved_upcall_mask: u8 => 140,
        pub pad1: [u8; 3] => 141,
        pub rflags: u64 => 144,
        pub rsp: u64 => 152,
        pub ss: u16 => 160,
        pub pad2: [u16; 3] => 162,
        pub es: u16 => 168,
        pub pad3: [u16; 3] => 170,
        pub ds: u16 => 176,
        pub pad4: [u16; 3] => 178,
        pub fs: u16 => 184,
        pub pad5: [u16; 3] => 186,
        pub gs: u16 => 192,
        pub pad6: [u16; 3] => 194,
    }
}

abi_struct! {
    /// `struct vcpu_guest_context`, x86_64 (`arch-x86/xen.h`): a PV vCPU's
    /// whole state, `VCPUOP_initialise`'s argument for a PV domain.
    #[repr(C)]
    pub struct VcpuGuestContext(5168) {
        /// FXSAVE image.
        pub fpu_ctxt: [u8; 512] => 0,
        /// `VGCF_*`.
        pub flags: u64 => 512,
        pub user_regs: CpuUserRegs => 520,
        /// The virtual IDT.
        pub trap_ctxt: [TrapInfo; 256] => 720,
        pub ldt_base: u64 => 4816,
        pub ldt_ents: u64 => 4824,
        /// Machine frames of the GDT.
        pub gdt_frames: [u64; 16] => 4832,
        pub gdt_ents: u64 => 4960,
        pub kernel_ss: u64 => 4968,
        pub kernel_sp: u64 => 4976,
        /// CR0..CR7; CR3 is the kernel L4 (`xen_pfn_to_cr3`: its machine
        /// frame shifted by 12), CR1 the user L4 on x86_64.
        pub ctrlreg: [u64; 8] => 4984,
        pub debugreg: [u64; 8] => 5048,
        pub event_callback_eip: u64 => 5112,
        pub failsafe_callback_eip: u64 => 5120,
        pub syscall_callback_eip: u64 => 5128,
        /// `VMASST_TYPE_*` bits.
        pub vm_assist: u64 => 5136,
        pub fs_base: u64 => 5144,
        pub gs_base_kernel: u64 => 5152,
        pub gs_base_user: u64 => 5160,
    }
}
