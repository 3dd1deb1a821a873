//! `multicall`: results written back per entry, nesting, actions, faults
//! and continuations, in both widths.

use super::*;
use crate::abi::mmu::{MMU_UPDATE_PREEMPTED, MmuUpdate};
use crate::abi::xen::{MulticallEntry, MulticallEntryCompat};

/// Where tests put the list.
const LIST: u64 = BUF;
/// A result no hypercall returns: "not written".
const UNTOUCHED: u64 = 0x5555_5555_5555_5555;

fn entry(op: u32, args: &[u64]) -> MulticallEntry {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    MulticallEntry {
        op: op.into(),
        result: UNTOUCHED,
        args: a,
    }
}

fn put(d: &mut FakeDomain, at: u64, entries: &[MulticallEntry]) {
    for (k, e) in entries.iter().enumerate() {
        d.poke(at + 64 * k as u64, &e.to_bytes());
    }
}

fn get(d: &FakeDomain, at: u64, k: u64) -> MulticallEntry {
    MulticallEntry::from_bytes(d.peek(at + 64 * k, 64).try_into().unwrap())
}

fn result(d: &FakeDomain, k: u64) -> i64 {
    get(d, LIST, k).result as i64
}

fn multicall(d: &mut FakeDomain, n: u32) -> Outcome {
    run64(d, nr::MULTICALL, &[LIST, n.into()])
}

fn version() -> MulticallEntry {
    entry(nr::XEN_VERSION, &[XENVER_VERSION.into(), 0])
}

#[test]
fn results_are_written_back_per_entry() {
    let mut d = domu();
    let entries = [
        version(),
        entry(11, &[1, 2, 3]),
        entry(nr::SET_TIMER_OP, &[0]),
        // PV-only numbers are -ENOSYS for a PVH domain here too.
        entry(nr::MMU_UPDATE, &[BUF + 0x800, 1, 0, 0x7ff0]),
        entry(nr::XEN_VERSION, &[99, 0]),
    ];
    put(&mut d, LIST, &entries);
    assert_eq!(multicall(&mut d, 5), ok());
    assert_eq!(
        (0..5).map(|k| result(&d, k)).collect::<Vec<_>>(),
        [
            4 << 16 | 19,
            Errno::ENOSYS.neg(),
            0,
            Errno::ENOSYS.neg(),
            Errno::ENOSYS.neg()
        ]
    );
    assert_eq!(d.calls, ["stop_singleshot_timer"]);
    // Only `result` is written: op and args stay as the guest left them.
    for (k, e) in entries.iter().enumerate() {
        let got = get(&d, LIST, k as u64);
        assert_eq!((got.op, got.args), (e.op, e.args));
    }
    // Nothing past the list.
    assert_eq!(d.peek(LIST + 5 * 64, 1), [0xAA]);
    // An empty batch reads nothing.
    assert_eq!(run64(&mut d, nr::MULTICALL, &[0, 0]), ok());
    // `uint32_t nr_calls`.
    assert_eq!(run64(&mut d, nr::MULTICALL, &[LIST, 1 << 32]), ok());
}

#[test]
fn nested_multicall_is_einval_and_the_batch_goes_on() {
    let mut d = domu();
    put(
        &mut d,
        LIST,
        &[
            entry(nr::MULTICALL, &[LIST, 3]),
            entry(nr::SET_TIMER_OP, &[0]),
            version(),
        ],
    );
    assert_eq!(multicall(&mut d, 3), ok());
    assert_eq!(result(&d, 0), Errno::EINVAL.neg());
    assert_eq!(result(&d, 1), 0);
    assert_eq!(result(&d, 2), 4 << 16 | 19);
    assert_eq!(d.calls, ["stop_singleshot_timer"], "nothing ran twice");
}

