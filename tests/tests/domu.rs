//! keel runs domUs and implements Xen's event channels, grant tables, timers and
//! scheduling as Xen does, checked from inside the domains.
//!
//! Each test boots keel with no dom0 and one or two domUs described by xl.cfg
//! modules ([`Boot::domu`]), all running the pvh64 test guest
//! (`tests/guests/common/src/domu/`) in one of its domU modes; keel numbers the
//! domUs 1, 2, ... in config order. A domU prints through the PV console ring, so
//! its lines are `(d1) ...`, `(d2) ...`:
//!
//! - `pingpong`: a server and a client exchange N requests and replies over a
//!   grant mapping, a grant copy and an event channel; both verify every message
//!   (N = 1000 on every backend: about 10 s on Bochs).
//! - `timers`: single-shot, periodic and `set_timer_op` timers against the
//!   pvclock (deadlines met within 10 ms, 50 ± 3 ticks of a 10 ms periodic timer
//!   in 500 ms, cancellation).
//! - `sched`: two CPU-bound spinners with `cpu_weight` 512 and 256 get CPU time
//!   in a 2:1 ratio (±10%); a spinner beside a domain blocked on a timer gets over
//!   90% of the time.
//! - `hostile_evtchn`, `hostile_grant`: bad event-channel and grant-table calls
//!   against a `granter` peer, each answered with Xen's exact errno or `GNTST_*`;
//!   for grants the granter's table is version 2 (sub-page and transitive grants,
//!   `set_version(1)` refused while in use) and the hostile side's version 1
//!   (`max_grant_version = 1`).
//! - `die_holding`: a domain crashes while its peer has its grant mapped and an
//!   event channel bound to it; the peer survives and cleans up.
//! - `fifo_beside_pingpong`: FIFO event channels (10,050 ports, priorities,
//!   masking, busy ports, Xen's errnos, a guest scribbling over its own queues)
//!   beside a pingpong between a FIFO + grant v2 server and a 2-level + v1
//!   client.
//!
//! Every test lists each check line it expects per domain, so a check that does
//! not run fails the test as surely as one that fails. Around the guests' own
//! verdicts, keel must report each domain's end (`d<N> shut down: ...`), then
//! `All domains have ended: ...`, give back every frame
//! ([`guests::assert_frames_balance`]) and never print `FATAL`.

use keel_tests::contract::FATAL;
use keel_tests::guests::{self, PVH64, domain_line, domain_shut_down};
use keel_tests::{Backend, Boot, Outcome, RunResult};

/// Each domU's memory (MiB): the guest image is ~1.3 MiB.
const MEMORY_MIB: u32 = 8;

/// One domU: its name, the guest's command line, extra xl.cfg lines.
struct Dom<'a> {
    name: &'a str,
    cmdline: String,
    extra: &'a str,
}

fn dom<'a>(name: &'a str, cmdline: impl Into<String>, extra: &'a str) -> Dom<'a> {
    Dom {
        name,
        cmdline: cmdline.into(),
        extra,
    }
}

/// The xl.cfg text of `d`.
fn config(d: &Dom<'_>) -> String {
    format!(
        "name = \"{}\"\ntype = \"pvh\"\nkernel = \"{PVH64}\"\ncmdline = \"{}\"\nmemory = {MEMORY_MIB}\nvcpus = 1\n{}",
        d.name, d.cmdline, d.extra
    )
}

/// Boots keel with no dom0 and `doms` as d1, d2, ... (the pvh64 guest is a module
/// the configs name, so it is not dom0).
fn boot(test: &str, backend: Backend, doms: &[Dom<'_>]) -> RunResult {
    boot_with(test, backend, "", doms)
}

/// [`boot`] with `extra` on keel's command line.
fn boot_with(test: &str, backend: Backend, extra: &str, doms: &[Dom<'_>]) -> RunResult {
    let mut boot = Boot::new(test, backend)
        .extra_cmdline(extra)
        .module(guests::guest(PVH64), "");
    for d in doms {
        boot = boot.domu(d.name, &config(d));
    }
    boot.run()
}

/// `(d<id>) <check>: ok`.
fn ok(id: u16, check: &str) -> String {
    domain_line(id, &format!("{check}: ok"))
}

/// Asserts domain `id` printed every check in `checks` as passed, no failed
/// check and no unexpected exception, its `Test result: SUCCESS`, and that keel
/// saw it power off.
#[track_caller]
fn assert_domain_passed(run: &RunResult, id: u16, checks: &[&str]) {
    let mut lines: Vec<String> = checks.iter().map(|c| ok(id, c)).collect();
    lines.push(format!(
        r"^\(d{id}\) pvh64 \(long mode\): hvm_start_info at 0x[0-9a-f]+, command line "
    ));
    lines.push(domain_line(id, "Test result: SUCCESS"));
    lines.push(domain_shut_down(id, "poweroff"));
    guests::assert_lines(run, &lines);
    run.assert_no_line(&format!(r"^\(d{id}\) .*: FAIL( |$)"));
    run.assert_no_line(&format!(r"^\(d{id}\) unexpected exception "));
    run.assert_no_line(&format!(r"^\(d{id}\) PANIC "));
}

/// Asserts keel ended every domain as `ends` says (`(id, "poweroff")`...), gave
/// back every frame, never printed `FATAL`, and powered off: cleanly, or (`crash`
/// among the ends) possibly reporting the domain failure.
#[track_caller]
fn assert_all_ended(run: &RunResult, ends: &[(u16, &str)]) {
    run.assert_no_line(FATAL);
    let mut got = guests::domains_ended(run);
    got.sort();
    let want: Vec<(u16, String)> = ends.iter().map(|&(d, h)| (d, h.to_string())).collect();
    assert_eq!(got, want, "how the domains ended\n{}", run.report());
    guests::assert_frames_balance(run);
    let crashed = ends.iter().any(|&(_, how)| how != "poweroff");
    let outcome = run.outcome();
    let fine = match outcome {
        Outcome::PoweredOff => true,
        Outcome::DomainFailed(_) => crashed,
        _ => false,
    };
    assert!(
        fine,
        "expected keel to power off{}, got: {outcome}\n{}",
        if crashed {
            " (cleanly or reporting the crashed domain)"
        } else {
            " cleanly"
        },
        run.report()
    );
}

// ---------------------------------------------------------------------------
// pingpong

/// The server's checks (the count is in one of them).
fn pingpong_server_checks(count: u32) -> Vec<String> {
    [
        "shared_info mapped",
        "grant table mapped",
        "grant to peer",
        "alloc_unbound for peer",
        "peer done",
        "end grant",
        "close port",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("messages verified {count}")])
    .collect()
}

/// The client's checks.
fn pingpong_client_checks(count: u32) -> Vec<String> {
    [
        "shared_info mapped",
        "grant table mapped",
        "grant to peer",
        "upcall registered",
        "bind VIRQ_TIMER",
        "bind_interdomain to peer",
        "status of bound port",
        "map peer grant",
        "watchdog timer",
        "unmap peer grant",
        "gfn empty after unmap",
        "send bye",
        "close port",
        "end grant",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("messages verified {count}")])
    .collect()
}

