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
pub fn run(si: &StartInfo, layout: &super::Layout) {
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
    pv_mmu(&c, si, layout);
    pv_misc(&c);
    keel_written(&c, si, layout);
    // After all that, the hypervisor still answers.
    let rc = hypercall::xen_version(keel_hypercall::abi::version::XENVER_VERSION, 0);
    c.check(
        "xen_version still answers",
        rc > 0,
        format_args!("returned {rc}"),
    );
}

/// What a hostile kernel tries with the PV MMU: each must fail and change
/// nothing.
fn pv_mmu(c: &Checks, si: &StartInfo, layout: &super::Layout) {
    use super::mmu::{Mem, PAGE, RW, mmu_update, mmuext, update_va_mapping};
    use keel_hypercall::abi::domid::DOMID_SELF;
    use keel_hypercall::abi::hypercall as nr;
    use keel_hypercall::abi::mmu::{MMUEXT_PIN_L2_TABLE, MMUEXT_UNPIN_TABLE, UVMF_INVLPG};
    let m = Mem { si, layout };
    let l4m = m.mfn(si.pt_base);
    let pad = layout.boot_rsp.next_multiple_of(PAGE);
    let pm = m.mfn(pad);
    // Slot 256 of its L4 is keel's.
    let (rc, done) = mmu_update(&[((l4m << 12) + 256 * 8, (pm << 12) | RW)]);
    c.check(
        "mmu_update of keel's L4 slot 256",
        rc == Errno::EINVAL.neg() && done == 0,
        format_args!("rc {rc}, done {done}"),
    );
    // A superpage (PS) in an L2 entry: the L2 that maps the boot region.
    let l2e = {
        // The L2 entry for `pad`: the walk of `Mem::l1e`, one level short.
        let l4 = si.pt_base;
        // SAFETY: the boot page tables are mapped read-only at pt_base and
        // after (module doc of `mmu`).
        let l3e = unsafe { core::ptr::read_volatile((l4 + ((pad >> 39) & 511) * 8) as *const u64) };
        let l3va = m.va_of((l3e & 0x000F_FFFF_FFFF_F000) >> 12);
        // SAFETY: as above.
        let l2e = unsafe { core::ptr::read_volatile((l3va + ((pad >> 30) & 511) * 8) as *const u64) };
        let l2m = (l2e & 0x000F_FFFF_FFFF_F000) >> 12;
        (l2m << 12) + ((pad >> 21) & 511) * 8
    };
    let (rc, _) = mmu_update(&[(l2e, (pm << 12) | RW | (1 << 7))]);
    c.check(
        "mmu_update of a superpage entry",
        rc < 0,
        format_args!("rc {rc}"),
    );
    // Bad request arrays.
    let rc = hypercall::call(
        nr::MMU_UPDATE,
        [KEEL_DIRECTMAP as usize, 1, 0, usize::from(DOMID_SELF), 0],
    );
    c.errno("mmu_update requests in keel's range", rc, Errno::EFAULT);
    let rc = hypercall::call(
        nr::MMUEXT_OP,
        [NON_CANONICAL as usize, 4, 0, usize::from(DOMID_SELF), 0],
    );
    c.errno("mmuext_op ops at a non-canonical address", rc, Errno::EFAULT);
    // Its L4 is in use as its base pointer, not pinned: no unpin, and no
    // pinning it as an L2.
    c.errno("unpin the L4 in use", mmuext(MMUEXT_UNPIN_TABLE, l4m), Errno::EINVAL);
    let rc = mmuext(MMUEXT_PIN_L2_TABLE, l4m);
    c.check("pin the L4 as an L2", rc < 0, format_args!("rc {rc}"));
    c.errno(
        "update_va_mapping at a non-canonical address",
        update_va_mapping(NON_CANONICAL, 0, UVMF_INVLPG),
        Errno::EINVAL,
    );
    // Another alias of a page table, writable: the L1 that maps the padding.
    let l1m = m.l1e(pad) >> 12;
    let rc = update_va_mapping(pad, (l1m << 12) | RW, UVMF_INVLPG);
    c.check(
        "an L1 cannot be mapped writable (an alias)",
        rc < 0,
        format_args!("rc {rc}"),
    );
}