#[test]
fn an_action_ends_the_batch() {
    let mut d = domu();
    d.poke(
        ARG,
        &SchedShutdown {
            reason: SHUTDOWN_REBOOT,
        }
        .to_bytes(),
    );
    put(
        &mut d,
        LIST,
        &[
            version(),
            entry(nr::SCHED_OP, &[SCHEDOP_SHUTDOWN.into(), ARG]),
            entry(nr::SET_TIMER_OP, &[0]),
        ],
    );
    assert_eq!(
        multicall(&mut d, 3),
        Outcome {
            ret: 0,
            action: Action::Shutdown(ShutdownReason::Reboot)
        }
    );
    assert_eq!(result(&d, 1), 0, "the shutdown's result is written");
    assert_eq!(get(&d, LIST, 2).result, UNTOUCHED, "the rest does not run");
    assert!(d.calls.is_empty());

    // Likewise yield and block.
    for (cmd, action) in [
        (SCHEDOP_YIELD, Action::Yield),
        (SCHEDOP_BLOCK, Action::Block),
    ] {
        put(
            &mut d,
            LIST,
            &[entry(nr::SCHED_OP, &[cmd.into()]), version()],
        );
        assert_eq!(multicall(&mut d, 2), Outcome { ret: 0, action });
        assert_eq!(result(&d, 0), 0);
        assert_eq!(get(&d, LIST, 1).result, UNTOUCHED);
    }
}

#[test]
fn faults() {
    let mut d = domu();
    // A list leaving the address space: nothing runs.
    put(&mut d, LIST, &[entry(nr::SET_TIMER_OP, &[0])]);
    assert_eq!(
        run64(&mut d, nr::MULTICALL, &[u64::MAX - 31, 1]),
        err(Errno::EFAULT)
    );
    assert_eq!(
        run64(&mut d, nr::MULTICALL, &[LIST, u64::from(u32::MAX)]),
        preempted_at(LIST + 64 * u64::from(MULTICALL_BUDGET))
    );
    // An unreadable entry ends the batch; those before it ran.
    d.calls.clear();
    put(
        &mut d,
        END - 128,
        &[entry(nr::SET_TIMER_OP, &[0]), entry(nr::SET_TIMER_OP, &[0])],
    );
    assert_eq!(
        run64(&mut d, nr::MULTICALL, &[END - 128, 3]),
        err(Errno::EFAULT)
    );
    assert_eq!(d.calls.len(), 2);
    assert_eq!(get(&d, END - 128, 1).result, 0);
    // An entry whose result cannot be written: -EFAULT once it has run.
    d.calls.clear();
    put(
        &mut d,
        LIST,
        &[entry(nr::SET_TIMER_OP, &[0]), entry(nr::SET_TIMER_OP, &[0])],
    );
    d.read_only.push(LIST..LIST + 64);
    assert_eq!(multicall(&mut d, 2), err(Errno::EFAULT));
    assert_eq!(d.calls, ["stop_singleshot_timer"]);
}

/// What `multicall(LIST, u32::MAX)` gives when no entry of the first pass
/// stops it: a continuation at the budget.
fn preempted_at(at: u64) -> Outcome {
    Outcome {
        ret: 0,
        action: Action::Preempted {
            args: [at, u64::from(u32::MAX - MULTICALL_BUDGET), 0, 0, 0, 0],
        },
    }
}

#[test]
fn a_long_batch_continues() {
    let mut d = domu();
    let n = 40u32;
    let entries: Vec<MulticallEntry> = (0..n).map(|_| version()).collect();
    put(&mut d, LIST, &entries);
    let o = run64(&mut d, nr::MULTICALL, &[LIST, n.into(), 0xc, 0xd]);
    let b = u64::from(MULTICALL_BUDGET);
    let args = [LIST + 64 * b, u64::from(n) - b, 0xc, 0xd, 0, 0];
    assert_eq!(
        o,
        Outcome {
            ret: 0,
            action: Action::Preempted { args }
        }
    );
    assert_eq!(result(&d, b - 1), 4 << 16 | 19);
    assert_eq!(get(&d, LIST, b).result, UNTOUCHED);
    assert_eq!(run64(&mut d, nr::MULTICALL, &args), ok());
    assert!((0..u64::from(n)).all(|k| result(&d, k) == 4 << 16 | 19));
}

