//! What the guest does, chosen by `mode=` on its command line, and how it ends.
//!
//! - `probe` (default): every check in [`crate::probe`], then `Test result:
//!   SUCCESS` and `SCHEDOP_shutdown(SHUTDOWN_poweroff)`, or `Test result: FAILURE
//!   (<n> failed)` and `SHUTDOWN_crash`, so a failure also shows in how the
//!   hypervisor ends the domain.
//! - `hello`: one line, `hello from pvh64` (or `pvh32`), and a poweroff.
//! - `crash`, `reboot`: `SCHEDOP_shutdown` with that reason at once.
//! - `triple-fault`: load an empty IDT and execute `ud2`: #UD cannot be delivered,
//!   nor the #GP nor the #DF that follow, so the vCPU triple-faults; the hypervisor
//!   must crash the domain (Xen: "Triple fault - invoking HVM shutdown action").
//! - `bench` (pvh64 only; [`crate::bench`]): hot-path costs as `BENCH` lines, for
//!   `cargo xtask bench`.
//! - the domU modes ([`DOMU_MODES`], pvh64 only; `crate::domu`): `pingpong`,
//!   `timers`, `spin`, `block`, `hostile-evtchn`, `hostile-grant`, `granter`,
//!   `die-holding`, `fifo`; they end like `probe`. pvh32 answers them as unknown modes.
//! - `smp` (pvh64 only; `crate::smp`): the domain's other vCPUs, started and
//!   exercised (domU or Dom0); ends like `probe`. pvh32 answers it as an
//!   unknown mode.
//!
//! If `SCHEDOP_shutdown` returns (it must not), the guest says so and halts with
//! interrupts off.

use keel_hypercall::abi::sched::{
    SCHEDOP_SHUTDOWN, SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, SchedShutdown,
};

use crate::checks::{self, Rc};
use crate::console::{self, Escaped};
use crate::hypercall::{self, Xen};
use crate::paging::Page;
use crate::start_info::BootInfo;
use crate::{GUEST_NAME, arch, cmdline, fallback, out, probe, trap};

/// Runs the mode the command line asks for (with Xen present).
pub fn run(xen: &Xen, boot: &BootInfo) -> ! {
    out!(
        "{} ({}): hvm_start_info at {:#x}, command line \"{}\"",
        GUEST_NAME,
        arch::MODE_NAME,
        boot.pa,
        Escaped(boot.cmdline())
    );
    match cmdline::get(boot.cmdline(), "mode").unwrap_or(b"probe") {
        b"probe" => {
            probe::run(xen, boot);
            finish()
        }
        b"hello" => {
            out!("hello from {}", GUEST_NAME);
            shutdown(SHUTDOWN_POWEROFF)
        }
        b"crash" => {
            out!("crashing on purpose: SCHEDOP_shutdown(SHUTDOWN_crash)");
            shutdown(SHUTDOWN_CRASH)
        }
        b"reboot" => {
            out!("rebooting on purpose: SCHEDOP_shutdown(SHUTDOWN_reboot)");
            shutdown(SHUTDOWN_REBOOT)
        }
        b"triple-fault" => {
            out!("triple-faulting on purpose: empty IDT, then ud2");
            trap::remove();
            arch::ud2()
        }
        #[cfg(target_arch = "x86_64")]
        b"bench" => crate::bench::run(xen, boot),
        #[cfg(target_arch = "x86_64")]
        SMP_MODE => {
            crate::smp::run(xen, boot);
            finish()
        }
        #[cfg(target_arch = "x86_64")]
        m if DOMU_MODES.contains(&m) => {
            crate::domu::run(m, xen, boot);
            finish()
        }
        other => {
            if DOMU_MODES.contains(&other) {
                out!(
                    "unknown mode={} in {} (the domU modes are pvh64-only)",
                    Escaped(other),
                    GUEST_NAME
                );
            } else if other == SMP_MODE {
                out!(
                    "unknown mode={} in {} (the smp mode is pvh64-only)",
                    Escaped(other),
                    GUEST_NAME
                );
            } else {
                out!("unknown mode={}", Escaped(other));
            }
            out!("Test result: FAILURE (unknown mode)");
            shutdown(SHUTDOWN_CRASH)
        }
    }
}

/// The domU modes ([`crate::domu`], pvh64 only): event channels, grant tables,
/// timers, scheduling, run as ordinary domains.
pub const DOMU_MODES: &[&[u8]] = &[
    b"pingpong",
    b"fifo",
    b"timers",
    b"spin",
    b"block",
    b"hostile-evtchn",
    b"hostile-grant",
    b"granter",
    b"die-holding",
];

/// The multi-vCPU mode ([`crate::smp`], pvh64 only).
pub const SMP_MODE: &[u8] = b"smp";

/// Prints the verdict and shuts down accordingly.
pub fn finish() -> ! {
    let (passed, failed) = (checks::passed(), checks::failed());
    out!("{} checks passed, {} failed", passed, failed);
    if failed == 0 {
        out!("Test result: SUCCESS");
        shutdown(SHUTDOWN_POWEROFF)
    } else {
        out!("Test result: FAILURE ({} failed)", failed);
        shutdown(SHUTDOWN_CRASH)
    }
}

/// The `struct sched_shutdown` argument (a page of its own: the hypervisor reads it).
static SHUTDOWN_ARG: Page = Page::new();

/// `SCHEDOP_shutdown(reason)`; halts if it returns.
pub fn shutdown(reason: u32) -> ! {
    // The PV console's backend must have the last lines before the domain goes.
    console::flush();
    SHUTDOWN_ARG.write(0, &SchedShutdown { reason }.to_bytes());
    let rc = hypercall::sched_op(SCHEDOP_SHUTDOWN, SHUTDOWN_ARG.addr());
    out!(
        "SCHEDOP_shutdown(reason {}) returned {}; halting",
        reason,
        Rc(rc)
    );
    arch::halt()
}

/// Ends the guest after a failure: `SHUTDOWN_crash` with Xen, an ACPI power-off
/// without.
pub fn shutdown_crash() -> ! {
    if console::xen_console() {
        shutdown(SHUTDOWN_CRASH)
    } else {
        fallback::power_off()
    }
}
