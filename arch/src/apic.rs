//! The local APIC, in x2APIC mode where the CPU has it, else xAPIC through MMIO
//! (SDM Vol. 3 ch. 11). keel uses it for its timer; interrupt routing to guests
//! comes later.
//!
//! In x2APIC mode registers are MSRs 0x800 + offset/16 (§11.12.1); in xAPIC mode they
//! are 32-bit MMIO at the APIC base, reached through a UC mapping the kernel provides
//! ([`init`]'s `mmio_va`).
//!
//! # Locking
//! None: every CPU programs its own local APIC (the xAPIC page answers each CPU
//! for itself at the one address); the mode is set by the boot CPU before any AP
//! starts. An IPI's two xAPIC ICR writes happen with interrupts off, so a handler
//! sending one cannot split them.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::msr;

const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
/// Divide configuration for "divide by 1" (SDM Figure 11-10).
const DIVIDE_BY_1: u32 = 0b1011;

/// Which register interface is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    X2Apic,
    XApic,
}

const MODE_NONE: u8 = 0;
const MODE_X2: u8 = 1;
const MODE_X: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
static MMIO_VA: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so MSR 0x800 + reg/16 exists.
        MODE_X2 => unsafe { msr::rdmsr(msr::X2APIC_BASE + (reg >> 4)) as u32 },
        MODE_X => {
            let va = MMIO_VA.load(Ordering::Relaxed) + u64::from(reg);
            // SAFETY: `init` was given a UC mapping of the APIC's 4 KiB page and `reg`
            // is one of this module's register offsets inside it.
            unsafe { (va as *const u32).read_volatile() }
        }
        _ => 0,
    }
}

fn write(reg: u32, value: u32) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; the APIC registers written here only affect interrupt
        // delivery to this CPU.
        MODE_X2 => unsafe { msr::wrmsr(msr::X2APIC_BASE + (reg >> 4), u64::from(value)) },
        MODE_X => {
            let va = MMIO_VA.load(Ordering::Relaxed) + u64::from(reg);
            // SAFETY: as in `read`.
            unsafe { (va as *mut u32).write_volatile(value) }
        }
        _ => {}
    }
}

/// Physical base of the local APIC from IA32_APIC_BASE.
pub fn base_phys() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (CPUID.1:EDX.APIC).
    unsafe { msr::rdmsr(msr::IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000 }
}

/// Enables this CPU's local APIC: x2APIC if `use_x2apic`, else xAPIC through
/// `mmio_va` (a UC mapping of [`base_phys`]). Timer masked, spurious vector set.
pub fn init(use_x2apic: bool, mmio_va: u64) -> ApicMode {
    // SAFETY: setting the enable bit (11), and EXTD (10) only when the CPU reports
    // x2APIC, are the documented transitions from the reset state (§11.12.5).
    unsafe {
        let base = msr::rdmsr(msr::IA32_APIC_BASE);
        let mut v = base | (1 << 11);
        if use_x2apic {
            v |= 1 << 10;
        }
        if v != base {
            msr::wrmsr(msr::IA32_APIC_BASE, v);
        }
    }
    if use_x2apic {
        MODE.store(MODE_X2, Ordering::Relaxed);
    } else {
        MMIO_VA.store(mmio_va, Ordering::Relaxed);
        MODE.store(MODE_X, Ordering::Relaxed);
    }
    write(REG_TPR, 0);
    write(
        REG_LVT_TIMER,
        LVT_MASKED | u32::from(crate::traps::TIMER_VECTOR),
    );
    write(REG_SVR, (1 << 8) | u32::from(crate::traps::SPURIOUS_VECTOR));
    if use_x2apic {
        ApicMode::X2Apic
    } else {
        ApicMode::XApic
    }
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2 => read(REG_ID),
        _ => read(REG_ID) >> 24,
    }
}

