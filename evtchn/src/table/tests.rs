//! Unit tests of the per-domain API: each operation's results and Xen error
//! codes, the two-table forms on stale requests, and the emptying loop.
//! (The hub's tests cover the same rules through the one-map API; the
//! property test in `protocol_tests` drives these pieces as a kernel with a
//! lock per domain would.)

use keel_hypercall::abi::Errno::*;
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DOMID_SELF, DOMID_XEN, DomId};
use keel_hypercall::abi::evtchn::{
    EVTCHN_2L_NR_CHANNELS, NR_VIRQS, VIRQ_ARGO, VIRQ_CONSOLE, VIRQ_DEBUG, VIRQ_DOM_EXC, VIRQ_TIMER,
};

use super::*;
use crate::virq::HARDWARE_DOMAIN;

/// A table for `dom` with 64 ports and 2 vCPUs.
fn table(dom: DomId) -> Table {
    Table::new(dom, 64, 2).unwrap()
}

fn state(t: &Table, port: Port) -> State {
    t.status(t.dom(), false, port).unwrap().state
}

fn vcpu_of(t: &Table, port: Port) -> u32 {
    t.status(t.dom(), false, port).unwrap().vcpu
}

fn interdomain(remote_dom: DomId, remote_port: Port) -> State {
    State::Interdomain {
        remote_dom,
        remote_port,
    }
}

/// Connects a fresh unbound port of `a` with a fresh port of `b`.
fn connect(a: &mut Table, b: &mut Table) -> (Port, Port) {
    let pa = a.alloc_unbound(a.dom(), false, b.dom()).unwrap();
    let (pb, _) = bind_interdomain(b, a, pa).unwrap();
    (pa, pb)
}

#[test]
fn new_checks() {
    assert_eq!(Table::new(DOMID_FIRST_RESERVED, 64, 1).err(), Some(EINVAL));
    assert_eq!(Table::new(DOMID_SELF, 64, 1).err(), Some(EINVAL));
    assert_eq!(Table::new(7, 64, 0).err(), Some(EINVAL));
    let x = Table::new(DOMID_XEN, 64, 1).unwrap();
    assert_eq!(x.dom(), DOMID_XEN);
    let t = Table::new(3, u32::MAX, 4).unwrap();
    assert_eq!(
        (t.dom(), t.nr_vcpus(), t.valid_ports()),
        (3, 4, PORTS_PER_BUCKET)
    );
    assert_eq!(t.ports_in_use(), 0);
    assert!(!t.is_dying());
    assert!(t.is_valid(0) && t.is_valid(63) && !t.is_valid(64));
}

#[test]
fn alloc_unbound_records_remote_and_checks_permission_after_allocating() {
    let mut t = table(2);
    // The remote domain is recorded, not checked: that is the caller's.
    let p = t.alloc_unbound(2, false, 42).unwrap();
    assert_eq!(p, 1, "port 0 is reserved");
    assert_eq!(state(&t, p), State::Unbound { remote: 42 });
    assert_eq!(t.alloc_unbound(1, false, 1), Err(EPERM));
    let q = t.alloc_unbound(0, true, 1).unwrap();
    assert_eq!(
        t.status(0, true, q),
        Ok(Status {
            state: State::Unbound { remote: 1 },
            vcpu: 0
        })
    );
    // Xen allocates before its permission check: a full table says ENOSPC.
    let mut full = Table::new(2, 2, 1).unwrap();
    full.alloc_unbound(2, false, 1).unwrap();
    assert_eq!(full.alloc_unbound(1, false, 1), Err(ENOSPC));
    assert_eq!(full.alloc_unbound(2, false, 1), Err(ENOSPC));
}

#[test]
fn allocation_grows_by_buckets_up_to_the_limit() {
    let mut t = Table::new(1, u32::MAX, 1).unwrap();
    for want in 1..EVTCHN_2L_NR_CHANNELS {
        assert_eq!(t.bind_ipi(0), Ok(want));
        assert_eq!(t.valid_ports() % PORTS_PER_BUCKET, 0);
    }
    assert_eq!(t.bind_ipi(0), Err(ENOSPC));
    assert_eq!(t.valid_ports(), EVTCHN_2L_NR_CHANNELS);
    assert_eq!(t.ports_in_use(), EVTCHN_2L_NR_CHANNELS - 1);
    let mut small = Table::new(1, 5, 1).unwrap();
    for want in 1..5 {
        assert_eq!(small.bind_ipi(0), Ok(want));
    }
    assert_eq!(small.bind_ipi(0), Err(ENOSPC));
    assert_eq!(small.close(2), Ok(Reach::Local(())));
    assert_eq!(small.bind_ipi(0), Ok(2), "the lowest free port");
}

