//! `memory_op`: reservations, the reservation queries, and grant-table
//! frames in the physmap.

use super::*;

const LIST: u64 = BUF;

fn rsv(nr_extents: u64, extent_order: u32, mem_flags: u32, domid: u16) -> XenMemoryReservation {
    XenMemoryReservation {
        extent_start: LIST,
        nr_extents,
        extent_order,
        mem_flags,
        domid,
        pad: [0; 3],
    }
}

/// Plants the reservation and a list of gfns in the caller's layout.
fn plant(d: &mut FakeDomain, width: GuestWidth, r: XenMemoryReservation, gfns: &[u64]) {
    match width {
        GuestWidth::Bits64 => {
            d.poke(ARG, &r.to_bytes());
            let b: Vec<u8> = gfns.iter().flat_map(|g| g.to_le_bytes()).collect();
            d.poke(r.extent_start, &b);
        }
        GuestWidth::Bits32 => {
            let c = XenMemoryReservationCompat {
                extent_start: r.extent_start as u32,
                nr_extents: r.nr_extents as u32,
                extent_order: r.extent_order,
                mem_flags: r.mem_flags,
                domid: r.domid,
                pad: 0,
            };
            d.poke(ARG, &c.to_bytes());
            let b: Vec<u8> = gfns
                .iter()
                .flat_map(|&g| (g as u32).to_le_bytes())
                .collect();
            d.poke(r.extent_start, &b);
        }
    }
}

fn gfns(n: u64, order: u32) -> Vec<u64> {
    (0..n).map(|i| 0x1_0000 + (i << order)).collect()
}

#[test]
fn populate_and_decrease_both_widths() {
    for width in WIDTHS {
        for op in [XENMEM_POPULATE_PHYSMAP, XENMEM_DECREASE_RESERVATION] {
            let mut d = domu();
            plant(&mut d, width, rsv(3, 9, 0, DOMID_SELF), &gfns(3, 9));
            let before = d.peek(LIST, 24).to_vec();
            assert_eq!(
                run(&mut d, width, nr::MEMORY_OP, &[op.into(), ARG]),
                Outcome::ret(3)
            );
            let done = if op == XENMEM_POPULATE_PHYSMAP {
                &d.populated
            } else {
                &d.decreased
            };
            assert_eq!(
                *done,
                [(3, 0x1_0000, 9), (3, 0x1_0200, 9), (3, 0x1_0400, 9)]
            );
            assert_eq!(
                d.peek(LIST, 24),
                before,
                "a translated guest's list is not written"
            );
        }
    }
}

#[test]
fn an_error_stops_at_that_extent() {
    for op in [XENMEM_POPULATE_PHYSMAP, XENMEM_DECREASE_RESERVATION] {
        let mut d = domu();
        d.fail_gfn = Some(0x1_0002);
        plant(
            &mut d,
            GuestWidth::Bits64,
            rsv(5, 0, 0, DOMID_SELF),
            &gfns(5, 0),
        );
        assert_eq!(
            run64(&mut d, nr::MEMORY_OP, &[op.into(), ARG]),
            Outcome::ret(2)
        );
        // So does a fault in the list.
        let mut d = domu();
        plant(
            &mut d,
            GuestWidth::Bits32,
            rsv(5, 0, 0, DOMID_SELF),
            &gfns(5, 0),
        );
        d.faults.push(LIST + 13..LIST + 14);
        assert_eq!(
            run32(&mut d, nr::MEMORY_OP, &[op.into(), ARG]),
            Outcome::ret(3)
        );
    }
}

