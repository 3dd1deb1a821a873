//! `HYPERVISOR_multicall` (Xen 4.17 `do_multicall`, `xen/common/multicall.c`
//! and its compat build `xen/common/compat/multicall.c`;
//! `pv_do_multicall_call`, `xen/arch/x86/pv/hypercall.c`;
//! `hvm_do_multicall_call`, `xen/arch/x86/hvm/hypercall.c`): a batch of
//! hypercalls in one entry to the hypervisor. Every guest may use it, PV
//! or HVM/PVH, in either width.
//!
//! `multicall(multicall_entry_t call_list[], uint32_t nr_calls)`: each entry
//! is `{ op, result, args[6] }`, 64 bytes native ([`MulticallEntry`]), 32
//! compat ([`MulticallEntryCompat`]). As Xen:
//!
//! 1. A `multicall` inside a batch is refused: that entry's result is
//!    `-EINVAL` ("Multicall reentry is disallowed": the nested
//!    `do_multicall` finds `_MCSF_in_multicall` set and returns `-EINVAL`,
//!    which becomes the entry's result) and the batch goes on.
//! 2. `call_list` must lie in the caller's address space
//!    (`guest_handle_okay`), else `-EFAULT` with nothing run.
//! 3. Entry by entry: copy it in (`-EFAULT` ends the batch), run its
//!    hypercall as the dispatcher runs one from registers (same width, same
//!    checks; `op` and the arguments cut to the width), and write the
//!    result into the entry's `result` field, only that field (a fault
//!    there: `-EFAULT`, the batch ends). Xen passes five arguments (PV:
//!    `call_handlers_pv64(op, result, args[0..5])`); keel passes all six,
//!    which no hypercall it has reads.
//! 4. A hypercall that wants a continuation ([`Action::Preempted`]): as
//!    Xen, the entry is written back whole, `args` rewritten with the
//!    continuation's and `result` holding the hypercall number (what
//!    Xen's `hypercall_create_continuation` returns inside a multicall),
//!    and the multicall itself is continued from that entry: `call_list`
//!    pointing at it, `nr_calls` counting it and those after it
//!    (`goto preempted` skips the `guest_handle_add_offset` of
//!    multicall.c). A fault writing it back is `-EFAULT`
//!    (`hypercall_cancel_continuation`).
//! 5. `iret` (a PV caller's; for anyone else it is `-ENOSYS` like any
//!    unknown entry) ends the batch: Xen's `pv_do_multicall_call` returns
//!    `mc_exit` for it, the result is written back best effort (a fault
//!    ignored) and is the multicall's own return value, the restored RAX.
//! 6. After [`MULTICALL_BUDGET`] entries in one pass the multicall is
//!    continued from the next entry (Xen: `if ( i &&
//!    hypercall_preempt_check() ) goto preempted;`).
//! 7. Otherwise the multicall returns 0 once every entry has run.
//!
//! # Deviations from Xen
//!
//! - An entry whose hypercall wants the vCPU to do something other than
//!   carry on ([`Action::Yield`], [`Action::Block`], [`Action::Poll`],
//!   [`Action::Shutdown`]) ends the batch there: its result is written, and
//!   the multicall returns 0 with that action. The entries after it are
//!   not run and their `result` fields are left as they were. Xen instead
//!   lets the action happen (the vCPU blocks, yields or is paused) and,
//!   seeing the softirq it raised, continues the multicall from the next
//!   entry, so the rest runs after the vCPU wakes. [`Action`] cannot carry
//!   both an action and a continuation; a guest should put such a call
//!   last in its batch.
//! - Xen also ends a batch (`mc_preempt`) when an entry left the vCPU out
//!   of guest kernel mode (PV) or at CPL > 0 (HVM). None of keel's
//!   hypercalls but `iret` changes the mode, and that one ends the batch.
//! - Preemption after a fixed budget rather than when
//!   `hypercall_preempt_check` asks.

use super::{Action, Ctx, Domain, GuestWidth, HypercallArgs, Outcome, pv_caller, route};
use crate::abi::Errno;
use crate::abi::hypercall as nr;
use crate::abi::xen::{MulticallEntry, MulticallEntryCompat};

/// Entries a `multicall` runs per pass before continuing (Linux batches
/// at most 32).
pub const MULTICALL_BUDGET: u32 = 32;

