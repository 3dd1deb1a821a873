//! `mode=hostile-evtchn peer=<domid> [max-evtchn=N]`: event-channel calls a
//! well-behaved guest never makes, each answered with exactly the errno Xen gives
//! (`xen/common/event_channel.c`), against a `granter` peer (see
//! [`super::hostile_grant::granter`]) that has allocated some unbound ports for
//! itself ("decoys") and then one for this domain.
//!
//! The rules the expectations follow, from Xen:
//!
//! - A port is *valid* while it lies in an allocated bucket (`port_is_valid`);
//!   port 0 always is (reserved at domain creation, `ECS_RESERVED`), a port beyond
//!   the domain's allocated buckets or beyond the 2-level ABI's 4096 never is.
//!   `send`, `close`, `bind_vcpu`, `unmask` and `status` of an invalid port are
//!   `-EINVAL`.
//! - `send` of a valid port that is free or reserved is `-EINVAL`; of an unbound
//!   one 0 (dropped silently). `close` of a free or reserved port is `-EINVAL`.
//!   `unmask` of *any* valid port is 0, port 0 included. `bind_vcpu` of a free,
//!   reserved or per-vCPU-VIRQ port is `-EINVAL`; of an interdomain one 0; of a
//!   vCPU that does not exist `-ENOENT` (checked first). `status` of a free port
//!   is 0 with `EVTCHNSTAT_closed`.
//! - `bind_interdomain` to a domain that does not exist is `-ESRCH`; to a port of
//!   the peer that is not unbound *for this domain* (a decoy, or the port just
//!   bound) `-EINVAL`. Port numbers are per domain: a number only the peer has
//!   allocated names nothing here.
//! - `bind_virq` of a VIRQ already bound on that vCPU is `-EEXIST`; of a number
//!   at or above `NR_VIRQS` `-EINVAL`; of a per-vCPU VIRQ on a vCPU that does not
//!   exist `-ENOENT`.
//! - `alloc_unbound` fails with `-ENOSPC` once the ports up to the domain's
//!   `max_evtchn_port` (xl's `max_event_channels`, default 1023) are in use; with
//!   `max-evtchn=N` on the command line the guest checks that exactly N ports
//!   (1..=N) were usable. Closing them makes allocation work again.
//!
//! At the end the guest sends one event to the peer ("done") and closes
//! everything it opened (never the console's port).

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DOMID_SELF};
use keel_hypercall::abi::evtchn::{EVTCHNSTAT_CLOSED, EVTCHNSTAT_UNBOUND, NR_VIRQS, VIRQ_TIMER};

use super::{Env, connect, name};
use crate::checks::Rc;
use crate::{console, events};

/// A domain id no domain has (the last ordinary id).
pub const MISSING_DOMID: u16 = DOMID_FIRST_RESERVED - 1;

/// A port never allocated here: beyond the first buckets, below the 2-level
/// limit and below xl's default `max_event_channels`.
pub const UNALLOCATED_PORT: u32 = 1000;

/// A port beyond the 2-level ABI.
pub const BEYOND_PORT: u32 = 4096;

/// Ports allocated in the `-ENOSPC` loop at most (the 2-level space).
const MAX_LOOP: u32 = 4096;

