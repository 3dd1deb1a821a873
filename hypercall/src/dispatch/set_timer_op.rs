//! `HYPERVISOR_set_timer_op` (Xen `do_set_timer_op`,
//! `xen/common/sched/core.c`; `compat_set_timer_op`,
//! `xen/common/sched/compat.c`).
//!
//! `set_timer_op(uint64_t timeout)`: an absolute system time in ns for the
//! calling vCPU's single-shot timer. A 64-bit caller passes it in `rdi`; a
//! 32-bit caller splits it, low half in `ebx`, high half in `ecx`. It
//! always returns 0.
//!
//! - 0 stops the timer ([`Domain::stop_singleshot_timer`]).
//! - Xen's Linux workaround: a timeout that is negative as an `s_time_t`,
//!   or 2^50 ns (about 13 days) or more in the future, is taken as a wrapped
//!   jiffies computation and becomes "100 ms from now".
//! - Anything else sets the timer ([`Domain::set_singleshot_timer`]); a
//!   time already past fires at once.

use super::{Ctx, Domain, GuestWidth, Outcome};

/// Xen's `MILLISECS(100)`: where an implausible timeout is moved to.
const WRAPPED_TIMEOUT_NS: u64 = 100_000_000;

pub(super) fn do_set_timer_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    a0: u64,
    a1: u64,
) -> Outcome {
    let timeout = match cx.width {
        GuestWidth::Bits64 => a0,
        // Both already cut to 32 bits by `dispatch`.
        GuestWidth::Bits32 => a1 << 32 | a0,
    };
    if timeout == 0 {
        cx.d.stop_singleshot_timer();
        return Outcome::ret(0);
    }
    let now = cx.d.now_ns();
    // s_time_t arithmetic, as Xen: `offset = timeout - NOW()`.
    let signed = timeout as i64;
    let offset = signed.wrapping_sub(now as i64);
    if signed < 0 || (offset > 0 && offset >> 50 != 0) {
        cx.d.set_singleshot_timer(now.saturating_add(WRAPPED_TIMEOUT_NS));
    } else {
        cx.d.set_singleshot_timer(timeout);
    }
    Outcome::ret(0)
}
