//! The invariants of the `pv` module documentation, recomputed from scratch: walk
//! every validated table in memory, count the references its entries hold, add
//! those held by pins, base pointers, allocations and the kernel, and compare with
//! what [`DomainFrames`] keeps. The model the property tests check against. Also
//! checks how [`DomainFrames`] stores it (chunks, counts, the freed list).

use std::alloc::Allocator;
use std::collections::BTreeMap;

use crate::addr::Mfn;

use super::entry::{self, CACHE_ATTRS, ENTRIES, RW, is_guest_slot, is_present};
use super::fake::{FakeMem, keel_entry};
use super::{DomainFrames, IoFrame, Level, PageType, PvMemory, PvVcpu};

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Counts {
    general: u64,
    typed: u64,
    linear_entries: u64,
    linear_uses: u64,
}

/// Checks every invariant; `segdesc` holds the descriptor-page references the
/// kernel took.
pub(crate) fn audit<A: Allocator + Clone>(
    d: &DomainFrames<A>,
    mem: &FakeMem,
    vcpus: &[PvVcpu],
    segdesc: &BTreeMap<Mfn, u32>,
) -> Result<(), String> {
    d.check_storage()?;
    let policy = *d.policy();
    let mut want: BTreeMap<Mfn, Counts> = BTreeMap::new();
    let refer = |want: &mut BTreeMap<Mfn, Counts>, m: Mfn, typed: bool| {
        if !d.owns(m) {
            return Err(format!("reference to {m}, which is not the domain's"));
        }
        let c = want.entry(m).or_default();
        c.general += 1;
        c.typed += u64::from(typed);
        Ok(())
    };

    for (m, p) in d.pages() {
        if p.count() == 0 {
            return Err(format!("{m} is the domain's with no reference"));
        }
        if p.is_pinned() && !matches!(p.page_type(), PageType::PageTable(_)) {
            return Err(format!("{m} is pinned as {:?}", p.page_type()));
        }
        if matches!(p.page_type(), PageType::PageTable(_))
            && (p.type_count() > 0) != p.is_validated()
        {
            return Err(format!(
                "table {m}: type count {} but validated {}",
                p.type_count(),
                p.is_validated()
            ));
        }
        if p.type_count() > 0 && p.page_type() == PageType::None {
            return Err(format!("{m} has references of no type"));
        }
        if p.linear_entries() != 0 && p.linear_uses() != 0 {
            return Err(format!(
                "{m} both has linear entries and is a linear target"
            ));
        }
        if p.is_allocated() {
            refer(&mut want, m, p.is_special())?;
        }
        if p.is_pinned() {
            refer(&mut want, m, true)?;
        }
    }
    for v in vcpus {
        for root in [v.kernel_root(), v.user_root()].into_iter().flatten() {
            if d.page(root).map(|p| p.page_type()) != Some(PageType::PageTable(Level::L4)) {
                return Err(format!("base pointer {root} is not an L4"));
            }
            refer(&mut want, root, true)?;
        }
    }
    for (&m, &n) in segdesc {
        if d.page(m).map(|p| p.page_type()) != Some(PageType::SegDesc) {
            return Err(format!("descriptor page {m} has another type"));
        }
        for _ in 0..n {
            refer(&mut want, m, true)?;
        }
    }

    let tables: Vec<(Mfn, Level)> = d
        .pages()
        .filter_map(|(m, p)| match p.page_type() {
            PageType::PageTable(l) if p.is_validated() => Some((m, l)),
            _ => None,
        })
        .collect();
    for (t, level) in tables {
        for i in 0..ENTRIES {
            let e = mem.read_entry(t, i);
            if !is_guest_slot(level, i) {
                if e != keel_entry(t, i) {
                    return Err(format!("L4 {t} slot {i} is {e:#x}, not keel's"));
                }
                continue;
            }
            if !is_present(e) {
                if let Some(safe) = policy.l1tf_safe_maddr
                    && entry::l1tf_unsafe(e, safe)
                {
                    return Err(format!("{t}[{i}] = {e:#x} is L1TF-unsafe"));
                }
                continue;
            }
            let bad = e & entry::disallow_mask(level, &policy);
            if bad != 0 {
                return Err(format!(
                    "{t}[{i}] = {e:#x} sets {bad:#x} at L{}",
                    level.number()
                ));
            }
            if entry::adjust_guest_pde(level, e) != e {
                return Err(format!("{t}[{i}] = {e:#x} is stored unadjusted"));
            }
            let target = entry::entry_mfn(e);
            let Some(below) = level.below() else {
                match d.page(target) {
                    Some(p) => {
                        refer(&mut want, target, e & RW != 0)?;
                        if e & RW != 0 && p.page_type() != PageType::Writable {
                            return Err(format!(
                                "{t}[{i}] maps {target} writable, a {:?}",
                                p.page_type()
                            ));
                        }
                        if p.is_special() && e & CACHE_ATTRS != 0 {
                            return Err(format!("{t}[{i}] maps special {target} uncached"));
                        }
                    }
                    None => {
                        let read_only = match mem.io_frame(target) {
                            IoFrame::ReadWrite => false,
                            IoFrame::ReadOnly => true,
                            other => return Err(format!("{t}[{i}] maps {target}, {other:?}")),
                        };
                        if entry::io_flip(e, read_only) != 0 {
                            return Err(format!("{t}[{i}] = {e:#x} maps I/O unflipped"));
                        }
                    }
                }
                continue;
            };
            if target == t {
                if e & RW != 0 || !policy.linear_pt {
                    return Err(format!("{t}[{i}] = {e:#x} maps its own table"));
                }
                continue;
            }
            refer(&mut want, target, true)?;
            match d.page(target).map(|p| p.page_type()) {
                Some(PageType::PageTable(l)) if l == below => {}
                Some(PageType::PageTable(l)) if l == level => {
                    if e & RW != 0 || !policy.linear_pt {
                        return Err(format!("{t}[{i}] = {e:#x} is a bad linear entry"));
                    }
                    want.entry(t).or_default().linear_entries += 1;
                    want.entry(target).or_default().linear_uses += 1;
                }
                other => return Err(format!("{t}[{i}] points at {target}, a {other:?}")),
            }
        }
    }

    for (m, p) in d.pages() {
        let w = want.get(&m).copied().unwrap_or_default();
        let got = Counts {
            general: u64::from(p.count()),
            typed: u64::from(p.type_count()),
            linear_entries: u64::from(p.linear_entries()),
            linear_uses: u64::from(p.linear_uses()),
        };
        if w != got {
            return Err(format!("{m}: recomputed {w:?}, kept {got:?} ({p:?})"));
        }
    }
    Ok(())
}
