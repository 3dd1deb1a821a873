//! System time from the pvclock, and the vCPU timers (pvh64).
//!
//! # What
//!
//! Xen's system time is nanoseconds since the hypervisor booted. A guest computes
//! it without a hypercall from `vcpu_info.time` (`struct vcpu_time_info`,
//! `xen/include/public/xen.h`) and its own TSC:
//!
//! ```text
//! delta = rdtsc() - tsc_timestamp
//! delta = tsc_shift >= 0 ? delta << tsc_shift : delta >> -tsc_shift
//! now   = system_time + (delta * tsc_to_system_mul) >> 32
//! ```
//!
//! under a seqlock: the hypervisor makes `version` odd, updates the fields, then
//! makes it even again; a reader retries while it is odd or changed under it.
//!
//! The timers ([`set_singleshot`], [`set_periodic`], [`set_timer_op`]) are
//! `VCPUOP_*` and `HYPERVISOR_set_timer_op`; they all take *absolute* system time
//! (the periodic one a period) and raise `VIRQ_TIMER` on the vCPU, which the guest
//! must have bound to see anything (see [`crate::events`]).
//!
//! Every vCPU reads `vcpu_info[0].time` (the smp mode's too): under
//! `XEN_PVCLOCK_TSC_STABLE_BIT` one vCPU's parameters are valid on all (Xen
//! syncs every vCPU's TSC offset to vCPU 0's), and vCPU 0's copy is the one every
//! hypervisor keeps up to date from the start; another vCPU's own copy is
//! written only once it runs.
//!
//! # Invariants and hazards
//!
//! - Needs the shared-info page ([`crate::shared::map`]); before that every read
//!   gives a clock stuck at 0.
//! - A torn read is impossible by construction (the seqlock), but a hypervisor
//!   that never makes `version` even again would make [`now`] spin: the retry is
//!   bounded, after which the last (possibly torn) value is used.

use core::sync::atomic::{Ordering, compiler_fence};

use keel_hypercall::abi::vcpu::{
    VCPU_SSHOTTMR_FUTURE, VCPUOP_SET_PERIODIC_TIMER, VCPUOP_SET_SINGLESHOT_TIMER,
    VCPUOP_STOP_PERIODIC_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER, VcpuSetPeriodicTimer,
    VcpuSetSingleshotTimer,
};
use keel_hypercall::abi::xen::XEN_PVCLOCK_TSC_STABLE_BIT;

use crate::arch;
use crate::hypercall;
use crate::shared::{self, time_field};

/// Nanoseconds per millisecond.
pub const MS: u64 = 1_000_000;
/// Nanoseconds per microsecond.
pub const US: u64 = 1_000;
/// Nanoseconds per second.
pub const S: u64 = 1_000_000_000;

/// One consistent copy of the pvclock parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// The (even) seqlock version the copy was taken at.
    pub version: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns) at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 multiplier from shifted TSC ticks to ns.
    pub mul: u32,
    /// Shift applied to the TSC delta first.
    pub shift: i8,
    /// `XEN_PVCLOCK_*`.
    pub flags: u8,
}

impl Params {
    /// System time at TSC value `tsc`.
    pub fn at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.saturating_sub(self.tsc_timestamp);
        if self.shift >= 0 {
            delta <<= self.shift.unsigned_abs().min(63);
        } else {
            delta >>= self.shift.unsigned_abs().min(63);
        }
        let scaled = ((u128::from(delta) * u128::from(self.mul)) >> 32) as u64;
        self.system_time.wrapping_add(scaled)
    }

    /// Whether the hypervisor says the TSC is stable across vCPUs.
    pub fn tsc_stable(&self) -> bool {
        self.flags & XEN_PVCLOCK_TSC_STABLE_BIT != 0
    }
}

/// Attempts at a consistent read before settling for the last one.
const SEQLOCK_TRIES: u32 = 1000;

