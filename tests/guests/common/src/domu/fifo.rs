//! `mode=fifo [ports=N] [offline-vcpu=V]`: FIFO event channels
//! ([`crate::fifo`]) from the switch to the end, with Xen's errnos for what a
//! guest gets wrong, on a domain whose `max_event_channels` is above `N + 16`.
//!
//! In order:
//!
//! 1. On 2-level: bind an IPI port and leave it pending under a 2-level mask;
//!    `set_priority` is `-ENOSYS` and `expand_array` `-EOPNOTSUPP` (no FIFO yet).
//! 2. `init_control` as Xen checks it: a vCPU that does not exist `-ENOENT`,
//!    an offset whose block crosses the page end or that is not 8-aligned
//!    `-EINVAL`, a gfn beyond RAM or in the local APIC's page `-EINVAL`; then
//!    vCPU 0's block (`link_bits` 17), and a second one for vCPU 0 `-EINVAL`.
//!    With `offline-vcpu=V`, vCPU V (which exists but was never brought up)
//!    gets its block: Xen accepts it, and Linux relies on that.
//! 3. The event array, page by page: the 2-level port pending at the switch is
//!    delivered once its page arrives (Xen's `setup_ports`).
//! 4. N IPI ports (default 10,050, so ports past 10,000), each sent once with
//!    upcalls off, then consumed: each exactly once, in the order sent (one
//!    queue, priority 7).
//! 5. Sixteen ports at priorities 15 down to 0, sent lowest priority first:
//!    consumed highest first. `set_priority` of 16 and of a port beyond the
//!    table is `-EINVAL`, of a free port `-EACCES` (Xen's `evtchn_usable`).
//! 6. A masked port's event waits for the unmask; a port closed while still
//!    queued is not handed out again until the guest has unlinked it (Xen's
//!    `evtchn_is_busy`).
//! 7. `VIRQ_TIMER` through the FIFO upcall.
//! 8. `expand_array` up to Xen's 128 pages (the rest with one scratch page,
//!    as a guest may), then `-ENOSPC`.
//! 9. The guest scribbles over its control block and its event words (links,
//!    LINKED and BUSY bits, heads) while it keeps sending events to itself;
//!    keel must stay up and answer (`EVTCHNOP_status` after it).

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::evtchn::{EVTCHNSTAT_IPI, VIRQ_TIMER};
use keel_hypercall::abi::start_info::XEN_HVM_MEMMAP_TYPE_RAM;

use super::{Env, name};
use crate::checks::Rc;
use crate::events::{self, Sleep};
use crate::fifo::{self, BUSY, LINKED, PENDING, QUEUES};
use crate::paging::Page;
use crate::{hypercall, shared, time};

/// Ports bound in step 4 unless `ports=` says otherwise.
const DEFAULT_PORTS: u32 = 10_050;
/// Where vCPU `offline-vcpu=`'s control block goes.
static OTHER_CONTROL: Page = Page::new();
/// The page step 8 hands over again and again.
static SCRATCH: Page = Page::new();
/// Xen's `EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`.
const MAX_ARRAY_PAGES: u32 = 128;

