//! `plan`: the layouts Xen's two builders make, and the refusals.

use keel_hypercall::abi::elfnote::*;

use super::super::layout::{count_tables, settle};
use super::super::testelf::*;
use super::super::{
    Area, InitrdPlace, P2mPlace, Page, PageTableFrame, PvError, PvLayout, PvSpec, Role, parse, plan,
};
use super::msg;

const KSTART: u64 = 0xFFFF_FFFF_8100_0000;
const KEND: u64 = 0xFFFF_FFFF_8100_A000;
const MIB: u64 = 1 << 20;

fn spec(role: Role, nr_pages: u64, initrd: &[u8]) -> PvSpec<'_> {
    PvSpec {
        role,
        nr_pages,
        initrd,
        cmdline: "console=hvc0 root=/dev/xvda",
    }
}

fn page(pfn: u64) -> Page {
    Page {
        pfn,
        va: LINUX_VIRT_BASE + pfn * 0x1000,
    }
}

fn va(pfn: u64) -> u64 {
    LINUX_VIRT_BASE + pfn * 0x1000
}

/// The region's tables for `LINUX_VIRT_BASE..+20 MiB` from `pfn`: L4, one L3
/// (slot 511), one L2 (slot 510), ten L1s.
fn linux_region_tables(pfn: u64) -> Vec<PageTableFrame> {
    let mut t = vec![
        PageTableFrame {
            level: 4,
            key: 0,
            pfn,
        },
        PageTableFrame {
            level: 3,
            key: 0x1FF,
            pfn: pfn + 1,
        },
        PageTableFrame {
            level: 2,
            key: 0x3_FFFE,
            pfn: pfn + 2,
        },
    ];
    for i in 0..10 {
        t.push(PageTableFrame {
            level: 1,
            key: 0x7FF_FC00 + i,
            pfn: pfn + 3 + i,
        });
    }
    t
}

/// The tables mapping a p2m list of up to 2 MiB at 512 GiB: one L3, L2, L1 each.
fn linux_p2m_tables(pfn: u64) -> Vec<PageTableFrame> {
    vec![
        PageTableFrame {
            level: 3,
            key: 1,
            pfn,
        },
        PageTableFrame {
            level: 2,
            key: 0x200,
            pfn: pfn + 1,
        },
        PageTableFrame {
            level: 1,
            key: 0x4_0000,
            pfn: pfn + 2,
        },
    ]
}

#[test]
fn linux_as_a_domu() {
    let bytes = linux();
    let k = parse(&bytes).expect("parses");
    let initrd = vec![7u8; 0x2345];
    let l = plan(&k, &spec(Role::DomU, 0x8000, &initrd)).expect("plans");
    // Kernel pfns 0x1000..0x100A; start info, xenstore, console; 13 tables; the
    // stack; padding to 20 MiB (the next 4 MiB boundary above stack + 512 KiB).
    let mut tables = linux_region_tables(0x100D);
    tables.extend(linux_p2m_tables(0x1443));
    assert_eq!(
        l,
        PvLayout {
            role: Role::DomU,
            nr_pages: 0x8000,
            v_start: LINUX_VIRT_BASE,
            v_end: LINUX_VIRT_BASE + 20 * MIB,
            kernel: (KSTART, KEND),
            // MOD_START_PFN: after the region.
            initrd: InitrdPlace::Unmapped {
                pfn: 0x1400,
                len: 0x2345
            },
            // INIT_P2M: 0x8000 entries, 64 pages, after the initrd, then its tables.
            p2m: P2mPlace {
                pfn: 0x1403,
                pages: 64,
                va: LINUX_INIT_P2M,
                in_region: false
            },
            start_info: page(0x100A),
            xenstore: Some(page(0x100B)),
            console: Some(page(0x100C)),
            page_tables: tables,
            nr_pt_frames: 13,
            stack: page(0x101A),
            hypercall_page: Some(page(0x1001)),
            entry: ENTRY,
            first_p2m_pfn: 0x1403,
            nr_p2m_frames: 64 + 3,
            pages_used: 0x1446,
        }
    );
    assert_eq!(l.pt_base(), page(0x100D));
    assert_eq!(l.region_pages(), 0x1400);
    assert_eq!(l.pfn_at(KSTART), Some(0x1000));
    assert_eq!(l.pfn_at(LINUX_INIT_P2M + 0x3_F000), Some(0x1442));
    assert_eq!(l.pfn_at(LINUX_INIT_P2M + 0x4_0000), None);
    assert_eq!(l.pfn_at(LINUX_VIRT_BASE - 1), None);
    assert_eq!(l.pfn_at(LINUX_VIRT_BASE + 20 * MIB), None);
    assert_eq!(
        l.page_tables[1].va_base(),
        0xFFFF_FF80_0000_0000,
        "the L3 of slot 511"
    );
    assert_eq!(l.page_tables[3].va_base(), LINUX_VIRT_BASE);
    assert_eq!(l.page_tables[13].va_base(), LINUX_INIT_P2M);
}

