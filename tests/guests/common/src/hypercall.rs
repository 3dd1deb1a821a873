//! Finding Xen, installing the hypercall page, and the hypercalls the checks make.
//!
//! Discovery follows Xen's `arch-x86/cpuid.h`: the hypervisor leaves start at
//! 0x4000_0000 or a multiple of 0x100 above it (another hypervisor's leaves may come
//! first), so scan for the signature `XenVMMXenVMM` in EBX, ECX, EDX. Leaf base+1
//! has the version, base+2 the number of hypercall pages and the MSR that installs
//! them: writing a page's guest-physical address there makes the hypervisor fill it
//! with 128 32-byte stubs, entry `n` performing hypercall `n`.
//!
//! A PV guest (pv64) finds no MSR to write and needs none: its domain builder fills
//! the page its `XEN_ELFNOTE_HYPERCALL_PAGE` note names, [`HYPERCALL_PAGE`], before
//! entry, with `syscall` stubs (`xen-x86_64.h`: same argument registers), and
//! [`call`] goes through it unchanged.
//!
//! Every call returns the raw `rax`/`eax` sign-extended to `i64`: 0 or a positive
//! value for success, `-errno` (Xen's numbers, [`Errno`]) for failure. The typed
//! wrappers take guest-virtual addresses (`usize`) rather than references because
//! several checks pass addresses that are deliberately invalid.

use keel_hypercall::abi::cpuid as xcpuid;
use keel_hypercall::abi::hypercall as nr;

use crate::arch::{self, Vendor};
use crate::paging::Page;

/// What CPUID says about the Xen the guest runs on.
#[derive(Clone, Copy, Debug)]
pub struct Xen {
    /// The leaf with the signature (0x4000_0000 + k * 0x100).
    pub base: u32,
    /// EAX of the signature leaf: the largest Xen leaf.
    pub max_leaf: u32,
    /// EAX of base+1: `major << 16 | minor`.
    pub version: u32,
    /// EAX of base+2: number of hypercall pages.
    pub pages: u32,
    /// EBX of base+2: the MSR that installs the hypercall page.
    pub msr: u32,
    /// Which instruction a direct hypercall uses.
    pub vendor: Vendor,
}

/// Scans for Xen's CPUID leaves; `None` if there are none (no Xen underneath).
pub fn discover() -> Option<Xen> {
    // Leaves above the basic range exist only when the hypervisor bit is set; on
    // bare metal a leaf above the maximum returns the highest basic leaf's data,
    // which never carries Xen's signature, so the scan is safe either way.
    let mut base = xcpuid::XEN_CPUID_FIRST_LEAF;
    while base < xcpuid::XEN_CPUID_FIRST_LEAF + 0x1_0000 {
        let sig = arch::cpuid(base, 0);
        if (sig.ebx, sig.ecx, sig.edx)
            == (
                xcpuid::XEN_CPUID_SIGNATURE_EBX,
                xcpuid::XEN_CPUID_SIGNATURE_ECX,
                xcpuid::XEN_CPUID_SIGNATURE_EDX,
            )
            && sig.eax >= base + xcpuid::LEAF_HYPERCALL
        {
            let version = arch::cpuid(base + xcpuid::LEAF_VERSION, 0);
            let hc = arch::cpuid(base + xcpuid::LEAF_HYPERCALL, 0);
            return Some(Xen {
                base,
                max_leaf: sig.eax,
                version: version.eax,
                pages: hc.eax,
                msr: hc.ebx,
                vendor: Vendor::detect(),
            });
        }
        base += 0x100;
    }
    None
}

/// The hypercall page (one page is all Xen ever asks for).
///
/// A PVH guest has it filled through the MSR ([`install_page`]); pv64's
/// `XEN_ELFNOTE_HYPERCALL_PAGE` note names it, and the PV domain builder fills it
/// before the first instruction ([`crate::pv`]), with `syscall` stubs that take the
/// same registers, so [`call`] serves both. It has a section of its own so that
/// pv64's linker script can keep it out of the `.bss` range its entry stub zeroes
/// (the PVH guests' script takes `.bss.*` whole: for them it is plain `.bss`).
#[unsafe(link_section = ".bss.hypercall_page")]
pub static HYPERCALL_PAGE: Page = Page::new();

/// Asks the hypervisor to fill [`HYPERCALL_PAGE`]: its guest-physical address
/// (identity-mapped, so the same as its address) with page index 0 in the low 12
/// bits goes to the MSR from CPUID base+2.
pub fn install_page(xen: &Xen) {
    // SAFETY: the MSR is the one the hypervisor names for exactly this purpose; the
    // page is ours, page-aligned, and nothing else uses it.
    unsafe { arch::wrmsr(xen.msr, HYPERCALL_PAGE.addr() as u64) };
}

