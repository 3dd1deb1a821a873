//! pv64's hostile modes: what a PV kernel may try against its hypervisor.
//!
//! - `mode=hostile`: hypercalls with pointers a PV guest must not be able to
//!   use (keel's own address range, non-canonical, unmapped, its own page
//!   tables, wrapping), an unknown hypercall number, and `VCPUOP_up` of a vCPU
//!   that has no state. Each must fail with Xen's errno and change nothing; the
//!   guest goes on and reports each as a check.
//! - `mode=fault fault=<kind>`: one instruction a ring-3 kernel must not get
//!   away with (reading or writing keel's memory, jumping into keel's code,
//!   privileged instructions, software interrupts to keel's vectors, writing
//!   its own page tables). The hypervisor must end this domain, and only it,
//!   with the reason; the guest prints what it is about to do first, and a
//!   line saying it survived if it does.
//!
//! The addresses are Xen's x86_64 layout (`xen/include/public/arch-x86/xen-x86_64.h`
//! and `xen/arch/x86/include/asm/config.h`), which keel keeps: its range is
//! `0xffff800000000000..0xffff880000000000`, its image window at `0xffff82d080000000` (its text a little over 2 MiB in),
//! its direct map from `0xffff830000000000`.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::memory::XENMEM_MEMORY_MAP;
use keel_hypercall::abi::vcpu::VCPUOP_UP;
use keel_hypercall::abi::version::XENVER_EXTRAVERSION;

use super::start_info::StartInfo;
use crate::checks::Checks;
use crate::console::Escaped;
use crate::{hypercall, modes, out};

/// The start of Xen's (and keel's) direct map.
const KEEL_DIRECTMAP: u64 = 0xffff_8300_0000_0000;
/// keel's text: its image window (Xen's at 0xffff82d080000000) maps the image
/// where it was loaded (2 MiB in), its text from about 2 MiB + 40 KiB on: this
/// is well inside it.
const KEEL_IMAGE: u64 = 0xffff_82d0_8024_0000;
/// The first non-canonical address.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// `mode=hostile`: every bad pointer and call fails cleanly.
pub fn run(si: &StartInfo) {
    let c = Checks::new("", "");
    // XENVER_extraversion writes 16 bytes where the guest says.
    for (name, at) in [
        ("xen_version into keel's direct map", KEEL_DIRECTMAP),
        ("xen_version into keel's image", KEEL_IMAGE),
        ("xen_version into the top of keel's range", 0xffff_87ff_ffff_fff0),
        ("xen_version at a non-canonical address", NON_CANONICAL),
        ("xen_version at an unmapped address", 0x1000),
        ("xen_version across the top of the address space", u64::MAX - 7),
        ("xen_version into its own L4 (mapped read-only)", si.pt_base),
    ] {
        let rc = hypercall::xen_version(XENVER_EXTRAVERSION, at as usize);
        c.errno(name, rc, Errno::EFAULT);
    }
    // XENMEM_memory_map reads its argument, then writes the map.
    for (name, at) in [
        ("memory_map argument in keel's direct map", KEEL_DIRECTMAP),
        ("memory_map argument at a non-canonical address", NON_CANONICAL),
    ] {
        let rc = hypercall::memory_op(XENMEM_MEMORY_MAP, at as usize);
        c.errno(name, rc, Errno::EFAULT);
    }
    // A number no Xen hypercall has (the page's slot 60 is a plain stub).
    let rc = hypercall::call(60, [0; 5]);
    c.errno("unknown hypercall 60", rc, Errno::ENOSYS);
    // vCPU 1 exists (the test gives the domain two) but has no state.
    let rc = hypercall::vcpu_op(VCPUOP_UP, 1, 0);
    c.errno("VCPUOP_up of a vCPU with no state", rc, Errno::EINVAL);
    // After all that, the hypervisor still answers.
    let rc = hypercall::xen_version(keel_hypercall::abi::version::XENVER_VERSION, 0);
    c.check(
        "xen_version still answers",
        rc > 0,
        format_args!("returned {rc}"),
    );
}

/// `mode=fault fault=<kind>`: does one forbidden thing; the hypervisor must
/// end the domain. Prints `surviving <kind>` (and crashes itself) if it did not.
pub fn fault(kind: &[u8], si: &StartInfo) -> ! {
    out!("faulting on purpose: {}", Escaped(kind));
    crate::console::flush();
    // SAFETY: none of these is safe: each is the fault under test. The guest
    // expects the hypervisor to end it at the instruction.
    unsafe {
        match kind {
            b"read-keel" => {
                core::ptr::read_volatile(KEEL_DIRECTMAP as *const u64);
            }
            b"write-keel" => core::ptr::write_volatile(KEEL_IMAGE as *mut u64, 0),
            b"jump-keel" => core::arch::asm!("jmp *{}", in(reg) KEEL_IMAGE, options(att_syntax)),
            b"write-pagetable" => core::ptr::write_volatile(si.pt_base as *mut u64, 0),
            b"null" => {
                core::ptr::read_volatile(core::ptr::null::<u64>());
            }
            b"cli" => core::arch::asm!("cli"),
            b"hlt" => core::arch::asm!("hlt"),
            b"mov-cr3" => core::arch::asm!("mov cr3, {}", in(reg) si.pt_base),
            b"wrmsr" => core::arch::asm!("wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0, in("edx") 0),
            b"lidt" => {
                let zero = [0u8; 10];
                core::arch::asm!("lidt [{}]", in(reg) zero.as_ptr());
            }
            b"int-timer" => core::arch::asm!("int 0xf0"),
            b"int3" => core::arch::asm!("int3"),
            b"ud2" => core::arch::asm!("ud2"),
            b"port-io" => core::arch::asm!("out dx, al", in("dx") 0x80u16, in("al") 0u8),
            b"swapgs" => core::arch::asm!("swapgs"),
            _ => {
                out!("unknown fault={}", Escaped(kind));
                out!("Test result: FAILURE (unknown fault)");
                modes::shutdown(keel_hypercall::abi::sched::SHUTDOWN_CRASH)
            }
        }
    }
    out!("surviving {}", Escaped(kind));
    modes::shutdown(keel_hypercall::abi::sched::SHUTDOWN_CRASH)
}