#[test]
fn linux_as_dom0() {
    let bytes = linux();
    let k = parse(&bytes).expect("parses");
    let initrd = vec![7u8; 0x2345];
    let l = plan(&k, &spec(Role::Dom0, 0x8000, &initrd)).expect("plans");
    // No xenstore or console pages: the tables follow the start info.
    let mut tables = linux_region_tables(0x100B);
    tables.extend(linux_p2m_tables(0x1443));
    assert_eq!(l.start_info, page(0x100A));
    assert_eq!((l.xenstore, l.console), (None, None));
    assert_eq!(l.page_tables, tables);
    assert_eq!(l.nr_pt_frames, 13);
    assert_eq!(l.stack, page(0x1018));
    assert_eq!(l.v_end, LINUX_VIRT_BASE + 20 * MIB);
    assert_eq!(
        l.initrd,
        InitrdPlace::Unmapped {
            pfn: 0x1400,
            len: 0x2345
        }
    );
    assert_eq!(
        (l.first_p2m_pfn, l.nr_p2m_frames, l.pages_used),
        (0x1403, 67, 0x1446)
    );
}

/// A kernel like Linux's but without INIT_P2M and MOD_START_PFN.
fn classic() -> Vec<u8> {
    kernel_with(&linux_notes_except(&[
        XEN_ELFNOTE_INIT_P2M,
        XEN_ELFNOTE_MOD_START_PFN,
    ]))
    .build()
}

#[test]
fn initrd_and_p2m_in_the_region() {
    let bytes = classic();
    let k = parse(&bytes).expect("parses");
    let initrd = vec![1u8; 0x1_0001];
    let l = plan(&k, &spec(Role::DomU, 0x4_0000, &initrd)).expect("plans");
    // Initrd right after the kernel (17 pages), then 0x40000 * 8 bytes of p2m
    // (512 pages), start info, xenstore, console, tables, stack.
    assert_eq!(
        l.initrd,
        InitrdPlace::Mapped {
            pfn: 0x100A,
            va: va(0x100A),
            len: 0x1_0001
        }
    );
    assert_eq!(
        l.p2m,
        P2mPlace {
            pfn: 0x101B,
            pages: 512,
            va: va(0x101B),
            in_region: true
        }
    );
    assert_eq!(l.start_info, page(0x121B));
    assert_eq!(l.xenstore, Some(page(0x121C)));
    assert_eq!(l.console, Some(page(0x121D)));
    assert_eq!(l.pt_base(), page(0x121E));
    assert_eq!(l.nr_pt_frames, 13);
    assert_eq!(l.stack, page(0x121E + 13));
    assert_eq!(l.v_end, LINUX_VIRT_BASE + 20 * MIB);
    assert_eq!((l.first_p2m_pfn, l.nr_p2m_frames), (0, 0));
    assert_eq!(l.pages_used, 0x1400);
    assert_eq!(l.page_tables.len(), 13);
    // No initrd: nothing between the kernel and the p2m.
    let l = plan(&k, &spec(Role::Dom0, 0x4_0000, &[])).expect("plans");
    assert_eq!(l.initrd, InitrdPlace::None);
    assert_eq!(l.p2m.pfn, 0x100A);
}

