//! `mode=timers [slack-ms=10] [reads=20000] [upcall=vector|callback] [long-ms=N]`: the vCPU
//! timers and the pvclock, as Xen defines them (`xen/include/public/vcpu.h`,
//! `xen.h`; `xen/common/domain.c` `do_vcpu_op`, `xen/common/sched/core.c`).
//!
//! The guest registers its upcall, binds `VIRQ_TIMER`, and checks, with system
//! time from the pvclock:
//!
//! - the pvclock: `XEN_PVCLOCK_TSC_STABLE_BIT` set, and never going backwards
//!   over `reads` consecutive reads;
//! - `VCPUOP_set_singleshot_timer` at +1, +5 and +20 ms: `VIRQ_TIMER` arrives no
//!   earlier than the deadline and at most `slack-ms` after it (the lateness is
//!   printed as `info:`); with `long-ms=N`, also at +N ms (at most 100 ms late), alone on an idle
//!   machine (a deadline past what one 32-bit local APIC count reaches: about
//!   4.3 s at QEMU's 1 GHz);
//! - a deadline already past: without `VCPU_SSHOTTMR_future` the event comes at
//!   once; with it, Xen before 4.18 refused with `-ETIME` and Xen 4.18 and later
//!   ignore the flag (commit 19c6cbd909, "xen/vcpu: ignore VCPU_SSHOTTMR_future")
//!   and inject the event at once. The header allows both ("can be ignored by the
//!   hypervisor"), so both pass, and the line says which;
//! - `VCPUOP_set_periodic_timer` of 10 ms for 500 ms: 50 ± 3 events; a period
//!   below 1 ms is `-EINVAL`; `VCPUOP_stop_periodic_timer` stops it (nothing in
//!   the next 50 ms);
//! - `HYPERVISOR_set_timer_op(t)` fires like a single-shot timer, `set_timer_op(0)`
//!   cancels a pending one, and so does `VCPUOP_stop_singleshot_timer`.

use keel_hypercall::abi::Errno;

use super::Env;
use crate::checks::Rc;
use crate::events::{self, Sleep};
use crate::time::{self, MS, Ms};

/// Runs the mode.
pub fn run(env: &Env<'_>) {
    let c = &env.c;
    if !super::register_upcall(env) {
        return;
    }
    let Some(tp) = super::bind_timer(env) else {
        return;
    };
    let slack = u64::from(env.num("slack-ms", 10)) * MS;
    // HVM vCPUs start without a periodic timer (PV ones get 10 ms); make sure.
    c.rc("stop periodic timer at start", time::stop_periodic(), 0);

    pvclock_checks(env);

    for ms in [1u64, 5, 20] {
        singleshot(env, tp, ms, slack);
    }
    let long = u64::from(env.num("long-ms", 0));
    if long > 0 {
        // What this checks is that the timer fires at all (an idle pCPU must arm
        // its one-shot count again after it ends early), not its latency: a
        // 6 s wait on a loaded host comes back tens of ms late.
        singleshot(env, tp, long, slack.max(100 * MS));
    }
    past_deadline(env, tp, slack);
    periodic(env, tp);
    timer_op(env, tp, slack);
    cancel(env, tp);

    c.rc("close VIRQ_TIMER port", events::close(tp), 0);
    c.info(format_args!("{} upcalls", events::upcalls()));
}

/// The pvclock's flags and monotonicity.
fn pvclock_checks(env: &Env<'_>) {
    let c = &env.c;
    let (p, _) = time::read();
    c.check(
        "pvclock TSC stable",
        p.tsc_stable(),
        format_args!("vcpu_time_info.flags {:#x}", p.flags),
    );
    let reads = env.num("reads", 20_000);
    let mut prev = time::now();
    let first = prev;
    let mut back: Option<(u32, u64, u64)> = None;
    for i in 0..reads {
        let t = time::now();
        if t < prev {
            back.get_or_insert((i, prev, t));
        }
        prev = t;
    }
    c.info(format_args!(
        "{reads} pvclock reads over {}",
        Ms((prev - first) as i64)
    ));
    match back {
        None => {
            c.check(
                "pvclock monotonic",
                prev > first || reads == 0,
                format_args!("the clock did not move over {reads} reads (stuck at {first})"),
            );
        }
        Some((i, before, after)) => c.fail(
            "pvclock monotonic",
            format_args!("read {i} went back from {before} to {after}"),
        ),
    };
}

/// Discards timer events already counted (and any pending one).
fn drain(tp: u32) {
    events::collect();
    events::take(tp);
}

/// Waits for `VIRQ_TIMER` until `until`; the time it was counted at, if it came.
fn fired(env: &Env<'_>, tp: u32, until: u64) -> Option<u64> {
    (events::wait_for(env.xen, tp, until, Sleep::Poll) > 0).then(|| events::last_time(tp))
}

/// One single-shot timer `ms` ahead.
fn singleshot(env: &Env<'_>, tp: u32, ms: u64, slack: u64) {
    let c = &env.c;
    let name = super::name(format_args!("singleshot +{ms} ms"));
    drain(tp);
    let deadline = time::now() + ms * MS;
    let rc = time::set_singleshot(deadline, false);
    if rc != 0 {
        c.fail(name.as_str(), format_args!("returned {}", Rc(rc)));
        return;
    }
    match fired(env, tp, deadline + slack + 100 * MS) {
        None => c.fail(
            name.as_str(),
            format_args!(
                "no VIRQ_TIMER within {} of the deadline",
                Ms((slack + 100 * MS) as i64)
            ),
        ),
        Some(at) => {
            let late = at as i64 - deadline as i64;
            c.info(format_args!(
                "singleshot +{ms} ms fired {} after its deadline",
                Ms(late)
            ));
            c.check(
                name.as_str(),
                late >= 0 && late as u64 <= slack,
                format_args!(
                    "fired {} after the deadline; allowed 0 to {}",
                    Ms(late),
                    Ms(slack as i64)
                ),
            );
        }
    }
}