/// Runs the mode.
pub fn run(env: &Env<'_>) {
    let c = &env.c;
    let n = env.num("ports", DEFAULT_PORTS);

    // 1. Still 2-level.
    let Ok(early) = events::bind_ipi(0) else {
        c.fail("2-level port bound", format_args!("bind_ipi failed"));
        return;
    };
    c.ok("2-level port bound");
    let (w, b) = ((early / 64) as usize, early % 64);
    shared::mask(w).fetch_or(1 << b, core::sync::atomic::Ordering::SeqCst);
    c.rc("2-level send while masked", events::send(early), 0);
    c.check(
        "2-level port pending at the switch",
        shared::port_pending(early),
        format_args!("port {early} is not pending"),
    );
    c.errno(
        "set_priority before init_control",
        fifo::set_priority(early, 3),
        Errno::ENOSYS,
    );
    c.errno(
        "expand_array before init_control",
        fifo::expand_raw(fifo::array_gfn(0)),
        Errno::EOPNOTSUPP,
    );

    // 2. init_control.
    let beyond_ram = env
        .boot
        .memmap()
        .iter()
        .filter(|e| e.type_ == XEN_HVM_MEMMAP_TYPE_RAM)
        .map(|e| e.addr + e.size)
        .max()
        .unwrap_or(0)
        / 4096
        + 16;
    for (label, vcpu, gfn, offset, want) in [
        ("absent vCPU", 64, fifo::control_gfn(), 0, Errno::ENOENT),
        ("vCPU u32::MAX", u32::MAX, fifo::control_gfn(), 0, Errno::ENOENT),
        ("offset crossing the page", 0, fifo::control_gfn(), 4032, Errno::EINVAL),
        ("offset at the page end", 0, fifo::control_gfn(), 4096, Errno::EINVAL),
        ("unaligned offset", 0, fifo::control_gfn(), 4, Errno::EINVAL),
        ("gfn beyond RAM", 0, beyond_ram, 0, Errno::EINVAL),
        ("gfn of the local APIC", 0, 0xfee00, 0, Errno::EINVAL),
        ("gfn u64::MAX", 0, u64::MAX, 0, Errno::EINVAL),
    ] {
        let (rc, link_bits) = fifo::init_control_raw(vcpu, gfn, offset);
        if c.errno(name(format_args!("init_control {label}")).as_str(), rc, want) {
            c.check(
                name(format_args!("init_control {label} writes nothing back")).as_str(),
                link_bits == 0xaa,
                format_args!("link_bits {link_bits}"),
            );
        }
    }
    let (rc, link_bits) = fifo::init();
    if !c.rc("init_control vCPU 0", rc, 0) {
        return;
    }
    c.check(
        "link_bits",
        link_bits == 17,
        format_args!("init_control reported {link_bits}"),
    );
    c.errno(
        "init_control twice on vCPU 0",
        fifo::init_control_raw(0, (OTHER_CONTROL.addr() >> 12) as u64, 0).0,
        Errno::EINVAL,
    );
    if let Some(v) = env.word("offline-vcpu").and_then(crate::cmdline::number) {
        c.rc(
            "init_control for a vCPU not yet up",
            fifo::init_control_raw(v, (OTHER_CONTROL.addr() >> 12) as u64, 64).0,
            0,
        );
    }
    // Sent with no array page yet: kept pending until the page arrives.
    c.rc("send before any array page", events::send(early), 0);

    // 3. The event array; the port pending at the switch arrives.
    let pages = (n + 16).div_ceil(fifo::WORDS_PER_PAGE as u32) as usize + 1;
    let mut expanded = true;
    for _ in 0..pages.min(fifo::ARRAY_PAGES) {
        let rc = fifo::expand();
        if rc != 0 {
            c.fail("expand_array", format_args!("returned {}", Rc(rc)));
            expanded = false;
            break;
        }
    }
    if !expanded {
        return;
    }
    c.ok("expand_array");
    c.info(format_args!("the array covers {} ports", fifo::capacity()));
    fifo::collect();
    let got = fifo::take(early);
    c.check(
        "2-level pending port delivered after the switch",
        got == 1,
        format_args!("port {early} was consumed {got} times"),
    );

    // 4. Ten thousand ports, in order.
    many_ports(env, n);

    // 5. Priorities.
    priorities(env);

    // 6. Masking, and a busy port.
    mask_and_busy(env);

    // 7. A timer through the upcall.
    timer(env);

    // 8. The array's limit.
    array_limit(env);

    // 9. Scribbling.
    scribble(env, early);
}

