//! Property tests: random notes, segments and domain sizes never make the builder
//! panic, and whatever it accepts is self-consistent.

use proptest::prelude::*;

use elf::abi::{PF_R, PF_W, PF_X};
use keel_hypercall::abi::elfnote::*;

use super::super::layout::count_tables;
use super::super::testelf::*;
use super::super::{
    InitrdPlace, PAGE_SIZE, PvBoot, PvError, PvKernel, PvLayout, PvSpec, Role, initial_regs, load,
    parse, plan, start_info,
};
use super::pagetable::check_tables;
use super::{VecMem, mfn_of};

/// Interesting values for addresses, and random ones.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(LINUX_VIRT_BASE),
        Just(LINUX_INIT_P2M),
        Just(0xFFFF_8000_0000_0000u64),
        Just(0xFFFF_8800_0000_0000u64),
        Just(0x0000_7FFF_FFC0_0000u64),
        Just(0xFFFF_FFFF_FFC0_0000u64),
        (0u64..0x4000).prop_map(|p| p << 12),
        (0u64..0x4000).prop_map(|p| LINUX_VIRT_BASE + (p << 12)),
        any::<u64>(),
    ]
}

#[derive(Clone, Debug)]
struct Input {
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    /// (paddr, filesz, memsz - filesz, flags)
    segments: Vec<(u64, u16, u32, u32)>,
    /// Entry: an offset into the kernel, or any value.
    entry: Option<Result<u64, u64>>,
    hypercall: Option<Result<u64, u64>>,
    init_p2m: Option<u64>,
    mod_start_pfn: Option<u8>,
    phys32: bool,
    features: &'static str,
    supported: Option<u32>,
    hv_start_low: Option<u64>,
    pae: &'static str,
    role: Role,
    nr_pages: u64,
    initrd: usize,
}

/// Mostly kernels a loader would take, with every kind of mistake now and then.
fn input() -> impl Strategy<Value = Input> {
    (
        (
            prop::option::weighted(
                0.9,
                prop_oneof![
                    4 => Just(LINUX_VIRT_BASE),
                    2 => Just(0u64),
                    2 => (0u64..0x800).prop_map(|p| 0xFFFF_8800_0000_0000 + (p << 21)),
                    1 => addr(),
                ],
            ),
            prop::option::weighted(0.15, prop_oneof![Just(0u64), addr()]),
            prop::collection::vec(
                (
                    prop_oneof![
                        6 => (0u64..0x800).prop_map(|p| TEXT_PADDR + (p << 12)),
                        2 => (0u64..0x1_0000).prop_map(|b| b * 0x10),
                        1 => addr(),
                    ],
                    any::<u16>(),
                    0u32..0x4_0000,
                    prop_oneof![
                        8 => Just(PF_R | PF_X),
                        2 => Just(PF_R | PF_W),
                        1 => Just(0u32),
                    ],
                ),
                1..4,
            ),
            prop::option::weighted(
                0.95,
                prop_oneof![
                    9 => (0u64..0x100).prop_map(Ok),
                    1 => any::<u64>().prop_map(Err),
                ],
            ),
            prop::option::weighted(
                0.5,
                prop_oneof![
                    9 => Just(Ok(0u64)),
                    1 => addr().prop_map(Err),
                ],
            ),
            prop::option::weighted(
                0.5,
                prop_oneof![
                    4 => Just(LINUX_INIT_P2M),
                    1 => (0u64..0x1000).prop_map(|p| LINUX_VIRT_BASE - (p << 14)),
                    1 => addr(),
                ],
            ),
            prop::option::of(any::<u8>()),
            prop::bool::weighted(0.2),
        ),
        (
            prop_oneof![
                4 => Just("!writable_page_tables|pae_pgdir_above_4gb"),
                2 => Just(""),
                2 => Just("dom0|!auto_translated_physmap"),
                1 => Just("!supervisor_mode_kernel"),
                1 => Just("!nonsense"),
            ],
            prop::option::of(prop_oneof![Just(0x801u32), any::<u32>()]),
            prop::option::weighted(
                0.3,
                prop_oneof![4 => Just(0xFFFF_8000_0000_0000u64), 1 => addr()],
            ),
            prop::sample::select(vec!["yes", "no", "bimodal"]),
            prop_oneof![Just(Role::Dom0), Just(Role::DomU)],
            prop_oneof![
                1 => 1u64..0x100,
                8 => 0x1000u64..0x1_0000,
                1 => Just(u64::MAX / 8),
            ],
            prop_oneof![Just(0usize), 1usize..0x3_0000],
        ),
    )
        .prop_map(
            |(
                (
                    virt_base,
                    paddr_offset,
                    segments,
                    entry,
                    hypercall,
                    init_p2m,
                    mod_start_pfn,
                    phys32,
                ),
                (features, supported, hv_start_low, pae, role, nr_pages, initrd),
            )| Input {
                virt_base,
                paddr_offset,
                segments,
                entry,
                hypercall,
                init_p2m,
                mod_start_pfn,
                phys32,
                features,
                supported,
                hv_start_low,
                pae,
                role,
                nr_pages,
                initrd,
            },
        )
}

