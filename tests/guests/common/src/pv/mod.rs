//! pv64: the 64-bit PV guest's start of day and modes.
//!
//! # What a PV kernel is given
//!
//! A PV kernel has no PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`), so the domain builder
//! runs it paravirtualised (Xen `xen.h` "Start-of-day memory layout",
//! `xen-x86_64.h`, `xen/arch/x86/pv/dom0_build.c`):
//!
//! - long mode, but in **ring 3** (`FLAT_KERNEL_CS`/`FLAT_KERNEL_SS`, Xen's own
//!   descriptors; data selectors null), at the virtual address of its
//!   `XEN_ELFNOTE_ENTRY` note, event upcalls masked, no trap table;
//! - on page tables the builder made: one contiguous virtual region from the
//!   `XEN_ELFNOTE_VIRT_BASE` note on, mapping, in this order, the kernel image
//!   (placed by its `p_paddr`s: virtual = `p_paddr` + VIRT_BASE - PADDR_OFFSET),
//!   the p2m list (pfn -> mfn), the `start_info` page, the page tables themselves
//!   (read-only), a one-page boot stack, then at least 512 KiB of padding up to a
//!   4 MiB boundary. The region maps the first pseudo-physical pages 1:1
//!   (virtual = VIRT_BASE + pfn * 4096);
//! - `rsi` = virtual address of `start_info`, `rsp` = top of the boot stack;
//! - the hypercall page (at the `XEN_ELFNOTE_HYPERCALL_PAGE` address) already
//!   filled: entry `n` is `push %rcx; push %r11; mov $n, %eax; syscall; pop %r11;
//!   pop %rcx; ret` (arguments in rdi, rsi, rdx, r10, r8 as for HVM), so
//!   [`crate::hypercall::call`] works unchanged once that page is
//!   [`crate::hypercall::HYPERCALL_PAGE`] (pv64's linker script puts it outside
//!   `.bss`, which the entry stub zeroes).
//!
//! # What pv64 does with it
//!
//! pv64's entry stub (in `pv64/src/main.rs`) records the entry `rsp`, zeroes
//! `.bss`, switches to its own 64 KiB stack and calls [`main`] with `rsi`. From
//! there everything is ordinary Rust: print through `HYPERVISOR_console_io`
//! as Dom0 (`SIF_INITDOMAIN`), through the console ring `start_info` names as a
//! domU, pick the mode from `start_info.cmd_line` (`mode=`, as the PVH guests
//! do) and end with `SCHEDOP_shutdown`:
//!
//! - `probe` (default): [`probe`]'s checks, then `Test result: SUCCESS` and
//!   poweroff, or `FAILURE` and `SHUTDOWN_crash` ([`crate::modes::finish`]);
//! - `hello`: `hello from pv64` and poweroff;
//! - `crash`, `reboot`: that shutdown at once;
//! - `traps`: its own trap table, exceptions bounced to it, `iret`; `privop`:
//!   the privileged instructions keel emulates for it ([`traps`]);
//! - `mmu`: its page tables through `mmu_update`, `update_va_mapping`,
//!   `mmuext_op` and `multicall` ([`mmu`]);
//! - `events`: event channels through its event callback ([`events`]);
//! - `gdt`: its own GDT ([`gdt`]);
//! - `smp`: a second vCPU, from a `vcpu_guest_context` ([`smp`]);
//! - `user`: a process in user mode, its `syscall`s through the syscall
//!   callback ([`user`]);
//! - `hostile`, `fault`: what a hostile PV kernel tries ([`hostile`]).
//!
//! The `fault` mode breaks the first invariant below on purpose.
//!
//! # Invariants and hazards
//!
//! - No privileged instruction, ever: the guest kernel runs in ring 3, and with no
//!   trap table registered any fault, even one Xen would emulate for a kernel that
//!   asked, ends the domain. That rules out the PVH code paths that load the IDT,
//!   touch CR3 or MSRs, do port I/O, or `cli` (the common code's last-resort
//!   `arch::halt` does, which then ends the domain too: acceptable for a guest
//!   whose `SCHEDOP_shutdown` returned).
//! - Pointers handed to hypercalls are guest-virtual, as every PV hypercall
//!   expects; nothing here assumes the identity map the PVH code lives on.
//! - Only Dom0 can print: a domU's `console_io` gets `-EPERM` and its console ring
//!   is a machine frame this version does not map. As a domU the guest's lines are
//!   lost (its end is still visible as the domain's shutdown reason).

pub mod events;
pub mod gdt;
pub mod hostile;
pub mod mmu;
pub mod probe;
pub mod smp;
pub mod traps;
pub mod user;
pub mod start_info;

use core::sync::atomic::{AtomicBool, Ordering};

use keel_hypercall::abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT};

use crate::console::{self, Escaped};
use crate::{cmdline, modes, out};

/// The guest's name as it prints it.
pub const GUEST_NAME: &str = "pv64";

/// What the mode is called in messages.
pub const MODE_NAME: &str = "long mode, PV";

/// Set once [`main`] runs: the guest is pv64, not a PVH guest ([`crate::guest_name`]).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Whether this is pv64 (its [`main`] has started).
pub fn running() -> bool {
    RUNNING.load(Ordering::Relaxed)
}

/// Where things are, as the guest knows it besides `start_info`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The image's VIRT_BASE (its linker script's, the same number as its note).
    pub virt_base: u64,
    /// First byte of the image.
    pub image_start: u64,
    /// One past its last byte, `.bss` included.
    pub image_end: u64,
    /// `rsp` at entry: the top of the builder's boot stack.
    pub boot_rsp: u64,
}

