//! keel's clock and its one timer: system time (ns since boot, the time guests see
//! through pvclock) from the TSC, and the LAPIC timer armed for the next thing keel
//! must do (a slice ending, a guest timer, a poll timeout).
//!
//! The LAPIC interrupt only forces an exit from the guest (or ends an idle HLT); its
//! handler acknowledges it and nothing else. The scheduler loop reads the clock and
//! acts; so a spurious or early interrupt costs one trip round the loop, never a
//! wrong decision.
//!
//! Arming for the deadline the timer is already armed for, and has not yet fired
//! for, does nothing (the run loop re-arms before every entry, mostly for the same
//! slice end). [`ARMED`] remembers that deadline; the interrupt handler and
//! [`disarm`] forget it, so a timer that fired is always armed again.
//!
//! # Per CPU
//! Every CPU has its own LAPIC timer, armed by its own run loop: [`ARMED`] has one
//! slot per CPU, indexed by `percpu::index()`, touched only by that CPU (and its
//! interrupt handler). The calibration is the boot CPU's, shared: keel assumes the
//! CPUs' TSCs and LAPIC timers run at one rate, as Xen does with an invariant TSC.
//!
//! # Locking
//! None: the calibration is written once at boot; each CPU touches only its own
//! `ARMED` slot and LAPIC.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use keel_arch::percpu::{self, MAX_CPUS};
use keel_arch::{apic, cpu, traps};
use keel_builder::time::TscScale;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static LAPIC_HZ: AtomicU64 = AtomicU64::new(0);
static MUL: AtomicU64 = AtomicU64::new(0);
static DEADLINE_MODE: AtomicBool = AtomicBool::new(false);
/// Wall-clock time at system time 0: seconds since the Unix epoch, and ns.
static WALL_SECS: AtomicU64 = AtomicU64::new(0);
static WALL_NSEC: AtomicU64 = AtomicU64::new(0);
/// The deadline the timer is armed for and has not fired for yet ([`NOT_ARMED`]:
/// none, or unknown).
static ARMED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NOT_ARMED) }; MAX_CPUS];
const NOT_ARMED: u64 = u64::MAX;

/// This CPU's slot in [`ARMED`].
fn armed() -> &'static AtomicU64 {
    &ARMED[percpu::index() as usize % MAX_CPUS]
}

fn tick(_frame: &mut traps::TrapFrame) {
    armed().store(NOT_ARMED, Ordering::Relaxed);
    apic::eoi();
}

/// Starts the clock at the calibrated frequencies (TSC-deadline mode when the CPU
/// has it) and installs the timer handler. Called once, after calibration.
pub fn init(boot_tsc: u64, tsc_hz: u64, lapic_hz: u64, tsc_deadline: bool) {
    BOOT_TSC.store(boot_tsc, Ordering::Relaxed);
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    LAPIC_HZ.store(lapic_hz, Ordering::Relaxed);
    let s = TscScale::for_hz(tsc_hz);
    MUL.store(
        u64::from(s.mul) | (u64::from(s.shift as u8) << 32),
        Ordering::Relaxed,
    );
    DEADLINE_MODE.store(tsc_deadline, Ordering::Relaxed);
    traps::register_irq(traps::TIMER_VECTOR, tick);
    read_wallclock();
}

/// Reads the CMOS RTC (taken as UTC) and remembers the wall-clock time at system
/// time 0, which guests find in shared_info. Without a readable RTC it stays 0.
fn read_wallclock() {
    let t = match keel_arch::rtc::read() {
        Ok(t) => t,
        Err(e) => {
            log::warn!("Wall clock: cannot read the RTC ({e:?}): guests see 1970");
            return;
        }
    };
    let now = now();
    let Some(secs) =
        keel_builder::time::unix_seconds(t.year, t.month, t.day, t.hour, t.minute, t.second)
    else {
        log::warn!("Wall clock: the RTC reads an impossible date {t:?}: guests see 1970");
        return;
    };
    let (s, ns) = keel_builder::time::wallclock_at_zero(secs, now);
    WALL_SECS.store(s, Ordering::Relaxed);
    WALL_NSEC.store(u64::from(ns), Ordering::Relaxed);
    log::info!(
        "Wall clock: {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC (RTC)",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second
    );
}

/// The wall-clock time at system time 0: (seconds since the epoch, nanoseconds).
pub fn wallclock() -> (u64, u32) {
    (
        WALL_SECS.load(Ordering::Relaxed),
        WALL_NSEC.load(Ordering::Relaxed) as u32,
    )
}

/// The TSC-to-ns scale guests get in `vcpu_time_info`.
pub fn scale() -> TscScale {
    let m = MUL.load(Ordering::Relaxed);
    TscScale {
        mul: m as u32,
        shift: (m >> 32) as u8 as i8,
    }
}

/// The TSC value at system time 0.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// System time: nanoseconds since keel's clock started.
pub fn now() -> u64 {
    scale().ns(cpu::rdtsc().wrapping_sub(boot_tsc()))
}

/// Arms the timer to interrupt at system time `deadline` (at once if it has
/// passed). Replaces any earlier arming.
pub fn arm(deadline: u64) {
    let armed = armed();
    if deadline == armed.load(Ordering::Relaxed) {
        // Still pending at the same deadline: the timer fires when it would anyway.
        return;
    }
    // Before the timer is programmed: should it fire at once, the handler's
    // forgetting comes after this. (A oneshot count clamped to 32 bits fires early,
    // and the handler forgets then too.)
    armed.store(deadline, Ordering::Relaxed);
    let now = now();
    let delta_ns = deadline.saturating_sub(now).max(1_000);
    let tsc_hz = TSC_HZ.load(Ordering::Relaxed);
    if DEADLINE_MODE.load(Ordering::Relaxed) {
        let ticks = scale().ticks(delta_ns, tsc_hz);
        apic::timer_deadline(cpu::rdtsc().saturating_add(ticks));
    } else {
        let hz = LAPIC_HZ.load(Ordering::Relaxed).max(1);
        let ticks = (u128::from(delta_ns) * u128::from(hz)).div_ceil(1_000_000_000);
        apic::timer_oneshot(ticks.clamp(1, u128::from(u32::MAX)) as u32);
    }
}

/// Stops the timer.
pub fn disarm() {
    armed().store(NOT_ARMED, Ordering::Relaxed);
    apic::timer_stop();
}