#[test]
fn bind_virq_errors_in_xen_order() {
    let h = GlobalVirqHandlers::new();
    let mut t = table(1);
    let mut dom0 = table(HARDWARE_DOMAIN);
    assert_eq!(t.bind_virq(NR_VIRQS, 0, &h), Err(EINVAL));
    assert_eq!(t.bind_virq(u32::MAX, 0, &h), Err(EINVAL));
    assert_eq!(t.bind_virq(VIRQ_ARGO, 1, &h), Err(EINVAL), "vCPU 0 only");
    assert_eq!(
        t.bind_virq(VIRQ_CONSOLE, 5, &h),
        Err(EINVAL),
        "EINVAL before ENOENT"
    );
    assert_eq!(t.bind_virq(VIRQ_DEBUG, 2, &h), Err(ENOENT));
    assert_eq!(t.bind_virq(VIRQ_CONSOLE, 0, &h), Err(EBUSY), "not handler");
    let t1 = t.bind_virq(VIRQ_TIMER, 1, &h).unwrap();
    assert_eq!(t.bind_virq(VIRQ_TIMER, 1, &h), Err(EEXIST));
    let t0 = t.bind_virq(VIRQ_TIMER, 0, &h).unwrap();
    assert_ne!(t0, t1);
    assert_eq!(
        t.status(1, false, t1),
        Ok(Status {
            state: State::Virq { virq: VIRQ_TIMER },
            vcpu: 1
        })
    );
    let con = dom0.bind_virq(VIRQ_CONSOLE, 0, &h).unwrap();
    assert_eq!(dom0.bind_virq(VIRQ_CONSOLE, 0, &h), Err(EEXIST));
    assert_eq!(
        dom0.virq(1, VIRQ_CONSOLE),
        Some(Notify {
            dom: 0,
            port: con,
            vcpu: 0
        }),
        "the vCPU asked is ignored for a global VIRQ"
    );
    // A full table: EEXIST comes before ENOSPC, ENOSPC last.
    let mut full = Table::new(1, 2, 1).unwrap();
    full.bind_virq(VIRQ_TIMER, 0, &h).unwrap();
    assert_eq!(full.bind_virq(VIRQ_TIMER, 0, &h), Err(EEXIST));
    assert_eq!(full.bind_virq(VIRQ_DEBUG, 0, &h), Err(ENOSPC));
}

#[test]
fn virq_lookup_follows_the_binding() {
    let h = GlobalVirqHandlers::new();
    let mut t = table(1);
    let t1 = t.bind_virq(VIRQ_TIMER, 1, &h).unwrap();
    let argo = t.bind_virq(VIRQ_ARGO, 0, &h).unwrap();
    assert_eq!(
        t.virq(1, VIRQ_TIMER),
        Some(Notify {
            dom: 1,
            port: t1,
            vcpu: 1
        })
    );
    assert_eq!(t.virq(0, VIRQ_TIMER), None);
    assert_eq!(t.virq(7, VIRQ_TIMER), None, "no such vCPU");
    assert_eq!(t.virq(0, NR_VIRQS), None);
    t.bind_vcpu(argo, 1).unwrap();
    let moved = Some(Notify {
        dom: 1,
        port: argo,
        vcpu: 1,
    });
    assert_eq!(t.virq(0, VIRQ_ARGO), moved);
    assert_eq!(t.virq(1, VIRQ_ARGO), moved);
    // Closing a moved domain VIRQ still unbinds it.
    assert_eq!(t.close(argo), Ok(Reach::Local(())));
    assert_eq!(t.virq(0, VIRQ_ARGO), None);
    assert_eq!(t.close(t1), Ok(Reach::Local(())));
    assert_eq!(t.virq(1, VIRQ_TIMER), None);
    assert_eq!(t.bind_virq(VIRQ_TIMER, 1, &h), Ok(t1), "bindable again");
}