/// Runs the mode.
pub fn run(env: &Env<'_>) {
    let c = &env.c;
    let Some(peer) = env.domid("peer") else {
        return;
    };
    if let Some(port) = console::ring_port() {
        c.info(format_args!("the console uses port {port}"));
    }

    // Port 0, a port never allocated, a port beyond the ABI.
    for (label, port) in [
        ("port 0", 0),
        ("unallocated port", UNALLOCATED_PORT),
        ("port 4096", BEYOND_PORT),
    ] {
        c.errno(
            name(format_args!("send {label}")).as_str(),
            events::send(port),
            Errno::EINVAL,
        );
        c.errno(
            name(format_args!("close {label}")).as_str(),
            events::close(port),
            Errno::EINVAL,
        );
        c.errno(
            name(format_args!("bind_vcpu {label}")).as_str(),
            events::bind_vcpu(port, 0),
            Errno::EINVAL,
        );
        let want = if port == 0 { 0 } else { Errno::EINVAL.neg() };
        c.rc(
            name(format_args!("unmask {label}")).as_str(),
            events::unmask(port),
            want,
        );
    }
    match events::status(DOMID_SELF, BEYOND_PORT) {
        Ok(s) => c.fail(
            "status port 4096",
            format_args!("returned 0 with status {}, expected -EINVAL", s.status),
        ),
        Err(rc) => {
            c.errno("status port 4096", rc, Errno::EINVAL);
        }
    };

    // A port's life: unbound, closed, closed again.
    match events::alloc_unbound(DOMID_SELF) {
        Ok(p) => {
            c.ok("alloc_unbound for self");
            c.errno(
                "bind_vcpu to missing vcpu",
                events::bind_vcpu(p, 1),
                Errno::ENOENT,
            );
            c.rc("send on unbound port", events::send(p), 0);
            c.rc("close unbound port", events::close(p), 0);
            match events::status(DOMID_SELF, p) {
                Ok(s) => {
                    c.check(
                        "status of closed port",
                        s.status == EVTCHNSTAT_CLOSED,
                        format_args!(
                            "port {p}: status {}, expected {EVTCHNSTAT_CLOSED} (closed)",
                            s.status
                        ),
                    );
                }
                Err(rc) => c.fail("status of closed port", format_args!("returned {}", Rc(rc))),
            };
            c.errno("close closed port", events::close(p), Errno::EINVAL);
            c.errno("send on closed port", events::send(p), Errno::EINVAL);
        }
        Err(rc) => c.fail(
            "alloc_unbound for self",
            format_args!("returned {}", Rc(rc)),
        ),
    }

    // The peer.
    match events::bind_interdomain(MISSING_DOMID, 1) {
        Ok(p) => c.fail(
            "bind_interdomain to missing domain",
            format_args!("d{MISSING_DOMID} port 1 bound as local port {p}"),
        ),
        Err(rc) => {
            c.errno("bind_interdomain to missing domain", rc, Errno::ESRCH);
        }
    }
    let Some((local, remote)) = connect(env, peer) else {
        return;
    };
    match events::bind_interdomain(peer, remote) {
        Ok(p) => c.fail(
            "bind_interdomain twice",
            format_args!("d{peer} port {remote} bound again as local port {p}"),
        ),
        Err(rc) => {
            c.errno("bind_interdomain twice", rc, Errno::EINVAL);
        }
    }
    // The granter allocates its decoys (unbound for itself) just before the port
    // for this domain, and ports are handed out lowest first: remote - 1 is one.
    if remote >= 2 {
        let decoy = remote - 1;
        match events::bind_interdomain(peer, decoy) {
            Ok(p) => c.fail(
                "bind_interdomain to port unbound for another domain",
                format_args!("d{peer} port {decoy} bound as local port {p}"),
            ),
            Err(rc) => {
                c.errno(
                    "bind_interdomain to port unbound for another domain",
                    rc,
                    Errno::EINVAL,
                );
            }
        }
        send_on_foreign_number(env, decoy);
    } else {
        c.fail(
            "bind_interdomain to port unbound for another domain",
            format_args!("the peer's port for us is {remote}: it allocated no decoys first"),
        );
    }
    c.rc("bind_vcpu interdomain port", events::bind_vcpu(local, 0), 0);
    c.rc("unmask interdomain port", events::unmask(local), 0);

    // VIRQs.
    let virq = match events::bind_virq(VIRQ_TIMER, 0) {
        Ok(p) => {
            c.ok("bind_virq VIRQ_TIMER");
            Some(p)
        }
        Err(rc) => {
            c.fail("bind_virq VIRQ_TIMER", format_args!("returned {}", Rc(rc)));
            None
        }
    };
    match events::bind_virq(VIRQ_TIMER, 0) {
        Ok(p) => c.fail("bind_virq twice", format_args!("bound again as port {p}")),
        Err(rc) => {
            c.errno("bind_virq twice", rc, Errno::EEXIST);
        }
    }
    match events::bind_virq(NR_VIRQS, 0) {
        Ok(p) => c.fail("bind_virq out of range", format_args!("bound as port {p}")),
        Err(rc) => {
            c.errno("bind_virq out of range", rc, Errno::EINVAL);
        }
    }
    match events::bind_virq(VIRQ_TIMER, 1) {
        Ok(p) => c.fail(
            "bind_virq on missing vcpu",
            format_args!("bound as port {p}"),
        ),
        Err(rc) => {
            c.errno("bind_virq on missing vcpu", rc, Errno::ENOENT);
        }
    }
    if let Some(p) = virq {
        c.errno(
            "bind_vcpu VIRQ_TIMER port",
            events::bind_vcpu(p, 0),
            Errno::EINVAL,
        );
    }

    exhaust(env);

    if let Some(p) = virq {
        c.rc("close VIRQ_TIMER port", events::close(p), 0);
    }
    c.rc("send done to peer", events::send(local), 0);
    c.rc("close interdomain port", events::close(local), 0);
}

