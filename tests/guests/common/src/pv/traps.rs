//! pv64's `mode=traps`: its own virtual IDT (`set_trap_table`), exceptions
//! bounced to it, and the `iret` hypercall back.
//!
//! The guest installs handlers for #DE (0), #BP (3), #UD (6), #NM (7), #GP (13), #PF (14)
//! and the software interrupt 0x80 (DPL 3, so `int $0x80` reaches it). Each
//! handler is a stub that records what the frame says (vector, error code, the
//! interrupted RIP, CS with the saved upcall mask in bits 32..39, RFLAGS),
//! replaces the frame's RIP with the test's resume address, and returns with
//! Xen's `iret` (`pushq $0; jmp hypercall_page + 23 * 32`, as Linux's
//! `xen_iret`). The frame a 64-bit PV kernel gets (`xen.h`, "Exceptions"):
//! RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS, lowest address first.
//!
//! Each check runs one instruction that faults, and looks at what the handler
//! saw: the right vector, the error code Xen gives a kernel-mode fault (a page
//! fault's U bit clear), RIP at the faulting instruction (or after `int $n`).
//! Then it ends the table (`set_trap_table(NULL)`) and checks that a `ud2`
//! without a handler is what it always was: the domain's end (not run here; see
//! `mode=fault`).
//!
//! # Invariants and hazards
//! - The stubs touch only RAX (saved and restored on the stack), RCX and R11
//!   (popped back from the frame) and the statics below; the `iret` context
//!   carries RAX, RCX and R11 back.
//! - One check at a time, on vCPU 0: the statics are not per-vCPU.

use core::sync::atomic::{AtomicU64, Ordering};

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::pv::{FLAT_KERNEL_CS, TrapInfo};

use crate::checks::Checks;
use crate::hypercall;
use crate::paging::Page;

/// What the last handler saw.
#[unsafe(no_mangle)]
static PV64_TRAP_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
#[unsafe(no_mangle)]
static PV64_TRAP_EC: AtomicU64 = AtomicU64::new(u64::MAX);
#[unsafe(no_mangle)]
static PV64_TRAP_RIP: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_TRAP_CS: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_TRAP_RFLAGS: AtomicU64 = AtomicU64::new(0);
/// How many handlers ran.
#[unsafe(no_mangle)]
static PV64_TRAP_COUNT: AtomicU64 = AtomicU64::new(0);
/// Where a handler sends the guest back to.
#[unsafe(no_mangle)]
static PV64_TRAP_RESUME: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    static pv64_trap_0: u8;
    static pv64_trap_1: u8;
    static pv64_trap_3: u8;
    static pv64_trap_6: u8;
    static pv64_trap_7: u8;
    static pv64_trap_13: u8;
    static pv64_trap_14: u8;
    static pv64_trap_128: u8;
}

core::arch::global_asm!(
    r#"
    .macro pv64_trap vec, ec
    .pushsection .text.pv64_traps, "ax"
    .globl pv64_trap_\vec
pv64_trap_\vec:
    pop %rcx
    pop %r11
    .if \ec
    popq PV64_TRAP_EC(%rip)
    .else
    movq $-1, PV64_TRAP_EC(%rip)
    .endif
    movq $\vec, PV64_TRAP_VECTOR(%rip)
    push %rax
    mov 8(%rsp), %rax
    mov %rax, PV64_TRAP_RIP(%rip)
    mov 16(%rsp), %rax
    mov %rax, PV64_TRAP_CS(%rip)
    mov 24(%rsp), %rax
    mov %rax, PV64_TRAP_RFLAGS(%rip)
    mov PV64_TRAP_RESUME(%rip), %rax
    mov %rax, 8(%rsp)
    lock incq PV64_TRAP_COUNT(%rip)
    pop %rax
    pushq $0
    jmp {page} + {iret_slot}
    .popsection
    .endm

    pv64_trap 0, 0
    pv64_trap 1, 0
    pv64_trap 3, 0
    pv64_trap 6, 0
    pv64_trap 7, 0
    pv64_trap 13, 1
    pv64_trap 14, 1
    pv64_trap 128, 0
"#,
    page = sym hypercall::HYPERCALL_PAGE,
    iret_slot = const nr::IRET as usize * nr::HYPERCALL_PAGE_ENTRY_SIZE,
    options(att_syntax)
);