#[test]
fn bind_ipi_and_bind_vcpu_errors() {
    let h = GlobalVirqHandlers::new();
    let mut t = table(1);
    assert_eq!(t.bind_ipi(2), Err(ENOENT));
    assert_eq!(t.bind_ipi(u32::MAX), Err(ENOENT));
    let ipi = t.bind_ipi(1).unwrap();
    let unbound = t.alloc_unbound(1, false, 2).unwrap();
    let timer = t.bind_virq(VIRQ_TIMER, 0, &h).unwrap();
    assert_eq!(
        t.bind_vcpu(u32::MAX, 2),
        Err(ENOENT),
        "vCPU checked before the port"
    );
    assert_eq!(t.bind_vcpu(u32::MAX, 1), Err(EINVAL));
    assert_eq!(t.bind_vcpu(0, 1), Err(EINVAL), "port 0");
    assert_eq!(t.bind_vcpu(40, 1), Err(EINVAL), "free");
    assert_eq!(t.bind_vcpu(ipi, 0), Err(EINVAL), "IPIs keep their vCPU");
    assert_eq!(t.bind_vcpu(timer, 1), Err(EINVAL), "per-vCPU VIRQs too");
    assert_eq!(t.bind_vcpu(unbound, 1), Ok(()));
    assert_eq!(vcpu_of(&t, unbound), 1);
    assert_eq!(t.notify_vcpu(unbound), Some(1));
    assert_eq!(
        t.notify_vcpu(40),
        Some(0),
        "free ports are valid for unmask"
    );
    assert_eq!(t.notify_vcpu(64), None);
}

#[test]
fn status_errors_in_xen_order() {
    let mut t = table(2);
    let i = t.bind_ipi(1).unwrap();
    assert_eq!(t.status(1, false, 64), Err(EINVAL), "EINVAL before EPERM");
    assert_eq!(t.status(1, false, i), Err(EPERM));
    assert_eq!(
        t.status(0, true, i),
        Ok(Status {
            state: State::Ipi,
            vcpu: 1
        })
    );
    assert_eq!(t.status(2, false, 0).map(|s| s.state), Ok(State::Free));
}

#[test]
fn send_and_close_within_one_table() {
    let h = GlobalVirqHandlers::new();
    let mut t = table(1);
    let unbound = t.alloc_unbound(1, false, 2).unwrap();
    let ipi = t.bind_ipi(1).unwrap();
    let virq = t.bind_virq(VIRQ_TIMER, 0, &h).unwrap();
    assert_eq!(t.send(unbound), Ok(Reach::Local(None)), "dropped silently");
    assert_eq!(
        t.send(ipi),
        Ok(Reach::Local(Some(Notify {
            dom: 1,
            port: ipi,
            vcpu: 1
        })))
    );
    assert_eq!(t.send(virq), Err(EINVAL));
    for bad in [0, 40, 64, u32::MAX] {
        assert_eq!(t.send(bad), Err(EINVAL), "port {bad}");
        assert_eq!(t.close(bad), Err(EINVAL), "port {bad}");
    }
    for p in [unbound, ipi, virq] {
        assert_eq!(t.close(p), Ok(Reach::Local(())));
        assert_eq!(t.close(p), Err(EINVAL), "double close");
        assert_eq!(state(&t, p), State::Free);
    }
    assert_eq!(t.ports_in_use(), 0);
}

#[test]
fn loopback_is_one_table() {
    let mut t = table(1);
    let p = t.alloc_unbound(1, false, 1).unwrap();
    t.bind_vcpu(p, 1).unwrap();
    let (q, n) = t.bind_loopback(p).unwrap();
    assert_eq!(
        n,
        Notify {
            dom: 1,
            port: q,
            vcpu: 0
        }
    );
    assert_eq!(state(&t, p), interdomain(1, q));
    assert_eq!(state(&t, q), interdomain(1, p));
    assert_eq!(
        t.send(q),
        Ok(Reach::Local(Some(Notify {
            dom: 1,
            port: p,
            vcpu: 1
        })))
    );
    assert_eq!(t.bind_loopback(p), Err(EINVAL), "not unbound any more");
    assert_eq!(t.close(p), Ok(Reach::Local(())));
    assert_eq!(
        t.status(1, false, q).unwrap().state,
        State::Unbound { remote: 1 }
    );
    assert_eq!(t.close_local(), None);
    assert_eq!(t.ports_in_use(), 0);
    // Errors: unbound for another domain, free, invalid.
    let other = t.alloc_unbound(1, false, 2).unwrap();
    assert_eq!(t.bind_loopback(other), Err(EINVAL));
    assert_eq!(t.bind_loopback(50), Err(EINVAL));
    assert_eq!(t.bind_loopback(u32::MAX), Err(EINVAL));
    assert_eq!(t.ports_in_use(), 1, "failures allocate nothing");
}