/// The frames keel writes for the guest cannot be made page tables under it;
/// frames keel would write after checking them are refused (until it holds
/// writable type references on them, as Xen does).
fn keel_written(c: &Checks, si: &StartInfo, layout: &super::Layout) {
    use super::mmu::{Mem, RW, mmuext, update_va_mapping};
    use keel_hypercall::abi::hypercall as nr;
    use keel_hypercall::abi::mmu::{MMUEXT_PIN_L1_TABLE, UVMF_INVLPG};
    use keel_hypercall::abi::vcpu::{VCPUOP_REGISTER_VCPU_INFO, VcpuRegisterVcpuInfo};
    let m = Mem { si, layout };
    if si.store_mfn != 0 {
        // The xenstore ring, special as the console ring is (keel writes the
        // console's out_cons; a guest that could make that page an L1 would
        // choose a PTE by how much it prints). The xenstore page is all
        // zeroes, a valid L1 if it were an ordinary frame: unmapped, it
        // still cannot be pinned.
        let sva = m.va_of(si.store_mfn);
        let unmap = update_va_mapping(sva, 0, UVMF_INVLPG);
        let pin = mmuext(MMUEXT_PIN_L1_TABLE, si.store_mfn);
        if pin == 0 {
            mmuext(keel_hypercall::abi::mmu::MMUEXT_UNPIN_TABLE, si.store_mfn);
        }
        let remap = update_va_mapping(sva, (si.store_mfn << 12) | RW, UVMF_INVLPG);
        c.check(
            "a ring keel owns cannot become a page table",
            unmap == 0 && pin == Errno::EINVAL.neg() && remap == 0,
            format_args!("unmap {unmap}, pin {pin}, remap {remap}"),
        );
    }
    // An ordinary frame of its own as vcpu_info: refused for now.
    let pad = layout.boot_rsp.next_multiple_of(4096) + 5 * 4096;
    let arg = VcpuRegisterVcpuInfo {
        mfn: m.mfn(pad),
        offset: 0,
        rsvd: 0,
    };
    let (rc, _) = hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::call(nr::VCPU_OP, [VCPUOP_REGISTER_VCPU_INFO as usize, 0, a, 0, 0])
    });
    c.errno("register_vcpu_info on an ordinary frame (not yet for PV)", rc, Errno::EACCES);
}

/// Other hostile calls a PV kernel could make.
fn pv_misc(c: &Checks) {
    use keel_hypercall::abi::callback::CALLBACKTYPE_EVENT;
    use keel_hypercall::abi::hypercall as nr;
    use keel_hypercall::abi::pv::SEGBASE_FS;
    use keel_hypercall::abi::xen::MulticallEntry;
    let rc = hypercall::call(nr::SET_SEGMENT_BASE, [SEGBASE_FS as usize, NON_CANONICAL as usize, 0, 0, 0]);
    c.errno("set_segment_base non-canonical", rc, Errno::EINVAL);
    let rc = super::register_callback(CALLBACKTYPE_EVENT, 0, NON_CANONICAL);
    c.errno("event callback at a non-canonical address", rc, Errno::EINVAL);
    // A multicall inside a multicall.
    let inner = MulticallEntry {
        op: u64::from(nr::XEN_VERSION),
        result: 0,
        args: [0; 6],
    };
    let outer = MulticallEntry {
        op: u64::from(nr::MULTICALL),
        result: 0,
        args: [0; 6],
    };
    let mut both = [0u8; 2 * MulticallEntry::SIZE];
    both[..MulticallEntry::SIZE].copy_from_slice(&outer.to_bytes());
    both[MulticallEntry::SIZE..].copy_from_slice(&inner.to_bytes());
    let (rc, out) = hypercall::with_arg(both, |a| {
        // The nested entry names the list itself.
        let mut e = outer;
        e.args[0] = a as u64;
        e.args[1] = 2;
        // SAFETY: `a` is the buffer with_arg lent for the call.
        unsafe { core::ptr::copy_nonoverlapping(e.to_bytes().as_ptr(), a as *mut u8, MulticallEntry::SIZE) };
        hypercall::call(nr::MULTICALL, [a, 2, 0, 0, 0])
    });
    let r0 = u64::from_le_bytes(out[8..16].try_into().unwrap_or([0; 8])) as i64;
    c.check(
        "a nested multicall: -EINVAL in its entry, the batch goes on",
        rc == 0 && r0 == Errno::EINVAL.neg(),
        format_args!("rc {rc}, nested entry's result {r0}"),
    );
    // Unknown callback type, and VCPUOP on vCPUs it does not have.
    let rc = super::register_callback(99, 0, 0xffff_ffff_8010_0000);
    c.check("an unknown callback type", rc < 0, format_args!("rc {rc}"));
}

