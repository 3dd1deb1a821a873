//! Unit tests of every operation and error path, and the property test
//! against [`super::model`].

use keel_hypercall::abi::Errno::{self, *};
use keel_hypercall::abi::domid::{DOMID_FIRST_RESERVED, DOMID_SELF, DomId};
use keel_hypercall::abi::evtchn::{
    EVTCHN_2L_NR_CHANNELS, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI,
    EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ, NR_VIRQS, VIRQ_ARGO, VIRQ_CONSOLE, VIRQ_DEBUG,
    VIRQ_DOM_EXC, VIRQ_TIMER,
};
use proptest::prelude::*;

use super::model::Model;
use super::*;

/// dom0 (the hardware domain) and two domUs, 2 vCPUs each, 64 ports.
fn hub() -> Hub {
    let mut h = Hub::new();
    for d in 0..3 {
        h.add_domain(d, 64, 2).unwrap();
    }
    h
}

fn state(h: &Hub, dom: DomId, port: Port) -> State {
    h.status(dom, false, dom, port).unwrap().state
}

fn vcpu_of(h: &Hub, dom: DomId, port: Port) -> u32 {
    h.status(dom, false, dom, port).unwrap().vcpu
}

/// Connects a fresh unbound port of `a` (for `b`) with a fresh port of `b`.
fn connect(h: &mut Hub, a: DomId, b: DomId) -> (Port, Port) {
    let pa = h.alloc_unbound(a, false, a, b).unwrap();
    let (pb, _) = h.bind_interdomain(b, a, pa).unwrap();
    (pa, pb)
}

#[test]
fn add_domain_checks() {
    let mut h = hub();
    assert_eq!(h.add_domain(1, 64, 1), Err(EEXIST));
    assert_eq!(h.add_domain(DOMID_FIRST_RESERVED, 64, 1), Err(EINVAL));
    // keel's own endpoints live in DOMID_XEN's table.
    assert_eq!(
        h.add_domain(keel_hypercall::abi::domid::DOMID_XEN, 64, 1),
        Ok(())
    );
    assert_eq!(h.add_domain(DOMID_SELF, 64, 1), Err(EINVAL));
    assert_eq!(h.add_domain(7, 64, 0), Err(EINVAL));
    assert!(h.has_domain(1) && !h.has_domain(7));
    assert_eq!(h.ports_in_use(1), 0);
    assert_eq!(h.ports_in_use(7), 0);
}

#[test]
fn port_zero_is_reserved_and_reads_closed() {
    let mut h = hub();
    assert_eq!(h.bind_ipi(1, 0), Ok(1), "allocation starts at 1");
    let s = h.status(1, false, 1, 0).unwrap();
    assert_eq!(
        s,
        Status {
            state: State::Free,
            vcpu: 0
        }
    );
    assert_eq!(s.state.evtchnstat(), EVTCHNSTAT_CLOSED);
    assert_eq!(h.close(1, 0), Err(EINVAL));
    assert_eq!(h.send(1, 0), Err(EINVAL));
    assert_eq!(h.bind_vcpu(1, 0, 1), Err(EINVAL));
    assert!(h.is_valid(1, 0));
}

#[test]
fn alloc_until_enospc_then_lowest_free() {
    let mut h = Hub::new();
    h.add_domain(1, 5, 1).unwrap();
    for want in 1..5 {
        assert_eq!(h.alloc_unbound(1, false, 1, 2), Ok(want));
    }
    assert_eq!(h.alloc_unbound(1, false, 1, 2), Err(ENOSPC));
    assert_eq!(h.bind_ipi(1, 0), Err(ENOSPC));
    assert_eq!(h.bind_virq(1, VIRQ_TIMER, 0), Err(ENOSPC));
    assert_eq!(h.ports_in_use(1), 4);
    h.close(1, 2).unwrap();
    assert_eq!(h.bind_ipi(1, 0), Ok(2), "the lowest free port");
    // The limit caps allocation, not validity: the bucket is valid.
    assert!(h.is_valid(1, 63));
    assert_eq!(state(&h, 1, 10), State::Free);
}

#[test]
fn limit_is_capped_at_the_2l_abi() {
    let mut h = Hub::new();
    h.add_domain(1, u32::MAX, 1).unwrap();
    for want in 1..EVTCHN_2L_NR_CHANNELS {
        assert_eq!(h.bind_ipi(1, 0), Ok(want));
    }
    assert_eq!(h.bind_ipi(1, 0), Err(ENOSPC));
    assert!(h.is_valid(1, EVTCHN_2L_NR_CHANNELS - 1));
    assert!(!h.is_valid(1, EVTCHN_2L_NR_CHANNELS));
    assert_eq!(h.ports_in_use(1), EVTCHN_2L_NR_CHANNELS - 1);
    h.remove_domain(1);
    assert!(!h.has_domain(1));
}

