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
        GNTTABOP_TRANSFER,
        GNTTABOP_UNMAP_AND_REPLACE,
        GNTTABOP_GET_STATUS_FRAMES,
        GNTTABOP_SWAP_GRANT_REF,
        GNTTABOP_CACHE_FLUSH,
        13,
        // Continuation bits from the guest: not a command an HVM guest has.
        GNTTABOP_MAP_GRANT_REF | 1 << GNTTABOP_CONTINUATION_ARG_SHIFT,
        GNTTABOP_COPY | 0x8000_0000,
    ] {
        assert_eq!(
            run64(&mut d, OP, &[cmd.into(), ARG, 1]),
            err(Errno::ENOSYS),
            "cmd {cmd:#x}"
        );
    }
    for cmd in [0u64, 1, 2, 5, 6, 8, 10] {
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
    for (v, want) in [
        (1u32, ok()),
        (2, err(Errno::ENOSYS)),
        (0, err(Errno::EINVAL)),
        (3, err(Errno::EINVAL)),
    ] {
        d.poke(ARG, &GnttabSetVersion { version: v }.to_bytes());
        // `count` is not looked at.
        assert_eq!(run64(&mut d, OP, &[8, ARG, 7]), want, "version {v}");
        assert_eq!(d.peek(ARG, 4), 1u32.to_le_bytes(), "the version in effect");
    }
    d.read_only.push(ARG..ARG + 4);
    assert_eq!(run64(&mut d, OP, &[8, ARG, 1]), err(Errno::EFAULT));

    let mut d = domu();
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
        let v = if want == ok() { 1u32 } else { 0xdead };
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
    assert_eq!(run64(&mut d, OP, &[10, END - 7, 1]), err(Errno::EFAULT));
}
