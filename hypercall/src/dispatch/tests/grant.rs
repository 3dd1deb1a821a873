//! `grant_table_op`.

use super::*;
use crate::abi::grant_table::*;

const OP: u32 = nr::GRANT_TABLE_OP;
const LIST: u64 = BUF;

fn map(dom: u16, ref_: u32, flags: u32) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr: 0x8_0000_0000 + u64::from(ref_) * 4096,
        flags,
        ref_,
        dom,
        status: 0x5a5a,
        handle: 0xeeee_eeee,
        dev_bus_addr: 0x1111,
    }
}

fn map_at(d: &FakeDomain, i: u64) -> GnttabMapGrantRef {
    GnttabMapGrantRef::from_bytes(d.peek(ARG + i * 32, 32).try_into().unwrap())
}

#[test]
fn unknown_commands_and_bad_counts() {
    let mut d = dom0();
    for cmd in [
        GNTTABOP_DUMP_TABLE,
        // Xen's HVM filter: these "need auditing".
        GNTTABOP_TRANSFER,
        GNTTABOP_UNMAP_AND_REPLACE,
        GNTTABOP_GET_STATUS_FRAMES,
        GNTTABOP_CACHE_FLUSH,
        13,
        // Continuation bits from the guest: not a command an HVM guest has.
        GNTTABOP_MAP_GRANT_REF | 1 << GNTTABOP_CONTINUATION_ARG_SHIFT,
        GNTTABOP_COPY | 0x8000_0000,
        GNTTABOP_CACHE_FLUSH | 1 << GNTTABOP_CONTINUATION_ARG_SHIFT,
    ] {
        assert_eq!(
            run64(&mut d, OP, &[cmd.into(), ARG, 1]),
            err(Errno::ENOSYS),
            "cmd {cmd:#x}"
        );
    }
    for cmd in [0u64, 1, 2, 5, 6, 8, 10, 11] {
        for count in [0x8000_0000u64, u64::from(u32::MAX)] {
            assert_eq!(
                run64(&mut d, OP, &[cmd, ARG, count]),
                err(Errno::EINVAL),
                "cmd {cmd}"
            );
        }
        // `unsigned int count`: only the low 32 bits.
        assert_eq!(
            run64(&mut d, OP, &[cmd, ARG, 1 << 32 | 0x8000_0000]),
            err(Errno::EINVAL)
        );
    }
    assert!(d.calls.is_empty());
}

#[test]
fn map_grant_ref_results() {
    for width in WIDTHS {
        let mut d = domu();
        let entries = [
            map(0, 5, GNTMAP_HOST_MAP),
            map(0, 6, GNTMAP_HOST_MAP | GNTMAP_READONLY),
            map(0, 99, GNTMAP_HOST_MAP),
            map(0, 5, GNTMAP_READONLY),
            map(0, 5, GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP),
            map(0, 5, GNTMAP_HOST_MAP | GNTMAP_APPLICATION_MAP),
            map(0, 5, GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE),
            map(DOMID_SELF, 5, GNTMAP_HOST_MAP),
            map(9, 5, GNTMAP_HOST_MAP),
            map(3, 7, GNTMAP_HOST_MAP),
        ];
        let bytes: Vec<u8> = entries.iter().flat_map(|m| m.to_bytes()).collect();
        d.poke(ARG, &bytes);
        assert_eq!(
            run(&mut d, width, OP, &[0, ARG, entries.len() as u64]),
            ok()
        );
        let want_status = [
            GNTST_OKAY,
            GNTST_OKAY,
            GNTST_BAD_GNTREF,
            GNTST_BAD_GNTREF,
            GNTST_GENERAL_ERROR,
            GNTST_GENERAL_ERROR,
            GNTST_GENERAL_ERROR,
            GNTST_BAD_DOMAIN,
            GNTST_BAD_DOMAIN,
            GNTST_OKAY,
        ];
        for (i, (m, st)) in entries.iter().zip(want_status).enumerate() {
            let out = map_at(&d, i as u64);
            if st == GNTST_OKAY {
                assert_eq!(out.status, GNTST_OKAY, "entry {i}");
                assert_eq!(out.dev_bus_addr, 0xabc_0000 + u64::from(m.ref_) * 4096);
            } else {
                // Only the status changes on failure.
                assert_eq!(out, GnttabMapGrantRef { status: st, ..*m }, "entry {i}");
            }
        }
        assert_eq!(
            (
                map_at(&d, 0).handle,
                map_at(&d, 1).handle,
                map_at(&d, 9).handle
            ),
            (0, 1, 2)
        );
        assert_eq!(
            d.calls,
            [
                "gnttab_map_grant_ref(0, 5, 0x2, 0x800005000)",
                "gnttab_map_grant_ref(0, 6, 0x6, 0x800006000)",
                "gnttab_map_grant_ref(0, 99, 0x2, 0x800063000)",
                "gnttab_map_grant_ref(3, 7, 0x2, 0x800007000)",
            ]
        );
        assert_eq!(d.peek(ARG + 10 * 32, 1), [0xAA]);
    }
}