#[test]
fn populate_preempts_with_xens_encoding() {
    for width in WIDTHS {
        let mut d = domu();
        let n = 10_000u64;
        plant(&mut d, width, rsv(n, 0, 0, DOMID_SELF), &gfns(n, 0));
        let mut c = call(width, nr::MEMORY_OP, &[6, ARG, 0x77, 0x88]);
        let mut entries = 0;
        let o = loop {
            entries += 1;
            let o = dispatch(&mut d, &c);
            let Action::Preempted { args } = o.action else {
                break o;
            };
            let done = MEMOP_PAGE_BUDGET * entries;
            assert_eq!(args[0], 6 | done << MEMOP_EXTENT_SHIFT);
            assert_eq!(args[1..4], [ARG, 0x77, 0x88], "other registers kept");
            assert_eq!(d.populated.len() as u64, done);
            c.args = args;
        };
        assert_eq!(o, Outcome::ret(n as i64));
        assert_eq!(entries, 3);
        assert_eq!(d.populated.len() as u64, n);
        assert!(
            d.populated
                .iter()
                .enumerate()
                .all(|(i, p)| *p == (3, 0x1_0000 + i as u64, 0))
        );
    }
}

#[test]
fn preemption_counts_pages_and_does_one_extent_at_least() {
    let mut d = dom0();
    plant(
        &mut d,
        GuestWidth::Bits64,
        rsv(20, 9, 0, DOMID_SELF),
        &gfns(20, 9),
    );
    let o = run64(&mut d, nr::MEMORY_OP, &[1, ARG]);
    // 4096 pages are 8 extents of 512.
    assert_eq!(
        o.action,
        Action::Preempted {
            args: [1 | 8 << 6, ARG, 0, 0, 0, 0]
        }
    );
    let mut d = dom0();
    plant(
        &mut d,
        GuestWidth::Bits64,
        rsv(3, 18, 0, DOMID_SELF),
        &gfns(3, 18),
    );
    let o = run64(&mut d, nr::MEMORY_OP, &[6 | 1 << 6, ARG]);
    assert_eq!(
        o.action,
        Action::Preempted {
            args: [6 | 2 << 6, ARG, 0, 0, 0, 0]
        }
    );
    assert_eq!(d.populated, [(0, 0x1_0000 + (1 << 18), 18)]);
}

#[test]
fn start_extent_and_count_limits() {
    let mut d = domu();
    plant(
        &mut d,
        GuestWidth::Bits64,
        rsv(4, 0, 0, DOMID_SELF),
        &gfns(4, 0),
    );
    // A continuation starts where it left off.
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[6 | 2 << 6, ARG]),
        Outcome::ret(4)
    );
    assert_eq!(d.populated, [(3, 0x1_0002, 0), (3, 0x1_0003, 0)]);
    // At or past the end: nothing, the start extent back.
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[6 | 4 << 6, ARG]),
        Outcome::ret(4)
    );
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[6 | 9 << 6, ARG]),
        Outcome::ret(9)
    );
    // More extents than a continuation could encode.
    plant(
        &mut d,
        GuestWidth::Bits64,
        rsv(1 << 26, 0, 0, DOMID_SELF),
        &[1],
    );
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[6, ARG]), Outcome::ret(0));
    plant(
        &mut d,
        GuestWidth::Bits64,
        rsv(u64::MAX, 0, 0, DOMID_SELF),
        &[1],
    );
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[6 | 1 << 6, ARG]),
        Outcome::ret(1)
    );
    // An unreadable header: the start extent, never an errno.
    for p in [0, END - 8, u64::MAX] {
        assert_eq!(
            run64(&mut d, nr::MEMORY_OP, &[6 | 5 << 6, p]),
            Outcome::ret(5)
        );
    }
    assert_eq!(d.populated.len(), 2);
}

#[test]
fn extent_order_limits_follow_the_caller() {
    for (mut d, max) in [(domu(), 9), (dom0(), 18)] {
        for order in [max, max + 1, 31, 32, u32::MAX] {
            plant(
                &mut d,
                GuestWidth::Bits64,
                rsv(1, order, 0, DOMID_SELF),
                &[0],
            );
            let want = i64::from(order == max);
            assert_eq!(
                run64(&mut d, nr::MEMORY_OP, &[6, ARG]).ret,
                want,
                "order {order}"
            );
            assert_eq!(
                run64(&mut d, nr::MEMORY_OP, &[1, ARG]).ret,
                want,
                "order {order}"
            );
        }
    }
}