/// `mode=fault fault=<kind>`: does one forbidden thing; the hypervisor must
/// end the domain. Prints `surviving <kind>` (and crashes itself) if it did not.
pub fn fault(kind: &[u8], si: &StartInfo, layout: &super::Layout) -> ! {
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
            // iret to a non-canonical RIP (in kernel mode: CS with RPL 0,
            // which Xen raises to 3 without a mode switch): keel's own IRETQ
            // faults.
            b"iret-noncanonical" => core::arch::asm!(
                "pushq $0xe02b",
                "push %rsp",
                "pushq $0x202",
                "pushq $0xe030",
                "movabs $0x0000800000000000, %rax",
                "push %rax",
                "pushq $0",
                "jmp {page} + {slot}",
                page = sym crate::hypercall::HYPERCALL_PAGE,
                slot = const keel_hypercall::abi::hypercall::IRET as usize
                    * keel_hypercall::abi::hypercall::HYPERCALL_PAGE_ENTRY_SIZE,
                out("rax") _,
                options(att_syntax)
            ),
            // An exception with a handler, but the kernel stack in keel's
            // range: the bounce frame cannot be written.
            b"bounce-keel-stack" => {
                super::traps::install_ud_only();
                core::arch::asm!(
                    "mov %rsp, %r12",
                    "movabs $0xffff830000010000, %rsp",
                    "ud2",
                    "mov %r12, %rsp",
                    out("r12") _,
                    options(att_syntax)
                )
            }
            // Writable page tables, used to map a frame that is not its own:
            // the emulated store is refused, the #PF is the guest's.
            b"ptwr-keel-frame" => {
                let m = super::mmu::Mem { si, layout };
                crate::hypercall::call(keel_hypercall::abi::hypercall::VM_ASSIST, [0, 2, 0, 0, 0]);
                let pad = m.layout.boot_rsp.next_multiple_of(4096);
                let l1e = m.l1e(pad);
                let va = m.va_of(l1e >> 12) + (l1e & 0xFFF);
                core::ptr::write_volatile(va as *mut u64, (1 << 12) | super::mmu::RW);
            }
            // Back to user mode with no user L4.
            b"iret-user-no-l4" => core::arch::asm!(
                "pushq $0xe02b",
                "push %rsp",
                "pushq $0x202",
                "pushq $0xe033",
                "lea 2f(%rip), %rax",
                "push %rax",
                "pushq $0",
                "jmp {page} + {slot}",
                "2:",
                page = sym crate::hypercall::HYPERCALL_PAGE,
                slot = const keel_hypercall::abi::hypercall::IRET as usize
                    * keel_hypercall::abi::hypercall::HYPERCALL_PAGE_ENTRY_SIZE,
                out("rax") _,
                options(att_syntax)
            ),
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