/// Step 4: `n` IPI ports, sent once each, consumed once each in send order.
fn many_ports(env: &Env<'_>, n: u32) {
    let c = &env.c;
    let mut first = 0;
    let mut last = 0;
    for i in 0..n {
        match events::bind_ipi(0) {
            Ok(p) => {
                if i == 0 {
                    first = p;
                }
                if p != last + 1 && i > 0 {
                    c.fail(
                        "ports bound",
                        format_args!("port {p} after {last}: not the lowest free"),
                    );
                    return;
                }
                last = p;
            }
            Err(rc) => {
                c.fail(
                    "ports bound",
                    format_args!("bind_ipi #{i} returned {}", Rc(rc)),
                );
                return;
            }
        }
    }
    c.check(
        "ports bound",
        last >= 10_000 || n < 10_000,
        format_args!("the last port is {last}"),
    );
    c.info(format_args!("ports {first}..={last} bound"));
    for p in first..=last {
        if events::send(p) != 0 {
            c.fail("sends", format_args!("send {p} failed"));
            return;
        }
    }
    c.ok("sends");
    fifo::log_order(true);
    fifo::collect();
    fifo::log_order(false);
    let mut bad = 0;
    for p in first..=last {
        if fifo::take(p) != 1 {
            bad += 1;
        }
    }
    c.check(
        "every port consumed exactly once",
        bad == 0,
        format_args!("{bad} ports not consumed exactly once"),
    );
    // The console's port may be raised meanwhile (keel kicks it when it has
    // read the ring): only these ports' order counts.
    let ours = || fifo::logged().filter(|p| (first..=last).contains(p));
    let in_order = ours().zip(first..=last).all(|(a, b)| a == b);
    c.check(
        "consumed in the order sent",
        in_order && ours().count() == (last - first + 1) as usize,
        format_args!("the queue's order differs from the sends'"),
    );
    for p in first..=last {
        events::close(p);
    }
}

/// Step 5: one port per priority, highest consumed first.
fn priorities(env: &Env<'_>) {
    let c = &env.c;
    let mut ports = [0u32; QUEUES];
    for (i, slot) in ports.iter_mut().enumerate() {
        let Ok(p) = events::bind_ipi(0) else {
            c.fail("priorities", format_args!("bind_ipi failed"));
            return;
        };
        *slot = p;
        // ports[i] gets priority 15 - i.
        if fifo::set_priority(p, (QUEUES - 1 - i) as u32) != 0 {
            c.fail("set_priority", format_args!("port {p} refused"));
            return;
        }
    }
    c.ok("set_priority");
    c.errno(
        "set_priority 16",
        fifo::set_priority(ports[0], 16),
        Errno::EINVAL,
    );
    c.errno(
        "set_priority u32::MAX",
        fifo::set_priority(ports[0], u32::MAX),
        Errno::EINVAL,
    );
    c.errno(
        "set_priority of a free port",
        fifo::set_priority(ports[QUEUES - 1] + 1, 0),
        Errno::EACCES,
    );
    c.errno(
        "set_priority beyond the table",
        fifo::set_priority(1 << 17, 0),
        Errno::EINVAL,
    );
    // Lowest priority first, twice over, plus one default-priority port.
    for &p in ports.iter().chain(ports.iter()) {
        events::send(p);
    }
    fifo::log_order(true);
    fifo::collect();
    fifo::log_order(false);
    let mut want = ports;
    want.reverse();
    let order_ok = fifo::logged()
        .filter(|p| ports.contains(p))
        .eq(want.iter().copied());
    c.check(
        "highest priority consumed first",
        order_ok,
        format_args!("the queues were consumed out of priority order"),
    );
    // The second sends found the ports pending: no second event.
    let twice = ports.iter().filter(|&&p| fifo::take(p) != 1).count();
    c.check(
        "a pending port is queued once",
        twice == 0,
        format_args!("{twice} ports counted other than once"),
    );
    for p in ports {
        events::close(p);
    }
}

/// Step 6: masked ports wait for the unmask; a closed port still queued is busy.
fn mask_and_busy(env: &Env<'_>) {
    let c = &env.c;
    let Ok(p) = events::bind_ipi(0) else {
        c.fail("masked port", format_args!("bind_ipi failed"));
        return;
    };
    fifo::mask(p);
    events::send(p);
    fifo::collect();
    c.check(
        "masked port not delivered",
        fifo::take(p) == 0
            && fifo::word(p).is_some_and(|w| w.load(core::sync::atomic::Ordering::SeqCst) & (PENDING | LINKED) == PENDING),
        format_args!("a masked port was linked or consumed"),
    );
    c.rc("unmask", fifo::unmask(p), 0);
    fifo::collect();
    c.check(
        "unmasked port delivered",
        fifo::take(p) == 1,
        format_args!("the unmask did not queue the pending port"),
    );

    // Queued, then closed: LINKED stays until the guest unlinks it.
    events::send(p);
    c.rc("close a queued port", events::close(p), 0);
    match events::bind_ipi(0) {
        Ok(q) => {
            c.check(
                "a queued port is not reused",
                q != p,
                format_args!("port {p} was handed out again while still linked"),
            );
            events::close(q);
        }
        Err(rc) => c.fail("a queued port is not reused", format_args!("bind_ipi: {}", Rc(rc))),
    }
    fifo::collect();
    c.check(
        "a closed port is not delivered",
        fifo::take(p) == 0,
        format_args!("port {p} counted after its close"),
    );
    match events::bind_ipi(0) {
        Ok(q) => {
            c.check(
                "an unlinked port is reused",
                q == p,
                format_args!("got {q}, not the lowest free {p}"),
            );
            events::close(q);
        }
        Err(rc) => c.fail("an unlinked port is reused", format_args!("bind_ipi: {}", Rc(rc))),
    }
}