#[test]
fn where_each_builder_puts_an_init_p2m() {
    let with_p2m = |base: u64| {
        kernel_with(
            &[
                linux_notes_except(&[XEN_ELFNOTE_INIT_P2M]),
                xen64(XEN_ELFNOTE_INIT_P2M, base),
            ]
            .concat(),
        )
        .build()
    };
    // Above VIRT_BASE: libxg quietly ignores it; Xen's Dom0 builder uses it.
    let above = 0xFFFF_FFFF_C000_0000;
    let bytes = with_p2m(above);
    let k = parse(&bytes).expect("parses");
    let u = plan(&k, &spec(Role::DomU, 0x8000, &[])).expect("plans");
    assert!(u.p2m.in_region);
    assert_eq!(u.p2m.pfn, 0x100A);
    let d = plan(&k, &spec(Role::Dom0, 0x8000, &[])).expect("plans");
    assert_eq!(
        d.p2m,
        P2mPlace {
            pfn: 0x1400,
            pages: 64,
            va: above,
            in_region: false
        }
    );
    // Same L3 as the region: only a new L2 and L1 (libxg's count_pgtables).
    assert_eq!(d.nr_p2m_frames, 64 + 2);
    assert_eq!(
        d.page_tables[13..],
        [
            PageTableFrame {
                level: 2,
                key: 0x3_FFFF,
                pfn: 0x1440
            },
            PageTableFrame {
                level: 1,
                key: 0x7FF_FE00,
                pfn: 0x1441
            },
        ]
    );

    // Not page-aligned: libxg ignores it, keel's Dom0 refuses it.
    let bytes = with_p2m(LINUX_INIT_P2M + 8);
    let k = parse(&bytes).expect("parses");
    assert!(
        plan(&k, &spec(Role::DomU, 0x8000, &[]))
            .expect("plans")
            .p2m
            .in_region
    );
    assert_eq!(
        plan(&k, &spec(Role::Dom0, 0x8000, &[])),
        Err(PvError::P2mBaseMisaligned(LINUX_INIT_P2M + 8))
    );

    // Overlapping the region (but not the kernel): refused by both (libxg's
    // count_pgtables: "overlapping mappings"). A domU's must start below VIRT_BASE
    // to be used at all.
    for (role, base) in [
        (Role::Dom0, LINUX_VIRT_BASE + 0x10_0000),
        (Role::DomU, LINUX_VIRT_BASE - 0x1_0000),
    ] {
        let bytes = with_p2m(base);
        let k = parse(&bytes).expect("parses");
        let e = plan(&k, &spec(role, 0x8000, &[])).expect_err("overlaps");
        assert_eq!(
            e,
            PvError::P2mOverlapsRegion {
                p2m_start: base,
                p2m_end: base + 0x4_0000,
                v_start: LINUX_VIRT_BASE,
                v_end: LINUX_VIRT_BASE + 20 * MIB
            },
            "{role:?}"
        );
    }
    // Just below the region: in the region's L3, but a 1 GiB block of its own.
    let bytes = with_p2m(LINUX_VIRT_BASE - 0x4_0000);
    let k = parse(&bytes).expect("parses");
    let l = plan(&k, &spec(Role::DomU, 0x8000, &[])).expect("plans");
    assert_eq!(l.nr_p2m_frames, 64 + 2, "a new L2 and L1");
    assert_eq!(
        (l.page_tables[13].level, l.page_tables[13].key),
        (2, 0x3_FFFD)
    );

    // In the hypervisor's range, or not canonical.
    let bytes = with_p2m(0xFFFF_8000_0000_0000);
    let k = parse(&bytes).expect("parses");
    assert!(matches!(
        plan(&k, &spec(Role::DomU, 0x8000, &[])),
        Err(PvError::InHypervisorHole {
            area: Area::P2m,
            ..
        })
    ));
    let bytes = with_p2m(0x7FFF_FFFF_F000);
    let k = parse(&bytes).expect("parses");
    assert!(matches!(
        plan(&k, &spec(Role::Dom0, 0x8000, &[])),
        Err(PvError::NonCanonical {
            area: Area::P2m,
            ..
        })
    ));
}

