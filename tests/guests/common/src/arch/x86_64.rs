//! Long mode (pvh64): Xen's x86-64 hypercall convention and the 64-bit exception
//! frame.
//!
//! Hypercalls (`xen/include/public/arch-x86/xen-x86_64.h`): number in `rax`,
//! arguments in `rdi, rsi, rdx, r10, r8` (`r9` sixth), result in `rax`. Xen's debug
//! builds scribble over the argument registers of an HVM caller on return, so they
//! are declared clobbered.
//!
//! Exceptions: the IDT's 64-bit interrupt gates point at 32 small stubs that push a
//! dummy error code where the CPU pushes none, then the vector, and jump to one
//! common stub. That one saves every general register, aligns the stack, and calls
//! [`crate::trap::dispatch`] with a pointer to the [`Frame`] it built; whatever the
//! handler changed in the frame (the return address) takes effect on `iretq`.

use core::arch::{asm, global_asm};

/// The guest's name.
pub const GUEST_NAME: &str = "pvh64";

/// The prefix of the lines printed without a hypervisor (on COM1).
pub const BARE_PREFIX: &str = "pvh64: ";

/// What the mode is called in check names and messages.
pub const MODE_NAME: &str = "long mode";

unsafe extern "C" {
    /// The TSC the entry stub read as its very first instruction (pvh64's
    /// `pvh_start32`, in `.data`).
    static pvh_entry_tsc: u64;
}

/// The TSC at the guest's first instruction.
pub fn entry_tsc() -> u64 {
    // SAFETY: a static u64 the entry stub wrote once, before any Rust code ran.
    unsafe { core::ptr::read_volatile(&raw const pvh_entry_tsc) }
}

/// Calls the hypercall-page stub at `entry` with five arguments; returns `rax`.
///
/// # Safety
///
/// `entry` must be an entry of a hypercall page the hypervisor has filled in. The
/// arguments are passed on unchanged: any that the hypercall treats as a pointer
/// the hypervisor may write through, so they must not point at memory Rust holds a
/// shared reference to. (Bad pointers are fine, and are the point of some checks:
/// the hypervisor must reject them.)
pub unsafe fn call_hypercall_page(entry: usize, args: [usize; 5]) -> isize {
    let ret: usize;
    // SAFETY: per this function's contract the target is a hypercall stub (`mov
    // $nr, %eax; vmcall; ret` in Xen); it returns with the registers listed here
    // changed at most.
    unsafe {
        asm!(
            "call rax",
            inlateout("rax") entry => ret,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            lateout("rcx") _,
            lateout("r9") _,
            lateout("r11") _,
        );
    }
    ret as isize
}

/// Executes `vmcall`/`vmmcall` directly with `rax = nr` (bypassing the hypercall
/// page, to reach numbers the page has no entry for); returns `rax`.
///
/// # Safety
///
/// As [`call_hypercall_page`] for the arguments. On a CPU without a hypervisor the
/// instruction raises #UD.
pub unsafe fn hypercall_direct(vendor: super::Vendor, nr: u64, args: [usize; 5]) -> isize {
    let ret: usize;
    match vendor {
        // SAFETY: a hypercall; the hypervisor changes at most these registers.
        super::Vendor::Intel => unsafe {
            asm!(
                "vmcall",
                inlateout("rax") nr as usize => ret,
                inlateout("rdi") args[0] => _,
                inlateout("rsi") args[1] => _,
                inlateout("rdx") args[2] => _,
                inlateout("r10") args[3] => _,
                inlateout("r8") args[4] => _,
                lateout("rcx") _,
                lateout("r9") _,
                lateout("r11") _,
                options(nostack),
            );
        },
        // SAFETY: as above.
        super::Vendor::Amd => unsafe {
            asm!(
                "vmmcall",
                inlateout("rax") nr as usize => ret,
                inlateout("rdi") args[0] => _,
                inlateout("rsi") args[1] => _,
                inlateout("rdx") args[2] => _,
                inlateout("r10") args[3] => _,
                inlateout("r8") args[4] => _,
                lateout("rcx") _,
                lateout("r9") _,
                lateout("r11") _,
                options(nostack),
            );
        },
    }
    ret as isize
}

/// `sti; vmcall; cli` (or `vmmcall`): a hypercall made with interrupts enabled for
/// exactly its duration, for `SCHEDOP_block` and `SCHEDOP_poll`.
///
/// The `sti` shadow covers the hypercall instruction, so no interrupt is taken
/// between enabling and trapping: an event that became pending before is seen by
/// the hypervisor (which returns at once, `local_events_need_delivery` in Xen) and
/// its upcall is delivered at the `cli`, after the hypercall returns. That closes
/// the lost-wakeup window a separate `sti` before the call would open.
///
/// # Safety
///
/// As [`hypercall_direct`]; and the upcall vector's gate must be installed (see
/// [`crate::trap`]), since an interrupt will be taken.
pub unsafe fn hypercall_sti_cli(vendor: super::Vendor, nr: u64, args: [usize; 5]) -> isize {
    let ret: usize;
    match vendor {
        // SAFETY: a hypercall; the hypervisor changes at most these registers, and
        // the interrupt handler saves and restores everything it touches.
        super::Vendor::Intel => unsafe {
            asm!(
                "sti",
                "vmcall",
                "cli",
                inlateout("rax") nr as usize => ret,
                inlateout("rdi") args[0] => _,
                inlateout("rsi") args[1] => _,
                inlateout("rdx") args[2] => _,
                inlateout("r10") args[3] => _,
                inlateout("r8") args[4] => _,
                lateout("rcx") _,
                lateout("r9") _,
                lateout("r11") _,
            );
        },
        // SAFETY: as above.
        super::Vendor::Amd => unsafe {
            asm!(
                "sti",
                "vmmcall",
                "cli",
                inlateout("rax") nr as usize => ret,
                inlateout("rdi") args[0] => _,
                inlateout("rsi") args[1] => _,
                inlateout("rdx") args[2] => _,
                inlateout("r10") args[3] => _,
                inlateout("r8") args[4] => _,
                lateout("rcx") _,
                lateout("r9") _,
                lateout("r11") _,
            );
        },
    }
    ret as isize
}