/// Byte offset of `result` in an entry.
const RESULT_OFFSET: u64 = 8;
/// Byte offset of `result` in a compat entry.
const RESULT_OFFSET_COMPAT: u64 = 4;

/// One entry, decoded from either width.
struct Entry {
    op: u64,
    args: [u64; 6],
}

pub(super) fn do_multicall<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    args: &[u64; 6],
    in_multicall: bool,
) -> Outcome {
    if in_multicall {
        return Outcome::err(Errno::EINVAL);
    }
    let list = args[0];
    // `uint32_t nr_calls`.
    let nr_calls = args[1] as u32;
    let size = match cx.width {
        GuestWidth::Bits64 => MulticallEntry::SIZE,
        GuestWidth::Bits32 => MulticallEntryCompat::SIZE,
    } as u64;
    if let Err(e) = cx.check_array(list, u64::from(nr_calls), size) {
        return Outcome::err(e);
    }

    for i in 0..nr_calls {
        // Inside the array check_array accepted: cannot overflow.
        let at = list + u64::from(i) * size;
        if i == MULTICALL_BUDGET {
            return continue_from(args, at, nr_calls - i);
        }
        let entry = match read_entry(cx, at) {
            Ok(entry) => entry,
            Err(e) => return Outcome::err(e),
        };
        let call = HypercallArgs {
            nr: entry.op,
            args: entry.args,
            width: cx.width,
        }
        .normalized();
        let exits = call.nr == u64::from(nr::IRET) && pv_caller(cx);

        let o = route(cx, &call, true);

        if let Action::Preempted { args: sub } = o.action {
            // Xen: the sub-call's continuation goes into the entry, whose
            // result is the hypercall number, and the batch resumes there.
            if let Err(e) = write_entry(cx, at, call.nr, &sub) {
                return Outcome::err(e);
            }
            return continue_from(args, at, nr_calls - i);
        }
        let written = write_result(cx, at, o.ret);
        if exits {
            // mc_exit: "best effort only", and the result is the
            // multicall's.
            return Outcome::ret(o.ret);
        }
        if let Err(e) = written {
            return Outcome::err(e);
        }
        if o.action != Action::Continue {
            return Outcome {
                ret: 0,
                action: o.action,
            };
        }
    }
    Outcome::ret(0)
}

/// The multicall again, from the entry at `at`, `left` entries.
fn continue_from(args: &[u64; 6], at: u64, left: u32) -> Outcome {
    let mut next = *args;
    next[0] = at;
    next[1] = u64::from(left);
    Outcome {
        ret: 0,
        action: Action::Preempted { args: next },
    }
}

fn read_entry<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64) -> Result<Entry, Errno> {
    Ok(match cx.width {
        GuestWidth::Bits64 => {
            let e = MulticallEntry::from_bytes(&cx.read(at)?);
            Entry {
                op: e.op,
                args: e.args,
            }
        }
        GuestWidth::Bits32 => {
            let e = MulticallEntryCompat::from_bytes(&cx.read(at)?);
            Entry {
                op: e.op.into(),
                args: e.args.map(u64::from),
            }
        }
    })
}

/// Writes `ret` into the `result` field of the entry at `at` (a compat
/// entry gets its low 32 bits).
fn write_result<D: Domain + ?Sized>(cx: &mut Ctx<'_, D>, at: u64, ret: i64) -> Result<(), Errno> {
    // `at` is an entry inside the checked array: the field is too.
    match cx.width {
        GuestWidth::Bits64 => cx.write(at + RESULT_OFFSET, &ret.to_le_bytes()),
        GuestWidth::Bits32 => cx.write(at + RESULT_OFFSET_COMPAT, &(ret as i32).to_le_bytes()),
    }
}

/// Writes the entry at `at` whole: `op`, `result` = `op`, `args`.
fn write_entry<D: Domain + ?Sized>(
    cx: &mut Ctx<'_, D>,
    at: u64,
    op: u64,
    args: &[u64; 6],
) -> Result<(), Errno> {
    match cx.width {
        GuestWidth::Bits64 => {
            let e = MulticallEntry {
                op,
                result: op,
                args: *args,
            };
            cx.write(at, &e.to_bytes())
        }
        GuestWidth::Bits32 => {
            // Already cut to 32 bits (normalized, and a continuation's
            // arguments are).
            let e = MulticallEntryCompat {
                op: op as u32,
                result: op as u32,
                args: args.map(|a| a as u32),
            };
            cx.write(at, &e.to_bytes())
        }
    }
}
