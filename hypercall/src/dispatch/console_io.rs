//! `HYPERVISOR_console_io` (Xen `do_console_io`, `guest_console_write`,
//! `xen/drivers/char/console.c`).
//!
//! `console_io(unsigned int cmd, unsigned int count, char *buffer)`.
//!
//! Permission (Xen's default XSM policy, `xsm_console_io`): a privileged
//! domain, or one flagged as a console domain, may use it; any other gets
//! `-EPERM` for every command, known or not. (Xen builds with
//! `CONFIG_VERBOSE_DEBUG` also let every domain write; keel does not.)
//!
//! `CONSOLEIO_write` copies the buffer in 128-byte pieces (Xen uses 127) and
//! hands each to [`Domain::console_write`]. For an unprivileged domain
//! non-printable bytes other than `\n` and `\t` are dropped, as Xen does for
//! every domain but the hardware domain. It returns 0 when everything is
//! written, like Xen. A fault part-way returns `-EFAULT`; what was already
//! written stays written (as in Xen).
//!
//! Xen writes everything, preempting through a continuation when other work
//! is pending. keel does the same on a fixed budget: after
//! [`CONSOLE_WRITE_BUDGET`] bytes in one entry it returns
//! [`Action::Preempted`] with `count` reduced and `buffer` advanced, and the
//! guest re-issues the call for the rest. A guest asking for 4 GiB thus
//! costs keel at most 16 KiB of copying per VM entry, and Linux's
//! `dom0_write_console`, which treats any non-negative result as "all
//! written", loses nothing.

use super::{Action, Ctx, Domain, HypercallArgs, Outcome};
use crate::abi::Errno;
use crate::abi::console::{CONSOLEIO_READ, CONSOLEIO_WRITE};

/// Bytes `CONSOLEIO_write` copies per entry before preempting.
pub const CONSOLE_WRITE_BUDGET: u32 = 16 * 1024;

/// Bytes copied from the guest per step.
const CHUNK: usize = 128;

pub(super) fn do_console_io<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    call: &HypercallArgs,
) -> Outcome {
    // `unsigned int cmd, unsigned int count`: the low 32 bits.
    let cmd = call.args[0] as u32;
    let count = call.args[1] as u32;
    let buffer = call.args[2];

    if !cx.d.is_privileged() && !cx.d.is_console() {
        return Outcome::err(Errno::EPERM);
    }

    match cmd {
        CONSOLEIO_WRITE => console_write(cx, call, count, buffer),
        CONSOLEIO_READ => {
            // The result is a byte count or -errno; Xen refuses counts that
            // could not be told apart. keel has no console input yet.
            if count > i32::MAX as u32 {
                Outcome::err(Errno::E2BIG)
            } else {
                Outcome::ret(0)
            }
        }
        _ => Outcome::err(Errno::ENOSYS),
    }
}

fn console_write<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    call: &HypercallArgs,
    count: u32,
    buffer: u64,
) -> Outcome {
    let raw = cx.d.is_privileged();
    let mut left = count;
    let mut addr = buffer;
    let mut done_this_entry: u32 = 0;
    let mut chunk = [0u8; CHUNK];
    while left > 0 {
        if done_this_entry >= CONSOLE_WRITE_BUDGET {
            let mut args = call.args;
            args[1] = u64::from(left);
            args[2] = addr;
            return Outcome {
                ret: 0,
                action: Action::Preempted { args },
            };
        }
        let n = (left as usize).min(CHUNK);
        if let Err(e) = cx.read_into(addr, &mut chunk[..n]) {
            return Outcome::err(e);
        }
        if raw {
            cx.d.console_write(&chunk[..n]);
        } else {
            let mut kept = 0;
            for i in 0..n {
                let c = chunk[i];
                if is_console_printable(c) {
                    chunk[kept] = c;
                    kept += 1;
                }
            }
            if kept > 0 {
                cx.d.console_write(&chunk[..kept]);
            }
        }
        // n <= CHUNK, so these cannot overflow: `left` shrinks by n, the
        // per-entry total stays below the budget plus one chunk, and `addr`
        // advanced by n was inside the caller's address space (read_into
        // checked the range) or is one past its end.
        left -= n as u32;
        done_this_entry += n as u32;
        addr += n as u64;
    }
    Outcome::ret(0)
}

/// Xen's `is_console_printable`: `isprint(c) || c == '\n' || c == '\t'`.
fn is_console_printable(c: u8) -> bool {
    (0x20..=0x7e).contains(&c) || c == b'\n' || c == b'\t'
}
