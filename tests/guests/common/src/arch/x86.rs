//! 32-bit protected mode (pvh32): Xen's x86-32 hypercall convention and the 32-bit
//! exception frame.
//!
//! Hypercalls (`xen/include/public/arch-x86/xen-x86_32.h`): number in `eax`,
//! arguments in `ebx, ecx, edx, esi, edi` (`ebp` sixth), result in `eax`. LLVM
//! reserves `esi` (its base pointer on x86-32) and may use `ebx`, so the asm saves
//! both by hand and loads all five arguments from a small array whose address is the
//! one operand; the array's sixth slot is the hypercall-page entry to call (or the
//! number, for a direct `vmcall`).
//!
//! Exceptions: 8-byte 32-bit interrupt gates, per-vector stubs as in long mode, and
//! a common stub that `pushad`s, aligns the stack and calls
//! [`crate::trap::dispatch`] (cdecl) with a pointer to the [`Frame`].

use core::arch::{asm, global_asm};

/// The guest's name.
pub const GUEST_NAME: &str = "pvh32";

/// The prefix of the lines printed without a hypervisor (on COM1).
pub const BARE_PREFIX: &str = "pvh32: ";

/// What the mode is called in check names and messages.
pub const MODE_NAME: &str = "protected mode";

/// Calls the hypercall-page stub at `entry` with five arguments; returns `eax`.
///
/// # Safety
///
/// As for the long-mode version: `entry` must be an entry of a filled-in hypercall
/// page, and pointer arguments must not point at memory Rust holds a shared
/// reference to.
pub unsafe fn call_hypercall_page(entry: usize, args: [usize; 5]) -> isize {
    let block: [usize; 6] = [args[0], args[1], args[2], args[3], args[4], entry];
    let ret: usize;
    // SAFETY: per the contract the target is a hypercall stub; ebx and esi are
    // restored, the other registers it may change are declared.
    unsafe {
        asm!(
            "push ebx",
            "push esi",
            "mov ebx, [eax]",
            "mov ecx, [eax + 4]",
            "mov edx, [eax + 8]",
            "mov esi, [eax + 12]",
            "mov edi, [eax + 16]",
            "call dword ptr [eax + 20]",
            "pop esi",
            "pop ebx",
            inlateout("eax") block.as_ptr() as usize => ret,
            lateout("ecx") _,
            lateout("edx") _,
            lateout("edi") _,
        );
    }
    ret as isize
}

/// Executes `vmcall`/`vmmcall` directly with `eax = nr` (truncated to 32 bits, the
/// width of the register in this mode); returns `eax`.
///
/// # Safety
///
/// As [`call_hypercall_page`] for the arguments.
pub unsafe fn hypercall_direct(vendor: super::Vendor, nr: u64, args: [usize; 5]) -> isize {
    let block: [usize; 6] = [args[0], args[1], args[2], args[3], args[4], nr as usize];
    let ret: usize;
    match vendor {
        // SAFETY: a hypercall; ebx and esi are restored, the rest declared.
        super::Vendor::Intel => unsafe {
            asm!(
                "push ebx",
                "push esi",
                "mov ebx, [eax]",
                "mov ecx, [eax + 4]",
                "mov edx, [eax + 8]",
                "mov esi, [eax + 12]",
                "mov edi, [eax + 16]",
                "mov eax, [eax + 20]",
                "vmcall",
                "pop esi",
                "pop ebx",
                inlateout("eax") block.as_ptr() as usize => ret,
                lateout("ecx") _,
                lateout("edx") _,
                lateout("edi") _,
            );
        },
        // SAFETY: as above.
        super::Vendor::Amd => unsafe {
            asm!(
                "push ebx",
                "push esi",
                "mov ebx, [eax]",
                "mov ecx, [eax + 4]",
                "mov edx, [eax + 8]",
                "mov esi, [eax + 12]",
                "mov edi, [eax + 16]",
                "mov eax, [eax + 20]",
                "vmmcall",
                "pop esi",
                "pop ebx",
                inlateout("eax") block.as_ptr() as usize => ret,
                lateout("ecx") _,
                lateout("edx") _,
                lateout("edi") _,
            );
        },
    }
    ret as isize
}