fn image(i: &Input) -> Vec<u8> {
    let base = i.virt_base.unwrap_or(0);
    let kstart = i
        .segments
        .iter()
        .map(|s| s.0)
        .min()
        .unwrap_or(0)
        .wrapping_add(base)
        .wrapping_sub(i.paddr_offset.unwrap_or(0));
    let mut notes = [
        xen(XEN_ELFNOTE_GUEST_OS, b"linux\0"),
        xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"),
        xen(XEN_ELFNOTE_FEATURES, i.features.as_bytes()),
        xen(XEN_ELFNOTE_PAE_MODE, i.pae.as_bytes()),
    ]
    .concat();
    let mut add = |n: Vec<u8>| notes.extend_from_slice(&n);
    if let Some(v) = i.virt_base {
        add(xen64(XEN_ELFNOTE_VIRT_BASE, v));
    }
    if let Some(v) = i.paddr_offset {
        add(xen64(XEN_ELFNOTE_PADDR_OFFSET, v));
    }
    match i.entry {
        Some(Ok(off)) => add(xen64(XEN_ELFNOTE_ENTRY, kstart.wrapping_add(off))),
        Some(Err(v)) => add(xen64(XEN_ELFNOTE_ENTRY, v)),
        None => {}
    }
    match i.hypercall {
        Some(Ok(off)) => add(xen64(
            XEN_ELFNOTE_HYPERCALL_PAGE,
            (kstart & !0xFFF).wrapping_add(off),
        )),
        Some(Err(v)) => add(xen64(XEN_ELFNOTE_HYPERCALL_PAGE, v)),
        None => {}
    }
    if let Some(v) = i.init_p2m {
        add(xen64(XEN_ELFNOTE_INIT_P2M, v));
    }
    if let Some(v) = i.mod_start_pfn {
        add(xen(XEN_ELFNOTE_MOD_START_PFN, &[v]));
    }
    if i.phys32 {
        add(xen32(XEN_ELFNOTE_PHYS32_ENTRY, TEXT_PADDR as u32));
    }
    if let Some(v) = i.supported {
        add(xen32(XEN_ELFNOTE_SUPPORTED_FEATURES, v));
    }
    if let Some(v) = i.hv_start_low {
        add(xen64(XEN_ELFNOTE_HV_START_LOW, v));
    }
    let mut elf = Elf::new();
    for &(paddr, filesz, extra, flags) in &i.segments {
        let content = vec![0x5Au8; usize::from(filesz)];
        elf = elf.load_flags(paddr, &content, u64::from(filesz) + u64::from(extra), flags);
    }
    elf.notes(&notes).entry(kstart.wrapping_add(0x10)).build()
}

/// Every pfn range the layout places, named.
fn placed(l: &PvLayout) -> Vec<(&'static str, u64, u64)> {
    let mut v = Vec::new();
    let pfn = |va: u64| (va - l.v_start) / PAGE_SIZE;
    v.push((
        "kernel",
        pfn(l.kernel.0),
        pfn(l.kernel.1.next_multiple_of(PAGE_SIZE)),
    ));
    match l.initrd {
        InitrdPlace::Mapped { pfn, len, .. } | InitrdPlace::Unmapped { pfn, len } => {
            v.push(("initrd", pfn, pfn + len.div_ceil(PAGE_SIZE)));
        }
        InitrdPlace::None => {}
    }
    v.push(("p2m", l.p2m.pfn, l.p2m.pfn + l.p2m.pages));
    for (name, p) in [
        ("start info", Some(l.start_info)),
        ("xenstore", l.xenstore),
        ("console", l.console),
        ("stack", Some(l.stack)),
    ] {
        if let Some(p) = p {
            v.push((name, p.pfn, p.pfn + 1));
        }
    }
    for t in &l.page_tables {
        v.push(("page table", t.pfn, t.pfn + 1));
    }
    v
}