/// One `mov` store of 8 bytes to `addr`.
///
/// # Safety
///
/// As [`mmio_read`]; the store must not overwrite memory Rust uses.
pub unsafe fn mmio_write64(addr: usize, value: u64) {
    // SAFETY: per the contract.
    unsafe {
        asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) value, options(nostack, preserves_flags));
    }
}

/// One `mov` load of 1, 2, 4 or 8 bytes from `addr`, zero-extended.
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
            4 => {
                let v: u32;
                asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags));
                u64::from(v)
            }
            _ => {
                let v: u64;
                asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags));
                v
            }
        }
    }
}

/// The MMIO access widths this mode can do in one instruction.
pub const MMIO_WIDTHS: &[u32] = &[1, 2, 4, 8];

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
/// `value` must point at page tables that map everything the guest is using.
pub unsafe fn write_cr3(value: usize) {
    // SAFETY: per the contract.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects (ring 0).
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The `IA32_EFER` MSR (SDM Vol. 4 Table 2-2).
pub const MSR_EFER: u32 = 0xC000_0080;

/// EFER (LME, LMA, NXE...).
pub fn read_efer() -> u64 {
    // SAFETY: EFER exists on every CPU that runs in long mode, which this code
    // does; reading it has no side effects.
    unsafe { super::rdmsr_raw(MSR_EFER) }
}

/// The stack pointer (which stack the caller runs on says which vCPU it is:
/// `crate::smp`).
pub fn stack_pointer() -> usize {
    let v: usize;
    // SAFETY: copies RSP into a register; nothing else happens.
    unsafe { asm!("mov {}, rsp", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The current code segment selector (for IDT gates).
pub fn read_cs() -> u16 {
    let v: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The current stack segment selector (pv64 checks the one it was started with).
pub fn read_ss() -> u16 {
    let v: u16;
    // SAFETY: reading SS has no side effects, at any privilege level.
    unsafe { asm!("mov {:x}, ss", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// DS, ES, FS and GS, in that order (unprivileged reads).
pub fn read_data_selectors() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects, at any privilege level.
    unsafe {
        asm!(
            "mov {0:x}, ds",
            "mov {1:x}, es",
            "mov {2:x}, fs",
            "mov {3:x}, gs",
            out(reg) ds,
            out(reg) es,
            out(reg) fs,
            out(reg) gs,
            options(nomem, nostack, preserves_flags),
        )
    };
    [ds, es, fs, gs]
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
        base: u64,
    }
    let p = Pointer {
        limit,
        base: base as u64,
    };
    // SAFETY: per the contract.
    unsafe { asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags)) };
}

/// Size of one IDT gate.
pub const GATE_SIZE: usize = 16;

/// A 64-bit interrupt gate (type 0xE, present, DPL 0, no IST) to `handler`.
pub fn gate(handler: usize, cs: u16) -> [u8; GATE_SIZE] {
    let h = handler as u64;
    let mut g = [0u8; GATE_SIZE];
    g[0..2].copy_from_slice(&(h as u16).to_le_bytes());
    g[2..4].copy_from_slice(&cs.to_le_bytes());
    g[5] = 0x8E;
    g[6..8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((h >> 32) as u32).to_le_bytes());
    g
}

/// The registers the common exception stub saves, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    /// Pushed by the per-vector stub.
    pub vector: u64,
    /// Pushed by the CPU, or 0 by the stub.
    pub error_code: u64,
    /// The interrupted instruction (or the next one, for traps).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl Frame {
    /// The exception vector.
    pub fn vector(&self) -> u32 {
        self.vector as u32
    }
    /// The error code (0 if the exception has none).
    pub fn error_code(&self) -> u64 {
        self.error_code
    }
    /// Where the exception happened.
    pub fn ip(&self) -> u64 {
        self.rip
    }
    /// Resumes `bytes` further on.
    pub fn skip(&mut self, bytes: u64) {
        self.rip += bytes;
    }
}

unsafe extern "C" {
    /// The 32 exception stubs' addresses, then the event upcall's, the fixed
    /// IPI's and the spurious vector's (`global_asm!` below).
    static pvh_trap_table: [u64; 35];
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
    push rax
    push rcx
    push rdx
    push rbx
    push rbp
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rbx, rsp
    and rsp, -16
    mov rdi, rbx
    call {dispatch}
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rbp
    pop rbx
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

    .popsection
    .pushsection .rodata.pvh_trap_table, "a"
    .balign 8
    .globl pvh_trap_table
pvh_trap_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad pvh_trap_\v
    .endr
    .quad pvh_trap_{upcall}
    .quad pvh_trap_{ipi}
    .quad pvh_trap_{spurious}
    .popsection
"#,
    dispatch = sym crate::trap::dispatch,
    upcall = const crate::trap::UPCALL_VECTOR,
    ipi = const crate::trap::IPI_VECTOR,
    spurious = const crate::trap::SPURIOUS_VECTOR,
);
