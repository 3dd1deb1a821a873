//! `event_channel_op` and `event_channel_op_compat`.

use super::*;
use crate::abi::evtchn::*;

const OP: u32 = nr::EVENT_CHANNEL_OP;

fn alloc(dom: u16, remote_dom: u16) -> EvtchnAllocUnbound {
    EvtchnAllocUnbound {
        dom,
        remote_dom,
        port: 0xdead,
    }
}

fn status_of(
    d: &mut FakeDomain,
    width: GuestWidth,
    dom: u16,
    port: u32,
) -> (Outcome, EvtchnStatus) {
    let mut st = EvtchnStatus::from_bytes(&[0x5a; 24]);
    st.dom = dom;
    st.port = port;
    d.poke(ARG, &st.to_bytes());
    let o = run(d, width, OP, &[EVTCHNOP_STATUS.into(), ARG]);
    (
        o,
        EvtchnStatus::from_bytes(d.peek(ARG, 24).try_into().unwrap()),
    )
}

#[test]
fn alloc_unbound_both_widths() {
    for width in WIDTHS {
        let mut d = domu();
        d.poke(ARG, &alloc(DOMID_SELF, DOMID_SELF).to_bytes());
        assert_eq!(
            run(&mut d, width, OP, &[EVTCHNOP_ALLOC_UNBOUND.into(), ARG]),
            ok()
        );
        // The IN fields come back unchanged, the port filled in.
        assert_eq!(
            d.peek(ARG, 9),
            [
                &alloc(DOMID_SELF, DOMID_SELF).to_bytes()[..4],
                &[1, 0, 0, 0],
                &[0xAA]
            ]
            .concat()
        );
        // DOMID_SELF resolved to the caller's own id, for both fields.
        assert_eq!(d.calls, ["evtchn_alloc_unbound(3, 3)"]);
        assert_eq!(d.ports[1].state, EvtchnState::Unbound { remote_dom: 3 });
    }
}

#[test]
fn alloc_unbound_domain_policy() {
    // Unprivileged: itself by id, yes; anyone else, no.
    let mut d = domu();
    d.poke(ARG, &alloc(3, 0).to_bytes());
    assert_eq!(run64(&mut d, OP, &[6, ARG]), ok());
    assert_eq!(d.calls, ["evtchn_alloc_unbound(3, 0)"]);
    for (dom, e) in [
        (0u16, Errno::EPERM),
        (4, Errno::EPERM),
        (9, Errno::ESRCH),
        (DOMID_IO, Errno::ESRCH),
    ] {
        d.poke(ARG, &alloc(dom, 0).to_bytes());
        assert_eq!(run64(&mut d, OP, &[6, ARG]), err(e), "dom {dom}");
    }
    assert_eq!(d.calls.len(), 1);
    // Privileged: another existing domain; remote DOMID_SELF is the *caller*.
    let mut d = dom0();
    d.poke(ARG, &alloc(3, DOMID_SELF).to_bytes());
    assert_eq!(run64(&mut d, OP, &[6, ARG]), ok());
    assert_eq!(d.calls, ["evtchn_alloc_unbound(3, 0)"]);
    d.poke(ARG, &alloc(9, DOMID_SELF).to_bytes());
    assert_eq!(run64(&mut d, OP, &[6, ARG]), err(Errno::ESRCH));
    // Any remote id passes unchecked, as in Xen.
    d.poke(ARG, &alloc(DOMID_SELF, 0x7000).to_bytes());
    assert_eq!(run64(&mut d, OP, &[6, ARG]), ok());
    assert_eq!(d.calls[1], "evtchn_alloc_unbound(0, 28672)");
}