/// What must hold of any layout `plan` accepts.
fn check_layout(k: &PvKernel<'_>, spec: &PvSpec<'_>, l: &PvLayout) {
    let items = placed(l);
    for (i, a) in items.iter().enumerate() {
        assert!(a.1 < a.2 || a.0 == "p2m", "{a:?} empty");
        assert!(a.2 <= l.pages_used, "{a:?} beyond pages_used");
        for b in &items[i + 1..] {
            assert!(a.2 <= b.1 || b.2 <= a.1, "{a:?} and {b:?} overlap");
        }
    }
    assert!(l.pages_used <= l.nr_pages);
    assert_eq!(l.nr_pages, spec.nr_pages);
    // The region: from VIRT_BASE, 4 MiB-aligned end, 512 KiB after the stack.
    assert_eq!(l.v_start, k.virt_base);
    assert_eq!(l.v_end % (4 << 20), 0);
    assert!(l.v_end - (l.stack.va + PAGE_SIZE) >= 512 << 10);
    assert_eq!(l.nr_pt_frames, count_tables(l.v_start, l.v_end));
    assert!(
        l.page_tables[..l.nr_pt_frames as usize]
            .iter()
            .all(|t| t.pfn < l.region_pages())
    );
    // In-region things are where their addresses say.
    for p in [
        Some(l.start_info),
        l.xenstore,
        l.console,
        Some(l.stack),
        l.hypercall_page,
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(l.pfn_at(p.va), Some(p.pfn));
        assert!(p.pfn < l.region_pages());
    }
    assert!(l.kernel.0 >= l.v_start && l.kernel.1 <= l.v_end);
    assert!(l.pfn_at(l.entry).is_some());
    if l.p2m.in_region {
        assert_eq!(l.pfn_at(l.p2m.va), Some(l.p2m.pfn));
        assert_eq!((l.first_p2m_pfn, l.nr_p2m_frames), (0, 0));
    } else {
        assert!(l.p2m.pfn >= l.region_pages());
        assert_eq!(l.first_p2m_pfn, l.p2m.pfn);
        assert_eq!(
            l.nr_p2m_frames,
            l.p2m.pages + (l.page_tables.len() as u64 - l.nr_pt_frames)
        );
    }
    assert_eq!(l.p2m.pages, (spec.nr_pages * 8).div_ceil(PAGE_SIZE));
    assert_eq!(l.xenstore.is_some(), spec.role == Role::DomU);
    check_tables(l);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_kernels_and_domains(i in input()) {
        let bytes = image(&i);
        let Ok(k) = parse(&bytes) else { return Ok(()); };
        // What parse accepted is consistent.
        prop_assert!(k.virt_base <= k.virt_kstart && k.virt_kstart < k.virt_kend);
        let entry_in_file = k.segments.iter().any(|s| {
            let va = k.virt_kstart + (s.paddr - k.paddr_range.0);
            va <= k.virt_entry && k.virt_entry - va < s.filesz
        });
        prop_assert!(entry_in_file);
        let initrd = vec![0x17u8; i.initrd];
        let spec = PvSpec { role: i.role, nr_pages: i.nr_pages, initrd: &initrd, cmdline: "x" };
        let l = match plan(&k, &spec) {
            Ok(l) => l,
            Err(PvError::PageTablesUnsettled { .. }) => {
                return Err(TestCaseError::fail("the page-table count must always settle"));
            }
            Err(_) => return Ok(()),
        };
        check_layout(&k, &spec, &l);
        prop_assert!(initial_regs(&l, mfn_of).is_ok());
        let hc = [0u8; PAGE_SIZE as usize];
        let boot = PvBoot {
            shared_info_maddr: 0,
            store_evtchn: 1,
            console_evtchn: 2,
            hypercall_page: Some(&hc),
        };
        prop_assert!(start_info(&k, &l, &spec, &boot, mfn_of).is_ok());
        if l.pages_used <= 0x8000 {
            let mut mem = VecMem::new(l.pages_used, 0);
            prop_assert_eq!(load(&k, &l, &spec, &boot, |pfn| (pfn < l.pages_used).then(|| pfn + 7), &mut mem), Ok(()));
        }
    }

    #[test]
    fn mutated_linux_images(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in prop::option::of(any::<prop::sample::Index>()),
        role in prop_oneof![Just(Role::Dom0), Just(Role::DomU)],
    ) {
        let mut bytes = linux();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            let len = cut.index(bytes.len());
            bytes.truncate(len);
        }
        let _ = super::super::classify(&bytes);
        if let Ok(k) = parse(&bytes) {
            let spec = PvSpec { role, nr_pages: 0x8000, initrd: &[1, 2, 3], cmdline: "" };
            if let Ok(l) = plan(&k, &spec) {
                check_layout(&k, &spec, &l);
            }
        }
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), elf in any::<bool>()) {
        let mut bytes = bytes;
        if elf {
            let head = [0x7F, b'E', b'L', b'F', 2, 1, 1];
            for (b, h) in bytes.iter_mut().zip(head) {
                *b = h;
            }
        }
        let _ = super::super::classify(&bytes);
        let _ = parse(&bytes);
    }
}