/// One `mov` load of 1, 2 or 4 bytes from `addr`, zero-extended.
///
/// # Safety
///
/// `addr` must be mapped (or the fault expected); reading MMIO has device side
/// effects.
pub unsafe fn mmio_read(addr: usize, bytes: u32) -> u64 {
    // SAFETY: per the contract.
    unsafe {
        match bytes {
            1 => {
                let v: u8;
                asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, preserves_flags));
                u64::from(v)
            }
            2 => {
                let v: u16;
                asm!("mov {v:x}, word ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags));
                u64::from(v)
            }
            _ => {
                let v: u32;
                asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags));
                u64::from(v)
            }
        }
    }
}

/// The MMIO access widths this mode can do in one general-register instruction (a
/// 64-bit load needs long mode, or MMX/SSE, which the guest does not use).
pub const MMIO_WIDTHS: &[u32] = &[1, 2, 4];

/// CR0.
pub fn read_cr0() -> usize {
    let v: usize;
    // SAFETY: reading CR0 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR3.
pub fn read_cr3() -> usize {
    let v: usize;
    // SAFETY: reading CR3 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads CR3, flushing the TLB.
///
/// # Safety
///
/// With paging on, `value` must point at tables that map everything in use.
pub unsafe fn write_cr3(value: usize) {
    // SAFETY: per the contract.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Turns on PAE paging with the page-directory-pointer table at `pdpt`
/// (CR4.PAE, CR3, then CR0.PG; SDM Vol. 3A §4.1.2, §4.4.1).
///
/// # Safety
///
/// The tables must identity-map the code, stack and data in use, or the next
/// instruction fetch faults.
pub unsafe fn enable_pae_paging(pdpt: usize) {
    // SAFETY: per the contract.
    unsafe {
        asm!(
            "mov {t}, cr4",
            "or {t}, 0x20",
            "mov cr4, {t}",
            "mov cr3, {p}",
            "mov {t}, cr0",
            "or {t}, 0x80000000",
            "mov cr0, {t}",
            "jmp 2f",
            "2:",
            t = out(reg) _,
            p = in(reg) pdpt,
            options(nostack),
        );
    }
}

/// CR0.PG.
pub fn paging_enabled() -> bool {
    read_cr0() & 0x8000_0000 != 0
}

/// The current code segment selector (for IDT gates).
pub fn read_cs() -> u16 {
    let v: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads the IDT register.
///
/// # Safety
///
/// `base..base+limit` must hold valid gates for every vector that can occur (or
/// the limit be 0 on purpose, to triple-fault).
pub unsafe fn lidt(base: usize, limit: u16) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u32,
    }
    let p = Pointer {
        limit,
        base: base as u32,
    };
    // SAFETY: per the contract.
    unsafe { asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags)) };
}

/// Size of one IDT gate.
pub const GATE_SIZE: usize = 8;

/// A 32-bit interrupt gate (type 0xE, present, DPL 0) to `handler`.
pub fn gate(handler: usize, cs: u16) -> [u8; GATE_SIZE] {
    let h = handler as u32;
    let mut g = [0u8; GATE_SIZE];
    g[0..2].copy_from_slice(&(h as u16).to_le_bytes());
    g[2..4].copy_from_slice(&cs.to_le_bytes());
    g[5] = 0x8E;
    g[6..8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
    g
}

/// The registers the common exception stub saves (`pushad` order), lowest address
/// first.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub edi: u32,
    pub esi: u32,
    pub ebp: u32,
    /// ESP as `pushad` saw it (ignored by `popad`).
    pub esp_pushad: u32,
    pub ebx: u32,
    pub edx: u32,
    pub ecx: u32,
    pub eax: u32,
    /// Pushed by the per-vector stub.
    pub vector: u32,
    /// Pushed by the CPU, or 0 by the stub.
    pub error_code: u32,
    /// The interrupted instruction (or the next one, for traps).
    pub eip: u32,
    pub cs: u32,
    pub eflags: u32,
}

