//! The initial page tables, checked by walking them as the MMU would.

use keel_hypercall::abi::elfnote::*;
use keel_hypercall::abi::start_info::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};

use super::super::layout::PT_ENTRIES;
use super::super::pagetable::{
    LEAF_FLAGS, PTE_ADDR_MASK, PTE_GUEST_KERNEL, PTE_NX, PTE_RW, PTE_USER, UPPER_FLAGS,
    page_table_entries,
};
use super::super::testelf::*;
use super::super::{PAGE_SIZE, PvError, PvLayout, PvSpec, Role, for_each_page_table, parse, plan};
use super::{MFN_BASE, Tables, mfn_of};

/// Checks everything the module docs promise of `layout`'s tables.
pub fn check_tables(layout: &PvLayout) {
    let t = Tables::of(layout);
    let pt_base = layout.pt_base();

    // Every page of the region maps its pfn; the region's tables read-only.
    for pfn in 0..layout.region_pages() {
        let va = layout.v_start + pfn * PAGE_SIZE;
        let leaf = t.walk(va).unwrap_or_else(|| panic!("{va:#x} unmapped"));
        assert_eq!(leaf.mfn, pfn + MFN_BASE, "{va:#x}");
        assert_eq!(leaf.upper, [UPPER_FLAGS; 3], "{va:#x}");
        let is_table = (pt_base.pfn..pt_base.pfn + layout.nr_pt_frames).contains(&pfn);
        let want = if is_table {
            LEAF_FLAGS & !PTE_RW
        } else {
            LEAF_FLAGS
        };
        assert_eq!(leaf.flags, want, "{va:#x}");
        assert_eq!(leaf.flags & PTE_NX, 0);
        assert_ne!(leaf.flags & (PTE_USER | PTE_GUEST_KERNEL), 0);
    }
    // The p2m list, when mapped apart.
    let p = layout.p2m;
    if !p.in_region {
        for i in 0..p.pages {
            let leaf = t.walk(p.va + i * PAGE_SIZE).expect("p2m mapped");
            assert_eq!(leaf.mfn, p.pfn + i + MFN_BASE);
            assert_eq!(leaf.flags, LEAF_FLAGS);
        }
        // The next page is mapped only if it is the region's.
        let next = p.va + p.pages * PAGE_SIZE;
        assert_eq!(
            t.walk(next).map(|l| l.mfn),
            layout.pfn_at(next).map(|pfn| pfn + MFN_BASE)
        );
    }
    // Nothing else: as many leaves as pages mapped.
    let mapped = layout.region_pages() + if p.in_region { 0 } else { p.pages };
    assert_eq!(t.leaves(layout).len() as u64, mapped);
    // Around the region: nothing.
    if let Some(below) = layout.v_start.checked_sub(PAGE_SIZE)
        && layout.pfn_at(below).is_none()
    {
        assert_eq!(t.walk(below), None);
    }
    if layout.pfn_at(layout.v_end).is_none() {
        assert_eq!(t.walk(layout.v_end), None);
    }
    // The hypervisor's L4 slots are the hypervisor's.
    let l4 = &t.by_mfn[&t.l4];
    let first = ((HYPERVISOR_VIRT_START >> 39) & 511) as usize;
    let last = (((HYPERVISOR_VIRT_END - 1) >> 39) & 511) as usize;
    assert!(l4[first..=last].iter().all(|&e| e == 0));
    // Every table but the L4 is pointed at by exactly one upper-level entry.
    let mut pointed: Vec<u64> = t
        .by_mfn
        .values()
        .flatten()
        .filter(|&&e| e & !PTE_ADDR_MASK == UPPER_FLAGS)
        .map(|e| (e & PTE_ADDR_MASK) >> 12)
        .collect();
    pointed.sort_unstable();
    let mut want: Vec<u64> = layout.page_tables[1..]
        .iter()
        .map(|t| t.pfn + MFN_BASE)
        .collect();
    want.sort_unstable();
    assert_eq!(pointed, want);
}

fn linux_layout(role: Role) -> PvLayout {
    let bytes = linux();
    let k = parse(&bytes).expect("parses");
    let initrd = [1u8; 0x1234];
    plan(
        &k,
        &PvSpec {
            role,
            nr_pages: 0x8000,
            initrd: &initrd,
            cmdline: "",
        },
    )
    .expect("plans")
}