/// The trap table: 16-byte records, ended by one with address 0.
static TABLE: Page = Page::new();

fn install() -> i64 {
    // Only the addresses of the stubs are taken.
    let entries: [(u8, u8, u64); 8] = {
        [
            (0, 0, &raw const pv64_trap_0 as u64),
            (1, 0, &raw const pv64_trap_1 as u64),
            (3, 3, &raw const pv64_trap_3 as u64),
            (6, 0, &raw const pv64_trap_6 as u64),
            (7, 0, &raw const pv64_trap_7 as u64),
            (13, 0, &raw const pv64_trap_13 as u64),
            (14, 0, &raw const pv64_trap_14 as u64),
            (0x80, 3, &raw const pv64_trap_128 as u64),
        ]
    };
    for (i, &(vector, dpl, address)) in entries.iter().enumerate() {
        let t = TrapInfo {
            vector,
            flags: dpl,
            cs: FLAT_KERNEL_CS,
            pad: 0,
            address,
        };
        TABLE.write(i * TrapInfo::SIZE, &t.to_bytes());
    }
    // The terminator.
    TABLE.write(entries.len() * TrapInfo::SIZE, &[0u8; TrapInfo::SIZE]);
    hypercall::call(nr::SET_TRAP_TABLE, [TABLE.addr(), 0, 0, 0, 0])
}

/// A trap table with only #UD's handler (for `mode=fault`).
pub fn install_ud_only() {
    let t = TrapInfo {
        vector: 6,
        flags: 0,
        cs: FLAT_KERNEL_CS,
        pad: 0,
        address: &raw const pv64_trap_6 as u64,
    };
    TABLE.write(0, &t.to_bytes());
    TABLE.write(TrapInfo::SIZE, &[0u8; TrapInfo::SIZE]);
    hypercall::call(nr::SET_TRAP_TABLE, [TABLE.addr(), 0, 0, 0, 0]);
}

/// Runs `$insn` (AT&T) with the resume address right after it; yields the
/// address of the instruction.
macro_rules! fault_at {
    ($insn:literal) => {{
        let at: u64;
        // SAFETY: the instruction faults into one of the stubs above, which
        // resume at label 2 with every register as it was (module doc).
        unsafe {
            core::arch::asm!(
                "lea 2f(%rip), {t}",
                "mov {t}, {resume}(%rip)",
                "lea 1f(%rip), {at}",
                "1:",
                $insn,
                "2:",
                t = out(reg) _,
                at = out(reg) at,
                resume = sym PV64_TRAP_RESUME,
                out("rax") _,
                out("rcx") _,
                out("rdx") _,
                options(att_syntax)
            );
        }
        at
    }};
}

fn saw(c: &Checks, name: &str, count_before: u64, vector: u64, ec: Option<u64>, rip: u64) {
    let got = (
        PV64_TRAP_COUNT.load(Ordering::SeqCst) - count_before,
        PV64_TRAP_VECTOR.load(Ordering::SeqCst),
        PV64_TRAP_EC.load(Ordering::SeqCst),
        PV64_TRAP_RIP.load(Ordering::SeqCst),
    );
    let want = (1, vector, ec.unwrap_or(u64::MAX), rip);
    c.check(
        name,
        got == want,
        format_args!(
            "handlers run, vector, error code, rip: got ({}, {:#x}, {:#x}, {:#x}), want ({}, {:#x}, {:#x}, {:#x})",
            got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
        ),
    );
}