/// Step 7: a single-shot timer on `VIRQ_TIMER`, through the upcall.
fn timer(env: &Env<'_>) {
    let c = &env.c;
    if !super::register_upcall(env) {
        return;
    }
    let Ok(port) = events::bind_virq(VIRQ_TIMER, 0) else {
        c.fail("timer through FIFO", format_args!("bind VIRQ_TIMER failed"));
        return;
    };
    let before = events::upcalls();
    let deadline = time::now() + 10 * time::MS;
    hypercall::set_timer_op(deadline);
    let got = events::wait_for(env.xen, port, time::now() + 2 * time::S, Sleep::Block);
    c.check(
        "timer through FIFO",
        got == 1 && events::upcalls() > before && time::now() >= deadline,
        format_args!("{got} events, {} upcalls", events::upcalls() - before),
    );
    events::close(port);
}

/// Step 8: `expand_array` to 128 pages, then `-ENOSPC`.
fn array_limit(env: &Env<'_>) {
    let c = &env.c;
    let scratch = (SCRATCH.addr() >> 12) as u64;
    c.errno(
        "expand_array with a gfn beyond RAM",
        fifo::expand_raw(u64::MAX >> 12),
        Errno::EINVAL,
    );
    let mut pages = fifo::capacity() / fifo::WORDS_PER_PAGE as u32;
    while pages < MAX_ARRAY_PAGES {
        let rc = fifo::expand_raw(scratch);
        if rc != 0 {
            c.fail(
                "expand_array to 128 pages",
                format_args!("page {pages} refused: {}", Rc(rc)),
            );
            return;
        }
        pages += 1;
    }
    c.ok("expand_array to 128 pages");
    c.errno(
        "expand_array beyond 128 pages",
        fifo::expand_raw(scratch),
        Errno::ENOSPC,
    );
}

/// Step 9: garbage in the control block and event words while events flow.
fn scribble(env: &Env<'_>, early: u32) {
    use core::sync::atomic::Ordering::SeqCst;
    let c = &env.c;
    let mut ports = [0u32; 32];
    for slot in &mut ports {
        *slot = events::bind_ipi(0).unwrap_or(0);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..4000u32 {
        let r = next();
        let p = ports[(r % 32) as usize];
        if let Some(w) = fifo::word(p) {
            let v = match round % 4 {
                0 => (r >> 8) as u32,
                1 => LINKED | BUSY | ((r >> 8) as u32 & fifo::LINK_MASK),
                2 => LINKED | p,
                _ => PENDING | LINKED | ports[((r >> 40) % 32) as usize],
            };
            w.store(v, SeqCst);
        }
        fifo::head((r >> 20) as usize % QUEUES).store((r >> 32) as u32, SeqCst);
        if round % 7 == 0 {
            fifo::ready().store((r >> 16) as u32, SeqCst);
        }
        events::send(p);
        if round % 16 == 0 {
            events::unmask(p);
            fifo::set_priority(p, (r % 16) as u32);
        }
    }
    c.ok("scribbled while sending");
    c.check(
        "keel answers after the scribbling",
        events::status(keel_hypercall::abi::domid::DOMID_SELF, ports[0])
            .is_ok_and(|s| s.status == EVTCHNSTAT_IPI)
            && events::status(keel_hypercall::abi::domid::DOMID_SELF, early).is_ok(),
        format_args!("EVTCHNOP_status failed"),
    );
    for p in ports {
        events::close(p);
    }
}
