//! Time: measuring the TSC and the LAPIC timer against a reference clock.
//!
//! The reference is the ACPI PM timer (3.579545 MHz, FADT) where there is one, else
//! PIT channel 2 (1.193182 MHz) with its gate through port 0x61. Both tick in emulated
//! time under QEMU and Bochs, so the numbers are consistent with what guests see.

use crate::io::{inb, inl, outb};

/// ACPI PM timer frequency (ACPI 6.4 §4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// PIT input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// The ACPI PM timer's I/O port and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    pub port: u16,
    pub bits32: bool,
}

/// What calibration measured.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub tsc_hz: u64,
    /// LAPIC timer ticks per second at divide-by-1.
    pub lapic_hz: u64,
    pub reference: &'static str,
}

const CALIBRATION_MS: u64 = 20;

fn pm_read(pm: PmTimer) -> u32 {
    // SAFETY: the port is the FADT's PM timer block, a read-only counter.
    let v = unsafe { inl(pm.port) };
    if pm.bits32 { v } else { v & 0x00FF_FFFF }
}

/// Measures TSC and LAPIC timer rates over ~20 ms of the reference clock.
pub fn calibrate(pm: Option<PmTimer>) -> Calibration {
    crate::apic::timer_start_free_running(u32::MAX);
    let (tsc0, apic0, tsc1, apic1, reference_ns, reference) = match pm {
        Some(pm) => {
            let mask: u64 = if pm.bits32 { 0xFFFF_FFFF } else { 0x00FF_FFFF };
            let want = PM_TIMER_HZ * CALIBRATION_MS / 1000;
            let start = pm_read(pm);
            let (tsc0, apic0) = (crate::cpu::rdtsc(), crate::apic::timer_current());
            let mut elapsed;
            loop {
                elapsed = (u64::from(pm_read(pm)).wrapping_sub(u64::from(start))) & mask;
                if elapsed >= want {
                    break;
                }
                crate::cpu::pause();
            }
            let (tsc1, apic1) = (crate::cpu::rdtsc(), crate::apic::timer_current());
            (
                tsc0,
                apic0,
                tsc1,
                apic1,
                elapsed * 1_000_000_000 / PM_TIMER_HZ,
                "ACPI PM timer",
            )
        }
        None => {
            let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
            // SAFETY: port 0x61 bit 0 gates PIT channel 2 (speaker output bit 1 kept
            // off); 0x43/0x42 program channel 2 in mode 0 (interrupt on terminal
            // count). Only the speaker path is touched; nothing raises interrupts.
            unsafe {
                let gate = inb(0x61);
                outb(0x61, (gate & !0x02) & !0x01);
                outb(0x43, 0b1011_0000);
                outb(0x42, count as u8);
                outb(0x42, (count >> 8) as u8);
                outb(0x61, (gate & !0x02) | 0x01);
            }
            let (tsc0, apic0) = (crate::cpu::rdtsc(), crate::apic::timer_current());
            // SAFETY: reading port 0x61 (OUT2 in bit 5) has no side effects.
            while unsafe { inb(0x61) } & 0x20 == 0 {
                crate::cpu::pause();
            }
            let (tsc1, apic1) = (crate::cpu::rdtsc(), crate::apic::timer_current());
            (
                tsc0,
                apic0,
                tsc1,
                apic1,
                u64::from(count) * 1_000_000_000 / PIT_HZ,
                "PIT",
            )
        }
    };
    crate::apic::timer_stop();
    let ns = reference_ns.max(1);
    Calibration {
        tsc_hz: (tsc1.wrapping_sub(tsc0) as u128 * 1_000_000_000 / ns as u128) as u64,
        lapic_hz: (u64::from(apic0.wrapping_sub(apic1)) as u128 * 1_000_000_000 / ns as u128)
            as u64,
        reference,
    }
}
