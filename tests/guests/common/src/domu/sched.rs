//! `mode=spin seconds=S` and `mode=block seconds=S`: what the scheduler gives a
//! domain, seen from inside it.
//!
//! - `spin [start-ms=T] [cli=1]`: CPU-bound (with interrupts off if `cli=1`) for S seconds of system time (default 2): the
//!   loop does nothing but read the pvclock. Consecutive reads normally lie well
//!   under a microsecond apart; a gap above [`STOLEN_GAP`] (200 µs) means the vCPU
//!   did not run in between, and is counted as time taken away. It prints
//!   `info: cpu_ns=<ran> wall_ns=<elapsed>` (ran = elapsed − time taken away), the
//!   numbers `tests/tests/domu.rs` compares across domains (cpu_weight ratios, a
//!   spinner beside a sleeper), and `info: runstate running_ns=<r> runnable_ns=<q>`,
//!   keel's own account of the window (VCPUOP_get_runstate_info). With `start-ms=T`
//!   the measured window starts at
//!   system time T ms (spinning, unmeasured, until then; at once if T has passed),
//!   so that spinners started a few milliseconds apart measure the same window.
//! - `block`: binds `VIRQ_TIMER` (and nothing else), arms a single-shot timer S
//!   seconds ahead and calls `SCHEDOP_block` until that timer's event has come;
//!   prints `info: armed at system time <ms>` and `info: woke after <ns>`, and checks it woke no earlier than asked and
//!   at most `slack-ms` (default 100) later. Meanwhile it should cost the CPU
//!   nothing.

use super::Env;
use crate::checks::Rc;
use crate::events;
use crate::time::{self, MS, Ms, S, US};

/// A gap between two pvclock reads above this counts as time the vCPU did not run.
pub const STOLEN_GAP: u64 = 200 * US;

/// `mode=spin`.
pub fn spin(env: &Env<'_>) {
    let c = &env.c;
    let seconds = env.num("seconds", 2);
    let booted = time::now();
    let start = booted.max(u64::from(env.num("start-ms", 0)) * MS);
    // Spin as a kernel's busy work does, with interrupts enabled. (keel preempts a
    // guest spinning with them off too, on real VMX/SVM and on QEMU; Bochs 2.7 does
    // not turn keel's timer into a VM exit while the guest's IF is 0, see
    // docs/architecture.md, so this test would measure the emulator.)
    // `cli=1`: spin with interrupts off instead, a guest that never lets an
    // interrupt in (on real hardware and QEMU keel still preempts it; the point
    // of the tests that use it is that it cannot starve the other pCPUs).
    if env.num("cli", 0) == 0 {
        // SAFETY: the IDT has a gate for every vector (crate::trap), so any
        // interrupt keel delivers is handled.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
    // Competing for the CPU already, but not measuring yet.
    while time::now() < start {}
    let rs0 = runstate();
    let end = start + u64::from(seconds) * S;
    let mut prev = start;
    let mut stolen = 0u64;
    let mut gaps = 0u32;
    let mut longest = 0u64;
    let mut backwards = 0u32;
    loop {
        let t = time::now();
        if t < prev {
            backwards += 1;
        } else {
            let gap = t - prev;
            if gap > STOLEN_GAP {
                stolen += gap;
                gaps += 1;
                longest = longest.max(gap);
            }
        }
        prev = t.max(prev);
        if prev >= end {
            break;
        }
    }
    let rs1 = runstate();
    // SAFETY: turning interrupts off cannot break memory safety.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    if let (Some((run0, wait0)), Some((run1, wait1))) = (rs0, rs1) {
        // keel's own account of the window: time it ran this vCPU, and time the
        // vCPU was runnable but another ran (what the emulator's host does to
        // its threads does not show here, unlike in the pvclock gaps above).
        c.info(format_args!(
            "runstate running_ns={} runnable_ns={}",
            run1.saturating_sub(run0),
            wait1.saturating_sub(wait0)
        ));
    }
    c.info(format_args!(
        "measured from system time {} (started at {})",
        Ms(start as i64),
        Ms(booted as i64)
    ));
    let wall = prev - start;
    let cpu = wall - stolen;
    c.info(format_args!("cpu_ns={cpu} wall_ns={wall}"));
    c.info(format_args!(
        "{gaps} gaps over {}, longest {}; cpu share {}.{}%",
        Ms(STOLEN_GAP as i64),
        Ms(longest as i64),
        cpu * 100 / wall.max(1),
        cpu * 1000 / wall.max(1) % 10
    ));
    c.check(
        "spin",
        backwards == 0 && wall >= u64::from(seconds) * S,
        format_args!("pvclock went backwards {backwards} times; ran {wall} ns of {seconds} s"),
    );
}

/// vCPU 0's time running and runnable so far (`VCPUOP_get_runstate_info`).
fn runstate() -> Option<(u64, u64)> {
    let mut buf = [0u8; 48];
    let rc = crate::hypercall::vcpu_op(
        keel_hypercall::abi::vcpu::VCPUOP_GET_RUNSTATE_INFO,
        0,
        buf.as_mut_ptr() as usize,
    );
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[at..at + 8]);
        u64::from_le_bytes(w)
    };
    // time[RUNSTATE_running] at 16, time[RUNSTATE_runnable] at 24.
    (rc == 0).then(|| (word(16), word(24)))
}

/// `mode=block`.
pub fn block(env: &Env<'_>) {
    let c = &env.c;
    let seconds = env.num("seconds", 2);
    let slack = u64::from(env.num("slack-ms", 100)) * MS;
    if !super::register_upcall(env) {
        return;
    }
    let Some(tp) = super::bind_timer(env) else {
        return;
    };
    events::take(tp);
    let start = time::now();
    let deadline = start + u64::from(seconds) * S;
    let rc = time::set_singleshot(deadline, false);
    if !c.rc("singleshot armed", rc, 0) {
        return;
    }
    c.info(format_args!("armed at system time {}", Ms(start as i64)));
    let mut blocks = 0u32;
    while events::count(tp) == 0 {
        blocks += 1;
        let rc = events::block(env.xen);
        if rc != 0 {
            c.fail("block", format_args!("SCHEDOP_block returned {}", Rc(rc)));
            return;
        }
    }
    let woke = events::last_time(tp).saturating_sub(start);
    c.info(format_args!("woke after {woke}"));
    c.info(format_args!(
        "{blocks} SCHEDOP_block calls, {} upcalls",
        events::upcalls()
    ));
    let late = woke as i64 - (u64::from(seconds) * S) as i64;
    c.check(
        "woke by the timer",
        late >= 0 && late as u64 <= slack,
        format_args!(
            "woke {} after the deadline; allowed 0 to {}",
            Ms(late),
            Ms(slack as i64)
        ),
    );
    c.rc("close VIRQ_TIMER port", events::close(tp), 0);
}