#[test]
fn alloc_unbound_errors_and_faults() {
    let mut d = domu();
    d.evtchn_err = Some(Errno::ENOSPC);
    d.poke(ARG, &alloc(DOMID_SELF, 0).to_bytes());
    assert_eq!(run64(&mut d, OP, &[6, ARG]), err(Errno::ENOSPC));
    assert_eq!(
        d.peek(ARG + 4, 4),
        0xdeadu32.to_le_bytes(),
        "nothing written"
    );

    // Copy-out fails: -EFAULT, the port stays allocated (as Xen).
    let mut d = domu();
    d.poke(ARG, &alloc(DOMID_SELF, 0).to_bytes());
    d.read_only.push(ARG..ARG + 8);
    assert_eq!(run64(&mut d, OP, &[6, ARG]), err(Errno::EFAULT));
    assert_eq!(d.ports[1].state, EvtchnState::Unbound { remote_dom: 0 });
}

#[test]
fn bind_interdomain_loopback() {
    let mut d = domu();
    d.poke(ARG, &alloc(DOMID_SELF, DOMID_SELF).to_bytes());
    assert_eq!(run64(&mut d, OP, &[6, ARG]), ok());
    for width in WIDTHS {
        let b = EvtchnBindInterdomain {
            remote_dom: DOMID_SELF,
            pad: 0x1234,
            remote_port: 1,
            local_port: 0,
        };
        d.poke(ARG, &b.to_bytes());
        let o = run(&mut d, width, OP, &[EVTCHNOP_BIND_INTERDOMAIN.into(), ARG]);
        if width == GuestWidth::Bits32 {
            assert_eq!(o, ok());
            assert_eq!(
                EvtchnBindInterdomain::from_bytes(d.peek(ARG, 12).try_into().unwrap()),
                EvtchnBindInterdomain { local_port: 2, ..b }
            );
            assert!(d.ports[2].pending, "the local port is set pending");
        } else {
            // Port 1 is no longer unbound.
            assert_eq!(o, err(Errno::EINVAL));
        }
    }
    assert_eq!(d.calls[1], "evtchn_bind_interdomain(3, 1)");
    // The peer must exist.
    for dom in [9u16, DOMID_XEN] {
        d.poke(
            ARG,
            &EvtchnBindInterdomain {
                remote_dom: dom,
                pad: 0,
                remote_port: 1,
                local_port: 0,
            }
            .to_bytes(),
        );
        assert_eq!(run64(&mut d, OP, &[0, ARG]), err(Errno::ESRCH));
    }
    assert_eq!(d.calls.len(), 3, "no further calls");
}

fn virq(virq: u32, vcpu: u32) -> EvtchnBindVirq {
    EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    }
}

#[test]
fn bind_virq_checks() {
    let mut d = domu();
    for (b, want) in [
        (virq(VIRQ_TIMER, 3), Ok(1)),
        (virq(VIRQ_TIMER, 3), Err(Errno::EEXIST)),
        (virq(VIRQ_DEBUG, 2), Ok(2)),
        (virq(VIRQ_XENPMU, 1), Ok(3)),
        (virq(VIRQ_CONSOLE, 0), Ok(4)),
        (virq(VIRQ_ARCH_0 + 7, 0), Ok(5)),
        // Global or per-domain VIRQs bind on vCPU 0 only.
        (virq(VIRQ_CONSOLE, 1), Err(Errno::EINVAL)),
        (virq(VIRQ_ARGO, 2), Err(Errno::EINVAL)),
        (virq(VIRQ_ARCH_0, 1), Err(Errno::EINVAL)),
        (virq(NR_VIRQS, 0), Err(Errno::EINVAL)),
        (virq(u32::MAX, 0), Err(Errno::EINVAL)),
        // A per-vCPU VIRQ on a vCPU the domain lacks.
        (virq(VIRQ_TIMER, 4), Err(Errno::ENOENT)),
        (virq(VIRQ_TIMER, u32::MAX), Err(Errno::ENOENT)),
        // Global on a missing vCPU: the vCPU-0 rule comes first.
        (virq(VIRQ_DOM_EXC, 4), Err(Errno::EINVAL)),
    ] {
        d.poke(ARG, &b.to_bytes());
        let o = run64(&mut d, OP, &[EVTCHNOP_BIND_VIRQ.into(), ARG]);
        match want {
            Ok(port) => {
                assert_eq!(o, ok(), "{b:?}");
                assert_eq!(d.peek(ARG, 12), EvtchnBindVirq { port, ..b }.to_bytes());
            }
            Err(e) => {
                assert_eq!(o, err(e), "{b:?}");
                assert_eq!(d.peek(ARG, 12), b.to_bytes());
            }
        }
    }
    // Only the calls that passed the dispatcher's checks reached the domain.
    assert_eq!(d.calls.len(), 6);
    assert_eq!(d.calls[4], "evtchn_bind_virq(2, 0)");
}