#[test]
fn table_grows_by_buckets_on_demand() {
    let mut h = Hub::new();
    h.add_domain(1, 200, 1).unwrap();
    h.add_domain(2, 200, 1).unwrap();
    assert!(h.is_valid(1, 63));
    assert!(!h.is_valid(1, 64));
    assert_eq!(h.status(1, false, 1, 64), Err(EINVAL));
    for _ in 1..64 {
        h.bind_ipi(1, 0).unwrap();
    }
    assert!(!h.is_valid(1, 64), "still one bucket");
    // A failed bind still grows the table, as Xen's does.
    assert_eq!(h.bind_interdomain(1, 2, 5), Err(EINVAL));
    assert!(h.is_valid(1, 127));
    assert!(!h.is_valid(1, 128));
    assert_eq!(h.bind_ipi(1, 0), Ok(64));
    // Closing does not shrink it.
    for p in 1..=64 {
        h.close(1, p).unwrap();
    }
    assert!(h.is_valid(1, 127));
    assert_eq!(h.ports_in_use(1), 0);
}

#[test]
fn alloc_unbound_permissions_and_errors() {
    let mut h = hub();
    assert_eq!(h.alloc_unbound(1, false, 9, 2), Err(ESRCH));
    assert_eq!(h.alloc_unbound(1, false, 2, 1), Err(EPERM));
    let p = h.alloc_unbound(0, true, 2, 1).unwrap();
    assert_eq!(
        h.status(0, true, 2, p).unwrap(),
        Status {
            state: State::Unbound { remote: 1 },
            vcpu: 0
        }
    );
    // remote_dom need not exist.
    let q = h.alloc_unbound(1, false, 1, 42).unwrap();
    assert_eq!(state(&h, 1, q), State::Unbound { remote: 42 });
    assert_eq!(state(&h, 1, q).evtchnstat(), EVTCHNSTAT_UNBOUND);
    // Xen allocates before its permission check: a full table says ENOSPC.
    let mut h = Hub::new();
    h.add_domain(1, 2, 1).unwrap();
    h.add_domain(2, 2, 1).unwrap();
    h.alloc_unbound(2, false, 2, 1).unwrap();
    assert_eq!(h.alloc_unbound(1, false, 2, 1), Err(ENOSPC));
}

#[test]
fn bind_interdomain_connects_both_ends() {
    let mut h = hub();
    let pa = h.alloc_unbound(1, false, 1, 2).unwrap();
    h.bind_vcpu(1, pa, 1).unwrap();
    let (pb, n) = h.bind_interdomain(2, 1, pa).unwrap();
    assert_eq!(
        n,
        Notify {
            dom: 2,
            port: pb,
            vcpu: 0
        },
        "the new local port is raised"
    );
    assert_eq!(
        state(&h, 1, pa),
        State::Interdomain {
            remote_dom: 2,
            remote_port: pb
        }
    );
    assert_eq!(
        state(&h, 2, pb),
        State::Interdomain {
            remote_dom: 1,
            remote_port: pa
        }
    );
    assert_eq!(state(&h, 1, pa).evtchnstat(), EVTCHNSTAT_INTERDOMAIN);
    assert_eq!(vcpu_of(&h, 1, pa), 1, "the unbound end keeps its vCPU");
    assert_eq!(
        h.send(2, pb),
        Ok(Some(Notify {
            dom: 1,
            port: pa,
            vcpu: 1
        }))
    );
    assert_eq!(
        h.send(1, pa),
        Ok(Some(Notify {
            dom: 2,
            port: pb,
            vcpu: 0
        }))
    );
    h.bind_vcpu(2, pb, 1).unwrap();
    assert_eq!(
        h.send(1, pa),
        Ok(Some(Notify {
            dom: 2,
            port: pb,
            vcpu: 1
        }))
    );
    // Already connected: not unbound any more.
    assert_eq!(h.bind_interdomain(2, 1, pa), Err(EINVAL));
}