/// Deadlines already past, with and without `VCPU_SSHOTTMR_future`.
fn past_deadline(env: &Env<'_>, tp: u32, slack: u64) {
    let c = &env.c;
    drain(tp);
    let rc = time::set_singleshot(time::now().saturating_sub(MS), false);
    let came = rc == 0 && fired(env, tp, time::now() + slack).is_some();
    c.check(
        "singleshot in the past fires at once",
        came,
        format_args!(
            "returned {}; event within {}: {}",
            Rc(rc),
            Ms(slack as i64),
            rc == 0 && came
        ),
    );

    drain(tp);
    let rc = time::set_singleshot(time::now().saturating_sub(MS), true);
    if rc == Errno::ETIME.neg() {
        c.info(format_args!(
            "VCPU_SSHOTTMR_future in the past: -ETIME (Xen before 4.18)"
        ));
        c.ok("singleshot future flag in the past");
    } else if rc == 0 {
        let came = fired(env, tp, time::now() + slack).is_some();
        c.info(format_args!(
            "VCPU_SSHOTTMR_future in the past: 0, event {} (Xen 4.18 and later ignore the flag)",
            if came { "at once" } else { "missing" }
        ));
        c.check(
            "singleshot future flag in the past",
            came,
            format_args!("returned 0 but no VIRQ_TIMER within {}", Ms(slack as i64)),
        );
    } else {
        c.fail(
            "singleshot future flag in the past",
            format_args!("returned {}, expected -ETIME or 0 and an event", Rc(rc)),
        );
    }
}

/// The periodic timer.
fn periodic(env: &Env<'_>, tp: u32) {
    let c = &env.c;
    c.errno(
        "periodic below 1 ms refused",
        time::set_periodic(999_999),
        Errno::EINVAL,
    );

    drain(tp);
    let start = time::now();
    let end = start + 500 * MS;
    let rc = time::set_periodic(10 * MS);
    if rc != 0 {
        c.fail("periodic 10 ms", format_args!("returned {}", Rc(rc)));
        return;
    }
    let mut ticks = 0u32;
    while time::now() < end {
        ticks += events::wait_for(env.xen, tp, end, Sleep::Poll);
    }
    c.info(format_args!("periodic 10 ms: {ticks} events in 500 ms"));
    c.check(
        "periodic 10 ms",
        ticks.abs_diff(50) <= 3,
        format_args!("{ticks} events in 500 ms, expected 50 +- 3"),
    );

    let rc = time::stop_periodic();
    // A tick that was on its way when the timer stopped may still arrive.
    let _ = fired(env, tp, time::now() + MS);
    drain(tp);
    let more = fired(env, tp, time::now() + 50 * MS).is_some();
    c.check(
        "stop periodic",
        rc == 0 && !more,
        format_args!(
            "returned {}; an event came within 50 ms after: {more}",
            Rc(rc)
        ),
    );
}

/// `HYPERVISOR_set_timer_op`.
fn timer_op(env: &Env<'_>, tp: u32, slack: u64) {
    let c = &env.c;
    drain(tp);
    let deadline = time::now() + 5 * MS;
    let rc = time::set_timer_op(deadline);
    let at = if rc == 0 {
        fired(env, tp, deadline + slack + 100 * MS)
    } else {
        None
    };
    match at {
        Some(at) => {
            let late = at as i64 - deadline as i64;
            c.info(format_args!(
                "set_timer_op +5 ms fired {} after its deadline",
                Ms(late)
            ));
            c.check(
                "set_timer_op fires",
                late >= 0 && late as u64 <= slack,
                format_args!("fired {} after the deadline", Ms(late)),
            );
        }
        None => c.fail(
            "set_timer_op fires",
            format_args!("returned {}; no VIRQ_TIMER", Rc(rc)),
        ),
    }
}

/// Cancelling a pending single-shot timer, both ways.
fn cancel(env: &Env<'_>, tp: u32) {
    let c = &env.c;
    drain(tp);
    let rc1 = time::set_timer_op(time::now() + 20 * MS);
    let rc2 = time::set_timer_op(0);
    let more = fired(env, tp, time::now() + 40 * MS).is_some();
    c.check(
        "set_timer_op(0) cancels",
        rc1 == 0 && rc2 == 0 && !more,
        format_args!(
            "returned {} then {}; event anyway: {more}",
            Rc(rc1),
            Rc(rc2)
        ),
    );

    drain(tp);
    let rc1 = time::set_singleshot(time::now() + 20 * MS, false);
    let rc2 = time::stop_singleshot();
    let more = fired(env, tp, time::now() + 40 * MS).is_some();
    c.check(
        "stop singleshot cancels",
        rc1 == 0 && rc2 == 0 && !more,
        format_args!(
            "returned {} then {}; event anyway: {more}",
            Rc(rc1),
            Rc(rc2)
        ),
    );
}
