//! The PVH test guests' shared code: boot, hypercalls, and the checks themselves.
//!
//! # What
//!
//! keel is tested the way Xen tests itself with XTF: tiny guest kernels that run as a
//! domain, poke the hypervisor's guest ABI from the inside, print one line per check
//! on the hypervisor console, and end with an XTF-style marker,
//! `Test result: SUCCESS` or `Test result: FAILURE (<n> failed)`, followed by a
//! `SCHEDOP_shutdown` (poweroff on success, crash on failure). The emulator tests in
//! `tests/tests/pvh.rs` boot keel with one of these guests as dom0 and match those
//! lines. This crate is everything the guests have in common; the thin binaries
//! `pvh64` (long mode) and `pvh32` (32-bit protected mode, run once with paging off
//! and once with PAE paging) add only their 32-bit entry stub and the Xen ELF note.
//! The PV guest `pv64` (long mode in ring 3, no PVH entry; `tests/tests/pv_on_xen.rs`
//! proves it on Xen 4.17) adds its own 64-bit entry stub, PV notes and linker script,
//! and starts in [`pv::main`] instead of [`main`]: it shares the hypercall, console,
//! check and shutdown code, none of the PVH boot.
//!
//! Everything is written against Xen's *documented* guest ABI (the public headers,
//! `docs/misc/pvh.pandoc`), never against keel's internals: the constants and
//! structures come from `keel_hypercall::abi`, which transcribes those headers and
//! which keel's dispatcher uses too, so a layout mistake there is shared — but the
//! *expected results* here are Xen's behaviour, written down per check.
//!
//! # How a run goes
//!
//! 1. The entry stub (per binary) gets control per the PVH ABI: 32-bit protected
//!    mode, paging off, `ebx` = guest-physical address of `hvm_start_info`. It
//!    zeroes `.bss`, sets a stack (and, for pvh64, identity page tables and long
//!    mode) and calls [`main`].
//! 2. [`start_info`] copies what it needs out of `hvm_start_info` (command line,
//!    module list, memory map) into owned values.
//! 3. [`hypercall::discover`] scans CPUID for Xen's leaves. Without them (say, the
//!    guest was booted by plain `qemu -kernel`) the guest says so on COM1, runs the
//!    checks that need no hypervisor, and powers the machine off through ACPI
//!    ([`fallback`]). With them it installs the hypercall page through the MSR Xen
//!    names and from then on prints through `HYPERVISOR_console_io`, or, when
//!    `hvm_start_info` says the guest is not the initial domain, through the PV
//!    console ring ([`console`]).
//! 4. The command line's `mode=` picks what to do ([`modes`]): `probe` (default) runs
//!    [`probe`], the full list of checks; `hello`, `crash`, `reboot` and
//!    `triple-fault` exercise keel's handling of a domain's end; the domU modes
//!    (pvh64 only, `domu`) test event channels, grant tables, timers and
//!    scheduling between domains; `smp` (pvh64 only, [`smp`]) starts the
//!    domain's other vCPUs and tests them.
//!
//! # Invariants and hazards
//!
//! - One vCPU, interrupts off except for the duration of the hypercalls that
//!   wait for events (the domU modes' `SCHEDOP_block`/`SCHEDOP_poll`): the statics
//!   here are touched by one thread of execution only, plus the exception and
//!   event-upcall handlers ([`trap`]), which run on the same CPU between
//!   instructions and touch nothing but atomics. That is why plain atomics suffice.
//! - Except in `mode=smp`, where the other vCPUs run too. Then: the console
//!   serialises whole lines under a lock ([`console`]); the IDT is filled once,
//!   before any other vCPU starts, and only loaded by them ([`trap`]); everything
//!   else the other vCPUs touch is theirs (a stack each, per-vCPU atomics in
//!   [`smp`]) or atomics. vCPU 0 alone prints check lines, uses the `Page`
//!   statics and arms expected faults.
//! - The guest's own image (linked at 1 MiB) and everything the checks pass to the
//!   hypervisor live in the identity-mapped low 2 MiB (the stack included: small
//!   hypercall arguments are built there), or in the "window" of 4 KiB mappings
//!   [`paging`] sets up for the probes that need non-identity, not-present,
//!   uncached or beyond-RAM mappings. The domU modes map other domains' grants at
//!   gfns just above their RAM, reached through pvh64's 4 GiB identity map.
//! - Hostile probes pass bad pointers and bad numbers *on purpose*. A hypervisor
//!   that handles them wrongly may crash the guest; the guest then stops printing,
//!   and the test that lists the missing `<check>: ok` line fails.