#[test]
fn an_entry_that_continues_is_rewritten_and_the_batch_resumes_there() {
    let mut d = FakeDomain::new_pv(3, false);
    let reqs = BUF + 0x2000;
    let pdone = BUF + 0x1f00;
    for k in 0..70u64 {
        d.poke(reqs + 16 * k, &MmuUpdate { ptr: 8 * k, val: k }.to_bytes());
    }
    let mmu = entry(nr::MMU_UPDATE, &[reqs, 70, pdone, 0x7ff0]);
    put(&mut d, LIST, &[version(), mmu, version()]);
    let o = multicall(&mut d, 3);
    // The multicall continues from entry 1, counting it.
    let args = [LIST + 64, 2, 0, 0, 0, 0];
    assert_eq!(
        o,
        Outcome {
            ret: 0,
            action: Action::Preempted { args }
        }
    );
    // Entry 1 holds mmu_update's own continuation; its result is the
    // hypercall number, as in Xen.
    let e = get(&d, LIST, 1);
    let b = u64::from(PV_MMU_BUDGET);
    assert_eq!(e.op, u64::from(nr::MMU_UPDATE));
    assert_eq!(e.result, u64::from(nr::MMU_UPDATE));
    assert_eq!(
        e.args,
        [
            reqs + 16 * b,
            (70 - b) | u64::from(MMU_UPDATE_PREEMPTED),
            pdone,
            0x7ff0,
            0,
            0
        ]
    );
    assert_eq!(get(&d, LIST, 2).result, UNTOUCHED);
    // Resumed: the rest of the requests, then the last entry.
    assert_eq!(run64(&mut d, nr::MULTICALL, &args), ok());
    assert_eq!(result(&d, 1), 0);
    assert_eq!(result(&d, 2), 4 << 16 | 19);
    assert_eq!(u32::from_le_bytes(d.peek(pdone, 4).try_into().unwrap()), 70);
    assert_eq!(d.calls.len(), 70);
    assert_eq!(d.mmu_flushes, 2, "one flush per pass of the inner call");
}

#[test]
fn iret_ends_the_batch_with_its_result() {
    let mut d = FakeDomain::new_pv(3, false);
    put(
        &mut d,
        LIST,
        &[
            entry(nr::STACK_SWITCH, &[0xe02b, 0x1000]),
            entry(nr::IRET, &[]),
            entry(nr::STACK_SWITCH, &[0xe02b, 0x2000]),
        ],
    );
    assert_eq!(multicall(&mut d, 3), Outcome::ret(0x5eed));
    assert_eq!(result(&d, 1), 0x5eed);
    assert_eq!(get(&d, LIST, 2).result, UNTOUCHED);
    assert_eq!(d.calls, ["stack_switch(0xe02b, 0x1000)", "iret"]);
    // Even when its result cannot be written (best effort, as Xen).
    d.calls.clear();
    d.read_only.push(LIST + 64..LIST + 128);
    assert_eq!(multicall(&mut d, 3), Outcome::ret(0x5eed));
    // For a PVH domain iret is an unknown entry like any other.
    let mut d = domu();
    put(&mut d, LIST, &[entry(nr::IRET, &[]), version()]);
    assert_eq!(multicall(&mut d, 2), ok());
    assert_eq!(result(&d, 0), Errno::ENOSYS.neg());
    assert_eq!(result(&d, 1), 4 << 16 | 19);
}