fn pingpong(test: &str, backend: Backend, count: u32) {
    pingpong_with(test, backend, count, ["", ""]);
}

/// [`pingpong`] with extra xl.cfg lines for the server and the client.
fn pingpong_with(test: &str, backend: Backend, count: u32, extra: [&str; 2]) {
    let run = boot(
        test,
        backend,
        &[
            dom(
                "ping-server",
                format!("mode=pingpong role=server peer=2 count={count}"),
                extra[0],
            ),
            dom(
                "ping-client",
                format!("mode=pingpong role=client peer=1 count={count}"),
                extra[1],
            ),
        ],
    );
    let server = pingpong_server_checks(count);
    let client = pingpong_client_checks(count);
    assert_domain_passed(
        &run,
        1,
        &server.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_domain_passed(
        &run,
        2,
        &client.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    run.assert_line(r"^\(d1\) info: \d+ round trips in [0-9.]+ ms: \d+ per second$");
    run.assert_line(r"^\(d2\) info: \d+ round trips in [0-9.]+ ms: \d+ per second$");
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff")]);
}

#[test]
fn pingpong_on_qemu_svm() {
    pingpong("domu_pingpong", Backend::QemuSvm, 1000);
}

#[test]
fn pingpong_on_bochs_vmx() {
    pingpong("domu_pingpong", Backend::BochsVmx, 1000);
}

#[test]
fn pingpong_on_bochs_svm() {
    pingpong("domu_pingpong", Backend::BochsSvm, 1000);
}

// ---------------------------------------------------------------------------
// FIFO event channels, and pingpong over FIFO and grant tables v2

/// `max_event_channels` of the fifo domain: room for its 10,050 ports and the
/// few it keeps besides.
const FIFO_MAX_EVTCHN: u32 = 10_240;

/// Every check `mode=fifo offline-vcpu=1` makes.
fn fifo_checks() -> Vec<String> {
    let mut v: Vec<String> = [
        "shared_info mapped",
        "2-level port bound",
        "2-level send while masked",
        "2-level port pending at the switch",
        "set_priority before init_control",
        "expand_array before init_control",
        "init_control vCPU 0",
        "link_bits",
        "init_control twice on vCPU 0",
        "init_control for a vCPU not yet up",
        "send before any array page",
        "expand_array",
        "2-level pending port delivered after the switch",
        "ports bound",
        "sends",
        "every port consumed exactly once",
        "consumed in the order sent",
        "set_priority",
        "set_priority 16",
        "set_priority u32::MAX",
        "set_priority of a free port",
        "set_priority beyond the table",
        "highest priority consumed first",
        "a pending port is queued once",
        "masked port not delivered",
        "unmask",
        "unmasked port delivered",
        "close a queued port",
        "a queued port is not reused",
        "a closed port is not delivered",
        "an unlinked port is reused",
        "upcall registered",
        "timer through FIFO",
        "expand_array with a gfn beyond RAM",
        "expand_array to 128 pages",
        "expand_array beyond 128 pages",
        "scribbled while sending",
        "keel answers after the scribbling",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for label in [
        "absent vCPU",
        "vCPU u32::MAX",
        "offset crossing the page",
        "offset at the page end",
        "unaligned offset",
        "gfn beyond RAM",
        "gfn of the local APIC",
        "gfn u64::MAX",
    ] {
        v.push(format!("init_control {label}"));
        v.push(format!("init_control {label} writes nothing back"));
    }
    v
}

/// d1 runs `mode=fifo` (10,050 ports, priorities, Xen's errnos, and at the end
/// scribbles over its own queues while events flow) beside a pingpong pair: a
/// server on FIFO event channels with a version 2 grant table, and a client on
/// 2-level channels with version 1, so every message crosses between the two
/// ABIs both ways.
fn fifo_beside_pingpong(test: &str, backend: Backend, count: u32) {
    let fifo_cfg = format!("max_event_channels = {FIFO_MAX_EVTCHN}\nmaxvcpus = 2\n");
    let run = boot(
        test,
        backend,
        &[
            dom("fifo", "mode=fifo offline-vcpu=1", &fifo_cfg),
            dom(
                "ping-server",
                format!("mode=pingpong role=server peer=3 count={count} evtchn=fifo gnttab=2"),
                "",
            ),
            dom(
                "ping-client",
                format!("mode=pingpong role=client peer=2 count={count}"),
                "",
            ),
        ],
    );
    let checks = fifo_checks();
    assert_domain_passed(
        &run,
        1,
        &checks.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    run.assert_line(r"^\(d1\) info: ports \d+\.\.=(\d{5}) bound$");
    let mut server = pingpong_server_checks(count);
    server.extend(["FIFO event channels".into(), "grant table v2".into()]);
    let client = pingpong_client_checks(count);
    assert_domain_passed(
        &run,
        2,
        &server.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_domain_passed(
        &run,
        3,
        &client.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff"), (3, "poweroff")]);
}

#[test]
fn fifo_beside_pingpong_v2_on_qemu_svm() {
    fifo_beside_pingpong("domu_fifo", Backend::QemuSvm, 1000);
}

#[test]
fn fifo_beside_pingpong_v2_on_bochs_vmx() {
    fifo_beside_pingpong("domu_fifo", Backend::BochsVmx, 300);
}

#[test]
fn fifo_beside_pingpong_v2_on_bochs_svm() {
    fifo_beside_pingpong("domu_fifo", Backend::BochsSvm, 300);
}

// ---------------------------------------------------------------------------
// timers

const TIMER_CHECKS: &[&str] = &[
    "shared_info mapped",
    "upcall registered",
    "bind VIRQ_TIMER",
    "stop periodic timer at start",
    "pvclock TSC stable",
    "pvclock monotonic",
    "singleshot +1 ms",
    "singleshot +5 ms",
    "singleshot +20 ms",
    "singleshot in the past fires at once",
    "singleshot future flag in the past",
    "periodic below 1 ms refused",
    "periodic 10 ms",
    "stop periodic",
    "set_timer_op fires",
    "set_timer_op(0) cancels",
    "stop singleshot cancels",
    "close VIRQ_TIMER port",
];

/// `upcall` picks how the guest asks for its upcall (the per-vCPU vector, or
/// the `HVM_PARAM_CALLBACK_IRQ` vector callback).
/// `long_ms`, if not 0, adds a single-shot timer that far ahead with every
/// pCPU idle (check `singleshot +<long_ms> ms`).
fn timers(test: &str, backend: Backend, upcall: &str, long_ms: u32) {
    let run = boot(
        test,
        backend,
        &[dom(
            "timers",
            format!("mode=timers upcall={upcall} slack-ms=10 long-ms={long_ms}"),
            "",
        )],
    );
    assert_domain_passed(&run, 1, TIMER_CHECKS);
    if long_ms > 0 {
        run.assert_line(&format!(r"^\(d1\) singleshot \+{long_ms} ms: ok$"));
    }
    run.assert_line(r"^\(d1\) info: periodic 10 ms: \d+ events in 500 ms$");
    assert_all_ended(&run, &[(1, "poweroff")]);
}

/// With a 6 s single-shot timer: QEMU's local APIC timer runs at 1 GHz, so one
/// 32-bit count ends after 4.3 s, and an idle pCPU must arm it again.
#[test]
fn timers_on_qemu_svm() {
    timers("domu_timers", Backend::QemuSvm, "vector", 6000);
}

#[test]
fn timers_with_callback_via_on_qemu_svm() {
    timers("domu_timers_callback", Backend::QemuSvm, "callback", 0);
}

#[test]
fn timers_on_bochs_vmx() {
    timers("domu_timers", Backend::BochsVmx, "vector", 0);
}

#[test]
fn timers_on_bochs_svm() {
    timers("domu_timers", Backend::BochsSvm, "callback", 0);
}

// ---------------------------------------------------------------------------
// scheduling

const SPIN_CHECKS: &[&str] = &["shared_info mapped", "spin"];
const BLOCK_CHECKS: &[&str] = &[
    "shared_info mapped",
    "upcall registered",
    "bind VIRQ_TIMER",
    "singleshot armed",
    "woke by the timer",
    "close VIRQ_TIMER port",
];

/// Domain `id`'s `info: cpu_ns=<ran> wall_ns=<elapsed>`.
#[track_caller]
fn cpu_and_wall(run: &RunResult, id: u16) -> (u64, u64) {
    let caps = run.assert_line(&format!(r"^\(d{id}\) info: cpu_ns=(\d+) wall_ns=(\d+)$"));
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("d{id}: bad number {s:?}: {e}\n{}", run.report()))
    };
    (parse(&caps[1]), parse(&caps[2]))
}

/// Domain `id`'s `info: runstate running_ns=<r> runnable_ns=<q>`.
#[track_caller]
fn running_and_runnable(run: &RunResult, id: u16) -> (u64, u64) {
    let caps = run.assert_line(&format!(
        r"^\(d{id}\) info: runstate running_ns=(\d+) runnable_ns=(\d+)$"
    ));
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("d{id}: bad number {s:?}: {e}\n{}", run.report()))
    };
    (parse(&caps[1]), parse(&caps[2]))
}

/// When the spinners measure from: system time 3 s, well after keel has booted
/// and built both domains on every backend, so both measure the same window.
const SPIN_FROM: &str = "start-ms=3000";

/// Domain `id`'s measurement window start, as printed.
#[track_caller]
fn window_start(run: &RunResult, id: u16) -> String {
    run.assert_line(&format!(
        r"^\(d{id}\) info: measured from system time ([0-9.]+ ms) \(started at [0-9.]+ ms\)$"
    ))[1]
        .to_string()
}

/// Two spinners weighted 512 and 256, pinned to the same pCPU (the machine has
/// others, idle), share it 2:1 (within 10%).
fn sched_weights(test: &str, backend: Backend) {
    let run = boot(
        test,
        backend,
        &[
            dom(
                "heavy",
                format!("mode=spin seconds=2 {SPIN_FROM}"),
                "cpu_weight = 512\ncpus = \"1\"\n",
            ),
            dom(
                "light",
                format!("mode=spin seconds=2 {SPIN_FROM}"),
                "cpu_weight = 256\ncpus = \"1\"\n",
            ),
        ],
    );
    assert_domain_passed(&run, 1, SPIN_CHECKS);
    assert_domain_passed(&run, 2, SPIN_CHECKS);
    let (from1, from2) = (window_start(&run, 1), window_start(&run, 2));
    assert_eq!(
        from1,
        from2,
        "the spinners measured different windows: one started after {SPIN_FROM}, i.e. \
         keel did not run it while the other spun (no preemption?)\n{}",
        run.report()
    );
    let (heavy, _) = cpu_and_wall(&run, 1);
    let (light, _) = cpu_and_wall(&run, 2);
    let ratio = heavy as f64 / light.max(1) as f64;
    assert!(
        (1.8..=2.2).contains(&ratio),
        "cpu_weight 512 vs 256: cpu_ns {heavy} vs {light}, ratio {ratio:.3}, expected 2 +- 10%\n{}",
        run.report()
    );
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff")]);
}

/// A spinner beside a domain blocked on a timer gets over 90% of the CPU. The
/// spinner measures from system time 1 s to 3 s; the sleeper arms a 1 s timer as
/// soon as it runs, which must be while the spinner spins (keel preempts it), so
/// it wakes inside the spinner's window.
fn sched_spin_and_block(test: &str, backend: Backend) {
    let run = boot(
        test,
        backend,
        &[
            dom("spinner", "mode=spin seconds=2 start-ms=1000", ""),
            dom("sleeper", "mode=block seconds=1", ""),
        ],
    );
    assert_domain_passed(&run, 1, SPIN_CHECKS);
    assert_domain_passed(&run, 2, BLOCK_CHECKS);
    let armed = run.assert_line(r"^\(d2\) info: armed at system time ([0-9]+)\.([0-9]{3}) ms$");
    let armed_ms: u64 = armed[1].parse().unwrap_or(u64::MAX);
    let woke = run.assert_line(r"^\(d2\) info: woke after (\d+)$");
    let woke_ns: u64 = woke[1].parse().unwrap_or(u64::MAX);
    let (cpu, wall) = cpu_and_wall(&run, 1);
    let woke_at_ms = armed_ms.saturating_add(woke_ns / 1_000_000);
    assert!(
        woke_at_ms < 3000,
        "the sleeper armed its timer at {armed_ms} ms and woke at {woke_at_ms} ms, after the \
         spinner's window (1000..3000 ms): it did not run while the spinner spun (no \
         preemption?)\n{}",
        run.report()
    );
    assert!(
        cpu * 10 > wall * 9,
        "the spinner beside a blocked domain ran {cpu} ns of {wall} ns (expected > 90%)\n{}",
        run.report()
    );
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff")]);
}

#[test]
fn sched_weights_on_qemu_svm() {
    sched_weights("domu_sched_weights", Backend::QemuSvm);
}

#[test]
fn sched_weights_on_bochs_vmx() {
    sched_weights("domu_sched_weights", Backend::BochsVmx);
}

#[test]
fn sched_weights_on_bochs_svm() {
    sched_weights("domu_sched_weights", Backend::BochsSvm);
}

#[test]
fn sched_spin_and_block_on_qemu_svm() {
    sched_spin_and_block("domu_sched_block", Backend::QemuSvm);
}

#[test]
fn sched_spin_and_block_on_bochs_vmx() {
    sched_spin_and_block("domu_sched_block", Backend::BochsVmx);
}

#[test]
fn sched_spin_and_block_on_bochs_svm() {
    sched_spin_and_block("domu_sched_block", Backend::BochsSvm);
}

// ---------------------------------------------------------------------------
// hostile event channels and grants, against a granter

/// The granter's checks; `expect_write` when its peer writes through the
/// writable grant (`hostile-grant`).
fn granter_checks(expect_write: bool) -> Vec<&'static str> {
    let mut v = vec![
        "shared_info mapped",
        "grant table mapped",
        "grants made",
        "decoy ports",
        "alloc_unbound for peer",
        "peer done",
        "peer released grants",
        "end grants",
        "close ports",
    ];
    if expect_write {
        v.push("peer wrote through writable grant");
    }
    v
}

/// `max_event_channels` of the hostile-evtchn domain (xl's default is 1023;
/// lower keeps the `-ENOSPC` loop short).
const MAX_EVTCHN: u32 = 64;

/// Every check `hostile-evtchn` makes.
fn hostile_evtchn_checks() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for label in ["port 0", "unallocated port", "port 4096"] {
        for op in ["send", "close", "bind_vcpu", "unmask"] {
            v.push(format!("{op} {label}"));
        }
    }
    v.extend(
        [
            "shared_info mapped",
            "status port 4096",
            "alloc_unbound for self",
            "bind_vcpu to missing vcpu",
            "send on unbound port",
            "close unbound port",
            "status of closed port",
            "close closed port",
            "send on closed port",
            "bind_interdomain to missing domain",
            "bind_interdomain to peer",
            "bind_interdomain twice",
            "bind_interdomain to port unbound for another domain",
            "send on port only the peer allocated",
            "bind_vcpu interdomain port",
            "unmask interdomain port",
            "bind_virq VIRQ_TIMER",
            "bind_virq twice",
            "bind_virq out of range",
            "bind_virq on missing vcpu",
            "bind_vcpu VIRQ_TIMER port",
            "alloc_unbound until ENOSPC",
            "port limit",
            "status of unbound port",
            "close all allocated ports",
            "alloc_unbound after closing",
            "close it again",
            "close VIRQ_TIMER port",
            "send done to peer",
            "close interdomain port",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

fn hostile_evtchn(test: &str, backend: Backend) {
    let max = format!("max_event_channels = {MAX_EVTCHN}\n");
    let run = boot(
        test,
        backend,
        &[
            dom("granter", "mode=granter peer=2", ""),
            dom(
                "hostile-evtchn",
                format!("mode=hostile-evtchn peer=1 max-evtchn={MAX_EVTCHN}"),
                &max,
            ),
        ],
    );
    assert_domain_passed(&run, 1, &granter_checks(false));
    let checks = hostile_evtchn_checks();
    assert_domain_passed(
        &run,
        2,
        &checks.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    run.assert_line(
        r"^\(d2\) info: alloc_unbound succeeded \d+ times, then returned -28 \(ENOSPC\)$",
    );
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff")]);
}

#[test]
fn hostile_evtchn_on_qemu_svm() {
    hostile_evtchn("domu_hostile_evtchn", Backend::QemuSvm);
}

#[test]
fn hostile_evtchn_on_bochs_vmx() {
    hostile_evtchn("domu_hostile_evtchn", Backend::BochsVmx);
}

#[test]
fn hostile_evtchn_on_bochs_svm() {
    hostile_evtchn("domu_hostile_evtchn", Backend::BochsSvm);
}

const HOSTILE_GRANT_CHECKS: &[&str] = &[
    "shared_info mapped",
    "query_size",
    "setup_table",
    "get_version",
    "set_version 1",
    "set_version 2 refused",
    "set_version 3",
    "still version 1",
    "bind_interdomain to peer",
    "map readonly grant",
    "read through readonly map",
    "writable map of readonly grant",
    "map ref beyond table",
    "map ref granted to another domain",
    "map ref never granted",
    "map from missing domain",
    "map writable grant",
    "copy beyond page",
    "copy from bad gref",
    "copy from readonly grant",
    "copy to readonly grant",
    "unmap bad handle",
    "unmap readonly map",
    "double unmap",
    "gfn empty after unmap",
    "unmap writable map",
    "send done to peer",
    "close port",
];

/// The hostile side's checks against a version 2 granter (`v2-peer`).
const HOSTILE_GRANT_V2_CHECKS: &[&str] = &[
    "own grant table mapped",
    "copy within sub-page grant",
    "copy past sub-page end",
    "copy before sub-page start",
    "map sub-page grant",
    "copy through transitive grant",
    "map transitive grant",
    "transitive grant naming itself",
    "transitive grant to an ended grant",
    "transitive grant to no domain",
    "copy into readonly transitive grant",
    "end grant the transitive one passed on",
];

/// The granter's extra checks with `gnttab=2`.
const GRANTER_V2_CHECKS: &[&str] = &[
    "grant table v2",
    "v2 grants made",
    "map own v2 grant",
    "set_version 1 with a live v2 grant",
    "still version 2",
    "unmap own v2 grant",
    "end own v2 grant",
    "back to version 1",
];

/// d1 grants with a version 2 table (full-page, sub-page and transitive
/// entries); d2, whose `max_grant_version` is 1, maps and copies them with bad
/// arguments and good, and must get Xen's status for each.
fn hostile_grant(test: &str, backend: Backend) {
    let run = boot(
        test,
        backend,
        &[
            dom("granter", "mode=granter peer=2 expect-write gnttab=2", ""),
            dom(
                "hostile-grant",
                "mode=hostile-grant peer=1 v2-peer",
                "max_grant_version = 1\n",
            ),
        ],
    );
    let mut granter = granter_checks(true);
    granter.extend(GRANTER_V2_CHECKS);
    assert_domain_passed(&run, 1, &granter);
    let hostile: Vec<&str> = HOSTILE_GRANT_CHECKS
        .iter()
        .chain(HOSTILE_GRANT_V2_CHECKS)
        .copied()
        .collect();
    assert_domain_passed(&run, 2, &hostile);
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff")]);
}

#[test]
fn hostile_grant_on_qemu_svm() {
    hostile_grant("domu_hostile_grant", Backend::QemuSvm);
}

#[test]
fn hostile_grant_on_bochs_vmx() {
    hostile_grant("domu_hostile_grant", Backend::BochsVmx);
}

#[test]
fn hostile_grant_on_bochs_svm() {
    hostile_grant("domu_hostile_grant", Backend::BochsSvm);
}

// ---------------------------------------------------------------------------
// a domain dies holding a grant mapping and a channel

const VICTIM_CHECKS: &[&str] = &[
    "shared_info mapped",
    "grant table mapped",
    "grant to peer",
    "alloc_unbound for peer",
    "peer mapped the grant",
];

const HOLDER_CHECKS: &[&str] = &[
    "shared_info mapped",
    "bind_interdomain to peer",
    "map peer grant",
    "read through map",
    "send mapped to peer",
    "port unbound after peer died",
    "send after peer died",
    "mapping after peer died",
    "unmap after peer died",
    "gfn empty after unmap",
    "close port",
];

fn die_holding(test: &str, backend: Backend) {
    let run = boot(
        test,
        backend,
        &[
            dom("victim", "mode=die-holding role=victim peer=2", ""),
            dom("holder", "mode=die-holding role=holder peer=1", ""),
        ],
    );
    let mut lines: Vec<String> = VICTIM_CHECKS.iter().map(|c| ok(1, c)).collect();
    lines.push(
        r"^\(d1\) \d+ checks passed; crashing on purpose while d2 holds the grant$".to_string(),
    );
    lines.push(domain_shut_down(1, "crash"));
    guests::assert_lines(&run, &lines);
    run.assert_no_line(r"^\(d1\) .*: FAIL( |$)");
    assert_domain_passed(&run, 2, HOLDER_CHECKS);
    run.assert_line(r"^\(d2\) info: after the peer died the mapping ");
    assert_all_ended(&run, &[(1, "crash"), (2, "poweroff")]);
}

#[test]
fn die_holding_on_qemu_svm() {
    die_holding("domu_die_holding", Backend::QemuSvm);
}

#[test]
fn die_holding_on_bochs_vmx() {
    die_holding("domu_die_holding", Backend::BochsVmx);
}

#[test]
fn die_holding_on_bochs_svm() {
    die_holding("domu_die_holding", Backend::BochsSvm);
}

// ---------------------------------------------------------------------------
// the 32-bit guest as a domU

/// pvh32 prints through the PV console ring too (the compat ABI: 32-bit
/// hypercall registers, the same `xencons_interface`), and answers the domU
/// modes, which are pvh64-only, as unknown: a clean failure, not a hang.
#[test]
fn pvh32_domu_console_and_unknown_mode_on_qemu_svm() {
    let run = Boot::new("domu_pvh32", Backend::QemuSvm)
        .module(guests::guest(guests::PVH32), "")
        .domu(
            "d32",
            "name = \"d32\"\ntype = \"pvh\"\nkernel = \"pvh32.elf\"\ncmdline = \"mode=timers\"\nmemory = 8\nvcpus = 1\n",
        )
        .run();
    guests::assert_lines(
        &run,
        &[
            r#"^\(d1\) pvh32 \(protected mode\): hvm_start_info at 0x[0-9a-f]+, command line "mode=timers"$"#
                .to_string(),
            domain_line(
                1,
                "unknown mode=timers in pvh32 (the domU modes are pvh64-only)",
            ),
            domain_line(1, "Test result: FAILURE (unknown mode)"),
        ],
    );
    assert_all_ended(&run, &[(1, "crash")]);
}

// ---------------------------------------------------------------------------
// the tests' own plumbing (no emulator)

#[test]
fn configs_name_the_guest_module_and_the_settings() {
    let text = config(&dom("d", "mode=spin seconds=2", "cpu_weight = 512\n"));
    assert_eq!(
        text,
        "name = \"d\"\ntype = \"pvh\"\nkernel = \"pvh64.elf\"\ncmdline = \"mode=spin seconds=2\"\nmemory = 8\nvcpus = 1\ncpu_weight = 512\n"
    );
    let checks = hostile_evtchn_checks();
    assert!(checks.iter().any(|c| c == "unmask port 0"));
    assert!(
        checks.iter().all(|c| !c.contains(':')),
        "check names never hold a colon"
    );
    assert!(
        pingpong_client_checks(7)
            .iter()
            .any(|c| c == "messages verified 7")
    );
}

// ---------------------------------------------------------------------------
// configurations keel must refuse

/// Broken domU configurations are refused, each with a message naming it, and do
/// not stop the domU beside them: a syntax error, a kernel module that does not
/// exist, and a setting keel does not support (more vCPUs than shared_info has
/// `vcpu_info` slots: 33). The good domU (d4:
/// refused configs keep their ids) runs to a clean end and every frame comes back.
#[test]
fn bad_configs_are_refused_and_the_rest_run_on_qemu_svm() {
    let good = dom("good", "mode=hello", "");
    let many_vcpus = config(&dom("manyvcpus", "mode=hello", "")).replace("vcpus = 1", "vcpus = 33");
    let run = Boot::new("domu_bad_configs", Backend::QemuSvm)
        .module(guests::guest(PVH64), "")
        .domu("broken", "name = \"broken\"\nmemory = = 3\n")
        .domu(
            "nokernel",
            "name = \"nokernel\"\ntype = \"pvh\"\nkernel = \"nosuch.elf\"\n",
        )
        .domu("manyvcpus", &many_vcpus)
        .domu("good", &config(&good))
        .run();
    run.assert_line(r"^\(KEEL\) domU: module \d+ \(broken\.cfg\): .*line 2");
    run.assert_line(r"^\(KEEL\) domU: module \d+ \(nokernel\.cfg\): .*nosuch\.elf");
    run.assert_line(
        r"^\(KEEL\) d3 \(manyvcpus\): cannot build: maxvcpus = 33: keel gives a domain at most 32 vCPUs$",
    );
    run.assert_line(r"^\(d4\) hello from ");
    run.assert_line(&domain_shut_down(4, "poweroff"));
    assert_all_ended(&run, &[(4, "poweroff")]);
}

/// With a Dom0, Dom0's end ends the machine: a domU still running is destroyed
/// (not counted as a failure), its frames come back, and keel powers off cleanly.
#[test]
fn dom0_end_destroys_running_domus_on_qemu_svm() {
    let spinner = dom("spinner", "mode=spin seconds=600", "");
    let run = Boot::new("domu_dom0_ends", Backend::QemuSvm)
        .extra_cmdline("dom0_mem=32M")
        .module_as(guests::guest(PVH64), "dom0.elf", "mode=hello")
        .module_as(guests::guest(PVH64), PVH64, "")
        .domu("spinner", &config(&spinner))
        .run();
    run.assert_line(r"^\(d0\) hello from ");
    run.assert_line(&domain_shut_down(0, "poweroff"));
    run.assert_line(r"^\(KEEL\) d1 destroyed: dom0 has ended$");
    assert_all_ended(&run, &[(0, "poweroff"), (1, "destroyed")]);
    run.assert_powered_off_cleanly();
}

// ---------------------------------------------------------------------------
// several pCPUs

/// The pCPUs the SMP tests pin to on `backend`: QEMU's machines have 4, Bochs's 2
/// (`Backend::default_cpus`).
fn pcpus(backend: Backend) -> u32 {
    backend.default_cpus()
}

/// `cpus = "N"`: the domain's vCPU may run on pCPU `n` only.
fn pinned(n: u32) -> String {
    format!("cpus = \"{n}\"\n")
}

/// One CPU-bound domU per pCPU: each gets (nearly) a whole pCPU, as its own
/// runstate-based measurement says (the spinners run at once, not in turns).
fn parallel_spinners(test: &str, backend: Backend) {
    let n = pcpus(backend);
    let names: Vec<String> = (1..=n).map(|i| format!("spin{i}")).collect();
    let doms: Vec<Dom<'_>> = names
        .iter()
        .map(|name| dom(name, format!("mode=spin seconds=2 {SPIN_FROM}"), ""))
        .collect();
    let run = boot(test, backend, &doms);
    for id in 1..=n as u16 {
        assert_domain_passed(&run, id, SPIN_CHECKS);
        // keel's account (runstate), not the pvclock gaps: with one emulated CPU
        // per host thread and more of them than host cores, the host takes time
        // from every spinner that keel gave it.
        let (running, runnable) = running_and_runnable(&run, id);
        assert!(
            running * 10 > (running + runnable) * 9 && running > 1_500_000_000,
            "d{id} of {n} spinners on {n} pCPUs ran {running} ns and waited {runnable} ns \
             (expected > 90% running, 1.5 s at least)\n{}",
            run.report()
        );
    }
    let ends: Vec<(u16, &str)> = (1..=n as u16).map(|id| (id, "poweroff")).collect();
    assert_all_ended(&run, &ends);
}

#[test]
fn parallel_spinners_on_qemu_svm() {
    parallel_spinners("domu_parallel_spinners", Backend::QemuSvm);
}

#[test]
fn parallel_spinners_on_bochs_vmx() {
    parallel_spinners("domu_parallel_spinners", Backend::BochsVmx);
}

#[test]
fn parallel_spinners_on_bochs_svm() {
    parallel_spinners("domu_parallel_spinners", Backend::BochsSvm);
}

/// `sched=null` on several pCPUs: each vCPU has a pCPU of its own, never shared
/// and never sliced: one spinner per pCPU runs its whole window, as keel's
/// runstate says, and the policy is named with the pCPU count.
#[test]
fn null_scheduler_gives_each_vcpu_its_own_pcpu_on_qemu_svm() {
    let backend = Backend::QemuSvm;
    let n = pcpus(backend);
    let names: Vec<String> = (1..=n).map(|i| format!("own{i}")).collect();
    let doms: Vec<Dom<'_>> = names
        .iter()
        .map(|name| dom(name, format!("mode=spin seconds=2 {SPIN_FROM}"), ""))
        .collect();
    let run = boot_with("domu_null_sched", backend, "sched=null", &doms);
    run.assert_line(&format!(r"^\(KEEL\) Scheduler: null on {n} pCPU\(s\)$"));
    for id in 1..=n as u16 {
        assert_domain_passed(&run, id, SPIN_CHECKS);
        let (running, runnable) = running_and_runnable(&run, id);
        assert!(
            running * 100 > (running + runnable) * 99,
            "d{id} under sched=null ran {running} ns and waited {runnable} ns (expected \
             its own pCPU, no waiting)\n{}",
            run.report()
        );
    }
    let ends: Vec<(u16, &str)> = (1..=n as u16).map(|id| (id, "poweroff")).collect();
    assert_all_ended(&run, &ends);
}

/// A server and a client pinned to different pCPUs exchange `count` messages
/// through an interdomain channel, a grant mapping and grant copies, each
/// verified on both sides, while both run at once.
fn pingpong_apart(test: &str, backend: Backend, count: u32) {
    let last = pcpus(backend) - 1;
    pingpong_with(test, backend, count, [&pinned(last), &pinned(last - 1)]);
}

#[test]
fn pingpong_10000_pinned_apart_on_qemu_svm() {
    pingpong_apart("domu_pingpong_apart", Backend::QemuSvm, 10_000);
}

#[test]
fn pingpong_pinned_apart_on_bochs_vmx() {
    pingpong_apart("domu_pingpong_apart", Backend::BochsVmx, 1000);
}

#[test]
fn pingpong_pinned_apart_on_bochs_svm() {
    pingpong_apart("domu_pingpong_apart", Backend::BochsSvm, 1000);
}

/// A domain dies on one pCPU while its peer, on another, has its page
/// grant-mapped writable and keeps writing to it: when the death shows, the
/// peer's mapping is gone (a write then a read finds nothing), and every frame
/// comes back. A pCPU that kept the translation in its TLB would read its own
/// write back.
fn die_while_written(test: &str, backend: Backend) {
    let last = pcpus(backend) - 1;
    let victim = pinned(last - 1);
    let holder = pinned(last);
    let run = boot(
        test,
        backend,
        &[
            dom(
                "victim",
                "mode=die-holding role=victim peer=2 write=1 linger-ms=300",
                &victim,
            ),
            dom(
                "holder",
                "mode=die-holding role=holder peer=1 write=1",
                &holder,
            ),
        ],
    );
    let mut lines: Vec<String> = VICTIM_CHECKS.iter().map(|c| ok(1, c)).collect();
    lines.push(domain_shut_down(1, "crash"));
    guests::assert_lines(&run, &lines);
    let mut holder_checks: Vec<&str> = HOLDER_CHECKS
        .iter()
        .copied()
        .filter(|c| *c != "read through map")
        .collect();
    holder_checks.push("write after peer died lands nowhere");
    assert_domain_passed(&run, 2, &holder_checks);
    run.assert_line(r"^\(d2\) info: [1-9]\d* writes to the mapping while the peer lived$");
    assert_all_ended(&run, &[(1, "crash"), (2, "poweroff")]);
}

#[test]
fn die_while_written_on_another_pcpu_on_qemu_svm() {
    die_while_written("domu_die_while_written", Backend::QemuSvm);
}

#[test]
fn die_while_written_on_another_pcpu_on_bochs_vmx() {
    die_while_written("domu_die_while_written", Backend::BochsVmx);
}

#[test]
fn die_while_written_on_another_pcpu_on_bochs_svm() {
    die_while_written("domu_die_while_written", Backend::BochsSvm);
}

/// A guest that spins with interrupts off, alone on its pCPU, cannot starve a
/// spinner on another pCPU (nor hold a lock it needs: the other pCPU takes
/// every lock its own exits need without waiting for the first one).
#[test]
fn a_guest_spinning_with_interrupts_off_starves_no_other_pcpu_on_qemu_svm() {
    let run = boot(
        "domu_cli_spinner",
        Backend::QemuSvm,
        &[
            dom(
                "hog",
                format!("mode=spin seconds=3 cli=1 {SPIN_FROM}"),
                &pinned(1),
            ),
            dom(
                "other",
                format!("mode=spin seconds=2 {SPIN_FROM}"),
                &pinned(2),
            ),
        ],
    );
    assert_domain_passed(&run, 1, SPIN_CHECKS);
    assert_domain_passed(&run, 2, SPIN_CHECKS);
    let (running, runnable) = running_and_runnable(&run, 2);
    assert!(
        running * 10 > (running + runnable) * 9,
        "the spinner beside an interrupts-off hog on another pCPU ran {running} ns and \
         waited {runnable} ns\n{}",
        run.report()
    );
    assert_all_ended(&run, &[(1, "poweroff"), (2, "poweroff")]);
}

/// A hard affinity that names none of the machine's pCPUs is refused by name (as
/// Xen refuses it with EINVAL); a soft one that names none is no preference, with
/// a warning; the other domains run.
#[test]
fn bad_affinity_is_refused_on_qemu_svm() {
    let run = boot(
        "domu_bad_affinity",
        Backend::QemuSvm,
        &[
            dom("nowhere", "mode=hello", "cpus = \"9\"\n"),
            dom("soft", "mode=hello", "cpus_soft = \"4-7\"\n"),
            dom("good", "mode=hello", "cpus = \"1-2,^1\"\n"),
        ],
    );
    run.assert_line(
        r"^\(KEEL\) d1 \(nowhere\): cannot build: cpus: vCPU 0 may run on no pCPU this machine has \(it has 0-3\)$",
    );
    run.assert_line(
        r"^\(KEEL\) Warning: d2 \(soft\): cpus_soft: vCPU 0 prefers no pCPU this machine has \(it has 0-3\): no preference$",
    );
    run.assert_line(r"^\(d2\) hello from ");
    run.assert_line(r"^\(d3\) hello from ");
    assert_all_ended(&run, &[(2, "poweroff"), (3, "poweroff")]);
}