#[test]
fn bind_interdomain_errors() {
    let mut h = hub();
    let for_two = h.alloc_unbound(1, false, 1, 2).unwrap();
    assert_eq!(h.bind_interdomain(2, 9, for_two), Err(ESRCH));
    assert_eq!(
        h.bind_interdomain(9, 1, for_two),
        Err(ESRCH),
        "unknown caller"
    );
    // Unbound for someone else.
    assert_eq!(h.bind_interdomain(0, 1, for_two), Err(EINVAL));
    // Free, invalid, port 0, not unbound.
    assert_eq!(h.bind_interdomain(2, 1, for_two + 1), Err(EINVAL));
    assert_eq!(h.bind_interdomain(2, 1, 64), Err(EINVAL));
    assert_eq!(h.bind_interdomain(2, 1, u32::MAX), Err(EINVAL));
    assert_eq!(h.bind_interdomain(2, 1, 0), Err(EINVAL));
    let ipi = h.bind_ipi(1, 0).unwrap();
    assert_eq!(h.bind_interdomain(2, 1, ipi), Err(EINVAL));
    // Nothing was allocated by the failures.
    assert_eq!(h.ports_in_use(2), 0);
    assert_eq!(h.ports_in_use(1), 2);
    // A full caller: ENOSPC comes before the remote port's check.
    let mut h = Hub::new();
    h.add_domain(1, 64, 1).unwrap();
    h.add_domain(2, 2, 1).unwrap();
    h.bind_ipi(2, 0).unwrap();
    assert_eq!(h.bind_interdomain(2, 1, 5), Err(ENOSPC));
}

#[test]
fn loopback() {
    let mut h = hub();
    let p = h.alloc_unbound(1, false, 1, 1).unwrap();
    let (q, n) = h.bind_interdomain(1, 1, p).unwrap();
    assert_ne!(p, q);
    assert_eq!(
        n,
        Notify {
            dom: 1,
            port: q,
            vcpu: 0
        }
    );
    assert_eq!(
        state(&h, 1, p),
        State::Interdomain {
            remote_dom: 1,
            remote_port: q
        }
    );
    assert_eq!(
        state(&h, 1, q),
        State::Interdomain {
            remote_dom: 1,
            remote_port: p
        }
    );
    assert_eq!(
        h.send(1, p),
        Ok(Some(Notify {
            dom: 1,
            port: q,
            vcpu: 0
        }))
    );
    assert_eq!(
        h.send(1, q),
        Ok(Some(Notify {
            dom: 1,
            port: p,
            vcpu: 0
        }))
    );
    h.close(1, p).unwrap();
    assert_eq!(state(&h, 1, q), State::Unbound { remote: 1 });
    // The survivor is bindable again, from the same domain.
    let (r, _) = h.bind_interdomain(1, 1, q).unwrap();
    assert_eq!(r, p, "the lowest free port");
    h.close(1, q).unwrap();
    h.close(1, r).unwrap();
    assert_eq!(h.ports_in_use(1), 0);
}

#[test]
fn send_rules() {
    let mut h = hub();
    let unbound = h.alloc_unbound(1, false, 1, 2).unwrap();
    assert_eq!(h.send(1, unbound), Ok(None), "dropped silently");
    let ipi = h.bind_ipi(1, 1).unwrap();
    assert_eq!(
        h.send(1, ipi),
        Ok(Some(Notify {
            dom: 1,
            port: ipi,
            vcpu: 1
        }))
    );
    let virq = h.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    assert_eq!(h.send(1, virq), Err(EINVAL));
    assert_eq!(h.send(1, 40), Err(EINVAL), "free");
    assert_eq!(h.send(1, 64), Err(EINVAL), "invalid");
    assert_eq!(h.send(1, u32::MAX), Err(EINVAL));
    assert_eq!(h.send(9, 1), Err(ESRCH));
    // A port number names the caller's own table only: domain 2 has no
    // port `ipi`, and its own port of that number is someone else's end.
    assert_eq!(h.send(2, ipi), Err(EINVAL));
    let (p1, p2) = connect(&mut h, 1, 2);
    assert_eq!(h.send(0, p1), Err(EINVAL));
    assert_eq!(
        h.send(2, p2),
        Ok(Some(Notify {
            dom: 1,
            port: p1,
            vcpu: 0
        }))
    );
}