#[test]
fn unmap_writes_only_the_status() {
    let mut d = domu();
    d.poke(ARG, &map(0, 5, GNTMAP_HOST_MAP).to_bytes());
    assert_eq!(run64(&mut d, OP, &[0, ARG, 1]), ok());
    let entries = [
        GnttabUnmapGrantRef {
            host_addr: 0x8_0000_5000,
            dev_bus_addr: 0,
            handle: 0,
            status: 0x7777,
            pad: 0x6666,
        },
        GnttabUnmapGrantRef {
            host_addr: 0,
            dev_bus_addr: 0,
            handle: 0,
            status: 0x7777,
            pad: 0x6666,
        },
        GnttabUnmapGrantRef {
            host_addr: 0,
            dev_bus_addr: 0,
            handle: 0x100,
            status: 0x7777,
            pad: 0x6666,
        },
    ];
    let bytes: Vec<u8> = entries.iter().flat_map(|m| m.to_bytes()).collect();
    d.poke(BUF, &bytes);
    assert_eq!(run32(&mut d, OP, &[1, BUF, 3]), ok());
    for (i, st) in [GNTST_OKAY, GNTST_BAD_HANDLE, GNTST_BAD_HANDLE]
        .into_iter()
        .enumerate()
    {
        let out =
            GnttabUnmapGrantRef::from_bytes(d.peek(BUF + i as u64 * 24, 24).try_into().unwrap());
        assert_eq!(
            out,
            GnttabUnmapGrantRef {
                status: st,
                ..entries[i]
            }
        );
    }
    // The status can not be written back: -EFAULT, after doing the unmap.
    d.poke(ARG, &map(0, 5, GNTMAP_HOST_MAP).to_bytes());
    assert_eq!(run64(&mut d, OP, &[0, ARG, 1]), ok());
    d.poke(
        BUF,
        &GnttabUnmapGrantRef {
            handle: 1,
            ..entries[1]
        }
        .to_bytes(),
    );
    d.read_only.push(BUF + 20..BUF + 22);
    assert_eq!(run64(&mut d, OP, &[1, BUF, 1]), err(Errno::EFAULT));
    assert_eq!(d.gnt_maps[1], None);
}

fn copy_ptr(u: u64, domid: u16, offset: u16) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u,
        domid,
        offset,
        pad: 0,
    }
}

fn copy(source: GnttabCopyPtr, dest: GnttabCopyPtr, len: u16, flags: u16) -> GnttabCopy {
    GnttabCopy {
        source,
        dest,
        len,
        flags,
        status: 0x5a5a,
        pad: 0x6666,
    }
}

fn plant_copies(d: &mut FakeDomain, width: GuestWidth, ops: &[GnttabCopy]) {
    let bytes: Vec<u8> = match width {
        GuestWidth::Bits64 => ops.iter().flat_map(|c| c.to_bytes()).collect(),
        GuestWidth::Bits32 => ops
            .iter()
            .flat_map(|c| {
                let p = |p: &GnttabCopyPtr| GnttabCopyPtrCompat {
                    u: p.u as u32,
                    domid: p.domid,
                    offset: p.offset,
                };
                GnttabCopyCompat {
                    source: p(&c.source),
                    dest: p(&c.dest),
                    len: c.len,
                    flags: c.flags,
                    status: c.status,
                    pad: c.pad,
                }
                .to_bytes()
            })
            .collect(),
    };
    d.poke(ARG, &bytes);
}

fn copy_status(d: &FakeDomain, width: GuestWidth, i: u64) -> i16 {
    let (size, off) = match width {
        GuestWidth::Bits64 => (40, 36),
        GuestWidth::Bits32 => (24, 20),
    };
    i16::from_le_bytes(d.peek(ARG + i * size + off, 2).try_into().unwrap())
}

