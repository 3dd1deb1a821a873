//! pv64's `mode=gdt`: its own GDT (`set_gdt`, `update_descriptor`).
//!
//! A PV kernel's GDT is frames of its own the hypervisor has checked: every
//! descriptor a ring-3 segment (a lower DPL is raised to 3) or a call gate to
//! ring-3 code, and no writable mapping of them while they are a GDT. The
//! guest fills a padding page with descriptors, unmaps it, makes it its GDT,
//! and:
//! - loads FS with a selector of it (a flat ring-3 data segment), reads it
//!   back; a selector past its entries is its #GP;
//! - maps the frame read-only: the ring-0 data descriptor it wrote reads back
//!   with DPL 3; a writable mapping is refused;
//! - `update_descriptor`: a valid descriptor is written; a call gate to keel's
//!   code selector, a system descriptor, a misaligned address, keel's frame
//!   and a page table (its L4) are -EINVAL;
//! - `set_gdt` of a frame mapped writable, of keel's frame, of too many
//!   entries: -EINVAL; `set_gdt` of nothing gives the frame back.

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::hypercall as nr;
use keel_hypercall::abi::mmu::UVMF_INVLPG;

use super::Layout;
use super::mmu::{Mem, PAGE, RW, update_va_mapping};
use super::start_info::StartInfo;
use super::traps;
use crate::checks::Checks;
use crate::hypercall;
use crate::paging::Page;

const RO: u64 = 0x25;
const DATA3: u64 = 0x00cf_f300_0000_ffff;
const CODE64_3: u64 = 0x00af_fb00_0000_ffff;
const DATA0: u64 = 0x00cf_9300_0000_ffff;

static LIST: Page = Page::new();

fn set_gdt(frames: &[u64], entries: u32) -> i64 {
    for (i, f) in frames.iter().enumerate() {
        LIST.write(i * 8, &f.to_le_bytes());
    }
    hypercall::call(nr::SET_GDT, [LIST.addr(), entries as usize, 0, 0, 0])
}

fn update_descriptor(maddr: u64, desc: u64) -> i64 {
    hypercall::call(nr::UPDATE_DESCRIPTOR, [maddr as usize, desc as usize, 0, 0, 0])
}

fn read(va: u64) -> u64 {
    // SAFETY: a padding page mapped by the test.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn write(va: u64, v: u64) {
    // SAFETY: a padding page mapped writable by the test.
    unsafe { core::ptr::write_volatile(va as *mut u64, v) }
}

/// `mode=gdt`.
pub fn run(si: &StartInfo, layout: &Layout) {
    let c = Checks::new("", "");
    let m = Mem { si, layout };
    let g = layout.boot_rsp.next_multiple_of(PAGE) + 4 * PAGE;
    let gm = m.mfn(g);
    for i in 0..512 {
        write(g + i * 8, 0);
    }
    write(g + 8, DATA3);
    write(g + 16, CODE64_3);
    write(g + 24, DATA0);
    c.rc("a trap table", traps::install_public(), 0);

    let rc = set_gdt(&[gm], 4);
    c.errno("set_gdt of a frame mapped writable", rc, Errno::EINVAL);
    c.rc("unmap the frame", update_va_mapping(g, 0, UVMF_INVLPG), 0);
    c.errno("set_gdt of keel's frame", set_gdt(&[1], 4), Errno::EINVAL);
    c.errno("set_gdt of 7169 entries", set_gdt(&[gm], 7169), Errno::EINVAL);
    c.rc("set_gdt", set_gdt(&[gm], 4), 0);

    let sel: u16;
    // SAFETY: selector 0x0b is entry 1 of its GDT, a flat ring-3 data
    // segment; FS goes back to the null selector after.
    unsafe {
        core::arch::asm!(
            "mov $0x0b, %ax",
            "mov %ax, %fs",
            "mov %fs, %ax",
            "xor %ecx, %ecx",
            "mov %cx, %fs",
            out("ax") sel,
            out("ecx") _,
            options(att_syntax)
        );
    }
    c.check(
        "FS loads a selector of its GDT",
        sel == 0x0b,
        format_args!("read back {sel:#x}"),
    );
    let n = traps::count();
    let at = traps::fault_at_public_fs_0x2b();
    traps::saw_public(&c, "a selector past its entries is its #GP", n, 13, Some(0x28), at);

    c.rc(
        "map the GDT frame read-only",
        update_va_mapping(g, (gm << 12) | RO, UVMF_INVLPG),
        0,
    );
    c.check(
        "a ring-0 data descriptor reads back with DPL 3",
        read(g + 24) == DATA0 | (3 << 45),
        format_args!("{:#x}", read(g + 24)),
    );
    let rc = update_va_mapping(g, (gm << 12) | RW, UVMF_INVLPG);
    c.check(
        "a GDT frame cannot be mapped writable",
        rc < 0,
        format_args!("rc {rc}"),
    );
    c.rc(
        "update_descriptor of a data descriptor",
        update_descriptor((gm << 12) + 8, DATA3 & !(1 << 40)),
        0,
    );
    c.check(
        "and it is written",
        read(g + 8) == DATA3 & !(1 << 40),
        format_args!("{:#x}", read(g + 8)),
    );
    // A 64-bit call gate (type 0xC, present, DPL 3) to keel's code selector.
    let gate = (0xe008u64 << 16) | (0xEC << 40);
    c.errno(
        "update_descriptor: a call gate to keel's code",
        update_descriptor((gm << 12) + 32, gate),
        Errno::EINVAL,
    );
    // A 64-bit TSS (system type 9).
    c.errno(
        "update_descriptor: a system descriptor",
        update_descriptor((gm << 12) + 32, (0x89u64 << 40) | 0x67),
        Errno::EINVAL,
    );
    c.errno(
        "update_descriptor: misaligned",
        update_descriptor((gm << 12) + 9, DATA3),
        Errno::EINVAL,
    );
    c.errno(
        "update_descriptor: keel's frame",
        update_descriptor(1 << 12, DATA3),
        Errno::EINVAL,
    );
    c.errno(
        "update_descriptor: its L4",
        update_descriptor(m.mfn(si.pt_base) << 12, 0),
        Errno::EINVAL,
    );
    c.rc("set_gdt of nothing", set_gdt(&[], 0), 0);
    c.rc(
        "the frame maps writable again",
        update_va_mapping(g, (gm << 12) | RW, UVMF_INVLPG),
        0,
    );
    c.rc("set_trap_table(NULL)", hypercall::call(nr::SET_TRAP_TABLE, [0; 5]), 0);
}