#[test]
fn close_rules() {
    let mut h = hub();
    let (p1, p2) = connect(&mut h, 1, 2);
    h.bind_vcpu(2, p2, 1).unwrap();
    assert_eq!(h.close(1, 40), Err(EINVAL), "free");
    assert_eq!(h.close(1, 64), Err(EINVAL), "invalid");
    assert_eq!(h.close(9, p1), Err(ESRCH));
    h.close(1, p1).unwrap();
    assert_eq!(h.close(1, p1), Err(EINVAL), "double close");
    assert_eq!(state(&h, 1, p1), State::Free);
    assert_eq!(
        h.status(2, false, 2, p2).unwrap(),
        Status {
            state: State::Unbound { remote: 1 },
            vcpu: 1
        },
        "the peer awaits a new connection from us, on its vCPU"
    );
    assert_eq!(h.send(2, p2), Ok(None));
    // Reconnect from 1, then a reused port starts on vCPU 0.
    let (q1, _) = h.bind_interdomain(1, 2, p2).unwrap();
    assert_eq!(q1, p1);
    assert_eq!(vcpu_of(&h, 1, q1), 0);
    h.bind_vcpu(1, q1, 1).unwrap();
    h.close(1, q1).unwrap();
    assert_eq!(vcpu_of(&h, 1, q1), 0, "freeing resets the vCPU");
    // Unbound and IPI ports close too.
    let u = h.alloc_unbound(1, false, 1, 0).unwrap();
    let i = h.bind_ipi(1, 1).unwrap();
    h.close(1, u).unwrap();
    h.close(1, i).unwrap();
    assert_eq!(h.ports_in_use(1), 0);
}

#[test]
fn bind_virq_rules() {
    let mut h = hub();
    let t0 = h.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    let t1 = h.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    assert_ne!(t0, t1);
    assert_eq!(
        h.status(1, false, 1, t1).unwrap(),
        Status {
            state: State::Virq { virq: VIRQ_TIMER },
            vcpu: 1
        }
    );
    assert_eq!(state(&h, 1, t1).evtchnstat(), EVTCHNSTAT_VIRQ);
    assert_eq!(
        h.bind_virq(1, VIRQ_TIMER, 1),
        Err(EEXIST),
        "virq twice on one vCPU"
    );
    assert_eq!(h.bind_virq(1, NR_VIRQS, 0), Err(EINVAL));
    assert_eq!(h.bind_virq(1, u32::MAX, 0), Err(EINVAL));
    assert_eq!(h.bind_virq(1, VIRQ_DEBUG, 2), Err(ENOENT), "no vCPU 2");
    assert_eq!(h.bind_virq(9, VIRQ_DEBUG, 0), Err(ESRCH));
    // Global VIRQs: vCPU 0 only (checked before the vCPU exists), and only
    // in the handling domain.
    assert_eq!(
        h.bind_virq(0, VIRQ_CONSOLE, 1),
        Err(EINVAL),
        "global virq on vCPU 1"
    );
    assert_eq!(h.bind_virq(0, VIRQ_CONSOLE, 5), Err(EINVAL));
    assert_eq!(
        h.bind_virq(1, VIRQ_CONSOLE, 0),
        Err(EBUSY),
        "domU does not handle it"
    );
    let con = h.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(h.bind_virq(0, VIRQ_CONSOLE, 0), Err(EEXIST));
    // Per-domain VIRQs: any domain, vCPU 0 only.
    assert_eq!(h.bind_virq(1, VIRQ_ARGO, 1), Err(EINVAL));
    let argo = h.bind_virq(1, VIRQ_ARGO, 0).unwrap();
    assert_eq!(h.bind_virq(1, VIRQ_ARGO, 0), Err(EEXIST));
    // Closing unbinds; binding again works.
    h.close(1, t1).unwrap();
    assert_eq!(h.virq(1, 1, VIRQ_TIMER), None);
    assert_eq!(h.bind_virq(1, VIRQ_TIMER, 1), Ok(t1));
    assert_eq!(
        h.virq(0, 0, VIRQ_CONSOLE),
        Some(Notify {
            dom: 0,
            port: con,
            vcpu: 0
        })
    );
    assert_eq!(
        h.virq(1, 0, VIRQ_ARGO),
        Some(Notify {
            dom: 1,
            port: argo,
            vcpu: 0
        })
    );
}

