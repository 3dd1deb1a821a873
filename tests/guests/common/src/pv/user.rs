//! pv64's `mode=user`: a process of the PV kernel's own, in user mode.
//!
//! A PV kernel and its processes both run in ring 3; the hypervisor tells them
//! apart by its own mode flag and gives each its own L4 and GS base. The guest:
//! - sets its kernel stack for events from user mode (`stack_switch`) and its
//!   syscall callback (`callback_op`, `CALLBACKTYPE_syscall`);
//! - gives itself a user L4 (`MMUEXT_NEW_USER_BASEPTR`: its own L4 again, so
//!   the process sees the same mappings);
//! - enters user mode with the `iret` hypercall (a frame whose CS has RPL 3),
//!   at code that makes two `syscall`s with RDI 1 and 2;
//! - the first arrives at the syscall callback in kernel mode, on the kernel
//!   stack, with the process's RIP (after the `syscall`) and the flat user CS
//!   in the frame; the callback `iret`s back to user mode;
//! - the second arrives there too, and the callback goes back to the test
//!   (kernel mode, its own stack).
//!
//! A `syscall` from user mode is never a hypercall: the second `syscall` with
//! RAX = a hypercall number would be one from kernel mode.

use core::sync::atomic::{AtomicU64, Ordering};

use keel_hypercall::abi::callback::CALLBACKTYPE_SYSCALL;
use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::mmu::{MMUEXT_NEW_USER_BASEPTR, MmuextOp};
use keel_hypercall::abi::pv::{FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS};

use super::Layout;
use super::start_info::StartInfo;
use crate::checks::Checks;
use crate::hypercall;
use crate::paging::Page;

#[unsafe(no_mangle)]
static PV64_USER_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_USER_RESUME: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_SYSCALL_COUNT: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_SYSCALL_RDI1: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_SYSCALL_RDI2: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_SYSCALL_RIP: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_SYSCALL_CS: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_SYSCALL_RSP: AtomicU64 = AtomicU64::new(0);
/// The process's stack top, for the entry's frame.
#[unsafe(no_mangle)]
static PV64_USER_USP: AtomicU64 = AtomicU64::new(0);

/// The kernel stack events from user mode arrive on, and the process's stack.
static KSTACK: [Page; 2] = [Page::new(), Page::new()];
static USTACK: [Page; 2] = [Page::new(), Page::new()];
static ARG: Page = Page::new();

unsafe extern "C" {
    static pv64_syscall_entry: u8;
    static pv64_user_code: u8;
    static pv64_user_second_syscall: u8;
}

core::arch::global_asm!(
    r#"
    .pushsection .text.pv64_user, "ax"
    .globl pv64_user_code
pv64_user_code:
    mov $1, %rdi
    syscall
    .globl pv64_user_second_syscall
pv64_user_second_syscall:
    mov $2, %rdi
    syscall
    ud2

    .globl pv64_syscall_entry
pv64_syscall_entry:
    pop %rcx
    pop %r11
    lock incq PV64_SYSCALL_COUNT(%rip)
    mov %rsp, PV64_SYSCALL_RSP(%rip)
    cmp $1, %rdi
    je 1f
    mov %rdi, PV64_SYSCALL_RDI2(%rip)
    mov (%rsp), %rax
    mov %rax, PV64_SYSCALL_RIP(%rip)
    mov 8(%rsp), %rax
    mov %rax, PV64_SYSCALL_CS(%rip)
    mov PV64_USER_SAVED_RSP(%rip), %rsp
    jmp *PV64_USER_RESUME(%rip)
1:  mov %rdi, PV64_SYSCALL_RDI1(%rip)
    pushq $0
    jmp {page} + {iret_slot}
    .popsection
"#,
    page = sym hypercall::HYPERCALL_PAGE,
    iret_slot = const nr::IRET as usize * nr::HYPERCALL_PAGE_ENTRY_SIZE,
    options(att_syntax)
);