#[test]
fn refusals() {
    let bytes = linux();
    let k = parse(&bytes).expect("parses");
    assert_eq!(
        plan(&k, &spec(Role::DomU, 0, &[])),
        Err(PvError::NoMemory(0))
    );
    let long = "x".repeat(1024);
    let mut s = spec(Role::DomU, 0x8000, &[]);
    s.cmdline = &long;
    assert_eq!(plan(&k, &s), Err(PvError::CmdlineTooLong { len: 1024 }));
    s.cmdline = &long[1..];
    assert!(plan(&k, &s).is_ok(), "1023 bytes and the NUL fit");
    s.cmdline = "a\0b";
    assert_eq!(plan(&k, &s), Err(PvError::CmdlineHasNul));

    // A Dom0 kernel must say it can be Dom0 if it says anything.
    let not_dom0 = kernel_with(
        &[
            linux_notes_except(&[XEN_ELFNOTE_SUPPORTED_FEATURES]),
            xen32(XEN_ELFNOTE_SUPPORTED_FEATURES, 1),
        ]
        .concat(),
    )
    .build();
    let k = parse(&not_dom0).expect("parses");
    assert_eq!(
        plan(&k, &spec(Role::Dom0, 0x8000, &[])),
        Err(PvError::NotDom0Capable)
    );
    assert!(plan(&k, &spec(Role::DomU, 0x8000, &[])).is_ok());
    let silent = kernel_with(&linux_notes_except(&[XEN_ELFNOTE_SUPPORTED_FEATURES])).build();
    let k = parse(&silent).expect("parses");
    assert!(plan(&k, &spec(Role::Dom0, 0x8000, &[])).is_ok());
}

