//! How keel ends: a clean power-off through ACPI S5, or a fatal stop after a keel bug.
//!
//! Power-off (ACPI 6.4 §4.8.3.2, §7.4.2): write SLP_TYPx from the `\_S5` package with
//! SLP_EN into PM1a_CNT (and PM1b_CNT if present). QEMU and Bochs both exit on it.
//! With `debug-exit=<port>` on the command line, a failure first writes a status byte
//! to QEMU's isa-debug-exit device so that tests can tell pass from fail by QEMU's exit
//! status ((status << 1) | 1).
//!
//! SMP: the first CPU to fail claims the fatal path and stops the others with an
//! NMI (their NMI handler finds the path taken and halts), so there is one report.
//!
//! Hazard: the fatal path may run with any lock held and any state half-updated; it
//! touches only the console (breaking its lock), two ports and static atomics. A
//! fault while reporting a fault halts at once instead of recursing.
//!
//! # Locking
//! None taken: `IN_FATAL` is claimed by an atomic swap (the first CPU wins), and
//! the console's lock is broken rather than waited for.

use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use crate::traps::TrapFrame;

/// How keel ends, as reported through isa-debug-exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Orderly power-off: nothing is written to isa-debug-exit (QEMU exits 0 on S5).
    Clean,
    /// keel itself failed (panic, exception): status 1, QEMU exits 3.
    KeelFailure,
    /// keel is fine, but the domain that decides the machine's fate (Dom0) crashed:
    /// status 2, QEMU exits 5.
    DomainFailure,
}

impl ExitStatus {
    fn debug_exit_code(self) -> Option<u8> {
        match self {
            ExitStatus::Clean => None,
            ExitStatus::KeelFailure => Some(1),
            ExitStatus::DomainFailure => Some(2),
        }
    }
}

/// The ACPI fixed-hardware registers and sleep types needed for S5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiSleep {
    pub pm1a_cnt: u16,
    pub pm1b_cnt: Option<u16>,
    pub slp_typ_a: u8,
    pub slp_typ_b: u8,
}

static DEBUG_EXIT_PORT: AtomicU16 = AtomicU16::new(0);
static ACPI_SLEEP: spin::Once<AcpiSleep> = spin::Once::new();
static IN_FATAL: AtomicBool = AtomicBool::new(false);

/// Tells the power-off path about QEMU's isa-debug-exit device.
pub fn set_debug_exit_port(port: Option<u16>) {
    DEBUG_EXIT_PORT.store(port.unwrap_or(0), Ordering::Relaxed);
}

/// Records how to enter S5; called once ACPI has been read.
pub fn set_acpi_sleep(s: AcpiSleep) {
    ACPI_SLEEP.call_once(|| s);
}

/// Powers the machine off. Prints the final `(KEEL) Powering off` line first.
pub fn power_off(status: ExitStatus, why: &str) -> ! {
    let note = match status {
        ExitStatus::DomainFailure => " after a domain failure",
        _ => "",
    };
    crate::console::emergency_write_fmt(format_args!("(KEEL) Powering off{note}: {why}\n"));
    crate::console::flush();
    crate::cpu::disable_interrupts();
    let port = DEBUG_EXIT_PORT.load(Ordering::Relaxed);
    if let (Some(code), true) = (status.debug_exit_code(), port != 0) {
        // SAFETY: the user named this port as QEMU's isa-debug-exit device on the
        // command line; writing it ends the emulator.
        unsafe { crate::io::outb(port, code) };
    }
    if let Some(s) = ACPI_SLEEP.get().copied() {
        const SLP_EN: u16 = 1 << 13;
        const SLP_TYP_MASK: u16 = 7 << 10;
        // SAFETY: PM1x_CNT are the fixed-hardware control registers named by the FADT;
        // writing SLP_TYP|SLP_EN is the architected way to enter S5. Nothing of keel
        // runs afterwards.
        unsafe {
            if let Some(b) = s.pm1b_cnt {
                let v = crate::io::inw(b) & !SLP_TYP_MASK;
                crate::io::outw(b, v | (u16::from(s.slp_typ_b) << 10) | SLP_EN);
            }
            let v = crate::io::inw(s.pm1a_cnt) & !SLP_TYP_MASK;
            crate::io::outw(s.pm1a_cnt, v | (u16::from(s.slp_typ_a) << 10) | SLP_EN);
        }
        // S5 is not instant on real hardware; give it time before saying it failed.
        let start = crate::cpu::rdtsc();
        while crate::cpu::rdtsc().wrapping_sub(start) < 10_000_000_000 {
            crate::cpu::pause();
        }
    }
    crate::console::emergency_write_fmt(format_args!(
        "(KEEL) Could not power off (no usable ACPI S5); halted. It is safe to turn the machine off.\n"
    ));
    crate::cpu::halt_forever()
}