#[test]
fn compat_entries_for_a_32bit_caller() {
    let mut d = domu();
    let entries = [
        MulticallEntryCompat {
            op: nr::XEN_VERSION,
            result: 0x5555_5555,
            args: [XENVER_VERSION, 0, 0, 0, 0, 0],
        },
        MulticallEntryCompat {
            op: nr::SET_TIMER_OP,
            result: 0x5555_5555,
            // set_timer_op's 64-bit timeout in two registers: 0 stops it.
            args: [0, 0, 0, 0, 0, 0],
        },
        MulticallEntryCompat {
            op: 63,
            result: 0x5555_5555,
            args: [0; 6],
        },
    ];
    for (k, e) in entries.iter().enumerate() {
        d.poke(LIST + 32 * k as u64, &e.to_bytes());
    }
    // Junk above bit 31 of the registers is not part of them.
    assert_eq!(run32(&mut d, nr::MULTICALL, &[1 << 32 | LIST, 3]), ok());
    let res = |d: &FakeDomain, k: u64| d.peek(LIST + 32 * k + 4, 4).to_vec();
    assert_eq!(res(&d, 0), (4u32 << 16 | 19).to_le_bytes());
    assert_eq!(res(&d, 1), [0; 4]);
    assert_eq!(res(&d, 2), 0xffff_ffdau32.to_le_bytes(), "-ENOSYS, 32 bits");
    assert_eq!(d.peek(LIST + 32 * 2 + 8, 4), [0; 4], "args untouched");
    assert_eq!(d.calls, ["stop_singleshot_timer"]);
    // A long compat batch continues at 32-byte steps.
    let n = MULTICALL_BUDGET + 1;
    for k in 0..u64::from(n) {
        d.poke(LIST + 32 * k, &entries[0].to_bytes());
    }
    let o = run32(&mut d, nr::MULTICALL, &[LIST, n.into()]);
    assert_eq!(
        o.action,
        Action::Preempted {
            args: [LIST + 32 * u64::from(MULTICALL_BUDGET), 1, 0, 0, 0, 0]
        }
    );
    // A list beyond 4 GiB for a 32-bit caller.
    assert_eq!(
        run32(&mut d, nr::MULTICALL, &[0xffff_fff0, 1]),
        err(Errno::EFAULT)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A batch of anything, PV domain or not, either width, resumed for up
    /// to 64 passes: never a panic, errnos only from the errno table (never
    /// Xen's internal ones), and continuations that never go backwards.
    #[test]
    fn multicall_of_anything(
        entries in prop::collection::vec((any_nr(), prop::array::uniform6(any_arg())), 0..48),
        width in any_width(),
        privileged in any::<bool>(),
        pv in any::<bool>(),
        fill in any::<u8>(),
    ) {
        let mut d = FakeDomain::new(1, privileged);
        d.pv = pv;
        d.mem.fill(fill);
        d.faults.push(BASE + 0x8000..BASE + 0x8100);
        for (k, (op, args)) in entries.iter().enumerate() {
            let k = k as u64;
            match width {
                GuestWidth::Bits64 => d.poke(
                    LIST + 64 * k,
                    &MulticallEntry { op: *op, result: 0, args: *args }.to_bytes(),
                ),
                GuestWidth::Bits32 => d.poke(
                    LIST + 32 * k,
                    &MulticallEntryCompat {
                        op: *op as u32,
                        result: 0,
                        args: args.map(|a| a as u32),
                    }
                    .to_bytes(),
                ),
            }
        }
        let mut args = [LIST, entries.len() as u64, 0, 0, 0, 0];
        for _ in 0..64 {
            let o = dispatch(&mut d, &call(width, nr::MULTICALL, &args));
            if o.ret < 0 {
                let e = Errno::from_ret(o.ret);
                prop_assert!(e.is_some(), "ret {}", o.ret);
                prop_assert!(!matches!(e, Some(Errno::EINTR | Errno::ERESTART)));
            }
            match o.action {
                Action::Preempted { args: next } => {
                    prop_assert!(next[1] <= args[1] && next[0] >= args[0]);
                    args = next;
                }
                _ => break,
            }
        }
    }
}