#[test]
fn virq_lookup() {
    let mut h = hub();
    let t1 = h.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    assert_eq!(
        h.virq(1, 1, VIRQ_TIMER),
        Some(Notify {
            dom: 1,
            port: t1,
            vcpu: 1
        })
    );
    assert_eq!(h.virq(1, 0, VIRQ_TIMER), None);
    assert_eq!(h.virq(1, 7, VIRQ_TIMER), None);
    assert_eq!(h.virq(1, 1, NR_VIRQS), None);
    assert_eq!(h.virq(9, 0, VIRQ_TIMER), None);
    // A moved global VIRQ notifies its new vCPU, whatever vCPU is asked.
    let exc = h.bind_virq(0, VIRQ_DOM_EXC, 0).unwrap();
    h.bind_vcpu(0, exc, 1).unwrap();
    let n = Notify {
        dom: 0,
        port: exc,
        vcpu: 1,
    };
    assert_eq!(h.virq(0, 0, VIRQ_DOM_EXC), Some(n));
    assert_eq!(h.virq(0, 1, VIRQ_DOM_EXC), Some(n));
    assert_eq!(h.global_virq(VIRQ_DOM_EXC), Some(n));
    assert_eq!(h.global_virq(VIRQ_TIMER), None, "not global");
    assert_eq!(h.global_virq(VIRQ_CONSOLE), None, "not bound");
}