#[test]
fn reservation_domain_policy() {
    // Unprivileged: itself only.
    let mut d = domu();
    for domid in [0u16, 4, 9, DOMID_IO] {
        plant(&mut d, GuestWidth::Bits64, rsv(2, 0, 0, domid), &[1, 2]);
        assert_eq!(run64(&mut d, nr::MEMORY_OP, &[6, ARG]), Outcome::ret(0));
    }
    plant(&mut d, GuestWidth::Bits64, rsv(2, 0, 0, 3), &[1, 2]);
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[6, ARG]), Outcome::ret(2));
    // Privileged: any existing domain.
    let mut d = dom0();
    plant(&mut d, GuestWidth::Bits32, rsv(1, 0, 0, 4), &[7]);
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[1, ARG]), Outcome::ret(1));
    assert_eq!(d.decreased, [(4, 7, 0)]);
    plant(&mut d, GuestWidth::Bits32, rsv(1, 0, 0, 9), &[7]);
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[1, ARG]), Outcome::ret(0));
}

#[test]
fn mem_flags_as_xen_checks_them() {
    let cases = [
        (xenmemf_node(0), true, true),
        (12, false, false),
        (1, false, false),
        (13, true, true),
        (32, true, true),
        (XENMEMF_POPULATE_ON_DEMAND, false, false),
        (xenmemf_node(3), true, true),
        (xenmemf_node(3) | XENMEMF_EXACT_NODE_REQUEST, false, true),
        (xenmemf_node(63) | XENMEMF_EXACT_NODE_REQUEST, false, true),
        (xenmemf_node(64), true, false),
        (xenmemf_node(64) | XENMEMF_VNODE, true, true),
        (XENMEMF_EXACT_NODE_REQUEST, true, true),
    ];
    for (flags, domu_ok, dom0_ok) in cases {
        for (mut d, want) in [(domu(), domu_ok), (dom0(), dom0_ok)] {
            plant(
                &mut d,
                GuestWidth::Bits64,
                rsv(1, 0, flags, DOMID_SELF),
                &[5],
            );
            let o = run64(&mut d, nr::MEMORY_OP, &[6, ARG]);
            assert_eq!(o.ret, i64::from(want), "flags {flags:#x}");
        }
    }
    // populate-on-demand only concerns populate.
    let mut d = domu();
    plant(
        &mut d,
        GuestWidth::Bits64,
        rsv(1, 0, XENMEMF_POPULATE_ON_DEMAND, DOMID_SELF),
        &[5],
    );
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[1, ARG]), Outcome::ret(1));
}

#[test]
fn the_extent_list_must_fit_the_address_space() {
    let mut d = domu();
    let c = XenMemoryReservationCompat {
        extent_start: 0xffff_fffc,
        nr_extents: 2,
        extent_order: 0,
        mem_flags: 0,
        domid: DOMID_SELF,
        pad: 0,
    };
    d.poke(ARG, &c.to_bytes());
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[6, ARG]), Outcome::ret(0));
    let r = XenMemoryReservation {
        extent_start: u64::MAX - 7,
        ..rsv(2, 0, 0, DOMID_SELF)
    };
    d.poke(ARG, &r.to_bytes());
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[6, ARG]), Outcome::ret(0));
    assert!(d.populated.is_empty());
}

#[test]
fn maximum_ram_page() {
    let mut d = domu();
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[2, 0]),
        Outcome::ret(0x12_3456)
    );
    assert_eq!(
        run32(&mut d, nr::MEMORY_OP, &[2, 0]),
        Outcome::ret(0x12_3456)
    );
    assert_eq!(
        run64(&mut d, nr::MEMORY_OP, &[2 | 1 << 6, 0]),
        err(Errno::EINVAL)
    );
}

