//! pv64's `mode=smp`: a second vCPU of a PV guest (`VCPUOP_initialise` with a
//! `vcpu_guest_context`, then `VCPUOP_up`).
//!
//! vCPU 0 gives vCPU 1 a state of its own (kernel mode, its L4, a stack, an
//! entry), brings it up, and waits (yielding) for it to count itself in; vCPU
//! 1 counts, records its stack pointer, then takes itself down
//! (`VCPUOP_down`). Both run concurrently where the machine has the pCPUs.
//! Also, before that: a context naming a frame that is not an L4 (a data page
//! the guest maps writable), or a non-canonical callback, is -EINVAL and
//! leaves the vCPU without a state (it cannot come up); an unknown vCPU is
//! -ENOENT; and after: initialising it twice is -EEXIST.

use core::sync::atomic::{AtomicU64, Ordering};

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::pv::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, VGCF_IN_KERNEL, VcpuGuestContext};
use keel_hypercall::abi::sched::SCHEDOP_YIELD;
use keel_hypercall::abi::vcpu::{VCPUOP_DOWN, VCPUOP_INITIALISE, VCPUOP_IS_UP, VCPUOP_UP};

use super::Layout;
use super::mmu::Mem;
use super::start_info::StartInfo;
use crate::checks::Checks;
use crate::hypercall;
use crate::paging::Page;

#[unsafe(no_mangle)]
static PV64_AP_COUNT: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static PV64_AP_RSP: AtomicU64 = AtomicU64::new(0);

static AP_STACK: [Page; 2] = [Page::new(), Page::new()];
/// The context, built here (5168 bytes: two pages).
static CTX: [Page; 2] = [Page::new(), Page::new()];

unsafe extern "C" {
    static pv64_ap_entry: u8;
}

core::arch::global_asm!(
    r#"
    .pushsection .text.pv64_smp, "ax"
    .globl pv64_ap_entry
pv64_ap_entry:
    lock incq PV64_AP_COUNT(%rip)
    mov %rsp, PV64_AP_RSP(%rip)
1:  mov ${down}, %edi
    mov $1, %esi
    xor %edx, %edx
    call {page} + {vcpu_op}
    jmp 1b
    .popsection
"#,
    page = sym hypercall::HYPERCALL_PAGE,
    vcpu_op = const nr::VCPU_OP as usize * nr::HYPERCALL_PAGE_ENTRY_SIZE,
    down = const VCPUOP_DOWN,
    options(att_syntax)
);

fn initialise(vcpu: u32, ctx: &VcpuGuestContext) -> i64 {
    let b = ctx.to_bytes();
    CTX[0].write(0, &b[..4096]);
    CTX[1].write(0, &b[4096..]);
    hypercall::call(nr::VCPU_OP, [VCPUOP_INITIALISE as usize, vcpu as usize, CTX[0].addr(), 0, 0])
}

fn vcpu_op(cmd: u32, vcpu: u32) -> i64 {
    hypercall::call(nr::VCPU_OP, [cmd as usize, vcpu as usize, 0, 0, 0])
}

/// `mode=smp`.
pub fn run(si: &StartInfo, layout: &Layout) {
    let c = Checks::new("", "");
    let m = Mem { si, layout };
    let l4 = m.mfn(si.pt_base);
    let top = AP_STACK[1].addr() as u64 + 4096;
    let mut ctx = VcpuGuestContext::from_bytes(&[0u8; VcpuGuestContext::SIZE]);
    ctx.flags = VGCF_IN_KERNEL;
    ctx.user_regs.rip = &raw const pv64_ap_entry as u64;
    ctx.user_regs.rsp = top;
    ctx.user_regs.rflags = 0x202;
    ctx.user_regs.cs = FLAT_KERNEL_CS;
    ctx.user_regs.ss = FLAT_KERNEL_SS;
    ctx.kernel_ss = u64::from(FLAT_KERNEL_SS);
    ctx.kernel_sp = top;
    ctx.ctrlreg[3] = l4 << 12;

    // Refusals first: each leaves vCPU 1 without a state, holding nothing
    // (the good initialise after them would be -EEXIST otherwise).
    let mut bad = ctx;
    bad.ctrlreg[3] = m.mfn(layout.boot_rsp.next_multiple_of(4096) + 6 * 4096) << 12;
    c.errno("VCPUOP_initialise with a data page as its L4", initialise(1, &bad), Errno::EINVAL);
    let mut bad = ctx;
    bad.event_callback_eip = 0x0000_8000_0000_0000;
    c.errno("VCPUOP_initialise with a non-canonical callback", initialise(1, &bad), Errno::EINVAL);
    c.errno("VCPUOP_up of a vCPU without a state", vcpu_op(VCPUOP_UP, 1), Errno::EINVAL);
    c.errno("VCPUOP_initialise of vCPU 99", initialise(99, &ctx), Errno::ENOENT);

    c.rc("VCPUOP_initialise vCPU 1", initialise(1, &ctx), 0);
    c.errno("VCPUOP_initialise it again", initialise(1, &ctx), Errno::EEXIST);
    c.rc("it is not up yet", vcpu_op(VCPUOP_IS_UP, 1), 0);
    c.rc("VCPUOP_up vCPU 1", vcpu_op(VCPUOP_UP, 1), 0);
    let mut spins = 0;
    while PV64_AP_COUNT.load(Ordering::SeqCst) == 0 && spins < 100_000 {
        hypercall::sched_op(SCHEDOP_YIELD, 0);
        spins += 1;
    }
    let rsp = PV64_AP_RSP.load(Ordering::SeqCst);
    c.check(
        "vCPU 1 ran its entry, on its stack",
        PV64_AP_COUNT.load(Ordering::SeqCst) == 1 && rsp == top,
        format_args!("count {}, rsp {rsp:#x} (top {top:#x})", PV64_AP_COUNT.load(Ordering::SeqCst)),
    );
    let mut spins = 0;
    while vcpu_op(VCPUOP_IS_UP, 1) != 0 && spins < 100_000 {
        hypercall::sched_op(SCHEDOP_YIELD, 0);
        spins += 1;
    }
    c.rc("vCPU 1 took itself down", vcpu_op(VCPUOP_IS_UP, 1), 0);
}
