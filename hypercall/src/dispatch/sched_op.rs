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
//! - `SCHEDOP_poll` (Xen `do_poll`) copies in a `sched_poll` (24 bytes
//!   native, 16 compat; `-EFAULT`); more than [`SCHED_POLL_MAX_PORTS`]
//!   ports is `-EINVAL`; the port array must lie in the address space
//!   (`-EFAULT`) and is copied in whole (`-EFAULT`); then
//!   [`Domain::sched_poll`] says whether anything is pending already
//!   (return 0 at once) or the vCPU blocks ([`Action::Poll`], also 0, the
//!   timeout absolute and 0 for none). Xen reads the ports one at a time
//!   after looking for deliverable events, so a guest whose array faults
//!   part-way gets 0 from Xen when an earlier port is pending, and `-EFAULT`
//!   from keel.
//! - `SCHEDOP_remote_shutdown`, `SCHEDOP_shutdown_code` and
//!   `SCHEDOP_watchdog` are `-ENOSYS` until multiple domains and watchdogs
//!   exist; unknown commands are `-ENOSYS` as in Xen.
//!
//! `sched_shutdown` has the same layout for 32- and 64-bit callers.

use super::{Action, Ctx, Domain, GuestWidth, Outcome, PollResult, ShutdownReason};
use crate::abi::Errno;
use crate::abi::evtchn::EvtchnPort;
use crate::abi::sched::{
    SCHEDOP_BLOCK, SCHEDOP_PIN_OVERRIDE, SCHEDOP_POLL, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SchedPoll,
    SchedPollCompat, SchedShutdown,
};

/// The most ports one `SCHEDOP_poll` may name (Xen's "fairly arbitrary
/// limit" in `do_poll`).
pub const SCHED_POLL_MAX_PORTS: u32 = 128;

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
        SCHEDOP_POLL => match poll(cx, arg) {
            Ok(action) => Outcome { ret: 0, action },
            Err(e) => Outcome::err(e),
        },
        SCHEDOP_PIN_OVERRIDE if !cx.d.is_privileged() => Outcome::err(Errno::EPERM),
        _ => Outcome::err(Errno::ENOSYS),
    }
}

fn poll<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, arg: u64) -> Result<Action, Errno> {
    let (ports_at, nr_ports, timeout) = match cx.width {
        GuestWidth::Bits64 => {
            let p = SchedPoll::from_bytes(&cx.read(arg)?);
            (p.ports, p.nr_ports, p.timeout)
        }
        GuestWidth::Bits32 => {
            let p = SchedPollCompat::from_bytes(&cx.read(arg)?);
            (u64::from(p.ports), p.nr_ports, p.timeout)
        }
    };
    if nr_ports > SCHED_POLL_MAX_PORTS {
        return Err(Errno::EINVAL);
    }
    // Bounded above: at most 128 ports, 512 bytes.
    let n = nr_ports as usize;
    let mut raw = [0u8; SCHED_POLL_MAX_PORTS as usize * 4];
    cx.read_into(ports_at, &mut raw[..n * 4])?;
    let mut ports: [EvtchnPort; SCHED_POLL_MAX_PORTS as usize] = [0; SCHED_POLL_MAX_PORTS as usize];
    let (words, _) = raw[..n * 4].as_chunks::<4>();
    for (port, bytes) in ports.iter_mut().zip(words) {
        *port = u32::from_le_bytes(*bytes);
    }
    let ports = &ports[..n];
    Ok(match cx.d.sched_poll(ports)? {
        PollResult::Ready => Action::Continue,
        PollResult::Block => Action::Poll {
            port: match ports {
                [port] => Some(*port),
                _ => None,
            },
            timeout,
        },
    })
}
