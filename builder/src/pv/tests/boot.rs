//! `start_info`, `initial_regs` and `load`.

use keel_hypercall::abi::elfnote::*;
use keel_hypercall::abi::start_info::{
    ConsoleDom0, ConsoleDomU, SIF_INITDOMAIN, SIF_MOD_START_PFN, SIF_PRIVILEGED, StartInfo,
};

use super::super::boot::INVALID_P2M_ENTRY;
use super::super::testelf::*;
use super::super::{
    InitrdPlace, PAGE_SIZE, PvBoot, PvError, PvKernel, PvLayout, PvRegs, PvSpec, Role,
    for_each_page_table, initial_regs, load, parse, plan, start_info,
};
use super::{MFN_BASE, VecMem, mfn_of};

const HYPERCALL_BYTES: [u8; PAGE_SIZE as usize] = [0xC3; PAGE_SIZE as usize];

fn boot() -> PvBoot<'static> {
    PvBoot {
        shared_info_maddr: 0xABCD_E000,
        store_evtchn: 1,
        console_evtchn: 2,
        hypercall_page: Some(&HYPERCALL_BYTES),
    }
}

fn magic(s: &StartInfo) -> &str {
    let end = s
        .magic
        .iter()
        .position(|&b| b == 0)
        .expect("NUL-terminated");
    core::str::from_utf8(&s.magic[..end]).expect("ASCII")
}

const CMDLINE: &str = "console=hvc0 root=/dev/xvda ro";

fn setup<'a>(
    bytes: &'a [u8],
    role: Role,
    initrd: &'a [u8],
) -> (PvKernel<'a>, PvSpec<'a>, PvLayout) {
    let k = parse(bytes).expect("parses");
    let spec = PvSpec {
        role,
        nr_pages: 0x8000,
        initrd,
        cmdline: CMDLINE,
    };
    let l = plan(&k, &spec).expect("plans");
    (k, spec, l)
}

#[test]
fn start_info_of_a_domu() {
    let bytes = linux();
    let initrd = [5u8; 0x2345];
    let (k, spec, l) = setup(&bytes, Role::DomU, &initrd);
    let si = start_info(&k, &l, &spec, &boot(), mfn_of).expect("start info");
    assert_eq!(magic(&si), "xen-3.0-x86_64", "libxg never appends p");
    assert_eq!(si.nr_pages, 0x8000);
    assert_eq!(si.shared_info, 0xABCD_E000);
    assert_eq!(si.flags, SIF_MOD_START_PFN);
    assert_eq!(si.store_mfn, 0x100B + MFN_BASE);
    assert_eq!(si.store_evtchn, 1);
    assert_eq!(
        ConsoleDomU::from_bytes(&si.console),
        ConsoleDomU {
            mfn: 0x100C + MFN_BASE,
            evtchn: 2,
            pad: 0
        }
    );
    assert_eq!(si.pt_base, 0xFFFF_FFFF_8100_D000);
    assert_eq!(si.nr_pt_frames, 13);
    assert_eq!(si.mfn_list, LINUX_INIT_P2M);
    assert_eq!((si.mod_start, si.mod_len), (0x1400, 0x2345));
    assert_eq!(&si.cmd_line[..CMDLINE.len()], CMDLINE.as_bytes());
    assert!(si.cmd_line[CMDLINE.len()..].iter().all(|&b| b == 0));
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0x1403, 67));
    assert_eq!((si.pad0, si.pad1), (0, 0));
}