#[test]
fn bind_interdomain_connects_two_tables() {
    let mut a = table(1);
    let mut b = table(2);
    let pa = a.alloc_unbound(1, false, 2).unwrap();
    a.bind_vcpu(pa, 1).unwrap();
    let (pb, n) = bind_interdomain(&mut b, &mut a, pa).unwrap();
    assert_eq!(
        n,
        Notify {
            dom: 2,
            port: pb,
            vcpu: 0
        },
        "the new local port is raised"
    );
    assert_eq!(state(&a, pa), interdomain(2, pb));
    assert_eq!(state(&b, pb), interdomain(1, pa));
    assert_eq!(vcpu_of(&a, pa), 1, "the unbound end keeps its vCPU");
    // One table alone sees only that the other end is elsewhere.
    assert_eq!(a.send(pa), Ok(Reach::Remote(2)));
    assert_eq!(a.close(pa), Ok(Reach::Remote(2)));
    assert_eq!(state(&a, pa), interdomain(2, pb), "Remote changes nothing");
    assert_eq!(
        send_interdomain(&b, pb, &a),
        Ok(Some(Notify {
            dom: 1,
            port: pa,
            vcpu: 1
        }))
    );
    assert_eq!(
        send_interdomain(&a, pa, &b),
        Ok(Some(Notify {
            dom: 2,
            port: pb,
            vcpu: 0
        }))
    );
    assert_eq!(
        bind_interdomain(&mut b, &mut a, pa),
        Err(EINVAL),
        "already connected"
    );
}

#[test]
fn bind_interdomain_errors_in_xen_order() {
    let mut a = table(1);
    let mut b = table(2);
    let mut c = table(3);
    let for_b = a.alloc_unbound(1, false, 2).unwrap();
    assert_eq!(
        bind_interdomain(&mut c, &mut a, for_b),
        Err(EINVAL),
        "unbound for someone else"
    );
    let ipi = a.bind_ipi(0).unwrap();
    for bad in [0, for_b + 10, 64, u32::MAX, ipi] {
        assert_eq!(bind_interdomain(&mut b, &mut a, bad), Err(EINVAL), "{bad}");
    }
    assert_eq!(b.ports_in_use(), 0, "failures allocate nothing");
    // Two tables of one domain: loopback has its own form.
    let mut a2 = table(1);
    assert_eq!(bind_interdomain(&mut a2, &mut a, for_b), Err(EINVAL));
    // A full caller: ENOSPC before the remote port's check.
    let mut full = Table::new(2, 2, 1).unwrap();
    full.bind_ipi(0).unwrap();
    assert_eq!(bind_interdomain(&mut full, &mut a, 50), Err(ENOSPC));
    // A failed bind still grows the caller's table, as Xen's does.
    let mut grow = Table::new(2, 200, 1).unwrap();
    for _ in 1..64 {
        grow.bind_ipi(0).unwrap();
    }
    assert_eq!(bind_interdomain(&mut grow, &mut a, 50), Err(EINVAL));
    assert!(grow.is_valid(127));
}

#[test]
fn close_interdomain_leaves_the_peer_unbound() {
    let mut a = table(1);
    let mut b = table(2);
    let (pa, pb) = connect(&mut a, &mut b);
    b.bind_vcpu(pb, 1).unwrap();
    assert_eq!(close_interdomain(&mut a, pa, &mut b), Ok(()));
    assert_eq!(state(&a, pa), State::Free);
    assert_eq!(
        b.status(2, false, pb),
        Ok(Status {
            state: State::Unbound { remote: 1 },
            vcpu: 1
        }),
        "the peer awaits a new connection from us, on its vCPU"
    );
    assert_eq!(b.send(pb), Ok(Reach::Local(None)));
    assert_eq!(close_interdomain(&mut a, pa, &mut b), Err(EINVAL), "free");
    // Reconnecting reuses the lowest free port, on vCPU 0.
    let (qa, _) = bind_interdomain(&mut a, &mut b, pb).unwrap();
    assert_eq!(qa, pa);
    assert_eq!(vcpu_of(&a, qa), 0);
}