#[test]
fn too_little_memory() {
    for bytes in [linux(), classic()] {
        let k = parse(&bytes).expect("parses");
        let initrd = vec![3u8; 0x5_0000];
        for role in [Role::Dom0, Role::DomU] {
            // The least memory that holds everything: pages_used grows with
            // nr_pages (the p2m), so search upwards.
            let mut n = 1;
            let l = loop {
                match plan(&k, &spec(role, n, &initrd)) {
                    Ok(l) => break l,
                    Err(PvError::DoesNotFit { needed, nr_pages }) => {
                        assert_eq!(nr_pages, n);
                        assert!(needed > n);
                        n = needed;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(l.pages_used, n, "{role:?}: exactly full");
            let e = plan(&k, &spec(role, n - 1, &initrd)).expect_err("one page short");
            assert!(matches!(e, PvError::DoesNotFit { .. }));
            assert!(msg(&e).starts_with("the boot region, initrd and p2m list need 0x"));
        }
    }
}

#[test]
fn regions_reaching_the_hole_the_gap_or_the_top() {
    let with_base = |base: u64| {
        kernel_with(
            &[
                linux_notes_except(&[
                    XEN_ELFNOTE_VIRT_BASE,
                    XEN_ELFNOTE_ENTRY,
                    XEN_ELFNOTE_HYPERCALL_PAGE,
                ]),
                xen64(XEN_ELFNOTE_VIRT_BASE, base),
                xen64(XEN_ELFNOTE_ENTRY, base + TEXT_PADDR),
            ]
            .concat(),
        )
        .build()
    };
    // (Below the hypervisor's range is the non-canonical gap: a region can only
    // reach the range by starting in it, which `parse` refuses.)
    // The kernel ends below the top of the lower half, the padding would not.
    let base = 0x7FFF_FEF8_0000;
    let bytes = with_base(base);
    let k = parse(&bytes).expect("the kernel itself is fine");
    assert!(matches!(
        plan(&k, &spec(Role::Dom0, 0x8000, &[])),
        Err(PvError::NonCanonical {
            area: Area::BootRegion,
            ..
        })
    ));
    // And at the very top.
    let base = 0xFFFF_FFFF_FEC0_0000;
    let bytes = with_base(base);
    let k = parse(&bytes).expect("the kernel itself is fine");
    assert_eq!(
        plan(&k, &spec(Role::Dom0, 0x8000, &[])),
        Err(PvError::Overflow("the boot region"))
    );
    // A huge domain: the p2m list's size overflows.
    let bytes = linux();
    let k = parse(&bytes).expect("parses");
    assert_eq!(
        plan(&k, &spec(Role::DomU, u64::MAX / 4, &[])),
        Err(PvError::Overflow("the p2m list"))
    );
}

/// Xen's Dom0 loop, literally: n = 2, 3, ... until the tables fit.
fn xen_dom0(v_start: u64, pt_start: u64) -> (u64, u64) {
    let mut n = 2;
    loop {
        let stack_end = pt_start + (n + 1) * 0x1000;
        let mut end = (stack_end + (4 * MIB - 1)) & !(4 * MIB - 1);
        if end - stack_end < 512 * 1024 {
            end += 4 * MIB;
        }
        if count_tables(v_start, end) <= n {
            return (end, n);
        }
        n += 1;
    }
}

/// libxg's loop, literally: guess, count, grow until the tables, the stack and
/// 512 KiB fit below the end of the 4 MiB block holding the guess.
fn libxg(v_start: u64, alloc_end: u64) -> (u64, u64) {
    let extra = 1 + 128;
    let mut pages = extra;
    loop {
        let end = ((alloc_end + pages * 0x1000) | (4 * MIB - 1)) + 1;
        let tables = count_tables(v_start, end);
        pages = tables + extra;
        if alloc_end + pages * 0x1000 <= end {
            return (end, tables);
        }
    }
}

#[test]
fn the_page_table_count_settles_as_in_both_builders() {
    let starts = [
        0,
        0x40_0000,
        LINUX_VIRT_BASE,
        0x7F_FFC0_0000,
        0xFFFF_FF7F_FFE0_0000,
    ];
    for v_start in starts {
        for off in (0..64 * MIB).step_by(0x3_3000) {
            let pt = v_start + off;
            let got = settle(v_start, pt).expect("settles");
            assert_eq!(got, xen_dom0(v_start, pt), "{v_start:#x} + {off:#x}");
            assert_eq!(got, libxg(v_start, pt), "{v_start:#x} + {off:#x}");
            let (end, n) = got;
            assert_eq!(end % (4 * MIB), 0);
            assert!(end - (pt + (n + 1) * 0x1000) >= 512 * 1024);
            assert_eq!(count_tables(v_start, end), n);
        }
    }
    // Regions of gigabytes (a mapped initrd or an in-region p2m that big), where
    // the tables alone fill 4 MiB blocks, with tables starting on every page of a
    // 4 MiB window.
    for pt in (4096 * MIB..4100 * MIB).step_by(0x1000) {
        let got = settle(0, pt).expect("settles");
        assert_eq!(got, xen_dom0(0, pt), "{pt:#x}");
        assert_eq!(got, libxg(0, pt), "{pt:#x}");
    }
}

#[test]
fn a_kernel_edited_after_parse_is_refused_not_trusted() {
    let bytes = linux();
    let good = parse(&bytes).expect("parses");
    let s = spec(Role::DomU, 0x8000, &[]);
    let mut k = good.clone();
    k.virt_kend = k.virt_base - 0x1000;
    assert!(matches!(
        plan(&k, &s),
        Err(PvError::VirtBaseAboveKernel { .. })
    ));
    let mut k = good.clone();
    k.virt_base += 0x10;
    assert!(matches!(plan(&k, &s), Err(PvError::VirtBaseMisaligned(_))));
    let mut k = good.clone();
    k.hypercall_page = Some(0);
    assert!(matches!(
        plan(&k, &s),
        Err(PvError::BadHypercallPage { .. })
    ));
    let mut k = good.clone();
    k.virt_base = 0xFFFF_8000_0000_0000;
    assert!(matches!(
        plan(&k, &s),
        Err(PvError::InHypervisorHole {
            area: Area::Kernel,
            ..
        })
    ));
    let mut k = good;
    k.segments[0].paddr = 0;
    assert_eq!(k.segment_offset(&k.segments[0]), 0x100_0000, "saturates");
}

#[test]
fn a_p2m_list_too_big_for_the_lower_half() {
    let notes = [
        xen(XEN_ELFNOTE_GUEST_OS, b"Mini-OS\0"),
        xen(XEN_ELFNOTE_LOADER, b"generic\0"),
        xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"),
    ]
    .concat();
    let bytes = Elf::new()
        .load(0x7FFF_0000_0000, &text(), 0x3000)
        .notes(&notes)
        .entry(0x7FFF_0000_0000)
        .build();
    let k = parse(&bytes).expect("parses");
    for nr_pages in [1 << 40, 1 << 45, 1 << 58] {
        let e = plan(&k, &spec(Role::Dom0, nr_pages, &[])).expect_err("too big");
        assert!(
            matches!(
                e,
                PvError::NonCanonical {
                    area: Area::BootRegion,
                    start: 0,
                    ..
                }
            ),
            "{nr_pages:#x}: {e:?}"
        );
    }
}