#[test]
fn global_virq_handlers() {
    let mut h = hub();
    assert_eq!(h.global_virq_handler(VIRQ_CONSOLE), HARDWARE_DOMAIN);
    assert_eq!(h.set_global_virq_handler(1, VIRQ_TIMER), Err(EINVAL));
    assert_eq!(h.set_global_virq_handler(1, NR_VIRQS), Err(EINVAL));
    assert_eq!(h.set_global_virq_handler(9, VIRQ_CONSOLE), Err(EINVAL));
    h.set_global_virq_handler(1, VIRQ_CONSOLE).unwrap();
    assert_eq!(h.bind_virq(0, VIRQ_CONSOLE, 0), Err(EBUSY));
    let p = h.bind_virq(1, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(
        h.global_virq(VIRQ_CONSOLE),
        Some(Notify {
            dom: 1,
            port: p,
            vcpu: 0
        })
    );
    // Cannot move it away while bound; can once closed.
    assert_eq!(h.set_global_virq_handler(2, VIRQ_CONSOLE), Err(EBUSY));
    assert_eq!(h.set_global_virq_handler(1, VIRQ_CONSOLE), Ok(()));
    h.close(1, p).unwrap();
    h.set_global_virq_handler(2, VIRQ_CONSOLE).unwrap();
    assert_eq!(h.global_virq_handler(VIRQ_CONSOLE), 2);
    // A handler's death hands the VIRQ back to the hardware domain.
    h.bind_virq(2, VIRQ_CONSOLE, 0).unwrap();
    h.remove_domain(2);
    assert_eq!(h.global_virq_handler(VIRQ_CONSOLE), HARDWARE_DOMAIN);
    assert!(h.bind_virq(0, VIRQ_CONSOLE, 0).is_ok());
}

#[test]
fn bind_vcpu_rules() {
    let mut h = hub();
    let unbound = h.alloc_unbound(1, false, 1, 2).unwrap();
    let ipi = h.bind_ipi(1, 0).unwrap();
    let timer = h.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    let argo = h.bind_virq(1, VIRQ_ARGO, 0).unwrap();
    assert_eq!(h.bind_vcpu(1, unbound, 2), Err(ENOENT));
    assert_eq!(
        h.bind_vcpu(1, u32::MAX, 2),
        Err(ENOENT),
        "vCPU checked before the port"
    );
    assert_eq!(h.bind_vcpu(1, u32::MAX, 1), Err(EINVAL));
    assert_eq!(h.bind_vcpu(1, 40, 1), Err(EINVAL), "free");
    assert_eq!(h.bind_vcpu(1, ipi, 1), Err(EINVAL), "IPIs keep their vCPU");
    assert_eq!(
        h.bind_vcpu(1, timer, 1),
        Err(EINVAL),
        "per-vCPU VIRQs keep theirs"
    );
    assert_eq!(h.bind_vcpu(9, unbound, 0), Err(ESRCH));
    h.bind_vcpu(1, unbound, 1).unwrap();
    h.bind_vcpu(1, argo, 1).unwrap();
    assert_eq!(vcpu_of(&h, 1, unbound), 1);
    assert_eq!(
        h.virq(1, 0, VIRQ_ARGO),
        Some(Notify {
            dom: 1,
            port: argo,
            vcpu: 1
        })
    );
    // Closing a moved domain VIRQ still unbinds it (from vCPU 0's row).
    h.close(1, argo).unwrap();
    assert_eq!(h.virq(1, 0, VIRQ_ARGO), None);
    assert!(h.bind_virq(1, VIRQ_ARGO, 0).is_ok());
    assert_eq!(h.notify_vcpu(1, unbound), Some(1));
    assert_eq!(
        h.notify_vcpu(1, 40),
        Some(0),
        "free ports are valid for unmask"
    );
    assert_eq!(h.notify_vcpu(1, 64), None);
    assert_eq!(h.notify_vcpu(9, 1), None);
}

#[test]
fn status_rules() {
    let h = hub();
    assert_eq!(h.status(1, false, 9, 1), Err(ESRCH));
    assert_eq!(
        h.status(1, false, 2, 64),
        Err(EINVAL),
        "EINVAL before EPERM, as Xen"
    );
    assert_eq!(h.status(1, false, 2, 1), Err(EPERM));
    assert_eq!(h.status(1, true, 2, 1).map(|s| s.state), Ok(State::Free));
    let mut h = h;
    let i = h.bind_ipi(2, 1).unwrap();
    assert_eq!(
        h.status(0, true, 2, i),
        Ok(Status {
            state: State::Ipi,
            vcpu: 1
        })
    );
    assert_eq!(State::Ipi.evtchnstat(), EVTCHNSTAT_IPI);
}

#[test]
fn reset_closes_everything() {
    let mut h = hub();
    let (p1, p2) = connect(&mut h, 1, 2);
    let lp = h.alloc_unbound(1, false, 1, 1).unwrap();
    h.bind_interdomain(1, 1, lp).unwrap();
    h.bind_virq(1, VIRQ_TIMER, 1).unwrap();
    h.bind_ipi(1, 0).unwrap();
    // The last port of the table too.
    let mut full = Hub::new();
    full.add_domain(1, 64, 1).unwrap();
    for _ in 1..64 {
        full.bind_ipi(1, 0).unwrap();
    }
    full.reset(1, false, 1).unwrap();
    assert_eq!(full.ports_in_use(1), 0);
    assert_eq!(h.reset(1, false, 9), Err(ESRCH));
    assert_eq!(h.reset(1, false, 2), Err(EPERM));
    h.reset(1, false, 1).unwrap();
    assert_eq!(h.ports_in_use(1), 0);
    assert_eq!(h.virq(1, 1, VIRQ_TIMER), None);
    assert_eq!(state(&h, 2, p2), State::Unbound { remote: 1 });
    assert_eq!(state(&h, 1, p1), State::Free);
    // The domain keeps working, and the peer is bindable again.
    assert!(h.bind_virq(1, VIRQ_TIMER, 1).is_ok());
    assert!(h.bind_interdomain(1, 2, p2).is_ok());
    // A privileged caller resets another domain.
    h.reset(0, true, 2).unwrap();
    assert_eq!(h.ports_in_use(2), 0);
}

#[test]
fn remove_domain_leaves_peers_unbound_and_usable() {
    let mut h = hub();
    let (p0, p1) = connect(&mut h, 0, 1);
    let (q2, q1) = connect(&mut h, 2, 1);
    let waiting = h.alloc_unbound(0, false, 0, 1).unwrap();
    h.bind_virq(1, VIRQ_TIMER, 0).unwrap();
    h.remove_domain(1);
    assert!(!h.has_domain(1));
    assert_eq!(h.ports_in_use(1), 0);
    assert_eq!(state(&h, 0, p0), State::Unbound { remote: 1 });
    assert_eq!(state(&h, 2, q2), State::Unbound { remote: 1 });
    assert_eq!(state(&h, 0, waiting), State::Unbound { remote: 1 });
    // Usable: sending is dropped, closing works, and a new domain 1 can bind.
    assert_eq!(h.send(0, p0), Ok(None));
    assert_eq!(h.bind_interdomain(1, 0, p0), Err(ESRCH), "no domain 1 now");
    h.add_domain(1, 64, 1).unwrap();
    let (n1, _) = h.bind_interdomain(1, 0, p0).unwrap();
    assert_eq!(n1, 1, "a fresh table");
    assert_eq!(
        h.send(0, p0),
        Ok(Some(Notify {
            dom: 1,
            port: n1,
            vcpu: 0
        }))
    );
    h.close(2, q2).unwrap();
    let _ = (p1, q1);
    // Removing an unknown domain does nothing.
    h.remove_domain(77);
}

#[test]
fn hostile_numbers_never_panic() {
    let mut h = hub();
    for port in [0, 63, 64, 4095, 4096, u32::MAX] {
        for dom in [0, 1, 9, DOMID_SELF, DomId::MAX] {
            let _ = h.close(dom, port);
            let _ = h.send(dom, port);
            let _ = h.status(dom, true, dom, port);
            let _ = h.bind_vcpu(dom, port, 0);
            let _ = h.bind_vcpu(dom, port, u32::MAX);
            let _ = h.bind_interdomain(dom, 1, port);
            let _ = h.notify_vcpu(dom, port);
            let _ = h.is_valid(dom, port);
            let _ = h.bind_virq(dom, port, port);
            let _ = h.bind_ipi(dom, port);
            let _ = h.virq(dom, port, port);
            let _ = h.global_virq(port);
            let _ = h.set_global_virq_handler(dom, port);
        }
    }
}

// ---- The property test: the hub against the model. ----

const DOMS: DomId = 4; // 0..3 exist at the start; 3 only after AddDomain.

#[derive(Clone, Debug)]
enum Op {
    AddDomain(DomId, u32, u32),
    RemoveDomain(DomId),
    AllocUnbound(DomId, bool, DomId, DomId),
    BindInterdomain(DomId, DomId, Port),
    BindVirq(DomId, u32, u32),
    BindIpi(DomId, u32),
    BindVcpu(DomId, Port, u32),
    Close(DomId, Port),
    Send(DomId, Port),
    Status(DomId, bool, DomId, Port),
    Reset(DomId, bool, DomId),
    SetHandler(DomId, u32),
    /// `n` IPI binds in a row, to reach bucket ends and table limits.
    Fill(DomId, u32),
}

fn dom() -> impl Strategy<Value = DomId> {
    0..DOMS
}

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![8 => 0u32..12, 2 => 60u32..70, 1 => 120u32..135, 1 => Just(u32::MAX)]
}