#[test]
fn stale_requests_are_read_again() {
    // The kernel saw "a's port p connects to domain 2" under a's lock alone,
    // then took both locks; in between, anything may have happened.
    let mut a = table(1);
    let mut b = table(2);
    let mut c = table(3);

    // The peer closed its end: p is unbound now. Send drops, close closes.
    let (p, q) = connect(&mut a, &mut b);
    assert_eq!(a.send(p), Ok(Reach::Remote(2)));
    close_interdomain(&mut b, q, &mut a).unwrap();
    assert_eq!(send_interdomain(&a, p, &b), Ok(None));
    assert_eq!(close_interdomain(&mut a, p, &mut b), Ok(()));
    assert_eq!(state(&a, p), State::Free);
    assert_eq!(state(&b, q), State::Free, "b's end was closed by b");

    // p was closed and rebound to a third domain: EINVAL (it was free in
    // between), and nothing changes.
    let (p, q) = connect(&mut a, &mut b);
    assert_eq!(a.close(p), Ok(Reach::Remote(2)));
    close_interdomain(&mut a, p, &mut b).unwrap();
    let (p3, r) = connect(&mut a, &mut c);
    assert_eq!(p3, p, "the same port number, now to domain 3");
    assert_eq!(send_interdomain(&a, p, &b), Err(EINVAL));
    assert_eq!(close_interdomain(&mut a, p, &mut b), Err(EINVAL));
    assert_eq!(state(&a, p), interdomain(3, r));
    assert_eq!(state(&c, r), interdomain(1, p));
    assert_eq!(state(&b, q), State::Unbound { remote: 1 });

    // p was closed and rebound within a (an IPI): acted on as it is now.
    close_interdomain(&mut a, p, &mut c).unwrap();
    let ipi = a.bind_ipi(1).unwrap();
    assert_eq!(ipi, p);
    assert_eq!(
        send_interdomain(&a, p, &b),
        Ok(Some(Notify {
            dom: 1,
            port: p,
            vcpu: 1
        }))
    );
    assert_eq!(close_interdomain(&mut a, p, &mut b), Ok(()));
    assert_eq!(state(&a, p), State::Free);

    // Domain 2 died and a new domain 2 got its id (which the kernel must
    // not allow while a reference is held): its table does not point back,
    // so nothing is delivered to it and nothing of it is changed.
    let (p, _q) = connect(&mut a, &mut b);
    let mut b_new = table(2);
    let x = b_new.alloc_unbound(2, false, 1).unwrap();
    let (_, _) = bind_interdomain(&mut a, &mut b_new, x).unwrap();
    assert_eq!(send_interdomain(&a, p, &b_new), Err(EINVAL));
    assert_eq!(close_interdomain(&mut a, p, &mut b_new), Ok(()));
    assert_eq!(state(&a, p), State::Free, "our end closes");
    assert_eq!(state(&b_new, x), interdomain(1, 2), "theirs is untouched");

    // Two tables of one domain: refused.
    let mut a2 = table(1);
    let (p, _) = connect(&mut a, &mut c);
    assert_eq!(send_interdomain(&a, p, &a2), Err(EINVAL));
    assert_eq!(close_interdomain(&mut a, p, &mut a2), Err(EINVAL));
    assert_eq!(close_peer(&mut a, &mut a2), 0);
}

