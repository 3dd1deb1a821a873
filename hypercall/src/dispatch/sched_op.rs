//! `HYPERVISOR_sched_op` (Xen `do_sched_op`, `xen/common/sched/core.c`).
//!
//! `sched_op(int cmd, void *arg)`; `cmd` is the low 32 bits.
//!
//! - `SCHEDOP_yield` and `SCHEDOP_block` return 0 and tell the kernel to
//!   yield or block ([`Action::Yield`], [`Action::Block`]).
//! - `SCHEDOP_shutdown` copies in a `sched_shutdown` (`-EFAULT` if it
//!   cannot) and shuts the domain down for any reason: Xen truncates the
//!   reason to 8 bits and accepts it, leaving unknown codes to the
//!   toolstack ([`ShutdownReason::Other`]). It returns 0.
//! - `SCHEDOP_pin_override` is `-EPERM` for an unprivileged domain, as in
//!   Xen, and otherwise `-ENOSYS` (not yet).
//! - `SCHEDOP_poll`, `SCHEDOP_remote_shutdown`, `SCHEDOP_shutdown_code` and
//!   `SCHEDOP_watchdog` are `-ENOSYS` until event channels, multiple
//!   domains and timers exist; unknown commands are `-ENOSYS` as in Xen.
//!
//! `sched_shutdown` has the same layout for 32- and 64-bit callers.

use super::{Action, Ctx, Domain, Outcome, ShutdownReason};
use crate::abi::Errno;
use crate::abi::sched::{
    SCHEDOP_BLOCK, SCHEDOP_PIN_OVERRIDE, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SchedShutdown,
};

pub(super) fn do_sched_op<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, cmd: u64, arg: u64) -> Outcome {
    // `int cmd`: the low 32 bits.
    match cmd as u32 {
        SCHEDOP_YIELD => Outcome {
            ret: 0,
            action: Action::Yield,
        },
        SCHEDOP_BLOCK => Outcome {
            ret: 0,
            action: Action::Block,
        },
        SCHEDOP_SHUTDOWN => match cx.read(arg) {
            Ok(bytes) => {
                let s = SchedShutdown::from_bytes(&bytes);
                Outcome {
                    ret: 0,
                    action: Action::Shutdown(ShutdownReason::from_raw(s.reason)),
                }
            }
            Err(e) => Outcome::err(e),
        },
        SCHEDOP_PIN_OVERRIDE if !cx.d.is_privileged() => Outcome::err(Errno::EPERM),
        _ => Outcome::err(Errno::ENOSYS),
    }
}
