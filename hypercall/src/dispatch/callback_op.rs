//! `HYPERVISOR_set_trap_table`, `HYPERVISOR_set_callbacks` and
//! `HYPERVISOR_callback_op` (Xen 4.17 `do_set_trap_table`,
//! `do_set_callbacks`, `do_callback_op`, `xen/arch/x86/pv/callback.c`):
//! where a PV guest wants to be entered for exceptions, events, system
//! calls and the rest. 64-bit PV callers only (the dispatcher answers
//! `-ENOSYS` to anyone else).
//!
//! - `set_trap_table(const trap_info_t traps[])`: NULL clears the calling
//!   vCPU's whole virtual IDT ([`Domain::pv_clear_trap_table`]). Otherwise
//!   16-byte [`TrapInfo`] records are read one after another until one
//!   whose `address` is 0, which ends the call with 0 and is not stored;
//!   there is no count. Each other record: a non-canonical `address` ends
//!   the call with `-EINVAL` (records before it stay stored, as in Xen);
//!   else [`Domain::pv_set_trap`]. A record that cannot be read is
//!   `-EFAULT`, the records before it stored. After [`TRAP_TABLE_BUDGET`]
//!   records in one pass the call is continued with `traps` advanced to
//!   the next record ([`Action::Preempted`]; Xen:
//!   `hypercall_create_continuation(__HYPERVISOR_set_trap_table, "h",
//!   traps)` whenever `hypercall_preempt_check` says so, after a record is
//!   stored).
//! - `set_callbacks(unsigned long event_address, unsigned long
//!   failsafe_address, unsigned long syscall_address)`: registers the
//!   three in that order, flags 0 (so `CALLBACKF_mask_events` clear for
//!   failsafe and syscall), with [`Domain::pv_register_callback`], and
//!   returns 0 whatever the registrations answer, as Xen (which ignores
//!   `register_guest_callback`'s result). A non-canonical address is
//!   skipped, being what Xen's registration refuses first.
//! - `callback_op(int cmd, const void *arg)`:
//!   - `CALLBACKOP_register`: copy in a [`CallbackRegister`] (`-EFAULT`);
//!     a non-canonical `address` is `-EINVAL`, a type other than `event`,
//!     `failsafe`, `syscall`, `nmi`, `sysenter`, `syscall32` `-ENOSYS` (in
//!     that order, as Xen); else [`Domain::pv_register_callback`].
//!   - `CALLBACKOP_unregister`: copy in a [`CallbackUnregister`]
//!     (`-EFAULT`); `nmi` goes to [`Domain::pv_unregister_callback`], the
//!     other known types are `-EINVAL` ("not all callbacks can be
//!     unregistered"), unknown ones `-ENOSYS`.
//!   - any other `cmd` (its low 32 bits): `-ENOSYS`.
//!
//! Deviation: `set_trap_table` preempts after a fixed budget rather than
//! when Xen's `hypercall_preempt_check` asks.

use super::{Action, Ctx, Domain, Outcome, is_canonical};
use crate::abi::Errno;
use crate::abi::callback::*;
use crate::abi::pv::TrapInfo;

/// `set_trap_table` records stored per pass before continuing. Linux's
/// table (about 20 records) takes one pass.
pub const TRAP_TABLE_BUDGET: u32 = 64;

/// `set_trap_table`.
pub(super) fn do_set_trap_table<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
) -> Outcome {
    let mut traps = args[0];
    if traps == 0 {
        return Outcome::from_result(cx.d.pv_clear_trap_table().map(|()| 0));
    }
    let mut stored: u32 = 0;
    loop {
        let t = match cx.read::<{ TrapInfo::SIZE }>(traps) {
            Ok(raw) => TrapInfo::from_bytes(&raw),
            Err(e) => return Outcome::err(e),
        };
        if t.address == 0 {
            return Outcome::ret(0);
        }
        if !is_canonical(t.address) {
            return Outcome::err(Errno::EINVAL);
        }
        if let Err(e) = cx.d.pv_set_trap(&t) {
            return Outcome::err(e);
        }
        // Past the end of the address space the next read would fault.
        traps = match cx.offset(traps, TrapInfo::SIZE as u64) {
            Ok(next) => next,
            Err(e) => return Outcome::err(e),
        };
        stored += 1;
        if stored == TRAP_TABLE_BUDGET {
            let mut next = *args;
            next[0] = traps;
            return Outcome {
                ret: 0,
                action: Action::Preempted { args: next },
            };
        }
    }
}

/// `set_callbacks`.
pub(super) fn do_set_callbacks<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    event: u64,
    failsafe: u64,
    syscall: u64,
) -> Outcome {
    for (kind, address) in [
        (CALLBACKTYPE_EVENT, event),
        (CALLBACKTYPE_FAILSAFE, failsafe),
        (CALLBACKTYPE_SYSCALL, syscall),
    ] {
        if is_canonical(address) {
            // Xen ignores the result.
            let _ = cx.d.pv_register_callback(kind, 0, address);
        }
    }
    Outcome::ret(0)
}

/// `callback_op`.
pub(super) fn do_callback_op<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    cmd: u64,
    arg: u64,
) -> Outcome {
    // `int cmd`: the low 32 bits.
    match cmd as u32 {
        CALLBACKOP_REGISTER => {
            let reg = match cx.read::<{ CallbackRegister::SIZE }>(arg) {
                Ok(raw) => CallbackRegister::from_bytes(&raw),
                Err(e) => return Outcome::err(e),
            };
            if !is_canonical(reg.address) {
                return Outcome::err(Errno::EINVAL);
            }
            match reg.type_ {
                CALLBACKTYPE_EVENT
                | CALLBACKTYPE_FAILSAFE
                | CALLBACKTYPE_SYSCALL
                | CALLBACKTYPE_NMI
                | CALLBACKTYPE_SYSENTER
                | CALLBACKTYPE_SYSCALL32 => Outcome::from_result(
                    cx.d.pv_register_callback(reg.type_, reg.flags, reg.address)
                        .map(|()| 0),
                ),
                _ => Outcome::err(Errno::ENOSYS),
            }
        }
        CALLBACKOP_UNREGISTER => {
            let unreg = match cx.read::<{ CallbackUnregister::SIZE }>(arg) {
                Ok(raw) => CallbackUnregister::from_bytes(&raw),
                Err(e) => return Outcome::err(e),
            };
            match unreg.type_ {
                CALLBACKTYPE_NMI => {
                    Outcome::from_result(cx.d.pv_unregister_callback(unreg.type_).map(|()| 0))
                }
                CALLBACKTYPE_EVENT
                | CALLBACKTYPE_FAILSAFE
                | CALLBACKTYPE_SYSCALL
                | CALLBACKTYPE_SYSCALL32
                | CALLBACKTYPE_SYSENTER => Outcome::err(Errno::EINVAL),
                _ => Outcome::err(Errno::ENOSYS),
            }
        }
        _ => Outcome::err(Errno::ENOSYS),
    }
}