#[test]
fn copy_checks_and_results() {
    let both = GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF;
    let ops = [
        // gref 5 of dom 0 to my own frame 0x77.
        copy(
            copy_ptr(5, 0, 16),
            copy_ptr(0x77, DOMID_SELF, 32),
            100,
            GNTCOPY_SOURCE_GREF,
        ),
        // len 0: okay, nothing asked.
        copy(copy_ptr(5, 9, 4000), copy_ptr(0, 9, 4000), 0, both),
        // A frame end must say DOMID_SELF, not the caller's own id.
        copy(
            copy_ptr(0x77, 3, 0),
            copy_ptr(5, 0, 0),
            8,
            GNTCOPY_DEST_GREF,
        ),
        copy(
            copy_ptr(5, 0, 0),
            copy_ptr(0x77, 0, 0),
            8,
            GNTCOPY_SOURCE_GREF,
        ),
        // Grant ends: DOMID_SELF resolved; a missing domain is bad_domain.
        copy(copy_ptr(5, DOMID_SELF, 0), copy_ptr(6, 9, 0), 8, both),
        copy(copy_ptr(5, DOMID_SELF, 0), copy_ptr(6, 4, 0), 8, both),
        // Crossing the page, at either end.
        copy(
            copy_ptr(5, 0, 4000),
            copy_ptr(0x77, DOMID_SELF, 0),
            97,
            GNTCOPY_SOURCE_GREF,
        ),
        copy(
            copy_ptr(5, 0, 0),
            copy_ptr(0x77, DOMID_SELF, 1),
            4096,
            GNTCOPY_SOURCE_GREF,
        ),
        copy(
            copy_ptr(5, 0, 0),
            copy_ptr(0x77, DOMID_SELF, 0),
            4096,
            GNTCOPY_SOURCE_GREF,
        ),
        // The domain's verdict.
        copy(
            copy_ptr(99, 0, 0),
            copy_ptr(0x77, DOMID_SELF, 0),
            1,
            GNTCOPY_SOURCE_GREF,
        ),
    ];
    let want = [
        GNTST_OKAY,
        GNTST_OKAY,
        GNTST_PERMISSION_DENIED,
        GNTST_PERMISSION_DENIED,
        GNTST_BAD_DOMAIN,
        GNTST_OKAY,
        GNTST_BAD_COPY_ARG,
        GNTST_BAD_COPY_ARG,
        GNTST_OKAY,
        GNTST_BAD_GNTREF,
    ];
    for width in WIDTHS {
        let mut d = domu();
        plant_copies(&mut d, width, &ops);
        assert_eq!(run(&mut d, width, OP, &[5, ARG, ops.len() as u64]), ok());
        for (i, st) in want.iter().enumerate() {
            assert_eq!(copy_status(&d, width, i as u64), *st, "{width:?} entry {i}");
        }
        // Only the status: the pad after it is untouched.
        let pad_at = if width == GuestWidth::Bits64 { 38 } else { 22 };
        assert_eq!(d.peek(ARG + pad_at, 2), [0x66, 0x66]);
        assert_eq!(
            d.gnt_copies,
            [
                GnttabCopyOp {
                    source: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gref { domid: 0, gref: 5 },
                        offset: 16
                    },
                    dest: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gmfn(0x77),
                        offset: 32
                    },
                    len: 100
                },
                GnttabCopyOp {
                    source: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gref { domid: 3, gref: 5 },
                        offset: 0
                    },
                    dest: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gref { domid: 4, gref: 6 },
                        offset: 0
                    },
                    len: 8
                },
                GnttabCopyOp {
                    source: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gref { domid: 0, gref: 5 },
                        offset: 0
                    },
                    dest: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gmfn(0x77),
                        offset: 0
                    },
                    len: 4096
                },
                GnttabCopyOp {
                    source: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gref { domid: 0, gref: 99 },
                        offset: 0
                    },
                    dest: GnttabCopyEnd {
                        target: GnttabCopyTarget::Gmfn(0x77),
                        offset: 0
                    },
                    len: 1
                },
            ]
        );
    }
    // A native gmfn is 64 bits, a grant ref the low 32 of the union.
    let mut d = domu();
    plant_copies(
        &mut d,
        GuestWidth::Bits64,
        &[copy(
            copy_ptr(0x1_0000_0005, 0, 0),
            copy_ptr(0x1_0000_0077, DOMID_SELF, 0),
            1,
            GNTCOPY_SOURCE_GREF,
        )],
    );
    assert_eq!(run64(&mut d, OP, &[5, ARG, 1]), ok());
    assert_eq!(
        d.gnt_copies[0].source.target,
        GnttabCopyTarget::Gref { domid: 0, gref: 5 }
    );
    assert_eq!(
        d.gnt_copies[0].dest.target,
        GnttabCopyTarget::Gmfn(0x1_0000_0077)
    );
}

#[test]
fn batches_preempt_and_resume() {
    for width in WIDTHS {
        // map: 32-byte entries in both widths.
        let mut d = domu();
        let n = 150u64;
        let bytes: Vec<u8> = (0..n)
            .flat_map(|i| map(0, (i % 8) as u32, GNTMAP_HOST_MAP).to_bytes())
            .collect();
        d.poke(ARG, &bytes);
        let mut c = call(width, OP, &[0, ARG, n, 0x44]);
        let mut done = 0u64;
        loop {
            let o = dispatch(&mut d, &c);
            let Action::Preempted { args } = o.action else {
                assert_eq!(o, ok());
                break;
            };
            done += u64::from(GNTTAB_OP_BUDGET);
            assert_eq!(args, [0, ARG + done * 32, n - done, 0x44, 0, 0]);
            assert_eq!(d.gnt_maps.len() as u64, done);
            c.args = args;
        }
        assert_eq!(done, 128);
        assert_eq!(d.gnt_maps.len() as u64, n);
        assert!((0..n).all(|i| map_at(&d, i).handle == i as u32));

        // copy: the entry size follows the width.
        let mut d = domu();
        let op = copy(
            copy_ptr(1, 0, 0),
            copy_ptr(2, DOMID_SELF, 0),
            1,
            GNTCOPY_SOURCE_GREF,
        );
        plant_copies(&mut d, width, &vec![op; 100]);
        let o = run(&mut d, width, OP, &[5, ARG, 100]);
        let size = if width == GuestWidth::Bits64 { 40 } else { 24 };
        assert_eq!(
            o.action,
            Action::Preempted {
                args: [5, ARG + 64 * size, 36, 0, 0, 0]
            }
        );
        assert_eq!(d.gnt_copies.len(), 64);
    }
}