#[test]
fn reset_empties_the_table_peer_by_peer() {
    let h = GlobalVirqHandlers::new();
    let mut a = table(1);
    let mut b = table(2);
    let mut c = table(3);
    let (ab, ba) = connect(&mut a, &mut b);
    let (ac1, ca1) = connect(&mut a, &mut c);
    let (ac2, ca2) = connect(&mut a, &mut c);
    let lp = a.alloc_unbound(1, false, 1).unwrap();
    a.bind_loopback(lp).unwrap();
    a.bind_virq(VIRQ_TIMER, 1, &h).unwrap();
    a.bind_ipi(0).unwrap();
    a.alloc_unbound(1, false, 9).unwrap();
    assert_eq!(a.reset(2, false), Err(EPERM));
    assert_eq!(a.ports_in_use(), 8, "EPERM changes nothing");
    // Local channels go first; the lowest peer is named.
    assert_eq!(a.reset(1, false), Ok(Some(2)));
    assert_eq!(a.ports_in_use(), 3);
    assert_eq!(a.virq(1, VIRQ_TIMER), None);
    assert_eq!(close_peer(&mut a, &mut b), 1);
    assert_eq!(state(&b, ba), State::Unbound { remote: 1 });
    assert_eq!(state(&a, ab), State::Free);
    assert_eq!(a.close_local(), Some(3));
    assert_eq!(close_peer(&mut a, &mut c), 2);
    assert_eq!(state(&c, ca1), State::Unbound { remote: 1 });
    assert_eq!(state(&c, ca2), State::Unbound { remote: 1 });
    assert_eq!((state(&a, ac1), state(&a, ac2)), (State::Free, State::Free));
    assert_eq!(a.close_local(), None);
    assert_eq!(a.ports_in_use(), 0);
    // The domain keeps working; the peers can connect again.
    assert!(!a.is_dying());
    assert!(bind_interdomain(&mut a, &mut b, ba).is_ok());
    // A privileged caller resets another domain.
    assert_eq!(c.reset(0, true), Ok(None));
    assert_eq!(c.ports_in_use(), 0);
}

#[test]
fn destroy_marks_dying_and_only_ever_closes() {
    let h = GlobalVirqHandlers::new();
    let mut dead = table(2);
    let mut lo = table(1);
    let mut hi = table(3);
    let (d_lo, lo_d) = connect(&mut dead, &mut lo);
    let (d_hi, hi_d) = connect(&mut dead, &mut hi);
    let (d_hi2, hi_d2) = connect(&mut dead, &mut hi);
    let waiting = dead.alloc_unbound(2, false, 1).unwrap();
    dead.bind_ipi(1).unwrap();

    assert_eq!(dead.destroy(), Some(1));
    assert!(dead.is_dying());
    assert_eq!(state(&dead, waiting), State::Free, "unbound ports close");
    // Nothing can be allocated or bound in it any more.
    assert_eq!(dead.bind_ipi(0), Err(EINVAL));
    assert_eq!(dead.alloc_unbound(0, true, 1), Err(EINVAL));
    assert_eq!(dead.bind_virq(VIRQ_DEBUG, 0, &h), Err(EINVAL));
    assert_eq!(dead.bind_loopback(waiting), Err(EINVAL));
    assert_eq!(bind_interdomain(&mut dead, &mut lo, 9), Err(EINVAL));
    assert_eq!(bind_interdomain(&mut lo, &mut dead, waiting), Err(EINVAL));
    // Its channels still carry events until they are closed.
    assert_eq!(
        send_interdomain(&lo, lo_d, &dead),
        Ok(Some(Notify {
            dom: 2,
            port: d_lo,
            vcpu: 0
        }))
    );
    // A peer closing its end frees the dying end (no unbound port to be
    // bound again, so the table only empties).
    close_interdomain(&mut hi, hi_d2, &mut dead).unwrap();
    assert_eq!(state(&dead, d_hi2), State::Free);
    // Per peer, lowest first.
    assert_eq!(close_peer(&mut dead, &mut lo), 1);
    assert_eq!(state(&lo, lo_d), State::Unbound { remote: 2 });
    assert_eq!(dead.close_local(), Some(3));
    assert_eq!(close_peer(&mut dead, &mut hi), 1);
    assert_eq!(state(&hi, hi_d), State::Unbound { remote: 2 });
    assert_eq!(state(&dead, d_hi), State::Free);
    assert_eq!(dead.destroy(), None, "calling it again just continues");
    assert_eq!(dead.ports_in_use(), 0);
    // A peer's stale send or close on the now-unbound end is answered as such.
    assert_eq!(send_interdomain(&lo, lo_d, &dead), Ok(None));
    assert_eq!(close_interdomain(&mut lo, lo_d, &mut dead), Ok(()));
}