/// Stops the machine after a keel failure that has already been reported.
pub fn fatal_stop() -> ! {
    power_off(
        ExitStatus::KeelFailure,
        "keel failed (see the FATAL report above)",
    )
}

/// Claims the fatal path for this CPU and stops every other one; a second claim
/// (a fault while reporting, or another CPU failing at the same time, or the NMI
/// this sends reaching the others) halts that CPU at once. So one CPU reports, and
/// nothing else of keel runs on after it.
pub fn enter_fatal() {
    if IN_FATAL.swap(true, Ordering::SeqCst) {
        crate::cpu::halt_forever();
    }
    // The others take the NMI in `fatal_exception`, whose claim then fails.
    crate::apic::send_nmi_all_others();
    let me = crate::percpu::this();
    crate::console::emergency_write_fmt(format_args!(
        "(KEEL) FATAL: on CPU {} (APIC id {}); every other CPU is stopped\n",
        me.index(),
        me.apic_id()
    ));
}

/// Prints the report for an exception keel raised itself, then stops the machine.
pub fn fatal_exception(frame: &TrapFrame) -> ! {
    enter_fatal();
    let w = crate::console::emergency_write_fmt;
    w(format_args!(
        "(KEEL) FATAL: exception {} ({}) in keel, error code {:#x}\n",
        frame.vector,
        crate::traps::exception_name(frame.vector),
        frame.error_code
    ));
    w(format_args!(
        "(KEEL) FATAL: RIP {:#018x} CS {:#06x} RFLAGS {:#010x} RSP {:#018x} SS {:#06x}\n",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    w(format_args!(
        "(KEEL) FATAL: CR0 {:#010x} CR2 {:#018x} CR3 {:#018x} CR4 {:#010x}\n",
        crate::cpu::read_cr0(),
        crate::cpu::read_cr2(),
        crate::cpu::read_cr3(),
        crate::cpu::read_cr4()
    ));
    w(format_args!(
        "(KEEL) FATAL: RAX {:#018x} RBX {:#018x} RCX {:#018x} RDX {:#018x}\n",
        frame.rax, frame.rbx, frame.rcx, frame.rdx
    ));
    w(format_args!(
        "(KEEL) FATAL: RSI {:#018x} RDI {:#018x} RBP {:#018x} R8  {:#018x}\n",
        frame.rsi, frame.rdi, frame.rbp, frame.r8
    ));
    w(format_args!(
        "(KEEL) FATAL: R9  {:#018x} R10 {:#018x} R11 {:#018x} R12 {:#018x}\n",
        frame.r9, frame.r10, frame.r11, frame.r12
    ));
    w(format_args!(
        "(KEEL) FATAL: R13 {:#018x} R14 {:#018x} R15 {:#018x}\n",
        frame.r13, frame.r14, frame.r15
    ));
    if frame.vector == 14 {
        let e = frame.error_code;
        w(format_args!(
            "(KEEL) FATAL: page fault: {} {} access to {:#x}{}\n",
            if e & 1 != 0 {
                "protection violation on"
            } else {
                "not-present page at"
            },
            if e & 16 != 0 {
                "instruction fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            crate::cpu::read_cr2(),
            if e & 8 != 0 {
                " (reserved bit set)"
            } else {
                ""
            }
        ));
    }
    crate::backtrace::print(frame.rip, frame.rbp);
    fatal_stop()
}