#[test]
fn start_info_of_dom0() {
    let bytes = linux();
    let (k, spec, l) = setup(&bytes, Role::Dom0, &[]);
    let si = start_info(&k, &l, &spec, &boot(), mfn_of).expect("start info");
    // Xen's Dom0 builder: "xen-3.0-x86_64" plus "p" for a PAE_MODE kernel.
    assert_eq!(magic(&si), "xen-3.0-x86_64p");
    assert_eq!(si.flags, SIF_PRIVILEGED | SIF_INITDOMAIN);
    assert_eq!((si.store_mfn, si.store_evtchn), (0, 0));
    assert_eq!(ConsoleDom0::from_bytes(&si.console), ConsoleDom0::default());
    assert_eq!((si.mod_start, si.mod_len), (0, 0));
    assert_eq!(si.pt_base, 0xFFFF_FFFF_8100_B000);

    // A classic kernel: mapped initrd, p2m in the region, no PAE note.
    let classic = kernel_with(&linux_notes_except(&[
        XEN_ELFNOTE_INIT_P2M,
        XEN_ELFNOTE_MOD_START_PFN,
        XEN_ELFNOTE_PAE_MODE,
    ]))
    .build();
    let initrd = [6u8; 100];
    let (k, spec, l) = setup(&classic, Role::Dom0, &initrd);
    let si = start_info(&k, &l, &spec, &boot(), mfn_of).expect("start info");
    assert_eq!(magic(&si), "xen-3.0-x86_64");
    assert_eq!(si.flags, SIF_PRIVILEGED | SIF_INITDOMAIN);
    assert_eq!((si.mod_start, si.mod_len), (0xFFFF_FFFF_8100_A000, 100));
    assert_eq!(si.mfn_list, 0xFFFF_FFFF_8100_B000);
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0, 0));
}

#[test]
fn registers_at_entry() {
    let bytes = linux();
    let (_, _, l) = setup(&bytes, Role::DomU, &[]);
    let r = initial_regs(&l, mfn_of).expect("registers");
    assert_eq!(
        r,
        PvRegs {
            rip: ENTRY,
            rsp: 0xFFFF_FFFF_8101_B000,
            rsi: 0xFFFF_FFFF_8100_A000,
            rflags: 0x200,
            cs: 0xE033,
            ss: 0xE02B,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
            cr3: (0x100D + MFN_BASE) << 12,
            kernel_ss: 0xE02B,
            kernel_sp: 0xFFFF_FFFF_8101_B000,
        }
    );
    assert_eq!(
        initial_regs(&l, |_| None),
        Err(PvError::MfnMissing { pfn: 0x100D })
    );
}

#[test]
fn load_writes_exactly_the_right_bytes() {
    for role in [Role::DomU, Role::Dom0] {
        let bytes = linux();
        let initrd: Vec<u8> = (0..0x2345u32).map(|i| (i * 13) as u8).collect();
        let (k, spec, l) = setup(&bytes, role, &initrd);
        let mut mem = VecMem::new(l.pages_used, 0);
        load(&k, &l, &spec, &boot(), mfn_of, &mut mem).expect("loads");

        // Build the expected memory independently.
        let mut want = vec![0u8; mem.ram.len()];
        let mut put = |gpa: u64, b: &[u8]| {
            want[gpa as usize..gpa as usize + b.len()].copy_from_slice(b);
        };
        put(TEXT_PADDR, &text());
        put(TEXT_PADDR + 0x8000, &[0xDA; 0x100]);
        put(TEXT_PADDR + 0x1000, &HYPERCALL_BYTES);
        put(0x1400 * PAGE_SIZE, &initrd);
        let p2m: Vec<u8> = (0..0x8000u64)
            .flat_map(|pfn| (pfn + MFN_BASE).to_le_bytes())
            .collect();
        put(0x1403 * PAGE_SIZE, &p2m);
        for_each_page_table(&l, mfn_of, |t, e| {
            let b: Vec<u8> = e.iter().flat_map(|x| x.to_le_bytes()).collect();
            put(t.pfn * PAGE_SIZE, &b);
            Ok(())
        })
        .expect("tables");
        let si = start_info(&k, &l, &spec, &boot(), mfn_of).expect("start info");
        put(l.start_info.pfn * PAGE_SIZE, &si.to_bytes());
        assert!(
            want == mem.ram,
            "{role:?}: memory differs from the expected image"
        );

        // The start info is written last, a whole page.
        assert_eq!(
            mem.writes.last(),
            Some(&(l.start_info.pfn * PAGE_SIZE, PAGE_SIZE as usize))
        );
        let back = StartInfo::from_bytes(
            mem.at(l.start_info.pfn * PAGE_SIZE, StartInfo::SIZE)
                .try_into()
                .expect("size"),
        );
        assert_eq!(back, si);
        // The zero tails were written even though the memory was zero.
        assert!(mem.writes.contains(&(TEXT_PADDR + 0x3000, 0x1000)));
    }
}