/// `mode=user`.
pub fn run(si: &StartInfo, layout: &Layout) {
    let c = Checks::new("", "");
    let kstack_top = KSTACK[1].addr() as u64 + 4096;
    let ustack_top = USTACK[1].addr() as u64 + 4096;
    c.rc(
        "stack_switch",
        hypercall::call(
            nr::STACK_SWITCH,
            [usize::from(FLAT_KERNEL_SS), kstack_top as usize, 0, 0, 0],
        ),
        0,
    );
    // Only the address is taken.
    let rc = super::register_callback(CALLBACKTYPE_SYSCALL, 0, &raw const pv64_syscall_entry as u64);
    c.rc("register the syscall callback", rc, 0);
    // The user L4: the kernel's own.
    let l4_pfn = (si.pt_base - layout.virt_base) / 4096;
    // SAFETY: the p2m list is mapped; the L4's pfn is in the boot region.
    let l4_mfn = unsafe { core::ptr::read_volatile((si.mfn_list + l4_pfn * 8) as *const u64) };
    let op = MmuextOp {
        cmd: MMUEXT_NEW_USER_BASEPTR,
        pad: 0,
        arg1: l4_mfn,
        arg2: 0,
    };
    ARG.write(0, &op.to_bytes());
    let rc = hypercall::call(
        nr::MMUEXT_OP,
        [ARG.addr(), 1, 0, usize::from(DOMID_SELF), 0],
    );
    c.rc("MMUEXT_NEW_USER_BASEPTR", rc, 0);

    PV64_USER_USP.store(ustack_top, Ordering::SeqCst);
    // Into user mode with iret, back through the syscall callback.
    // SAFETY: the frame enters pv64_user_code in user mode on USTACK; its
    // second syscall's callback restores this stack pointer and jumps to
    // label 2 in kernel mode. Every register but RSP is declared clobbered
    // or saved around it (RBX and RBP by hand).
    unsafe {
        core::arch::asm!(
            "push %rbx",
            "push %rbp",
            "lea 2f(%rip), %rax",
            "mov %rax, {resume}(%rip)",
            "mov %rsp, {saved}(%rip)",
            "pushq ${ss}",
            "pushq {usp}(%rip)",
            "pushq $0x202",
            "pushq ${cs}",
            "lea {code}(%rip), %rax",
            "push %rax",
            "pushq $0",
            "jmp {page} + {iret_slot}",
            "2:",
            "pop %rbp",
            "pop %rbx",
            resume = sym PV64_USER_RESUME,
            saved = sym PV64_USER_SAVED_RSP,
            ss = const FLAT_USER_SS,
            cs = const FLAT_USER_CS,
            usp = sym PV64_USER_USP,
            code = sym pv64_user_code,
            page = sym hypercall::HYPERCALL_PAGE,
            iret_slot = const nr::IRET as usize * nr::HYPERCALL_PAGE_ENTRY_SIZE,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            options(att_syntax)
        );
    }
    let count = PV64_SYSCALL_COUNT.load(Ordering::SeqCst);
    let (rdi1, rdi2) = (
        PV64_SYSCALL_RDI1.load(Ordering::SeqCst),
        PV64_SYSCALL_RDI2.load(Ordering::SeqCst),
    );
    c.check(
        "two syscalls from user mode reached the callback",
        count == 2 && rdi1 == 1 && rdi2 == 2,
        format_args!("count {count}, rdi {rdi1} {rdi2}"),
    );
    // Only the address is taken: `mov $2, %rdi` (7 bytes), `syscall` (2).
    let after = &raw const pv64_user_second_syscall as u64 + 7 + 2;
    let rip = PV64_SYSCALL_RIP.load(Ordering::SeqCst);
    let cs = PV64_SYSCALL_CS.load(Ordering::SeqCst);
    c.check(
        "frame: the process's RIP after the syscall, the flat user CS",
        rip == after && cs & 0xFFFF == u64::from(FLAT_USER_CS),
        format_args!("rip {rip:#x} (want {after:#x}), cs word {cs:#x}"),
    );
    let rsp = PV64_SYSCALL_RSP.load(Ordering::SeqCst);
    c.check(
        "the callback ran on the stack_switch stack",
        rsp > kstack_top - 4096 && rsp <= kstack_top,
        format_args!("rsp {rsp:#x}, kernel stack top {kstack_top:#x}"),
    );
}