fn vcpu() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..3, 1 => Just(u32::MAX)]
}

fn virq_num() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => prop::sample::select(vec![
            VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC, VIRQ_ARGO
        ]),
        1 => 0u32..NR_VIRQS + 2,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (dom(), prop::sample::select(vec![3u32, 10, 70, 130, 5000]), 0u32..4)
            .prop_map(|(d, m, v)| Op::AddDomain(d, m, v)),
        1 => dom().prop_map(Op::RemoveDomain),
        6 => (dom(), any::<bool>(), dom(), dom())
            .prop_map(|(c, p, d, r)| Op::AllocUnbound(c, p, d, r)),
        6 => (dom(), dom(), port()).prop_map(|(c, r, p)| Op::BindInterdomain(c, r, p)),
        3 => (dom(), virq_num(), vcpu()).prop_map(|(c, q, v)| Op::BindVirq(c, q, v)),
        3 => (dom(), vcpu()).prop_map(|(c, v)| Op::BindIpi(c, v)),
        3 => (dom(), port(), vcpu()).prop_map(|(c, p, v)| Op::BindVcpu(c, p, v)),
        5 => (dom(), port()).prop_map(|(c, p)| Op::Close(c, p)),
        4 => (dom(), port()).prop_map(|(c, p)| Op::Send(c, p)),
        2 => (dom(), any::<bool>(), dom(), port())
            .prop_map(|(c, pr, d, p)| Op::Status(c, pr, d, p)),
        1 => (dom(), any::<bool>(), dom()).prop_map(|(c, p, d)| Op::Reset(c, p, d)),
        2 => (dom(), prop::sample::select(vec![VIRQ_CONSOLE, VIRQ_DOM_EXC, VIRQ_TIMER, NR_VIRQS]))
            .prop_map(|(d, q)| Op::SetHandler(d, q)),
        1 => (dom(), 1u32..140).prop_map(|(d, n)| Op::Fill(d, n)),
    ]
}