#[test]
fn bind_ipi_and_bind_vcpu() {
    let mut d = domu();
    for width in WIDTHS {
        d.poke(ARG, &EvtchnBindIpi { vcpu: 2, port: 77 }.to_bytes());
        assert_eq!(run(&mut d, width, OP, &[7, ARG]), ok());
    }
    assert_eq!(
        d.peek(ARG, 8),
        EvtchnBindIpi { vcpu: 2, port: 2 }.to_bytes()
    );
    d.poke(ARG, &EvtchnBindIpi { vcpu: 4, port: 0 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[7, ARG]), err(Errno::ENOENT));

    // bind_vcpu: the vCPU is checked before the port.
    d.poke(ARG, &EvtchnBindVcpu { port: 999, vcpu: 9 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[8, ARG]), err(Errno::ENOENT));
    d.poke(ARG, &EvtchnBindVcpu { port: 999, vcpu: 1 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[8, ARG]), err(Errno::EINVAL));
    // An IPI's vCPU is fixed (the domain says so).
    d.poke(ARG, &EvtchnBindVcpu { port: 1, vcpu: 1 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[8, ARG]), err(Errno::EINVAL));
    assert_eq!(
        d.calls,
        [
            "evtchn_bind_ipi(2)",
            "evtchn_bind_ipi(2)",
            "evtchn_bind_vcpu(999, 1)",
            "evtchn_bind_vcpu(1, 1)"
        ]
    );
}

#[test]
fn close_send_unmask_pass_the_port() {
    let mut d = domu();
    d.poke(ARG, &EvtchnBindIpi { vcpu: 0, port: 0 }.to_bytes());
    assert_eq!(run64(&mut d, OP, &[7, ARG]), ok());
    for (cmd, port, want) in [
        (EVTCHNOP_SEND, 1u32, ok()),
        (EVTCHNOP_UNMASK, 1, ok()),
        (EVTCHNOP_CLOSE, 1, ok()),
        (EVTCHNOP_CLOSE, 1, err(Errno::EINVAL)),
        (EVTCHNOP_SEND, 1, err(Errno::EINVAL)),
        (EVTCHNOP_UNMASK, 0, err(Errno::EINVAL)),
        (EVTCHNOP_SEND, u32::MAX, err(Errno::EINVAL)),
    ] {
        d.poke(ARG, &EvtchnPortArg { port }.to_bytes());
        // Bits above 31 of the command are not part of `int cmd`.
        assert_eq!(
            run64(&mut d, OP, &[1 << 32 | u64::from(cmd), ARG]),
            want,
            "cmd {cmd}"
        );
    }
    assert_eq!(
        d.calls[1..4],
        ["evtchn_send(1)", "evtchn_unmask(1)", "evtchn_close(1)"]
    );
    assert_eq!(d.calls.len(), 8);
}