/// `send` on `decoy`, a number the peer has allocated: here it names nothing
/// (`-EINVAL`), provided this domain has not allocated it itself.
fn send_on_foreign_number(env: &Env<'_>, decoy: u32) {
    let c = &env.c;
    match events::status(DOMID_SELF, decoy) {
        Ok(s) if s.status == EVTCHNSTAT_CLOSED => {
            c.errno(
                "send on port only the peer allocated",
                events::send(decoy),
                Errno::EINVAL,
            );
        }
        // Xen's answer for a port beyond this domain's buckets; still nothing.
        Err(rc) if rc == Errno::EINVAL.neg() => {
            c.errno(
                "send on port only the peer allocated",
                events::send(decoy),
                Errno::EINVAL,
            );
        }
        Ok(s) => c.fail(
            "send on port only the peer allocated",
            format_args!("port {decoy} is in use here too (status {})", s.status),
        ),
        Err(rc) => c.fail(
            "send on port only the peer allocated",
            format_args!("status of port {decoy} returned {}", Rc(rc)),
        ),
    }
}

/// Allocates unbound ports until `-ENOSPC`, counts the ports in use, closes what
/// it allocated, and allocates once more.
fn exhaust(env: &Env<'_>) {
    let c = &env.c;
    let mut ports = [0u16; MAX_LOOP as usize];
    let mut n = 0usize;
    let mut last = 0i64;
    while n < ports.len() {
        match events::alloc_unbound(DOMID_SELF) {
            Ok(p) => {
                ports[n] = p as u16;
                n += 1;
            }
            Err(rc) => {
                last = rc;
                break;
            }
        }
    }
    c.info(format_args!(
        "alloc_unbound succeeded {n} times, then returned {}",
        Rc(last)
    ));
    c.check(
        "alloc_unbound until ENOSPC",
        n >= 1 && last == Errno::ENOSPC.neg(),
        format_args!("{n} ports allocated; last result {}", Rc(last)),
    );

    // Every port in use now, by status (stop at the first invalid port).
    let top = ports[..n].iter().copied().max().map_or(0, u32::from);
    let mut in_use = 0u32;
    for p in 1..=top {
        match events::status(DOMID_SELF, p) {
            Ok(s) if s.status != EVTCHNSTAT_CLOSED => in_use += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    c.info(format_args!("{in_use} ports in use (1..={top})"));
    if let Some(max) = env.word("max-evtchn").and_then(crate::cmdline::number) {
        c.check(
            "port limit",
            in_use == max && top == max,
            format_args!("max-evtchn={max}: {in_use} ports in use, highest {top}"),
        );
    }
    if n > 0 {
        let p = u32::from(ports[0]);
        match events::status(DOMID_SELF, p) {
            Ok(s) => {
                c.check(
                    "status of unbound port",
                    s.status == EVTCHNSTAT_UNBOUND && s.dom_member() == self_id_or(s.dom_member()),
                    format_args!("port {p}: status {}, remote d{}", s.status, s.dom_member()),
                );
            }
            Err(rc) => c.fail(
                "status of unbound port",
                format_args!("returned {}", Rc(rc)),
            ),
        };
    }

    let mut failed = 0u32;
    let mut first_bad: Option<(u32, i64)> = None;
    for &p in &ports[..n] {
        let rc = events::close(u32::from(p));
        if rc != 0 {
            failed += 1;
            first_bad.get_or_insert((u32::from(p), rc));
        }
    }
    match first_bad {
        None => c.ok("close all allocated ports"),
        Some((p, rc)) => c.fail(
            "close all allocated ports",
            format_args!("{failed} of {n} failed, first port {p}: {}", Rc(rc)),
        ),
    }
    match events::alloc_unbound(DOMID_SELF) {
        Ok(p) => {
            c.ok("alloc_unbound after closing");
            c.rc("close it again", events::close(p), 0);
        }
        Err(rc) => c.fail(
            "alloc_unbound after closing",
            format_args!("returned {}", Rc(rc)),
        ),
    }
}

/// This domain's id if advertised, else `fallback` (so the check does not
/// depend on the CPUID leaf).
fn self_id_or(fallback: u16) -> u16 {
    super::self_domid().unwrap_or(fallback)
}