/// The APIC version register.
pub fn version() -> u32 {
    read(REG_VERSION)
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Starts the timer counting down from `initial` (divide by 1), masked: used to
/// measure the timer's frequency.
pub fn timer_start_free_running(initial: u32) {
    write(
        REG_LVT_TIMER,
        LVT_MASKED | u32::from(crate::traps::TIMER_VECTOR),
    );
    write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    write(REG_TIMER_INIT, initial);
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    read(REG_TIMER_CURRENT)
}

/// Arms a one-shot interrupt on [`crate::traps::TIMER_VECTOR`] after `ticks` timer
/// ticks (divide by 1).
pub fn timer_oneshot(ticks: u32) {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    write(REG_LVT_TIMER, u32::from(crate::traps::TIMER_VECTOR));
    write(REG_TIMER_INIT, ticks.max(1));
}

/// Arms a TSC-deadline interrupt at absolute TSC value `deadline` (§11.5.4.1). Only
/// valid when CPUID reports TSC-deadline.
pub fn timer_deadline(deadline: u64) {
    write(
        REG_LVT_TIMER,
        LVT_TIMER_TSC_DEADLINE | u32::from(crate::traps::TIMER_VECTOR),
    );
    // SDM §11.5.4.1: a write to the LVT switching modes must be ordered before the
    // deadline write.
    core::sync::atomic::fence(Ordering::SeqCst);
    // SAFETY: IA32_TSC_DEADLINE exists when CPUID.1:ECX.TSC_Deadline is set (the
    // caller's precondition); arming it only schedules an interrupt.
    unsafe { msr::wrmsr(msr::IA32_TSC_DEADLINE, deadline.max(1)) };
}

/// Stops the timer (masks it and clears any count or deadline).
pub fn timer_stop() {
    write(
        REG_LVT_TIMER,
        LVT_MASKED | u32::from(crate::traps::TIMER_VECTOR),
    );
    write(REG_TIMER_INIT, 0);
}

// ------------------------------------------------------------------ IPIs

const REG_ICR_LO: u32 = 0x300;
const REG_ICR_HI: u32 = 0x310;
/// ICR delivery modes (SDM Vol. 3A §11.6.1, Figure 11-12).
const DM_FIXED: u32 = 0b000 << 8;
const DM_NMI: u32 = 0b100 << 8;
const DM_INIT: u32 = 0b101 << 8;
const DM_STARTUP: u32 = 0b110 << 8;
const LEVEL_ASSERT: u32 = 1 << 14;
const DELIVERY_PENDING: u32 = 1 << 12;
/// Destination shorthand "all excluding self".
const ALL_BUT_SELF: u32 = 0b11 << 18;

/// Whether an IPI can name APIC id `id` in the mode keel uses (xAPIC: 8 bits).
pub fn can_address(id: u32) -> bool {
    MODE.load(Ordering::Relaxed) == MODE_X2 || id <= 0xFF
}

/// Sends one IPI: `low` is the ICR's low word, `dest` the destination APIC id
/// (ignored with a shorthand).
fn send_ipi(dest: u32, low: u32) {
    crate::cpu::without_interrupts(|| match MODE.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the ICR is MSR 0x830 (64-bit: destination in
        // the high half, SDM §11.12.9); sending an IPI touches no memory.
        MODE_X2 => unsafe {
            msr::wrmsr(
                msr::X2APIC_BASE + (REG_ICR_LO >> 4),
                (u64::from(dest) << 32) | u64::from(low),
            )
        },
        MODE_X => {
            write(REG_ICR_HI, (dest & 0xFF) << 24);
            write(REG_ICR_LO, low);
            // The xAPIC takes one IPI at a time: wait until it has gone out.
            let start = crate::cpu::rdtsc();
            while read(REG_ICR_LO) & DELIVERY_PENDING != 0
                && crate::cpu::rdtsc().wrapping_sub(start) < 1 << 30
            {
                crate::cpu::pause();
            }
        }
        _ => {}
    })
}

/// INIT to one CPU (puts it into wait-for-SIPI).
pub fn send_init(dest: u32) {
    send_ipi(dest, DM_INIT | LEVEL_ASSERT);
}

/// STARTUP to one CPU: it starts in real mode at `vector << 12`.
pub fn send_startup(dest: u32, vector: u8) {
    send_ipi(dest, DM_STARTUP | LEVEL_ASSERT | u32::from(vector));
}

/// A fixed interrupt `vector` to one CPU.
pub fn send_fixed(dest: u32, vector: u8) {
    send_ipi(dest, DM_FIXED | LEVEL_ASSERT | u32::from(vector));
}

/// A fixed interrupt `vector` to every other CPU.
pub fn send_fixed_all_others(vector: u8) {
    send_ipi(
        0,
        DM_FIXED | LEVEL_ASSERT | ALL_BUT_SELF | u32::from(vector),
    );
}

/// An NMI to every other CPU (keel's fatal path stops them with it).
pub fn send_nmi_all_others() {
    send_ipi(0, DM_NMI | LEVEL_ASSERT | ALL_BUT_SELF);
}

/// Whether the APIC is set up on this machine (the boot CPU's `init` has run).
pub fn is_up() -> bool {
    MODE.load(Ordering::Relaxed) != MODE_NONE
}

/// Enables an AP's local APIC in the mode the boot CPU chose (every CPU uses the
/// same register interface, and the xAPIC page is at the same fixmap address on
/// each: every CPU's APIC answers there for itself).
pub fn init_ap() {
    let x2 = MODE.load(Ordering::Relaxed) == MODE_X2;
    let va = MMIO_VA.load(Ordering::Relaxed);
    init(x2, va);
}