#[test]
fn status_encodes_every_state() {
    let mut d = domu();
    d.ports[1] = FakePort {
        state: EvtchnState::Unbound { remote_dom: 0 },
        vcpu: 2,
        pending: false,
        masked: false,
    };
    d.ports[2].state = EvtchnState::Interdomain {
        remote_dom: 1,
        remote_port: 0x0102_0304,
    };
    d.ports[3].state = EvtchnState::Virq(VIRQ_TIMER);
    d.ports[4].state = EvtchnState::Ipi;
    d.ports[4].vcpu = 3;
    d.ports[5].state = EvtchnState::Pirq(0x11);
    for width in WIDTHS {
        let (o, st) = status_of(&mut d, width, DOMID_SELF, 1);
        assert_eq!(o, ok());
        assert_eq!(
            (st.status, st.vcpu, st.dom_member()),
            (EVTCHNSTAT_UNBOUND, 2, 0)
        );
        assert_eq!(
            (st.dom, st.pad, st.port),
            (DOMID_SELF, 0x5a5a, 1),
            "IN fields kept"
        );
        assert_eq!(st.u[2..], [0x5a; 6], "rest of the union untouched");

        let (_, st) = status_of(&mut d, width, 3, 2);
        assert_eq!(st.status, EVTCHNSTAT_INTERDOMAIN);
        assert_eq!((st.dom_member(), st.interdomain_port()), (1, 0x0102_0304));
        assert_eq!(st.u[2..4], [0x5a; 2]);

        let (_, st) = status_of(&mut d, width, DOMID_SELF, 3);
        assert_eq!((st.status, st.irq()), (EVTCHNSTAT_VIRQ, VIRQ_TIMER));
        let (_, st) = status_of(&mut d, width, DOMID_SELF, 5);
        assert_eq!((st.status, st.irq()), (EVTCHNSTAT_PIRQ, 0x11));
        let (_, st) = status_of(&mut d, width, DOMID_SELF, 4);
        assert_eq!((st.status, st.vcpu, st.u), (EVTCHNSTAT_IPI, 3, [0x5a; 8]));
        let (_, st) = status_of(&mut d, width, DOMID_SELF, 6);
        assert_eq!(
            (st.status, st.vcpu, st.u),
            (EVTCHNSTAT_CLOSED, 0, [0x5a; 8])
        );
    }
    // Bad port: the domain's -EINVAL, nothing written.
    let (o, st) = status_of(&mut d, GuestWidth::Bits64, DOMID_SELF, 99);
    assert_eq!((o, st.status), (err(Errno::EINVAL), 0x5a5a_5a5a));
    // Other domains: privileged only.
    assert_eq!(
        status_of(&mut d, GuestWidth::Bits64, 0, 1).0,
        err(Errno::EPERM)
    );
    assert_eq!(
        status_of(&mut d, GuestWidth::Bits64, 8, 1).0,
        err(Errno::ESRCH)
    );
    let mut d = dom0();
    let (o, st) = status_of(&mut d, GuestWidth::Bits64, 3, 7);
    assert_eq!(
        (o, st.status, st.irq(), st.vcpu),
        (ok(), EVTCHNSTAT_PIRQ, 7, 3)
    );
}

#[test]
fn reset_and_reset_cont() {
    for cmd in [EVTCHNOP_RESET, EVTCHNOP_RESET_CONT] {
        let mut d = domu();
        d.poke(ARG, &EvtchnReset { dom: DOMID_SELF }.to_bytes());
        assert_eq!(run32(&mut d, OP, &[cmd.into(), ARG]), ok());
        d.poke(ARG, &EvtchnReset { dom: 0 }.to_bytes());
        assert_eq!(run32(&mut d, OP, &[cmd.into(), ARG]), err(Errno::EPERM));
        d.poke(ARG, &EvtchnReset { dom: 0x7000 }.to_bytes());
        assert_eq!(run32(&mut d, OP, &[cmd.into(), ARG]), err(Errno::ESRCH));
        assert_eq!(d.calls, ["evtchn_reset(3)"]);
        // Two bytes only are read.
        d.faults.push(ARG + 2..ARG + 3);
        d.poke(ARG, &EvtchnReset { dom: DOMID_SELF }.to_bytes());
        assert_eq!(run32(&mut d, OP, &[cmd.into(), ARG]), ok());

        let mut d = dom0();
        d.evtchn_err = Some(Errno::EINVAL);
        d.poke(ARG, &EvtchnReset { dom: 3 }.to_bytes());
        assert_eq!(run64(&mut d, OP, &[cmd.into(), ARG]), err(Errno::EINVAL));
        assert_eq!(d.calls, ["evtchn_reset(3)"]);
    }
}