/// Reads the parameters and the TSC under the seqlock.
pub fn read() -> (Params, u64) {
    let mut last = (Params::default(), 0);
    for _ in 0..SEQLOCK_TRIES {
        let version = shared::time_u32(time_field::VERSION);
        compiler_fence(Ordering::SeqCst);
        let p = Params {
            version,
            tsc_timestamp: shared::time_u64(time_field::TSC_TIMESTAMP),
            system_time: shared::time_u64(time_field::SYSTEM_TIME),
            mul: shared::time_u32(time_field::MUL),
            shift: shared::time_u8(time_field::SHIFT) as i8,
            flags: shared::time_u8(time_field::FLAGS),
        };
        let tsc = arch::rdtsc();
        compiler_fence(Ordering::SeqCst);
        last = (p, tsc);
        if version & 1 == 0 && shared::time_u32(time_field::VERSION) == version {
            return last;
        }
        arch::pause();
    }
    last
}

/// System time now, in ns.
pub fn now() -> u64 {
    let (p, tsc) = read();
    p.at(tsc)
}

/// `VCPUOP_set_singleshot_timer(vcpu 0)`: fire `VIRQ_TIMER` at `deadline` (with
/// `future`, ask for `-ETIME` if it has passed).
pub fn set_singleshot(deadline: u64, future: bool) -> i64 {
    set_singleshot_for(0, deadline, future)
}

/// `VCPUOP_set_singleshot_timer(vcpu)`: as [`set_singleshot`] for `vcpu`, which
/// must be the calling vCPU (Xen: `-EINVAL` otherwise).
pub fn set_singleshot_for(vcpu: u32, deadline: u64, future: bool) -> i64 {
    let arg = VcpuSetSingleshotTimer {
        timeout_abs_ns: deadline,
        flags: if future { VCPU_SSHOTTMR_FUTURE } else { 0 },
        pad: 0,
    };
    let (rc, _) = hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::vcpu_op(VCPUOP_SET_SINGLESHOT_TIMER, vcpu, a)
    });
    rc
}

/// `VCPUOP_stop_singleshot_timer(vcpu 0)`.
pub fn stop_singleshot() -> i64 {
    hypercall::vcpu_op(VCPUOP_STOP_SINGLESHOT_TIMER, 0, 0)
}

/// `VCPUOP_set_periodic_timer(vcpu 0)`: `VIRQ_TIMER` every `period` ns.
pub fn set_periodic(period: u64) -> i64 {
    set_periodic_for(0, period)
}

/// `VCPUOP_set_periodic_timer(vcpu)`: `VIRQ_TIMER` on `vcpu` every `period` ns
/// (any vCPU of the domain may set it, unlike the single-shot one).
pub fn set_periodic_for(vcpu: u32, period: u64) -> i64 {
    let arg = VcpuSetPeriodicTimer { period_ns: period };
    let (rc, _) = hypercall::with_arg(arg.to_bytes(), |a| {
        hypercall::vcpu_op(VCPUOP_SET_PERIODIC_TIMER, vcpu, a)
    });
    rc
}

/// `VCPUOP_stop_periodic_timer(vcpu 0)`.
pub fn stop_periodic() -> i64 {
    stop_periodic_for(0)
}

/// `VCPUOP_stop_periodic_timer(vcpu)`.
pub fn stop_periodic_for(vcpu: u32) -> i64 {
    hypercall::vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, vcpu, 0)
}

/// `HYPERVISOR_set_timer_op(deadline)`: the single-shot timer by the old
/// interface; 0 cancels it.
pub fn set_timer_op(deadline: u64) -> i64 {
    hypercall::set_timer_op(deadline)
}

/// `ns` as milliseconds with three decimals, for `info:` lines.
#[derive(Clone, Copy, Debug)]
pub struct Ms(pub i64);

impl core::fmt::Display for Ms {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:03} ms", abs / MS, (abs % MS) / US)
    }
}