#[test]
fn batches_fault_part_way() {
    let mut d = domu();
    let bytes: Vec<u8> = (0..4)
        .flat_map(|i| map(0, i, GNTMAP_HOST_MAP).to_bytes())
        .collect();
    d.poke(ARG, &bytes);
    d.faults.push(ARG + 2 * 32 + 5..ARG + 2 * 32 + 6);
    assert_eq!(run64(&mut d, OP, &[0, ARG, 4]), err(Errno::EFAULT));
    assert_eq!(d.gnt_maps.len(), 2, "the entries before stay done");
    // A huge count runs into the end of memory well before its end, within
    // one budget, or preempts first.
    let mut d = domu();
    let o = run64(&mut d, OP, &[1, END - 24 * 3, 0x7fff_ffff]);
    assert_eq!(o, err(Errno::EFAULT));
    for p in [0, u64::MAX - 8] {
        for cmd in [0u64, 1, 5] {
            assert_eq!(run64(&mut d, OP, &[cmd, p, 2]), err(Errno::EFAULT));
        }
    }
    // A 32-bit caller's array may not wrap past 4 GiB.
    assert_eq!(run32(&mut d, OP, &[1, 0xffff_fff0, 1]), err(Errno::EFAULT));
    // count 0 touches nothing.
    assert_eq!(run64(&mut d, OP, &[0, 0, 0]), ok());
}

fn setup(dom: u16, nr_frames: u32) -> GnttabSetupTable {
    GnttabSetupTable {
        dom,
        pad0: 0,
        nr_frames,
        status: 0x5a5a,
        pad1: [0; 3],
        frame_list: LIST,
    }
}

fn plant_setup(d: &mut FakeDomain, width: GuestWidth, s: GnttabSetupTable) {
    match width {
        GuestWidth::Bits64 => d.poke(ARG, &s.to_bytes()),
        GuestWidth::Bits32 => d.poke(
            ARG,
            &GnttabSetupTableCompat {
                dom: s.dom,
                pad0: 0,
                nr_frames: s.nr_frames,
                status: s.status,
                pad1: 0,
                frame_list: s.frame_list as u32,
            }
            .to_bytes(),
        ),
    }
}

fn setup_status(d: &FakeDomain) -> i16 {
    i16::from_le_bytes(d.peek(ARG + 8, 2).try_into().unwrap())
}

#[test]
fn setup_table_both_widths() {
    for width in WIDTHS {
        let mut d = domu();
        plant_setup(&mut d, width, setup(DOMID_SELF, 3));
        assert_eq!(run(&mut d, width, OP, &[2, ARG, 1]), ok());
        assert_eq!(setup_status(&d), GNTST_OKAY);
        assert_eq!(d.calls, ["gnttab_setup_table(3, 3)"]);
        let esz = if width == GuestWidth::Bits64 { 8 } else { 4 };
        for i in 0..3u64 {
            let b = d.peek(LIST + i * esz, esz as usize);
            let mut w = [0u8; 8];
            w[..esz as usize].copy_from_slice(b);
            assert_eq!(u64::from_le_bytes(w), 0xf_0000 + i);
        }
        assert_eq!(d.peek(LIST + 3 * esz, 1), [0xAA]);
        assert_eq!(
            d.peek(ARG + 10, 2),
            [0, 0],
            "the rest of the header unchanged"
        );
    }
}

#[test]
fn setup_table_statuses_and_errors() {
    let cases = [
        (false, setup(0, 1), GNTST_PERMISSION_DENIED),
        (false, setup(9, 1), GNTST_BAD_DOMAIN),
        (false, setup(DOMID_IO, 1), GNTST_BAD_DOMAIN),
        (false, setup(DOMID_SELF, 65), GNTST_GENERAL_ERROR),
        (true, setup(3, 2), GNTST_OKAY),
        // Frames above 4 GiB fit a native list only.
        (true, setup(4, 2), GNTST_OKAY),
    ];
    for (privileged, s, st) in cases {
        for width in WIDTHS {
            let mut d = if privileged { dom0() } else { domu() };
            plant_setup(&mut d, width, s);
            assert_eq!(run(&mut d, width, OP, &[2, ARG, 1]), ok());
            let want = if s.dom == 4 && width == GuestWidth::Bits32 {
                GNTST_ADDRESS_TOO_BIG
            } else {
                st
            };
            assert_eq!(setup_status(&d), want, "{s:?} {width:?}");
        }
    }
    // A fault in the list: bad_virt_addr, in the status.
    let mut d = domu();
    plant_setup(&mut d, GuestWidth::Bits64, setup(DOMID_SELF, 2));
    d.faults.push(LIST + 8..LIST + 9);
    assert_eq!(run64(&mut d, nr::GRANT_TABLE_OP, &[2, ARG, 1]), ok());
    assert_eq!(setup_status(&d), GNTST_BAD_VIRT_ADDR);
    // Errors of the call itself.
    assert_eq!(run64(&mut d, OP, &[2, ARG, 0]), err(Errno::EINVAL));
    assert_eq!(run64(&mut d, OP, &[2, ARG, 2]), err(Errno::EINVAL));
    assert_eq!(run64(&mut d, OP, &[2, END - 8, 1]), err(Errno::EFAULT));
    plant_setup(
        &mut d,
        GuestWidth::Bits32,
        GnttabSetupTable {
            frame_list: 0xffff_fffc,
            ..setup(DOMID_SELF, 2)
        },
    );
    assert_eq!(run32(&mut d, OP, &[2, ARG, 1]), err(Errno::EFAULT));
    plant_setup(&mut d, GuestWidth::Bits64, setup(DOMID_SELF, 1));
    d.read_only.push(ARG + 8..ARG + 10);
    assert_eq!(run64(&mut d, OP, &[2, ARG, 1]), err(Errno::EFAULT));
    // The compat translation limit.
    let mut d = domu();
    d.gnt_max_frames = 2000;
    plant_setup(&mut d, GuestWidth::Bits32, setup(DOMID_SELF, 1022));
    assert_eq!(run32(&mut d, OP, &[2, ARG, 1]), ok());
    assert_eq!(setup_status(&d), GNTST_GENERAL_ERROR);
    assert!(d.calls.is_empty());
}