unsafe extern "C" {
    /// Absolute symbol: the image's VIRT_BASE (pv64's linker script).
    static __virt_base: u8;
}

/// The image's VIRT_BASE.
pub fn virt_base() -> u64 {
    // Taking the address of a linker-defined symbol reads nothing.
    &raw const __virt_base as usize as u64
}

/// `callback_op(CALLBACKOP_register)` of callback `kind` at `address`, with
/// `flags`: the hypercall's return.
pub fn register_callback(kind: u16, flags: u16, address: u64) -> i64 {
    use keel_hypercall::abi::callback::{CALLBACKOP_REGISTER, CallbackRegister};
    use keel_hypercall::abi::hypercall as nr;
    let reg = CallbackRegister {
        type_: kind,
        flags,
        pad: 0,
        address,
    };
    let (rc, _) = crate::hypercall::with_arg(reg.to_bytes(), |a| {
        crate::hypercall::call(nr::CALLBACK_OP, [CALLBACKOP_REGISTER as usize, a, 0, 0, 0])
    });
    rc
}

/// A domU's console ring as `start_info` names it: its virtual address (the
/// boot region maps pfn `p` at VIRT_BASE + `p` pages), machine frame and event
/// channel; `None` for the initial domain, or a ring the p2m list does not hold.
fn domu_console(si: &start_info::StartInfo, layout: &Layout) -> Option<(usize, u64, u32)> {
    use keel_hypercall::abi::start_info::SIF_INITDOMAIN;
    if si.flags & SIF_INITDOMAIN != 0 || si.console_mfn == 0 {
        return None;
    }
    // The p2m list (pfn -> mfn) lies in the boot region, after the image.
    if si.mfn_list < layout.image_end || !si.mfn_list.is_multiple_of(8) || si.nr_pages > 1 << 24 {
        return None;
    }
    let pfn = (0..si.nr_pages).find(|&p| {
        // SAFETY: the builder maps the p2m list (nr_pages entries) read-write
        // in the boot region at `mfn_list` (checked above to be past the image
        // and aligned); a read has no side effects.
        unsafe { core::ptr::read_volatile((si.mfn_list + p * 8) as *const u64) == si.console_mfn }
    })?;
    let va = layout.virt_base.checked_add(pfn.checked_mul(4096)?)?;
    Some((va as usize, si.console_mfn, si.console_evtchn))
}

/// pv64's Rust entry point, called by its entry stub with the entry's `rsi` (the
/// virtual address of `start_info`) and `rsp`.
pub fn main(start_info_va: u64, boot_rsp: u64) -> ! {
    RUNNING.store(true, Ordering::Relaxed);
    let (image_start, image_end) = crate::image_range();
    let layout = Layout {
        virt_base: virt_base(),
        image_start,
        image_end,
        boot_rsp,
    };
    let si = start_info::read(start_info_va, image_end);
    // Dom0's console is a hypercall away from the first instruction: the builder
    // filled the hypercall page before entry. A domU's is the ring its
    // start_info names, mapped with the rest of the boot region.
    match si.as_ref().ok().and_then(|si| domu_console(si, &layout)) {
        Some((va, mfn, port)) => console::use_ring_at(va, mfn, port),
        None => console::use_xen_console(),
    }
    let si = match si {
        Ok(si) => si,
        Err(why) => {
            out!(
                "{} ({}): start_info at {:#x} not read: {:?}",
                GUEST_NAME,
                MODE_NAME,
                start_info_va,
                why
            );
            out!("Test result: FAILURE (start_info)");
            modes::shutdown(SHUTDOWN_CRASH)
        }
    };
    out!(
        "{} ({}): start_info at {:#x}, command line \"{}\"",
        GUEST_NAME,
        MODE_NAME,
        si.va,
        Escaped(si.cmdline())
    );
    match cmdline::get(si.cmdline(), "mode").unwrap_or(b"probe") {
        b"probe" => {
            probe::run(&si, &layout);
            modes::finish()
        }
        b"events" => {
            events::run(&si, &layout);
            modes::finish()
        }
        b"user" => {
            user::run(&si, &layout);
            modes::finish()
        }
        b"mmu" => {
            mmu::run(&si, &layout);
            modes::finish()
        }
        b"smp" => {
            smp::run(&si, &layout);
            modes::finish()
        }
        b"gdt" => {
            gdt::run(&si, &layout);
            modes::finish()
        }
        b"privop" => {
            traps::privileged(&si, &layout);
            modes::finish()
        }
        b"traps" => {
            traps::run();
            modes::finish()
        }
        b"hostile" => {
            hostile::run(&si, &layout);
            modes::finish()
        }
        b"fault" => hostile::fault(
            cmdline::get(si.cmdline(), "fault").unwrap_or(b""),
            &si,
            &layout,
        ),
        b"hello" => {
            out!("hello from {}", GUEST_NAME);
            modes::shutdown(SHUTDOWN_POWEROFF)
        }
        b"crash" => {
            out!("crashing on purpose: SCHEDOP_shutdown(SHUTDOWN_crash)");
            modes::shutdown(SHUTDOWN_CRASH)
        }
        b"reboot" => {
            out!("rebooting on purpose: SCHEDOP_shutdown(SHUTDOWN_reboot)");
            modes::shutdown(SHUTDOWN_REBOOT)
        }
        other => {
            out!("unknown mode={} in {}", Escaped(other), GUEST_NAME);
            out!("Test result: FAILURE (unknown mode)");
            modes::shutdown(SHUTDOWN_CRASH)
        }
    }
}