/// Hypercall `nr` through the hypercall page, with five arguments.
pub fn call(nr: u32, args: [usize; 5]) -> i64 {
    let entry = HYPERCALL_PAGE.addr() + nr as usize * nr::HYPERCALL_PAGE_ENTRY_SIZE;
    // SAFETY: the page was installed by `install_page` before any hypercall (the
    // console switches to hypercalls only after that); hypercalls only write to
    // memory the guest hands them, which is always a `Page` (accessed through raw
    // pointers only) or a deliberately bad address.
    unsafe { arch::call_hypercall_page(entry, args) as i64 }
}

/// Hypercall `nr` by executing `vmcall`/`vmmcall` directly (no page entry).
pub fn call_direct(xen: &Xen, nr: u64, args: [usize; 5]) -> i64 {
    // SAFETY: as in `call`; the vendor's instruction exists since Xen is there.
    unsafe { arch::hypercall_direct(xen.vendor, nr, args) as i64 }
}

/// `HYPERVISOR_console_io(cmd, count, buffer)`.
pub fn console_io(cmd: u32, count: usize, buffer: usize) -> i64 {
    call(nr::CONSOLE_IO, [cmd as usize, count, buffer, 0, 0])
}

/// `HYPERVISOR_xen_version(cmd, arg)`.
pub fn xen_version(cmd: u32, arg: usize) -> i64 {
    call(nr::XEN_VERSION, [cmd as usize, arg, 0, 0, 0])
}

/// `HYPERVISOR_memory_op(cmd, arg)`.
pub fn memory_op(cmd: u32, arg: usize) -> i64 {
    call(nr::MEMORY_OP, [cmd as usize, arg, 0, 0, 0])
}

/// `HYPERVISOR_hvm_op(op, arg)`.
pub fn hvm_op(op: u32, arg: usize) -> i64 {
    call(nr::HVM_OP, [op as usize, arg, 0, 0, 0])
}

/// `HYPERVISOR_sched_op(cmd, arg)`.
pub fn sched_op(cmd: u32, arg: usize) -> i64 {
    call(nr::SCHED_OP, [cmd as usize, arg, 0, 0, 0])
}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
pub fn event_channel_op(cmd: u32, arg: usize) -> i64 {
    call(nr::EVENT_CHANNEL_OP, [cmd as usize, arg, 0, 0, 0])
}

/// `HYPERVISOR_grant_table_op(cmd, args, count)`.
pub fn grant_table_op(cmd: u32, args: usize, count: u32) -> i64 {
    call(
        nr::GRANT_TABLE_OP,
        [cmd as usize, args, count as usize, 0, 0],
    )
}

/// `HYPERVISOR_vcpu_op(cmd, vcpuid, extra_args)`.
pub fn vcpu_op(cmd: u32, vcpu: u32, arg: usize) -> i64 {
    call(nr::VCPU_OP, [cmd as usize, vcpu as usize, arg, 0, 0])
}

/// `HYPERVISOR_set_timer_op(timeout)`: one 64-bit argument in long mode, two
/// 32-bit halves (low first) in 32-bit mode (`xen-x86_32.h`).
pub fn set_timer_op(timeout_abs_ns: u64) -> i64 {
    #[cfg(target_arch = "x86_64")]
    let args = [timeout_abs_ns as usize, 0, 0, 0, 0];
    #[cfg(target_arch = "x86")]
    let args = [
        timeout_abs_ns as u32 as usize,
        (timeout_abs_ns >> 32) as usize,
        0,
        0,
        0,
    ];
    call(nr::SET_TIMER_OP, args)
}

/// Runs `f` with the address of a copy of `bytes` (a hypercall argument on the
/// stack) and returns its result and the bytes as the hypervisor left them.
///
/// The stack is identity-mapped RAM like the rest of the image; the buffer's
/// address reaches the hypervisor only through the hypercall asm, which the
/// compiler must assume reads and writes it.
pub fn with_arg<const N: usize>(bytes: [u8; N], f: impl FnOnce(usize) -> i64) -> (i64, [u8; N]) {
    let mut buf = bytes;
    let rc = f(buf.as_mut_ptr() as usize);
    // Re-read through a volatile load: the hypervisor wrote it behind the
    // compiler's back.
    // SAFETY: `buf` is a live local array of N bytes.
    let out = unsafe { core::ptr::read_volatile(&raw const buf) };
    (rc, out)
}