#[test]
fn query_size() {
    for width in WIDTHS {
        let mut d = domu();
        let q = GnttabQuerySize {
            dom: DOMID_SELF,
            pad0: 0x1111,
            nr_frames: 0,
            max_nr_frames: 0,
            status: 0x5a5a,
            pad1: 0x2222,
        };
        d.poke(ARG, &q.to_bytes());
        assert_eq!(run(&mut d, width, OP, &[6, ARG, 1]), ok());
        assert_eq!(
            GnttabQuerySize::from_bytes(d.peek(ARG, 16).try_into().unwrap()),
            GnttabQuerySize {
                nr_frames: 1,
                max_nr_frames: 64,
                status: GNTST_OKAY,
                ..q
            }
        );
        for (dom, st) in [(0u16, GNTST_PERMISSION_DENIED), (9, GNTST_BAD_DOMAIN)] {
            d.poke(ARG, &GnttabQuerySize { dom, ..q }.to_bytes());
            assert_eq!(run(&mut d, width, OP, &[6, ARG, 1]), ok());
            assert_eq!(
                GnttabQuerySize::from_bytes(d.peek(ARG, 16).try_into().unwrap()),
                GnttabQuerySize {
                    dom,
                    status: st,
                    ..q
                }
            );
        }
        assert_eq!(run(&mut d, width, OP, &[6, ARG, 2]), err(Errno::EINVAL));
        assert_eq!(
            run(&mut d, width, OP, &[6, END - 15, 1]),
            err(Errno::EFAULT)
        );
    }
}

#[test]
fn set_and_get_version() {
    let mut d = domu();
    let set = |d: &mut FakeDomain, v: u32| {
        d.poke(ARG, &GnttabSetVersion { version: v }.to_bytes());
        // `count` is not looked at.
        let o = run64(d, OP, &[8, ARG, 7]);
        (o, u32::from_le_bytes(d.peek(ARG, 4).try_into().unwrap()))
    };
    // Anything but 1 and 2 is the dispatcher's -EINVAL; the version in
    // effect is written back whatever the result.
    for v in [0, 3, u32::MAX] {
        assert_eq!(set(&mut d, v), (err(Errno::EINVAL), 1), "version {v}");
    }
    assert!(d.calls.is_empty());
    assert_eq!(set(&mut d, 1), (ok(), 1));
    assert_eq!(set(&mut d, 2), (ok(), 2));
    assert_eq!(set(&mut d, 0), (err(Errno::EINVAL), 2));
    d.gnt_busy = true;
    assert_eq!(set(&mut d, 1), (err(Errno::EBUSY), 2));
    assert_eq!(
        d.calls,
        [
            "gnttab_set_version(1)",
            "gnttab_set_version(2)",
            "gnttab_set_version(1)"
        ]
    );
    // A domain that may only have version 1.
    let mut d = domu();
    d.gnt_max_version = 1;
    assert_eq!(set(&mut d, 2), (err(Errno::ENOSYS), 1));
    d.read_only.push(ARG..ARG + 4);
    assert_eq!(run64(&mut d, OP, &[8, ARG, 1]), err(Errno::EFAULT));
    assert_eq!(run64(&mut d, OP, &[8, END - 3, 1]), err(Errno::EFAULT));

    let mut d = domu();
    d.gnt_version = 2;
    for (dom, want) in [
        (DOMID_SELF, ok()),
        (3, ok()),
        (0, err(Errno::EPERM)),
        (9, err(Errno::ESRCH)),
    ] {
        d.poke(
            ARG,
            &GnttabGetVersion {
                dom,
                pad: 0x7777,
                version: 0xdead,
            }
            .to_bytes(),
        );
        assert_eq!(run32(&mut d, OP, &[10, ARG, 0]), want, "dom {dom}");
        let v = if want == ok() { 2u32 } else { 0xdead };
        assert_eq!(
            d.peek(ARG, 8),
            GnttabGetVersion {
                dom,
                pad: 0x7777,
                version: v
            }
            .to_bytes()
        );
    }
    let mut d = dom0();
    d.poke(
        ARG,
        &GnttabGetVersion {
            dom: 3,
            pad: 0,
            version: 0,
        }
        .to_bytes(),
    );
    assert_eq!(run64(&mut d, OP, &[10, ARG, 1]), ok());
    assert_eq!(d.peek(ARG + 4, 4), 1u32.to_le_bytes());
    assert_eq!(run64(&mut d, OP, &[10, END - 7, 1]), err(Errno::EFAULT));
}

fn swap(ref_a: u32, ref_b: u32) -> GnttabSwapGrantRef {
    GnttabSwapGrantRef {
        ref_a,
        ref_b,
        status: 0x5a5a,
        pad: 0x6666,
    }
}