#[test]
fn unsupported_commands_are_enosys() {
    let mut d = dom0();
    d.poke(ARG, &[0; 32]);
    for cmd in [
        EVTCHNOP_BIND_PIRQ,
        15,
        0x7fff_ffff,
        u32::MAX,
    ] {
        assert_eq!(
            run64(&mut d, OP, &[cmd.into(), ARG]),
            err(Errno::ENOSYS),
            "cmd {cmd}"
        );
    }
    assert!(d.calls.is_empty());
}

fn init_control(gfn: u64, offset: u32, vcpu: u32) -> EvtchnInitControl {
    EvtchnInitControl {
        control_gfn: gfn,
        offset,
        vcpu,
        link_bits: 0xaa,
        pad: [0x55; 7],
    }
}

#[test]
fn init_control_checks_then_reports_link_bits() {
    for width in WIDTHS {
        let mut d = domu();
        // Xen's order: the vCPU, then the offset (past the page end, then
        // alignment), then the domain.
        for (a, e) in [
            (init_control(0x1234, 0, 4), Errno::ENOENT),
            (init_control(0x1234, 0, u32::MAX), Errno::ENOENT),
            (init_control(0x1234, 4096 - 72 + 8, 4), Errno::ENOENT),
            (init_control(0x1234, 4096 - 72 + 8, 0), Errno::EINVAL),
            (init_control(0x1234, !7, 0), Errno::EINVAL),
            (init_control(0x1234, 4, 0), Errno::EINVAL),
        ] {
            d.poke(ARG, &a.to_bytes());
            assert_eq!(
                run(&mut d, width, OP, &[EVTCHNOP_INIT_CONTROL.into(), ARG]),
                err(e),
                "{a:?}"
            );
            // Nothing is copied back on failure.
            assert_eq!(d.peek(ARG, 24), a.to_bytes());
        }
        assert!(d.calls.is_empty());
        // The last offset whose block fits, on the last vCPU.
        let a = init_control(0x1234_5678_9abc, 4096 - 72, 3);
        d.poke(ARG, &a.to_bytes());
        assert_eq!(
            run(&mut d, width, OP, &[EVTCHNOP_INIT_CONTROL.into(), ARG]),
            ok()
        );
        assert_eq!(d.calls, ["evtchn_init_control(3, 0x123456789abc, 4024)"]);
        let back = EvtchnInitControl::from_bytes(d.peek(ARG, 24).try_into().unwrap());
        assert_eq!(back, EvtchnInitControl { link_bits: 17, ..a });
        // The domain's error, and then no copy back.
        d.evtchn_err = Some(Errno::EINVAL);
        d.poke(ARG, &a.to_bytes());
        assert_eq!(
            run(&mut d, width, OP, &[EVTCHNOP_INIT_CONTROL.into(), ARG]),
            err(Errno::EINVAL)
        );
        assert_eq!(d.peek(ARG, 24), a.to_bytes());
    }
}

#[test]
fn expand_array_and_set_priority_pass_through() {
    for width in WIDTHS {
        let mut d = domu();
        d.poke(ARG, &EvtchnExpandArray { array_gfn: u64::MAX }.to_bytes());
        assert_eq!(
            run(&mut d, width, OP, &[EVTCHNOP_EXPAND_ARRAY.into(), ARG]),
            ok()
        );
        d.poke(
            ARG,
            &EvtchnSetPriority {
                port: 77,
                priority: 99,
            }
            .to_bytes(),
        );
        assert_eq!(
            run(&mut d, width, OP, &[EVTCHNOP_SET_PRIORITY.into(), ARG]),
            ok()
        );
        assert_eq!(
            d.calls,
            [
                "evtchn_expand_array(0xffffffffffffffff)",
                "evtchn_set_priority(77, 99)"
            ]
        );
        d.evtchn_err = Some(Errno::ENOSPC);
        assert_eq!(
            run(&mut d, width, OP, &[EVTCHNOP_EXPAND_ARRAY.into(), ARG]),
            err(Errno::ENOSPC)
        );
        for cmd in [
            EVTCHNOP_INIT_CONTROL,
            EVTCHNOP_EXPAND_ARRAY,
            EVTCHNOP_SET_PRIORITY,
        ] {
            assert_eq!(
                run(&mut d, width, OP, &[cmd.into(), 0xffff_ffff_ffff_fff0]),
                err(Errno::EFAULT)
            );
        }
    }
}