#[test]
fn current_and_maximum_reservation() {
    for width in WIDTHS {
        let mut d = domu();
        for (op, base) in [
            (XENMEM_CURRENT_RESERVATION, d.tot_pages),
            (XENMEM_MAXIMUM_RESERVATION, d.max_pages),
        ] {
            for (domid, want) in [
                (DOMID_SELF, Ok(base + 3)),
                (3, Ok(base + 3)),
                (0, Err(Errno::EPERM)),
                (9, Err(Errno::ESRCH)),
                (DOMID_XEN, Err(Errno::ESRCH)),
            ] {
                d.poke(ARG, &XenMemoryDomain { domid }.to_bytes());
                let o = run(&mut d, width, nr::MEMORY_OP, &[op.into(), ARG]);
                assert_eq!(
                    o,
                    Outcome::from_result(want.map(|v| v as i64)),
                    "op {op} dom {domid}"
                );
            }
            // Two bytes are read.
            d.faults.push(ARG + 2..ARG + 3);
            d.poke(ARG, &XenMemoryDomain { domid: DOMID_SELF }.to_bytes());
            assert_eq!(
                run(&mut d, width, nr::MEMORY_OP, &[op.into(), ARG]).ret,
                (base + 3) as i64
            );
            d.faults.clear();
            assert_eq!(
                run(&mut d, width, nr::MEMORY_OP, &[op.into(), END - 1]),
                err(Errno::EFAULT)
            );
            assert_eq!(
                run(&mut d, width, nr::MEMORY_OP, &[u64::from(op) | 1 << 6, ARG]),
                err(Errno::EINVAL)
            );
        }
        let mut d = dom0();
        d.poke(ARG, &XenMemoryDomain { domid: 4 }.to_bytes());
        assert_eq!(
            run(&mut d, width, nr::MEMORY_OP, &[3, ARG]).ret,
            (d.tot_pages + 4) as i64
        );
    }
}

#[test]
fn add_to_physmap_grant_table() {
    let mut d = domu();
    let x = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: 3,
        gpfn: 0xf_0003,
    };
    d.poke(ARG, &x.to_bytes());
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), ok());
    let c = XenAddToPhysmapCompat {
        domid: 3,
        size: 0,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: 0,
        gpfn: 0xf_0000,
    };
    d.poke(ARG, &c.to_bytes());
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[7, ARG]), ok());
    assert_eq!(d.grant_frames, [(3, 0xf_0003), (0, 0xf_0000)]);
    assert_eq!(d.gnt_nr_frames, 4);
    // Beyond the table's maximum: the domain's -EINVAL.
    d.poke(ARG, &XenAddToPhysmap { idx: 64, ..x }.to_bytes());
    assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), err(Errno::EINVAL));
    // A status frame: the domain's, the flag taken off; in version 1 its
    // -EINVAL.
    d.poke(
        ARG,
        &XenAddToPhysmapCompat {
            idx: 0x8000_0000,
            ..c
        }
        .to_bytes(),
    );
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[7, ARG]), err(Errno::EINVAL));
    assert_eq!(d.calls, ["map_grant_status_frame(0, 0xf0000)"]);
    d.gnt_version = 2;
    assert_eq!(run32(&mut d, nr::MEMORY_OP, &[7, ARG]), ok());
    // Native: bit 31 of the 64-bit index; one status frame for 4 table
    // frames, so frame 1 is missing.
    for (idx, want) in [
        (0x8000_0000, ok()),
        (0x8000_0001, err(Errno::EINVAL)),
        (1 << 32 | 0x8000_0000, err(Errno::EINVAL)),
    ] {
        d.poke(ARG, &XenAddToPhysmap { idx, ..x }.to_bytes());
        assert_eq!(run64(&mut d, nr::MEMORY_OP, &[7, ARG]), want, "{idx:#x}");
    }
    assert_eq!(d.status_frames_mapped, [(0, 0xf_0000), (0, 0xf_0003)]);
    assert_eq!(d.grant_frames.len(), 2);
}