/// Applies `op` to both; the results must be identical.
fn step(h: &mut Hub, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    fn same<T: PartialEq + core::fmt::Debug>(a: T, b: T, op: &Op) -> Result<(), TestCaseError> {
        prop_assert_eq!(a, b, "{:?}", op);
        Ok(())
    }
    match *op {
        Op::AddDomain(d, mx, v) => same(h.add_domain(d, mx, v), m.add_domain(d, mx, v), op),
        Op::RemoveDomain(d) => {
            h.remove_domain(d);
            m.remove_domain(d);
            Ok(())
        }
        Op::AllocUnbound(c, p, d, r) => {
            same(h.alloc_unbound(c, p, d, r), m.alloc_unbound(c, p, d, r), op)
        }
        Op::BindInterdomain(c, r, p) => {
            same(h.bind_interdomain(c, r, p), m.bind_interdomain(c, r, p), op)
        }
        Op::BindVirq(c, q, v) => same(h.bind_virq(c, q, v), m.bind_virq(c, q, v), op),
        Op::BindIpi(c, v) => same(h.bind_ipi(c, v), m.bind_ipi(c, v), op),
        Op::BindVcpu(c, p, v) => same(h.bind_vcpu(c, p, v), m.bind_vcpu(c, p, v), op),
        Op::Close(c, p) => same(h.close(c, p), m.close(c, p), op),
        Op::Send(c, p) => same(h.send(c, p), m.send(c, p), op),
        Op::Status(c, pr, d, p) => same(h.status(c, pr, d, p), m.status(c, pr, d, p), op),
        Op::Reset(c, p, d) => same(h.reset(c, p, d), m.reset(c, p, d), op),
        Op::SetHandler(d, q) => same(
            h.set_global_virq_handler(d, q),
            m.set_global_virq_handler(d, q),
            op,
        ),
        Op::Fill(c, n) => {
            for _ in 0..n {
                same(h.bind_ipi(c, 0), m.bind_ipi(c, 0), op)?;
            }
            Ok(())
        }
    }
}

/// Compares every observable of the hub with the model, and checks the
/// hub's own invariants through its public interface.
fn check(h: &Hub, m: &Model) -> Result<(), TestCaseError> {
    for d in 0..DOMS {
        prop_assert_eq!(h.has_domain(d), m.doms.contains_key(&d));
        prop_assert_eq!(h.ports_in_use(d), m.ports_in_use(d));
        let Some(md) = m.doms.get(&d) else { continue };
        prop_assert_eq!(md.valid % PORTS_PER_BUCKET, 0);
        for p in 0..md.valid + PORTS_PER_BUCKET {
            prop_assert_eq!(h.is_valid(d, p), p < md.valid);
            let s = h.status(0, true, d, p);
            prop_assert_eq!(s, m.status(0, true, d, p), "dom {} port {}", d, p);
            prop_assert_eq!(h.notify_vcpu(d, p), s.ok().map(|s| s.vcpu));
            let Ok(s) = s else { continue };
            if s.state != State::Free {
                prop_assert!(p != 0 && p < md.max && s.vcpu < md.vcpus);
            } else {
                prop_assert_eq!(s.vcpu, 0);
            }
            if let State::Interdomain {
                remote_dom,
                remote_port,
            } = s.state
            {
                let back = h.status(0, true, remote_dom, remote_port).map(|s| s.state);
                prop_assert_eq!(
                    back,
                    Ok(State::Interdomain {
                        remote_dom: d,
                        remote_port: p
                    }),
                    "asymmetric channel at dom {} port {}",
                    d,
                    p
                );
            }
            if let State::Virq { virq } = s.state {
                let n = h.virq(d, s.vcpu, virq);
                prop_assert_eq!(
                    n,
                    Some(Notify {
                        dom: d,
                        port: p,
                        vcpu: s.vcpu
                    })
                );
            }
        }
        for v in 0..4 {
            for q in 0..NR_VIRQS + 1 {
                prop_assert_eq!(
                    h.virq(d, v, q),
                    m.virq(d, v, q),
                    "dom {} vcpu {} virq {}",
                    d,
                    v,
                    q
                );
            }
        }
    }
    for q in 0..NR_VIRQS + 1 {
        prop_assert_eq!(h.global_virq(q), m.global_virq(q));
        prop_assert_eq!(h.global_virq_handler(q), m.handler(q));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random operation sequences across domains 0..3 (dom0 being the
    /// hardware domain, 3 created and removed along the way) give the same
    /// results as the model, and the hub's invariants hold after every step.
    #[test]
    fn hub_matches_model(
        sizes in prop::collection::vec((prop::sample::select(vec![3u32, 10, 70, 130]), 1u32..4), 3),
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let mut h = Hub::new();
        let mut m = Model::default();
        for (d, &(mx, v)) in sizes.iter().enumerate() {
            let d = d as DomId;
            prop_assert_eq!(h.add_domain(d, mx, v), m.add_domain(d, mx, v));
        }
        check(&h, &m)?;
        for op in &ops {
            step(&mut h, &mut m, op)?;
            check(&h, &m)?;
        }
    }
}

#[test]
fn errno_is_the_hypercall_crates() {
    // The crate's errors are the ABI's: -EINVAL is what reaches the guest.
    let e: Errno = EINVAL;
    assert_eq!(e.neg(), -22);
}