#[test]
fn hostile_pointers_fault() {
    let mut d = dom0();
    for cmd in [0u32, 1, 3, 4, 5, 6, 7, 8, 9, 10, 14] {
        for p in [0, BASE - 1, END - 1, u64::MAX - 1] {
            assert_eq!(
                run64(&mut d, OP, &[cmd.into(), p]),
                err(Errno::EFAULT),
                "cmd {cmd} {p:#x}"
            );
        }
        assert_eq!(
            run32(&mut d, OP, &[cmd.into(), 0xffff_fffe]),
            err(Errno::EFAULT),
            "cmd {cmd}"
        );
    }
    assert!(d.calls.is_empty());
}

#[test]
fn compat_hypercall_routes_the_union() {
    for width in WIDTHS {
        let mut d = domu();
        let mut op = EvtchnOp {
            cmd: EVTCHNOP_BIND_VIRQ,
            u: [0; 24],
        };
        op.u[..12].copy_from_slice(&virq(VIRQ_TIMER, 1).to_bytes());
        d.poke(ARG, &op.to_bytes());
        assert_eq!(
            run(&mut d, width, nr::EVENT_CHANNEL_OP_COMPAT, &[ARG]),
            ok()
        );
        assert_eq!(
            d.peek(ARG + 4, 12),
            EvtchnBindVirq {
                port: 1,
                ..virq(VIRQ_TIMER, 1)
            }
            .to_bytes()
        );
        assert_eq!(d.peek(ARG, 4), EVTCHNOP_BIND_VIRQ.to_le_bytes());

        // Status through the union: 24 bytes at offset 4.
        op.cmd = EVTCHNOP_STATUS;
        op.u = [0; 24];
        op.u[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
        op.u[4..8].copy_from_slice(&1u32.to_le_bytes());
        d.poke(ARG, &op.to_bytes());
        assert_eq!(
            run(&mut d, width, nr::EVENT_CHANNEL_OP_COMPAT, &[ARG]),
            ok()
        );
        let st = EvtchnStatus::from_bytes(d.peek(ARG + 4, 24).try_into().unwrap());
        assert_eq!(
            (st.status, st.vcpu, st.irq()),
            (EVTCHNSTAT_VIRQ, 1, VIRQ_TIMER)
        );
    }
}

#[test]
fn compat_hypercall_checks() {
    let mut d = dom0();
    // Xen reads the whole 28-byte evtchn_op first, whatever the command.
    d.poke(
        ARG,
        &EvtchnOp {
            cmd: EVTCHNOP_SEND,
            u: [0; 24],
        }
        .to_bytes(),
    );
    d.faults.push(ARG + 27..ARG + 28);
    assert_eq!(
        run64(&mut d, nr::EVENT_CHANNEL_OP_COMPAT, &[ARG]),
        err(Errno::EFAULT)
    );
    d.faults.clear();
    assert_eq!(
        run64(&mut d, nr::EVENT_CHANNEL_OP_COMPAT, &[ARG]),
        err(Errno::EINVAL)
    );
    assert_eq!(d.calls, ["evtchn_send(0)"]);
    // Only the ten original commands are routed.
    for cmd in [
        EVTCHNOP_RESET,
        EVTCHNOP_INIT_CONTROL,
        EVTCHNOP_RESET_CONT,
        99,
    ] {
        d.poke(ARG, &EvtchnOp { cmd, u: [0; 24] }.to_bytes());
        assert_eq!(
            run64(&mut d, nr::EVENT_CHANNEL_OP_COMPAT, &[ARG]),
            err(Errno::ENOSYS)
        );
    }
    assert_eq!(
        run32(&mut d, nr::EVENT_CHANNEL_OP_COMPAT, &[0xffff_fff0]),
        err(Errno::EFAULT)
    );
    assert_eq!(d.calls.len(), 1);
}
