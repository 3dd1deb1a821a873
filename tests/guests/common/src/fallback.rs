//! No Xen underneath: say so on COM1, run what can run, and power the machine off.
//!
//! This happens when the guest is booted by something that speaks PVH but is not
//! Xen, such as `qemu-system-x86_64 -kernel pvh64.elf` (QEMU's own PVH loader). It is
//! how the guests' entry code, start_info parsing, page tables and exception
//! handling are tested without keel, and a clear message for a user who boots the
//! guest the wrong way:
//!
//! ```text
//! pvh64: no Xen CPUID leaves; start_info at 0x..., cmdline "mode=hello"
//! ```
//!
//! With `mode=probe` the checks that need no hypervisor run too (see
//! [`crate::probe::run_bare`]). The power-off writes SLP_EN with SLP_TYP 0 to the
//! ACPI PM1a control port where QEMU's PIIX4/ICH9 (0x604) and Bochs (0xB004) have it.

use crate::console::Escaped;
use crate::start_info::BootInfo;
use crate::{GUEST_NAME, arch, cmdline, out, probe};

/// Reports, runs the bare checks if asked, powers off.
pub fn run(start_info_pa: u64, boot: &BootInfo) -> ! {
    out!(
        "{}: no Xen CPUID leaves; start_info at {:#x}, cmdline \"{}\"",
        GUEST_NAME,
        start_info_pa,
        Escaped(boot.cmdline())
    );
    let r = &boot.raw;
    out!(
        "{}: hvm_start_info magic {:#x} version {} flags {:#x}, {} module(s), {} memory map entries, RSDP at {:#x}",
        GUEST_NAME,
        r.magic,
        r.version,
        r.flags,
        r.nr_modules,
        r.memmap_entries,
        r.rsdp_paddr
    );
    match cmdline::get(boot.cmdline(), "mode").unwrap_or(b"probe") {
        b"hello" => out!("hello from {}", GUEST_NAME),
        b"probe" => probe::run_bare(boot),
        other => out!(
            "{}: mode={} needs Xen; nothing to do",
            GUEST_NAME,
            Escaped(other)
        ),
    }
    power_off()
}

/// ACPI S5 through the PM1a control port of QEMU, then of Bochs; halts if neither
/// takes.
pub fn power_off() -> ! {
    out!("{}: powering off", GUEST_NAME);
    for port in [0x604u16, 0xB004] {
        // SAFETY: SLP_TYP 0 | SLP_EN to PM1a_CNT: the machine turns off (or, if
        // there is no such port, the write goes nowhere).
        unsafe { arch::port_out(port, 2, 0x2000) };
    }
    arch::halt()
}