#[test]
fn swap_grant_ref_results() {
    for width in WIDTHS {
        let mut d = domu();
        let entries = [
            swap(1, 2),
            swap(99, 2),
            swap(1, 99),
            swap(3, 3),
            swap(5, 1),
            swap(1, 5),
        ];
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_bytes()).collect();
        d.poke(ARG, &bytes);
        assert_eq!(run(&mut d, width, OP, &[11, ARG, 6]), ok());
        let want = [
            GNTST_OKAY,
            GNTST_BAD_GNTREF,
            GNTST_BAD_GNTREF,
            GNTST_OKAY,
            GNTST_EAGAIN,
            GNTST_EAGAIN,
        ];
        for (i, st) in want.into_iter().enumerate() {
            let out =
                GnttabSwapGrantRef::from_bytes(d.peek(ARG + i as u64 * 12, 12).try_into().unwrap());
            // Only the status: the pad after it is untouched.
            assert_eq!(
                out,
                GnttabSwapGrantRef {
                    status: st,
                    ..entries[i]
                },
                "{width:?} {i}"
            );
        }
        assert_eq!(d.calls.len(), 6);
        assert_eq!(d.calls[0], "gnttab_swap_grant_ref(1, 2)");
    }
    // Batches preempt as the others do; a fault ends the call.
    let mut d = domu();
    let bytes: Vec<u8> = (0..70).flat_map(|_| swap(1, 2).to_bytes()).collect();
    d.poke(ARG, &bytes);
    let o = run64(&mut d, OP, &[11, ARG, 70]);
    assert_eq!(
        o.action,
        Action::Preempted {
            args: [11, ARG + 64 * 12, 6, 0, 0, 0]
        }
    );
    let mut d = domu();
    d.poke(
        ARG,
        &[swap(1, 2).to_bytes(), swap(1, 2).to_bytes()].concat(),
    );
    d.read_only.push(ARG + 12 + 8..ARG + 12 + 10);
    assert_eq!(run64(&mut d, OP, &[11, ARG, 2]), err(Errno::EFAULT));
    assert_eq!(d.calls.len(), 2, "the swap is done, its status not written");
    assert_eq!(run64(&mut d, OP, &[11, END - 11, 1]), err(Errno::EFAULT));
    assert_eq!(run64(&mut d, OP, &[11, ARG, 0]), ok());
}

// ------------------------------------------------ past Xen's HVM filter

/// Runs Xen's `do_grant_table_op` directly, as a caller the HVM filter
/// lets through would.
fn inner(d: &mut FakeDomain, width: GuestWidth, args: &[u64]) -> Outcome {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    let call = HypercallArgs {
        nr: u64::from(OP),
        args: a,
        width,
    }
    .normalized();
    let mut cx = Ctx { d, width };
    crate::dispatch::grant_table_op::grant_table_op(&mut cx, &call.args)
}

#[test]
fn inner_commands_and_continuation_bits() {
    let mut d = domu();
    for cmd in [GNTTABOP_DUMP_TABLE, GNTTABOP_UNMAP_AND_REPLACE, 13, 0xfff] {
        assert_eq!(
            inner(&mut d, GuestWidth::Bits64, &[cmd.into(), ARG, 1]),
            err(Errno::ENOSYS)
        );
    }
    // Bits above the command: -EINVAL, but for cache_flush's continuation.
    for cmd in [0u32, 5, 9, 11] {
        let cmd = cmd | 1 << GNTTABOP_CONTINUATION_ARG_SHIFT;
        assert_eq!(
            inner(&mut d, GuestWidth::Bits64, &[cmd.into(), ARG, 1]),
            err(Errno::EINVAL)
        );
    }
    assert_eq!(
        inner(&mut d, GuestWidth::Bits64, &[12, ARG, 0x8000_0000]),
        err(Errno::EINVAL)
    );
    assert!(d.calls.is_empty());
}

fn status_frames(nr_frames: u32, dom: u16) -> GnttabGetStatusFrames {
    GnttabGetStatusFrames {
        nr_frames,
        dom,
        status: 0x5a5a,
        frame_list: LIST,
    }
}

fn plant_status_frames(d: &mut FakeDomain, width: GuestWidth, g: GnttabGetStatusFrames) {
    match width {
        GuestWidth::Bits64 => d.poke(ARG, &g.to_bytes()),
        GuestWidth::Bits32 => d.poke(
            ARG,
            &GnttabGetStatusFramesCompat {
                nr_frames: g.nr_frames,
                dom: g.dom,
                status: g.status,
                frame_list: g.frame_list as u32,
            }
            .to_bytes(),
        ),
    }
}

fn status_frames_status(d: &FakeDomain) -> i16 {
    // At offset 6 in both layouts.
    i16::from_le_bytes(d.peek(ARG + 6, 2).try_into().unwrap())
}