#[test]
fn load_overwrites_dirty_memory_where_it_must() {
    let bytes = linux();
    let (k, spec, l) = setup(&bytes, Role::DomU, &[]);
    let mut mem = VecMem::new(l.pages_used, 0xAA);
    load(
        &k,
        &l,
        &spec,
        &boot(),
        |pfn| (pfn < 0x7000).then_some(pfn),
        &mut mem,
    )
    .expect("loads");
    // Segment tails, the rings, the stack are zeroed.
    assert!(mem.at(TEXT_PADDR + 0x3000, 0x3000).iter().all(|&b| b == 0));
    assert!(mem.at(TEXT_PADDR + 0x8100, 0x1F00).iter().all(|&b| b == 0));
    for p in [l.xenstore, l.console, Some(l.stack)].into_iter().flatten() {
        assert!(mem.page(p.pfn).iter().all(|&b| b == 0));
    }
    // The start info page is zero after the structure.
    assert!(
        mem.page(l.start_info.pfn)[StartInfo::SIZE..]
            .iter()
            .all(|&b| b == 0)
    );
    // pfns without a machine frame are INVALID in the p2m list.
    let at = l.p2m.pfn * PAGE_SIZE + 0x7000 * 8;
    assert_eq!(mem.at(at, 8), INVALID_P2M_ENTRY.to_le_bytes());
    assert_eq!(mem.at(at - 8, 8), 0x6FFFu64.to_le_bytes());
    // Gaps in the region are not written: the caller's frames are zero.
    assert!(mem.page(0).iter().all(|&b| b == 0xAA));
    assert!(mem.page(l.region_pages() - 1).iter().all(|&b| b == 0xAA));
    assert!(matches!(l.initrd, InitrdPlace::None));
}

#[test]
fn load_refusals() {
    let bytes = linux();
    let (k, spec, l) = setup(&bytes, Role::DomU, &[]);
    let mut mem = VecMem::new(l.pages_used, 0);
    let other = PvSpec {
        nr_pages: 0x9000,
        ..spec
    };
    assert_eq!(
        load(&k, &l, &other, &boot(), mfn_of, &mut mem),
        Err(PvError::LayoutMismatch)
    );
    let moved = PvLayout {
        entry: l.entry + 1,
        ..l.clone()
    };
    assert_eq!(
        load(&k, &moved, &spec, &boot(), mfn_of, &mut mem),
        Err(PvError::LayoutMismatch)
    );
    let no_hc = PvBoot {
        hypercall_page: None,
        ..boot()
    };
    assert_eq!(
        load(&k, &l, &spec, &no_hc, mfn_of, &mut mem),
        Err(PvError::NoHypercallPage)
    );
    assert_eq!(
        load(&k, &l, &spec, &boot(), |_| None, &mut mem),
        Err(PvError::MfnMissing { pfn: 0x100B })
    );
    assert!(
        mem.writes.is_empty(),
        "nothing written when refused up front"
    );
    // Guest memory too small: the first write that does not fit fails.
    let mut small = VecMem::new(0x1000, 0);
    assert_eq!(
        load(&k, &l, &spec, &boot(), mfn_of, &mut small),
        Err(PvError::GuestWrite {
            gpa: TEXT_PADDR,
            len: 0x3000
        })
    );
    // A kernel without a hypercall page needs none.
    let plain = kernel_with(&linux_notes_except(&[XEN_ELFNOTE_HYPERCALL_PAGE])).build();
    let (k, spec, l) = setup(&plain, Role::DomU, &[]);
    assert_eq!(l.hypercall_page, None);
    let mut mem = VecMem::new(l.pages_used, 0);
    assert_eq!(load(&k, &l, &spec, &no_hc, mfn_of, &mut mem), Ok(()));
    assert!(mem.page(0x1001).iter().any(|&b| b != 0xC3));
}