impl Frame {
    /// The exception vector.
    pub fn vector(&self) -> u32 {
        self.vector
    }
    /// The error code (0 if the exception has none).
    pub fn error_code(&self) -> u64 {
        u64::from(self.error_code)
    }
    /// Where the exception happened.
    pub fn ip(&self) -> u64 {
        u64::from(self.eip)
    }
    /// Resumes `bytes` further on.
    pub fn skip(&mut self, bytes: u64) {
        self.eip = self.eip.wrapping_add(bytes as u32);
    }
}

unsafe extern "C" {
    /// The 32 exception stubs' addresses, then the event upcall's, the fixed
    /// IPI's and the spurious vector's (`global_asm!` below).
    static pvh_trap_table: [u32; 35];
}

/// The address of vector `v`'s entry stub (`v` < 32).
pub fn trap_stub(v: usize) -> usize {
    assert!(v < 32);
    // SAFETY: a read-only table the assembler filled in at link time.
    (unsafe { pvh_trap_table[v] }) as usize
}

/// The address of the entry stub of [`crate::trap::UPCALL_VECTOR`].
pub fn upcall_stub() -> usize {
    // SAFETY: as in `trap_stub`; entry 32 is the upcall vector's stub.
    (unsafe { pvh_trap_table[32] }) as usize
}

/// The address of the entry stub of [`crate::trap::IPI_VECTOR`].
pub fn ipi_stub() -> usize {
    // SAFETY: as in `trap_stub`; entry 33 is the IPI vector's stub.
    (unsafe { pvh_trap_table[33] }) as usize
}

/// The address of the entry stub of [`crate::trap::SPURIOUS_VECTOR`].
pub fn spurious_stub() -> usize {
    // SAFETY: as in `trap_stub`; entry 34 is the spurious vector's stub.
    (unsafe { pvh_trap_table[34] }) as usize
}

// Per-vector stubs: vectors 8, 10-14, 17, 21, 29 and 30 come with an error code.
global_asm!(
    r#"
    .pushsection .text.pvh_traps, "ax"
    .macro pvh_trap_noerr v
    .balign 16
pvh_trap_\v:
    push 0
    push \v
    jmp pvh_trap_common
    .endm
    .macro pvh_trap_err v
    .balign 16
pvh_trap_\v:
    push \v
    jmp pvh_trap_common
    .endm

    pvh_trap_noerr 0
    pvh_trap_noerr 1
    pvh_trap_noerr 2
    pvh_trap_noerr 3
    pvh_trap_noerr 4
    pvh_trap_noerr 5
    pvh_trap_noerr 6
    pvh_trap_noerr 7
    pvh_trap_err 8
    pvh_trap_noerr 9
    pvh_trap_err 10
    pvh_trap_err 11
    pvh_trap_err 12
    pvh_trap_err 13
    pvh_trap_err 14
    pvh_trap_noerr 15
    pvh_trap_noerr 16
    pvh_trap_err 17
    pvh_trap_noerr 18
    pvh_trap_noerr 19
    pvh_trap_noerr 20
    pvh_trap_err 21
    pvh_trap_noerr 22
    pvh_trap_noerr 23
    pvh_trap_noerr 24
    pvh_trap_noerr 25
    pvh_trap_noerr 26
    pvh_trap_noerr 27
    pvh_trap_noerr 28
    pvh_trap_err 29
    pvh_trap_err 30
    pvh_trap_noerr 31
    pvh_trap_noerr {upcall}
    pvh_trap_noerr {ipi}
    pvh_trap_noerr {spurious}

pvh_trap_common:
    pushad
    mov ebx, esp
    and esp, -16
    sub esp, 12
    push ebx
    call {dispatch}
    mov esp, ebx
    popad
    add esp, 8
    iretd
    .popsection

    .pushsection .rodata.pvh_trap_table, "a"
    .balign 4
    .globl pvh_trap_table
pvh_trap_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long pvh_trap_\v
    .endr
    .long pvh_trap_{upcall}
    .long pvh_trap_{ipi}
    .long pvh_trap_{spurious}
    .popsection
"#,
    dispatch = sym crate::trap::dispatch,
    upcall = const crate::trap::UPCALL_VECTOR,
    ipi = const crate::trap::IPI_VECTOR,
    spurious = const crate::trap::SPURIOUS_VECTOR,
);