#[test]
fn get_status_frames_both_widths() {
    for width in WIDTHS {
        let mut d = dom0();
        d.gnt_version = 2;
        d.gnt_nr_frames = 9;
        // Domain 4's frames are above 4 GiB: 8-byte gfns for both widths.
        for (dom, base) in [(DOMID_SELF, 0xe_0000u64), (4, 0x2_0000_0000)] {
            plant_status_frames(&mut d, width, status_frames(2, dom));
            assert_eq!(inner(&mut d, width, &[9, ARG, 1]), ok());
            assert_eq!(status_frames_status(&d), GNTST_OKAY);
            for i in 0..2u64 {
                let b: [u8; 8] = d.peek(LIST + i * 8, 8).try_into().unwrap();
                assert_eq!(u64::from_le_bytes(b), base + i, "{width:?}");
            }
            assert_eq!(d.peek(LIST + 16, 1), [0xAA]);
        }
        // Statuses: the domain's count, the target checks.
        for (priv_, g, st) in [
            (true, status_frames(3, DOMID_SELF), GNTST_GENERAL_ERROR),
            (true, status_frames(0, DOMID_SELF), GNTST_OKAY),
            (false, status_frames(1, 0), GNTST_PERMISSION_DENIED),
            (false, status_frames(1, 9), GNTST_BAD_DOMAIN),
        ] {
            let mut d = if priv_ { dom0() } else { domu() };
            d.gnt_version = 2;
            plant_status_frames(&mut d, width, g);
            assert_eq!(inner(&mut d, width, &[9, ARG, 1]), ok());
            assert_eq!(status_frames_status(&d), st, "{g:?}");
        }
        // Version 1: no status frames.
        let mut d = domu();
        plant_status_frames(&mut d, width, status_frames(1, DOMID_SELF));
        assert_eq!(inner(&mut d, width, &[9, ARG, 1]), ok());
        assert_eq!(status_frames_status(&d), GNTST_GENERAL_ERROR);
        // Errors of the call itself.
        assert_eq!(inner(&mut d, width, &[9, ARG, 2]), err(Errno::EINVAL));
        assert_eq!(inner(&mut d, width, &[9, END - 8, 1]), err(Errno::EFAULT));
        plant_status_frames(
            &mut d,
            width,
            GnttabGetStatusFrames {
                frame_list: 0xffff_fff8,
                ..status_frames(2, DOMID_SELF)
            },
        );
        let want = if width == GuestWidth::Bits32 {
            err(Errno::EFAULT)
        } else {
            ok()
        };
        assert_eq!(inner(&mut d, width, &[9, ARG, 1]), want, "{width:?}");
    }
    // A fault in the list: native reports it, compat (Xen's translation)
    // ignores it; compat writes the whole structure back.
    for (width, st) in [
        (GuestWidth::Bits64, GNTST_BAD_VIRT_ADDR),
        (GuestWidth::Bits32, GNTST_OKAY),
    ] {
        let mut d = domu();
        d.gnt_version = 2;
        d.gnt_nr_frames = 16;
        plant_status_frames(&mut d, width, status_frames(2, DOMID_SELF));
        d.faults.push(LIST..LIST + 1);
        assert_eq!(inner(&mut d, width, &[9, ARG, 1]), ok());
        assert_eq!(status_frames_status(&d), st, "{width:?}");
        assert_eq!(d.peek(LIST + 8, 8), 0xe_0001u64.to_le_bytes(), "the others");
        d.read_only.push(ARG..ARG + 1);
        let want = if width == GuestWidth::Bits32 {
            err(Errno::EFAULT)
        } else {
            ok()
        };
        assert_eq!(inner(&mut d, width, &[9, ARG, 1]), want, "{width:?}");
    }
    // The compat translation limit, checked after the domain's count.
    let mut d = domu();
    d.gnt_version = 2;
    d.gnt_nr_frames = 8 * 1023;
    plant_status_frames(&mut d, GuestWidth::Bits32, status_frames(1023, DOMID_SELF));
    assert_eq!(inner(&mut d, GuestWidth::Bits32, &[9, ARG, 1]), ok());
    assert_eq!(status_frames_status(&d), GNTST_GENERAL_ERROR);
    assert_eq!(d.calls, ["gnttab_get_status_frames(3, 1023)"]);
    plant_status_frames(&mut d, GuestWidth::Bits32, status_frames(1022, DOMID_SELF));
    assert_eq!(inner(&mut d, GuestWidth::Bits32, &[9, ARG, 1]), ok());
    assert_eq!(status_frames_status(&d), GNTST_OKAY);
}

fn flush(a: u64, offset: u16, length: u16, op: u32) -> GnttabCacheFlush {
    GnttabCacheFlush {
        a,
        offset,
        length,
        op,
    }
}