/// `mode=traps`.
pub fn run() {
    let c = Checks::new("", "");
    c.rc("set_trap_table", install(), 0);

    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("ud2");
    saw(&c, "#UD bounced to trap 6 at the ud2", n, 6, None, at);

    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("cli");
    saw(&c, "#GP(0) bounced to trap 13 at the cli", n, 13, Some(0), at);

    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("movq 0x10, %rax");
    // Not present, read, and (kernel mode) no U bit.
    saw(&c, "#PF bounced to trap 14 with error code 0", n, 14, Some(0), at);

    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("int3");
    // #BP is a trap: the frame's RIP is after the 1-byte int3.
    saw(&c, "#BP bounced to trap 3 after the int3", n, 3, None, at + 1);

    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("xor %ecx, %ecx; div %ecx");
    saw(&c, "#DE bounced to trap 0 at the div", n, 0, None, at + 2);

    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("int $0x80");
    // A software interrupt the table allows (DPL 3): after the int.
    saw(&c, "int $0x80 delivered to its DPL-3 entry", n, 0x80, None, at + 2);

    // The saved CS is the kernel's with RPL 0 (Xen clears it for a fault in
    // kernel mode), and the upcall mask (bits 32..39) is the start-of-day 1.
    let cs = PV64_TRAP_CS.load(Ordering::SeqCst);
    c.check(
        "frame CS: kernel selector, saved upcall mask 1",
        cs == (u64::from(FLAT_KERNEL_CS & !3) | 1 << 32),
        format_args!("cs word {cs:#x}"),
    );
    let rflags = PV64_TRAP_RFLAGS.load(Ordering::SeqCst);
    c.check(
        "frame RFLAGS: IF clear (events masked), IOPL 0",
        rflags & (1 << 9) == 0 && rflags & (3 << 12) == 0,
        format_args!("rflags {rflags:#x}"),
    );

    // Registers survive a bounce and an iret.
    let (a, b): (u64, u64);
    // SAFETY: as in `fault_at!`: ud2 goes to trap 6 and resumes at label 2.
    unsafe {
        core::arch::asm!(
            "lea 2f(%rip), {t}",
            "mov {t}, {resume}(%rip)",
            "mov $0x1122334455667788, %rax",
            "mov $0x99aabbccddeeff00, %rdx",
            "ud2",
            "2:",
            t = out(reg) _,
            resume = sym PV64_TRAP_RESUME,
            out("rax") a,
            out("rdx") b,
            options(att_syntax)
        );
    }
    c.check(
        "registers survive a bounce and iret",
        (a, b) == (0x1122_3344_5566_7788, 0x99aa_bbcc_ddee_ff00),
        format_args!("rax {a:#x}, rdx {b:#x}"),
    );

    // A record with a non-canonical handler is refused, earlier ones stay.
    let bad = TrapInfo {
        vector: 6,
        flags: 0,
        cs: FLAT_KERNEL_CS,
        pad: 0,
        address: 0x0000_8000_0000_0000,
    };
    TABLE.write(0, &bad.to_bytes());
    TABLE.write(TrapInfo::SIZE, &[0u8; TrapInfo::SIZE]);
    let rc = hypercall::call(nr::SET_TRAP_TABLE, [TABLE.addr(), 0, 0, 0, 0]);
    c.errno("set_trap_table with a non-canonical handler", rc, Errno::EINVAL);
    let rc = hypercall::call(nr::SET_TRAP_TABLE, [0xffff_8300_0000_0000, 0, 0, 0, 0]);
    c.errno("set_trap_table from keel's range", rc, Errno::EFAULT);
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("ud2");
    saw(&c, "the table still bounces #UD", n, 6, None, at);
    c.rc("set_trap_table(NULL) clears it", hypercall::call(nr::SET_TRAP_TABLE, [0; 5]), 0);
}

/// A marker the guest reads through GS once it has set its GS base.
static GS_MARK: Page = Page::new();