#![no_std]

pub mod arch;
#[cfg(target_arch = "x86_64")]
pub mod bench;
pub mod checks;
pub mod cmdline;
pub mod console;
#[cfg(target_arch = "x86_64")]
pub mod domu;
#[cfg(target_arch = "x86_64")]
pub mod events;
pub mod fallback;
#[cfg(target_arch = "x86_64")]
pub mod fifo;
#[cfg(target_arch = "x86_64")]
pub mod grants;
pub mod hypercall;
pub mod modes;
pub mod paging;
pub mod probe;
#[cfg(target_arch = "x86_64")]
pub mod pv;
#[cfg(target_arch = "x86_64")]
pub mod shared;
#[cfg(target_arch = "x86_64")]
pub mod smp;
pub mod start_info;
#[cfg(target_arch = "x86_64")]
pub mod time;
pub mod trap;
pub mod uart;

/// The Xen ABI definitions the guests use (shared with keel).
pub use keel_hypercall::abi;

/// The guest's name as it prints it: `pvh64` or `pvh32` (pvh64-elf32.elf is pvh64's
/// code in an ELF32 container and calls itself pvh64). pv64 has its own,
/// [`pv::GUEST_NAME`]; see [`guest_name`].
pub const GUEST_NAME: &str = arch::GUEST_NAME;

/// The running guest's name: [`GUEST_NAME`], or `pv64` once [`pv::main`] runs
/// (the same library serves the PVH guests and the PV one; only the panic
/// handler, which both share, needs to tell them apart at run time).
pub fn guest_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if pv::running() {
        return pv::GUEST_NAME;
    }
    GUEST_NAME
}

unsafe extern "C" {
    /// First byte of the loaded image (linker script).
    static __image_start: u8;
    /// One past the last byte of the image, `.bss` included (linker script).
    static __image_end: u8;
}

/// The guest-physical range `[start, end)` the image occupies (it runs identity
/// mapped, so these are also its virtual addresses).
pub fn image_range() -> (u64, u64) {
    // Taking the address of a linker-defined symbol reads nothing.
    let start = &raw const __image_start as usize as u64;
    let end = &raw const __image_end as usize as u64;
    (start, end)
}

/// The guest's Rust entry point, called by the binaries' entry stubs with the
/// guest-physical address of `hvm_start_info` (the PVH entry's `ebx`).
pub fn main(start_info_pa: u64) -> ! {
    trap::install();
    let boot = start_info::read(start_info_pa);
    let Some(xen) = hypercall::discover() else {
        fallback::run(start_info_pa, &boot);
    };
    hypercall::install_page(&xen);
    console::use_xen_console();
    if boot.raw.flags & abi::start_info::SIF_INITDOMAIN == 0 {
        // Not the initial domain: console_io is dom0's (-EPERM here); use the
        // PV console if there is one.
        console::use_ring_if_offered();
    }
    modes::run(&xen, &boot)
}

/// The one panic handler: print where, then crash the domain (or, with no
/// hypervisor, power the machine off).
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    out!("PANIC in {}: {}", guest_name(), info);
    out!("Test result: FAILURE (panic)");
    modes::shutdown_crash()
}