#[test]
fn cache_flush_checks() {
    const CLEAN: u32 = GNTTAB_CACHE_CLEAN;
    let run_one = |f: GnttabCacheFlush, cmd: u32| {
        let mut d = domu();
        d.poke(ARG, &f.to_bytes());
        let o = inner(&mut d, GuestWidth::Bits64, &[cmd.into(), ARG, 1]);
        (o, d.calls)
    };
    for f in [
        flush(0x1000, 4096, 0, CLEAN),
        flush(0x1000, 0, 4097, CLEAN),
        flush(0x1000, 4000, 97, CLEAN),
        flush(0x1000, 0, 8, 4),
        flush(0x1000, 0, 8, CLEAN | GNTTAB_CACHE_SOURCE_GREF),
    ] {
        assert_eq!(run_one(f, 12), (err(Errno::EINVAL), vec![]), "{f:?}");
    }
    // Nothing to do: nothing asked; unless a continuation's search was
    // pending.
    for f in [flush(0x1000, 0, 0, CLEAN), flush(0x1000, 0, 8, 0)] {
        assert_eq!(run_one(f, 12), (ok(), vec![]), "{f:?}");
        assert_eq!(run_one(f, 12 | 1 << 12), (err(Errno::EILSEQ), vec![]));
    }
    let want = vec!["gnttab_cache_flush(0x1234000, 16, 32, 0x3)".to_string()];
    assert_eq!(
        run_one(flush(0x123_4000, 16, 32, 3), 12),
        (ok(), want.clone())
    );
    // A pending search does not hold back a real request.
    assert_eq!(
        run_one(flush(0x123_4000, 16, 32, 3), 12 | 5 << 12),
        (ok(), want)
    );
    // The domain's verdict ends the call.
    let mut d = domu();
    d.gnt_flush_err = Some(Errno::EOPNOTSUPP);
    d.poke(ARG, &flush(0x1000, 0, 8, GNTTAB_CACHE_INVAL).to_bytes());
    assert_eq!(
        inner(&mut d, GuestWidth::Bits32, &[12, ARG, 1]),
        err(Errno::EOPNOTSUPP)
    );
    // Batches: only the first entry sees the continuation's search; a
    // preemption carries none.
    let mut d = domu();
    let mut bytes = flush(0x1000, 0, 8, CLEAN).to_bytes().to_vec();
    for _ in 0..69 {
        bytes.extend(flush(0x1000, 0, 0, CLEAN).to_bytes());
    }
    d.poke(ARG, &bytes);
    let o = inner(&mut d, GuestWidth::Bits64, &[12 | 7 << 12, ARG, 70]);
    assert_eq!(
        o.action,
        Action::Preempted {
            args: [12, ARG + 64 * 16, 6, 0, 0, 0]
        }
    );
    assert_eq!(d.calls.len(), 1);
    assert_eq!(
        inner(&mut d, GuestWidth::Bits64, &[12, END - 15, 1]),
        err(Errno::EFAULT)
    );
}

#[test]
fn transfer_answers_as_for_a_translated_caller() {
    for width in WIDTHS {
        let mut d = domu();
        let ops = [(0x1000u64, GNTST_GENERAL_ERROR), (0x4_0000, GNTST_BAD_PAGE)];
        let (size, status_at) = match width {
            GuestWidth::Bits64 => (24u64, 16u64),
            GuestWidth::Bits32 => (16, 12),
        };
        for (i, (gfn, _)) in ops.iter().enumerate() {
            let at = ARG + i as u64 * size;
            match width {
                GuestWidth::Bits64 => d.poke(
                    at,
                    &GnttabTransfer {
                        mfn: *gfn,
                        domid: 0,
                        pad0: 0x1111,
                        ref_: 7,
                        status: 0x5a5a,
                        pad1: [0x2222; 3],
                    }
                    .to_bytes(),
                ),
                GuestWidth::Bits32 => d.poke(
                    at,
                    &GnttabTransferCompat {
                        mfn: *gfn as u32,
                        domid: 0,
                        pad0: 0x1111,
                        ref_: 7,
                        status: 0x5a5a,
                        pad1: 0x2222,
                    }
                    .to_bytes(),
                ),
            }
        }
        assert_eq!(inner(&mut d, width, &[4, ARG, 2]), ok());
        for (i, (gfn, st)) in ops.iter().enumerate() {
            let at = ARG + i as u64 * size + status_at;
            assert_eq!(d.peek(at, 2), st.to_le_bytes(), "{width:?} {i}");
            assert_eq!(d.peek(at + 2, 2), [0x22, 0x22], "only the status");
            assert_eq!(d.calls[i], format!("gnttab_transfer({gfn:#x}, 0, 7)"));
        }
    }
    // Filtered for every keel caller.
    let mut d = domu();
    assert_eq!(run64(&mut d, OP, &[4, ARG, 2]), err(Errno::ENOSYS));
    assert!(d.calls.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Past the filter too, nothing panics, failures are real errnos, and
    /// only the batches preempt, making progress.
    #[test]
    fn inner_never_panics(
        cmd in prop_oneof![4 => 0u32..14, 1 => any::<u32>()],
        uop in prop_oneof![3 => BASE - 64..END + 64, 1 => any::<u64>()],
        count in prop_oneof![3 => 0u64..80, 1 => any::<u64>()],
        width in prop_oneof![Just(GuestWidth::Bits32), Just(GuestWidth::Bits64)],
        v2 in any::<bool>(),
        nr_frames in 0u32..20,
        fill in any::<u8>(),
        bytes in prop::collection::vec(any::<u8>(), 64),
    ) {
        let mut d = domu();
        d.mem.fill(fill);
        d.poke(ARG, &bytes);
        d.gnt_version = if v2 { 2 } else { 1 };
        d.gnt_nr_frames = nr_frames;
        let o = inner(&mut d, width, &[cmd.into(), uop, count]);
        if o.ret < 0 {
            prop_assert!(Errno::from_ret(o.ret).is_some(), "ret {}", o.ret);
        }
        if let Action::Preempted { args } = o.action {
            prop_assert!(args[2] < count & width.mask());
        }
    }
}