#[test]
fn two_dying_domains_empty_each_other() {
    let mut a = table(1);
    let mut b = table(2);
    connect(&mut a, &mut b);
    connect(&mut b, &mut a);
    assert_eq!(a.destroy(), Some(2));
    assert_eq!(b.destroy(), Some(1));
    assert_eq!(close_peer(&mut a, &mut b), 2);
    assert_eq!(b.ports_in_use(), 0, "a dying peer's ends are freed");
    assert_eq!(a.close_local(), None);
    assert_eq!(b.close_local(), None);
}

#[test]
fn global_virq_handlers() {
    let mut h = GlobalVirqHandlers::new();
    let mut dom0 = table(0);
    let mut d1 = table(1);
    let d2 = table(2);
    assert_eq!(h.handler(VIRQ_CONSOLE), HARDWARE_DOMAIN);
    assert_eq!(h.set(&d1, VIRQ_TIMER, Some(&dom0)), Err(EINVAL));
    assert_eq!(h.set(&d1, NR_VIRQS, Some(&dom0)), Err(EINVAL));
    // The current handler has it bound: busy.
    let p = dom0.bind_virq(VIRQ_CONSOLE, 0, &h).unwrap();
    assert_eq!(h.set(&d1, VIRQ_CONSOLE, Some(&dom0)), Err(EBUSY));
    // A stale idea of the current handler: try again.
    assert_eq!(h.set(&d1, VIRQ_CONSOLE, Some(&d2)), Err(EAGAIN));
    assert_eq!(h.set(&dom0, VIRQ_CONSOLE, None), Ok(()), "already");
    assert_eq!(dom0.close(p), Ok(Reach::Local(())));
    assert_eq!(h.set(&d1, VIRQ_CONSOLE, Some(&dom0)), Ok(()));
    assert_eq!(h.handler(VIRQ_CONSOLE), 1);
    assert_eq!(dom0.bind_virq(VIRQ_CONSOLE, 0, &h), Err(EBUSY));
    let q = d1.bind_virq(VIRQ_CONSOLE, 0, &h).unwrap();
    assert_eq!(
        d1.virq(0, VIRQ_CONSOLE),
        Some(Notify {
            dom: 1,
            port: q,
            vcpu: 0
        })
    );
    // The handler had no table: nothing to check.
    assert_eq!(h.set(&dom0, VIRQ_DOM_EXC, None), Ok(()));
    // A dying domain cannot take it.
    let mut dying = table(3);
    assert_eq!(dying.destroy(), None);
    assert_eq!(h.set(&dying, VIRQ_DOM_EXC, Some(&dom0)), Err(EINVAL));
    // Destruction hands its VIRQs back to the hardware domain.
    h.forget(1);
    assert_eq!(h.handler(VIRQ_CONSOLE), HARDWARE_DOMAIN);
    assert_eq!(h.handler(u32::MAX), HARDWARE_DOMAIN);
    assert_eq!(GlobalVirqHandlers::default(), GlobalVirqHandlers::new());
}

#[test]
fn hostile_numbers_never_panic() {
    let h = GlobalVirqHandlers::new();
    let mut a = table(1);
    let mut b = table(2);
    connect(&mut a, &mut b);
    for port in [0, 1, 63, 64, 4095, 4096, u32::MAX] {
        for dom in [0, 1, 2, DOMID_SELF, DomId::MAX] {
            let _ = a.alloc_unbound(dom, false, dom);
            let _ = a.status(dom, true, port);
            let _ = a.reset(dom, false);
        }
        let _ = a.send(port);
        let _ = a.close(port);
        let _ = a.bind_vcpu(port, 0);
        let _ = a.bind_vcpu(port, u32::MAX);
        let _ = a.bind_loopback(port);
        let _ = a.bind_virq(port, port, &h);
        let _ = a.bind_ipi(port);
        let _ = a.virq(port, port);
        let _ = a.notify_vcpu(port);
        let _ = a.is_valid(port);
        let _ = bind_interdomain(&mut a, &mut b, port);
        let _ = send_interdomain(&a, port, &b);
        let _ = close_interdomain(&mut a, port, &mut b);
        let _ = close_peer(&mut b, &mut a);
    }
}