/// `mode=privop`: the privileged instructions a PV kernel may use, emulated
/// (Xen's `emul-priv-op.c`), and those it may not, as its own #GP.
pub fn privileged(si: &super::start_info::StartInfo, layout: &super::Layout) {
    let c = Checks::new("", "");
    c.rc("set_trap_table", install(), 0);

    // CPUID through the forced-emulation prefix: keel's answer, with Xen's leaves.
    let cpuid = |leaf: u32| -> (u32, u32, u32, u32) {
        let (a, b, cx, dx): (u32, u32, u32, u32);
        // SAFETY: `ud2; .ascii "xen"; cpuid` is emulated as CPUID (RIP past
        // all 7 bytes); RBX is saved around it (LLVM keeps it).
        unsafe {
            core::arch::asm!(
                "mov %rbx, {save}",
                "ud2", ".ascii \"xen\"", "cpuid",
                "mov %ebx, {b:e}",
                "mov {save}, %rbx",
                save = out(reg) _,
                b = out(reg) b,
                inout("eax") leaf => a,
                inout("ecx") 0 => cx,
                out("edx") dx,
                options(att_syntax)
            );
        }
        (a, b, cx, dx)
    };
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let (_, b, cx, dx) = cpuid(0x4000_0000);
    c.check(
        "forced-emulation CPUID: Xen's signature",
        (b, cx, dx) == (0x566e_6558, 0x6558_4d4d, 0x4d4d_566e)
            && PV64_TRAP_COUNT.load(Ordering::SeqCst) == n,
        format_args!("ebx {b:#x} ecx {cx:#x} edx {dx:#x}"),
    );
    let (ver, ..) = cpuid(0x4000_0001);
    c.check(
        "forced-emulation CPUID: Xen's version leaf",
        ver >> 16 >= 4,
        format_args!("eax {ver:#x}"),
    );

    // The GS base through WRMSR, read back with RDMSR and through GS itself.
    GS_MARK.write(0, &0x5eed_f00d_u64.to_le_bytes());
    let base = GS_MARK.addr() as u64;
    let (back, through): (u64, u64);
    // SAFETY: WRMSR/RDMSR of GS_BASE are emulated; the base is a page of
    // this guest's, which `%gs:0` then reads.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            "rdmsr",
            "shl $32, %rdx",
            "or %rdx, %rax",
            "mov %gs:0, {t}",
            t = out(reg) through,
            in("ecx") 0xc000_0101u32,
            inout("rax") base & 0xFFFF_FFFF => back,
            inout("rdx") base >> 32 => _,
            options(att_syntax)
        );
    }
    c.check(
        "WRMSR GS_BASE, RDMSR reads it back, %gs:0 reads through it",
        back == base && through == 0x5eed_f00d,
        format_args!("rdmsr {back:#x} (wrote {base:#x}), read {through:#x}"),
    );
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("mov $0x1b, %ecx; rdmsr");
    saw(&c, "RDMSR of another MSR is the guest's #GP", n, 13, Some(0), at + 5);

    // Control registers.
    let cr0: u64;
    // SAFETY: emulated: MOV from CR0.
    unsafe { core::arch::asm!("mov %cr0, {}", out(reg) cr0, options(att_syntax)) };
    c.check(
        "MOV from CR0: PE, PG, no TS",
        cr0 & 0x8000_0001 == 0x8000_0001 && cr0 & 8 == 0,
        format_args!("cr0 {cr0:#x}"),
    );
    let cr3: u64;
    // SAFETY: emulated: MOV from CR3.
    unsafe { core::arch::asm!("mov %cr3, {}", out(reg) cr3, options(att_syntax)) };
    let l4_pfn = (si.pt_base - layout.virt_base) / 4096;
    // SAFETY: the p2m list is mapped.
    let l4_mfn = unsafe { core::ptr::read_volatile((si.mfn_list + l4_pfn * 8) as *const u64) };
    c.check(
        "MOV from CR3: its L4's machine address",
        cr3 == l4_mfn << 12,
        format_args!("cr3 {cr3:#x}, L4 mfn {l4_mfn:#x}"),
    );
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("mov %cr4, %rax; mov %rax, %cr4");
    saw(&c, "MOV to CR4 is the guest's #GP", n, 13, Some(0), at + 3);

    // TS: fpu_taskswitch(1), then an SSE instruction is the guest's #NM.
    c.rc("fpu_taskswitch(1)", hypercall::call(nr::FPU_TASKSWITCH, [1, 0, 0, 0, 0]), 0);
    let cr0: u64;
    // SAFETY: emulated: MOV from CR0.
    unsafe { core::arch::asm!("mov %cr0, {}", out(reg) cr0, options(att_syntax)) };
    c.check("CR0.TS reads set", cr0 & 8 != 0, format_args!("cr0 {cr0:#x}"));
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at = fault_at!("fnop");
    saw(&c, "an x87 instruction with TS set is the guest's #NM", n, 7, None, at);
    // SAFETY: emulated: CLTS clears the guest's TS.
    unsafe { core::arch::asm!("clts", options(nomem, nostack)) };
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    // SAFETY: FNOP changes nothing; with TS clear it runs.
    unsafe { core::arch::asm!("fnop", options(nomem, nostack)) };
    c.check(
        "after CLTS it runs",
        PV64_TRAP_COUNT.load(Ordering::SeqCst) == n,
        format_args!("{} traps", PV64_TRAP_COUNT.load(Ordering::SeqCst) - n),
    );
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    // SAFETY: WBINVD is emulated as nothing for a PV kernel.
    unsafe { core::arch::asm!("wbinvd", options(nomem, nostack)) };
    c.check(
        "WBINVD is emulated",
        PV64_TRAP_COUNT.load(Ordering::SeqCst) == n,
        format_args!("{} traps", PV64_TRAP_COUNT.load(Ordering::SeqCst) - n),
    );

    // Debug registers: a data breakpoint on a word of its own.
    let word = GS_MARK.addr() as u64 + 64;
    let setdr = |reg: usize, v: u64| hypercall::call(nr::SET_DEBUGREG, [reg, v as usize, 0, 0, 0]);
    let getdr = |reg: usize| hypercall::call(nr::GET_DEBUGREG, [reg, 0, 0, 0, 0]);
    c.rc("set_debugreg(0, a word of its own)", setdr(0, word), 0);
    c.check(
        "get_debugreg(0) reads it back",
        getdr(0) as u64 == word,
        format_args!("{:#x}", getdr(0)),
    );
    c.errno("set_debugreg(0, keel's address)", setdr(0, 0xffff_8300_0000_0000), Errno::EPERM);
    c.errno("set_debugreg(7, an I/O breakpoint)", setdr(7, 0x2_0001), Errno::EPERM);
    c.errno("set_debugreg(7, upper bits)", setdr(7, 1 << 40), Errno::EINVAL);
    c.errno("set_debugreg(4)", setdr(4, 0), Errno::EINVAL);
    // DR7: L0, write, 8 bytes (RW0 = 01, LEN0 = 10).
    c.rc("set_debugreg(7, L0 write breakpoint)", setdr(7, 0x9_0001), 0);
    let n = PV64_TRAP_COUNT.load(Ordering::SeqCst);
    let at: u64;
    // SAFETY: a store to a word of its own page; the breakpoint's #DB (a trap,
    // after the store) goes to trap 1 and resumes after it.
    unsafe {
        core::arch::asm!(
            "lea 2f(%rip), {t}",
            "mov {t}, {resume}(%rip)",
            "movq $1, ({w})",
            "2:",
            "lea 2b(%rip), {at}",
            t = out(reg) _,
            at = out(reg) at,
            w = in(reg) word,
            resume = sym PV64_TRAP_RESUME,
            options(att_syntax)
        );
    }
    saw(&c, "a write to it is the guest's #DB, after the store", n, 1, None, at);
    let dr6 = getdr(6) as u64;
    c.check("DR6 says breakpoint 0", dr6 & 1 != 0, format_args!("dr6 {dr6:#x}"));
    c.rc("set_debugreg(7, 0)", setdr(7, 0), 0);
    c.rc("set_trap_table(NULL)", hypercall::call(nr::SET_TRAP_TABLE, [0; 5]), 0);
}

/// [`install`], for the other modes.
pub fn install_public() -> i64 {
    install()
}

/// How many handlers ran so far.
pub fn count() -> u64 {
    PV64_TRAP_COUNT.load(Ordering::SeqCst)
}

/// Loads FS with selector 0x2b (entry 5, past a 4-entry GDT): the address of
/// the faulting instruction.
pub fn fault_at_public_fs_0x2b() -> u64 {
    fault_at!("mov $0x2b, %eax; mov %eax, %fs")
}

/// [`saw`], for the other modes.
pub fn saw_public(c: &Checks, name: &str, before: u64, vector: u64, ec: Option<u64>, rip: u64) {
    saw(c, name, before, vector, ec, rip + 5)
}