#[test]
fn linux_tables_map_the_region_and_the_p2m() {
    for role in [Role::Dom0, Role::DomU] {
        let l = linux_layout(role);
        check_tables(&l);
        let t = Tables::of(&l);
        // The kernel's first page, by hand: L4 slot 511, L3 slot 510, L2 slot 8,
        // L1 slot 0.
        let leaf = t.walk(0xFFFF_FFFF_8100_0000).expect("mapped");
        assert_eq!(leaf.mfn, 0x1000 + MFN_BASE);
        let l4 = &t.by_mfn[&t.l4];
        assert_eq!(
            l4[511],
            ((l.page_tables[1].pfn + MFN_BASE) << 12) | UPPER_FLAGS
        );
        assert_eq!(
            l4[1],
            ((l.page_tables[13].pfn + MFN_BASE) << 12) | UPPER_FLAGS
        );
        assert_eq!(l4.iter().filter(|&&e| e != 0).count(), 2);
        // The tables' own mappings are read-only, the stack writable.
        let pt = t.walk(l.pt_base().va).expect("mapped");
        assert_eq!(pt.flags & PTE_RW, 0);
        assert_eq!(t.walk(l.stack.va).expect("mapped").flags, LEAF_FLAGS);
        // The p2m's tables are not mapped anywhere.
        for table in &l.page_tables[13..] {
            assert!(table.pfn >= l.region_pages());
        }
    }
}

#[test]
fn tables_for_a_classic_kernel_and_a_low_one() {
    let classic = kernel_with(&linux_notes_except(&[
        XEN_ELFNOTE_INIT_P2M,
        XEN_ELFNOTE_MOD_START_PFN,
    ]))
    .build();
    let low = Elf::new()
        .load(0x2000, &text(), 0x3000)
        .notes(
            &[
                xen(XEN_ELFNOTE_GUEST_OS, b"Mini-OS\0"),
                xen(XEN_ELFNOTE_LOADER, b"generic\0"),
                xen(XEN_ELFNOTE_XEN_VERSION, b"xen-3.0\0"),
            ]
            .concat(),
        )
        .entry(0x2000)
        .build();
    for bytes in [classic, low] {
        let k = parse(&bytes).expect("parses");
        for (role, nr_pages, initrd) in [
            (Role::DomU, 0x4_0000, vec![9u8; 0x30_0001]),
            (Role::Dom0, 0x2000, vec![]),
        ] {
            let l = plan(
                &k,
                &PvSpec {
                    role,
                    nr_pages,
                    initrd: &initrd,
                    cmdline: "",
                },
            )
            .expect("plans");
            check_tables(&l);
        }
    }
}

#[test]
fn one_table_at_a_time() {
    let l = linux_layout(Role::DomU);
    let mut all = Vec::new();
    for_each_page_table(&l, mfn_of, |t, e| {
        all.push((*t, *e));
        Ok(())
    })
    .expect("tables");
    assert_eq!(all.len(), l.page_tables.len());
    for (t, e) in &all {
        assert_eq!(page_table_entries(&l, t, mfn_of).expect("entries"), *e);
    }
    // A table not from the layout: no panic, nothing mapped.
    let mut odd = l.page_tables[5];
    odd.key = u64::MAX;
    assert_eq!(
        page_table_entries(&l, &odd, mfn_of),
        Ok([0; PT_ENTRIES as usize])
    );
    odd.level = 0;
    assert_eq!(
        page_table_entries(&l, &odd, mfn_of),
        Ok([0; PT_ENTRIES as usize])
    );
}

#[test]
fn machine_frames_must_exist_and_fit() {
    let l = linux_layout(Role::Dom0);
    let l1 = l.page_tables[3];
    let e = page_table_entries(&l, &l1, |pfn| (pfn != 0x100).then_some(pfn)).expect_err("hole");
    assert_eq!(e, PvError::MfnMissing { pfn: 0x100 });
    let e = page_table_entries(&l, &l1, |pfn| Some(pfn << 40)).expect_err("too big");
    assert_eq!(
        e,
        PvError::MfnTooLarge {
            pfn: 1,
            mfn: 1 << 40
        }
    );
    assert_eq!(
        e.to_string(),
        "machine frame 0x10000000000 (of pseudo-physical frame 0x1) does not fit in a page-table entry"
    );
}
