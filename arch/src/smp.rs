//! Starting the application processors (SDM Vol. 3A §9.4 "Multiple-processor
//! initialization", §11.6 "Issuing interprocessor interrupts").
//!
//! # The road an AP takes
//! 1. The starting CPU copies the real-mode trampoline (`boot.rs`,
//!    `keel_ap_trampoline`) to a page below 1 MiB that the kernel reserved at boot,
//!    and fills the hand-off words below: keel's CR3, the top of the AP's own stack,
//!    and the AP's [`PerCpu`](crate::percpu::PerCpu) area.
//! 2. INIT, 10 ms, STARTUP (vector = the page number), 200 us, and a second STARTUP
//!    if the AP has not said it is alive (the "universal start-up algorithm").
//! 3. The AP runs the trampoline (real mode, then protected mode), then
//!    `keel_ap_start32` (the boot CPU's road to long mode and the image window),
//!    loads keel's CR3, its stack and GS base, and calls the kernel's
//!    `keel_ap_start(percpu)`, which sets up the CPU and calls [`PerCpu::set_online`].
//! 4. The starting CPU waits for that, with a time limit: a CPU that does not
//!    answer is reported and left out, never fatal.
//!
//! # Locking
//! The hand-off words are one set for the whole machine: APs are started one at a
//! time, each only after the previous one is online or given up on. The caller
//! (the boot CPU, before any domain runs) is the only one starting CPUs.
//!
//! # Hazards
//! An AP given up on may still wake later and run the trampoline with hand-off
//! words meant for another CPU. keel therefore sends INIT to a CPU it gives up on,
//! which puts it back into wait-for-SIPI, before it reuses the hand-off words.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::percpu::PerCpu;

/// keel's page-table root, for the AP to load once in long mode.
#[unsafe(no_mangle)]
pub static KEEL_AP_BOOT_CR3: AtomicU64 = AtomicU64::new(0);
/// The top of the AP's stack.
#[unsafe(no_mangle)]
pub static KEEL_AP_BOOT_STACK: AtomicU64 = AtomicU64::new(0);
/// The AP's per-CPU area (its GS base, and the argument of `keel_ap_start`).
#[unsafe(no_mangle)]
pub static KEEL_AP_BOOT_PERCPU: AtomicU64 = AtomicU64::new(0);

/// Why an AP did not come up. The doc comment is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApError {
    /// the trampoline page is not below 1 MiB or not page-aligned
    BadTrampoline,
    /// it did not answer INIT-SIPI-SIPI in time
    NoAnswer,
    /// its APIC id cannot be addressed in xAPIC mode (above 255)
    ApicIdTooLarge,
}

impl core::fmt::Display for ApError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ApError::BadTrampoline => "the trampoline page is not below 1 MiB or not page-aligned",
            ApError::NoAnswer => "it did not answer INIT-SIPI-SIPI in time",
            ApError::ApicIdTooLarge => "its APIC id cannot be addressed in xAPIC mode (above 255)",
        })
    }
}

/// What starting one AP needs.
#[derive(Clone, Copy, Debug)]
pub struct ApStart {
    /// The reserved page below 1 MiB the trampoline is copied to (physical).
    pub trampoline: u64,
    /// keel's page-table root (CR3).
    pub cr3: u64,
    /// The top of the AP's own stack (a direct-map or image address, 16-aligned).
    pub stack_top: u64,
    /// The TSC frequency, for the delays.
    pub tsc_hz: u64,
    /// How long to wait for the AP to come online, in microseconds.
    pub timeout_us: u64,
}

#[cfg(target_os = "none")]
unsafe extern "C" {
    static keel_ap_trampoline: u8;
    static keel_ap_trampoline_end: u8;
}

/// Busy-waits `us` microseconds on the TSC.
fn delay_us(us: u64, tsc_hz: u64) {
    let start = crate::cpu::rdtsc();
    let ticks = tsc_hz.saturating_mul(us) / 1_000_000;
    while crate::cpu::rdtsc().wrapping_sub(start) < ticks {
        crate::cpu::pause();
    }
}

/// Waits up to `us` microseconds for `cpu` to come online.
fn wait_online(cpu: &PerCpu, us: u64, tsc_hz: u64) -> bool {
    let start = crate::cpu::rdtsc();
    let ticks = tsc_hz.saturating_mul(us) / 1_000_000;
    while crate::cpu::rdtsc().wrapping_sub(start) < ticks {
        if cpu.is_online() {
            return true;
        }
        crate::cpu::pause();
    }
    cpu.is_online()
}

/// Starts the AP whose per-CPU area is `cpu` (its APIC id inside) and waits until
/// it is online.
///
/// # Safety
/// `s.trampoline` is a page below 1 MiB that nothing else uses, mapped by the
/// direct map; `s.cr3` maps keel as the calling CPU sees it; `s.stack_top` is the
/// top of a stack that belongs to this AP alone and lives forever; `cpu` is sealed
/// for this AP and no other CPU's; no other AP is being started.
#[cfg(target_os = "none")]
pub unsafe fn start_ap(cpu: &'static PerCpu, s: &ApStart) -> Result<(), ApError> {
    if s.trampoline >= 0x10_0000 || s.trampoline & 0xFFF != 0 {
        return Err(ApError::BadTrampoline);
    }
    let apic_id = cpu.apic_id();
    if !crate::apic::can_address(apic_id) {
        return Err(ApError::ApicIdTooLarge);
    }
    // Only the addresses of the two assembly symbols are taken.
    let (from, to) = (
        core::ptr::addr_of!(keel_ap_trampoline) as u64,
        core::ptr::addr_of!(keel_ap_trampoline_end) as u64,
    );
    let len = (to - from) as usize;
    debug_assert!(len <= 4096);
    // SAFETY: the trampoline page is reserved for this (caller's contract) and
    // mapped by the direct map; the source is the trampoline's bytes in rodata.
    unsafe {
        core::ptr::copy_nonoverlapping(
            from as *const u8,
            keel_mm::layout::DIRECTMAP_BASE.wrapping_add(s.trampoline) as *mut u8,
            len.min(4096),
        )
    };
    KEEL_AP_BOOT_CR3.store(s.cr3, Ordering::Relaxed);
    KEEL_AP_BOOT_STACK.store(s.stack_top, Ordering::Relaxed);
    KEEL_AP_BOOT_PERCPU.store(cpu as *const PerCpu as u64, Ordering::Relaxed);
    // The AP reads the words (and the trampoline) after the INIT below.
    core::sync::atomic::fence(Ordering::SeqCst);

    let vector = (s.trampoline >> 12) as u8;
    crate::apic::send_init(apic_id);
    delay_us(10_000, s.tsc_hz);
    crate::apic::send_startup(apic_id, vector);
    if wait_online(cpu, 200, s.tsc_hz) {
        return Ok(());
    }
    crate::apic::send_startup(apic_id, vector);
    if wait_online(cpu, s.timeout_us, s.tsc_hz) {
        return Ok(());
    }
    // Back to wait-for-SIPI, so it cannot wake later on another CPU's hand-off.
    crate::apic::send_init(apic_id);
    Err(ApError::NoAnswer)
}
