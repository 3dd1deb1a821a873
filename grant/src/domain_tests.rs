//! Unit tests of the per-domain API: [`DomainGrants`] and the two-domain
//! functions of [`pair`], each domain's state a separate value as the
//! kernel will keep them (one per domain lock), against the fake frame
//! memory. Status codes are checked as `tests.rs` checks [`Grants`]'s.

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::grant_table::{
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_WRITING, GrantEntryV1,
};

use crate::entry;
use crate::fake::FakeMem;
use crate::pair::{self, check_unmap, map, map_own, unmap, unmap_own};
use crate::*;

const MAX_FRAMES: u32 = 4;
const MAPTRACK: u32 = 8;
const RW: u16 = GTF_PERMIT_ACCESS;
const RO: u16 = GTF_PERMIT_ACCESS | GTF_READONLY;

/// Domain `id` with one table frame, `0x1000 * (id + 1)`.
fn dom(id: DomId) -> DomainGrants {
    let mut d = DomainGrants::new(id, MAX_FRAMES, MAPTRACK).unwrap();
    let frame = 0x1000 * (u64::from(id) + 1);
    d.setup_table(INITIAL_NR_GRANT_FRAMES, || Some(frame))
        .unwrap();
    d
}

/// `granter` fills in entry `gref`.
fn grant(mem: &mut FakeMem, granter: &DomainGrants, gref: GrantRef, flags: u16, domid: DomId) {
    let at = entry::locate(granter.table_frames(), gref).unwrap();
    let frame = 0x100 + gref;
    mem.write_entry(
        at,
        GrantEntryV1 {
            flags,
            domid,
            frame,
        },
    );
}

fn flags(mem: &FakeMem, granter: &DomainGrants, gref: GrantRef) -> u16 {
    entry::read(mem, entry::locate(granter.table_frames(), gref).unwrap()).flags
}

/// The frame `grant` puts in entry `gref`.
fn frame(gref: GrantRef) -> u64 {
    0x100 + u64::from(gref)
}

/// What a copy of the whole page `frame` gets.
fn page(frame: u64) -> Acquired {
    Acquired::Page(CopyGrant::page(frame))
}

#[test]
fn new_checks_ids_and_limits() {
    assert_eq!(
        DomainGrants::new(DOMID_SELF, 4, 4).err(),
        Some(Error::ReservedDomid)
    );
    assert_eq!(DomainGrants::new(1, 0, 4).err(), Some(Error::BadLimits));
    assert_eq!(
        DomainGrants::new(1, MAX_GRANT_FRAMES_LIMIT + 1, 4).err(),
        Some(Error::BadLimits)
    );
    let d = DomainGrants::new(5, MAX_GRANT_FRAMES_LIMIT, 0).unwrap();
    assert_eq!(d.id(), 5);
    assert_eq!((d.nr_frames(), d.max_frames()), (0, MAX_GRANT_FRAMES_LIMIT));
    assert!(!d.is_dying() && d.granters().is_empty() && d.mappers().is_empty());
    assert_eq!(Error::SameDomain.to_string(), "one domain given as two");
}

#[test]
fn single_domain_table_ops() {
    let mut d = DomainGrants::new(3, 3, 4).unwrap();
    assert_eq!(d.add_table_frame(0xa), Ok(0));
    assert_eq!(d.table_frames(), [0xa]);
    let mut next = 0xb;
    let mut alloc = || {
        next += 1;
        Some(next - 1)
    };
    assert_eq!(
        d.setup_table(2, &mut alloc).map(<[u64]>::to_vec),
        Ok(vec![0xa, 0xb])
    );
    assert_eq!(d.setup_table(4, &mut alloc), Err(GntSt::GeneralError));
    assert_eq!(d.map_table_frame(2, &mut alloc), Ok(0xc));
    assert_eq!(d.map_table_frame(1, &mut alloc), Ok(0xb));
    assert_eq!(d.map_table_frame(3, &mut alloc), Err(Errno::EINVAL));
    assert_eq!(d.map_table_frame(u64::MAX, &mut alloc), Err(Errno::EINVAL));
    assert_eq!(d.add_table_frame(0xd), Err(Error::TableFull));
    assert_eq!(d.query_size(), (3, 3));
    assert_eq!((d.table_frame(2), d.table_frame(3)), (Some(0xc), None));
    let mut mem = FakeMem::default();
    assert_eq!(d.set_version(1, &mut mem, || None).result, Ok(()));
    assert_eq!(
        d.set_version(2, &mut mem, || None),
        VersionReply {
            result: Err(Errno::ENOSYS),
            version: 1,
            freed: vec![],
        }
    );
    assert_eq!(
        d.set_version(0, &mut mem, || None).result,
        Err(Errno::EINVAL)
    );
    assert_eq!(d.get_version(), 1);
}

#[test]
fn map_and_unmap_two_domains() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom(0), dom(1));
    grant(&mut mem, &d0, 5, RW, 1);
    // The kernel holds d0's then d1's lock: mapper d1, granter d0.
    let m = map(&mut d1, &mut d0, 5, false, 0x400, &mut mem).unwrap();
    assert_eq!(
        m,
        Mapped {
            handle: 0,
            frame: frame(5)
        }
    );
    assert_eq!(flags(&mem, &d0, 5), RW | GTF_READING | GTF_WRITING);
    assert!(d0.is_frame_mapped(frame(5)) && !d1.is_frame_mapped(frame(5)));
    assert_eq!(d0.pins(5), Some((1, 1, 1)));
    assert_eq!((d0.mappers(), d1.granters()), (vec![1], vec![0]));

    let info = MapInfo {
        granter: 0,
        gref: 5,
        frame: frame(5),
        host_gfn: 0x400,
        readonly: false,
    };
    // First look under the mapper's lock alone, then both.
    assert_eq!(d1.check_unmap(0, 0x400), Ok(Unmapped::Live(info)));
    assert_eq!(d1.check_unmap(0, 0x401), Err(GntSt::GeneralError));
    assert_eq!(d1.check_unmap(1, 0x400), Err(GntSt::BadHandle));
    assert_eq!(check_unmap(&d1, &d0, 0, 0x400), Ok(Unmapped::Live(info)));
    assert_eq!(check_unmap(&d1, &d0, 0, 0x401), Err(GntSt::GeneralError));
    assert_eq!(
        unmap(&mut d1, &mut d0, 0, 0x401, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(flags(&mem, &d0, 5), RW | GTF_READING | GTF_WRITING);
    assert_eq!(
        unmap(&mut d1, &mut d0, 0, 0x400, &mut mem),
        Ok(Unmapped::Live(info))
    );
    assert_eq!(flags(&mem, &d0, 5), RW);
    assert!(!d0.is_frame_mapped(frame(5)));
    assert_eq!(
        unmap(&mut d1, &mut d0, 0, 0x400, &mut mem),
        Err(GntSt::BadHandle)
    );
    assert!(d0.mappers().is_empty() && d1.granters().is_empty());
}

#[test]
fn map_status_codes() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1, mut d2) = (dom(0), dom(1), dom(2));
    for gref in [512, u32::MAX] {
        assert_eq!(
            map(&mut d1, &mut d0, gref, true, 0x400, &mut mem),
            Err(GntSt::BadGntref)
        );
    }
    grant(&mut mem, &d0, 1, RW, 2);
    grant(&mut mem, &d0, 2, RO, 1);
    grant(&mut mem, &d0, 3, RW | GTF_SUB_PAGE, 1);
    for (gref, ro, why) in [
        (1, true, "granted to d2"),
        (2, false, "read-only"),
        (3, true, "sub-page"),
        (4, true, "GTF_invalid"),
    ] {
        assert_eq!(
            map(&mut d1, &mut d0, gref, ro, 0x400, &mut mem),
            Err(GntSt::GeneralError),
            "{why}"
        );
        assert_eq!(d0.pins(gref), None, "{why}");
    }
    // Pinned by d2: d1 is refused even when the entry names it.
    map(&mut d2, &mut d0, 1, true, 0x400, &mut mem).unwrap();
    grant(&mut mem, &d0, 1, RW | GTF_READING, 1);
    assert_eq!(
        map(&mut d1, &mut d0, 1, true, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    // A full maptrack is no_space, before the ref is looked at.
    grant(&mut mem, &d0, 2, RO, 1);
    for i in 0..MAPTRACK {
        assert_eq!(
            map(&mut d1, &mut d0, 2, true, 0x500 + u64::from(i), &mut mem).map(|m| m.handle),
            Ok(i)
        );
    }
    assert_eq!(
        map(&mut d1, &mut d0, 9999, true, 0x600, &mut mem),
        Err(GntSt::NoSpace)
    );
    assert_eq!(d0.pins(2), Some((1, u64::from(MAPTRACK), 0)));
}

#[test]
fn one_domain_given_as_two_is_refused() {
    let mut mem = FakeMem::default();
    let mut d1 = dom(1);
    grant(&mut mem, &d1, 1, RW, 1);
    let m = map_own(&mut d1, 1, false, 0x400, &mut mem).unwrap();
    // A second value with d1's id (a kernel bug) changes nothing.
    let mut twin = dom(1);
    assert_eq!(
        map(&mut twin, &mut d1, 1, false, 0x401, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        check_unmap(&d1, &twin, m.handle, 0x400),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        unmap(&mut d1, &mut twin, m.handle, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    d1.start_dying();
    assert_eq!(
        pair::release_mappings(&mut d1, &mut twin, &mut mem),
        Err(Error::SameDomain)
    );
    assert_eq!(
        pair::revoke_mappings(&mut d1, &mut twin, &mut mem),
        Err(Error::SameDomain)
    );
    assert_eq!(d1.pins(1), Some((1, 1, 1)));
    assert_eq!(flags(&mem, &d1, 1), RW | GTF_READING | GTF_WRITING);
}

#[test]
fn self_mapping_with_one_lock() {
    let mut mem = FakeMem::default();
    let mut d1 = dom(1);
    grant(&mut mem, &d1, 1, RW, 1);
    grant(&mut mem, &d1, 2, RO, 1);
    let a = map_own(&mut d1, 1, false, 0x400, &mut mem).unwrap();
    let b = map_own(&mut d1, 2, true, 0x401, &mut mem).unwrap();
    assert_eq!((a.handle, b.handle), (0, 1));
    assert_eq!(flags(&mem, &d1, 1), RW | GTF_READING | GTF_WRITING);
    assert_eq!(flags(&mem, &d1, 2), RO | GTF_READING);
    assert_eq!(
        map_own(&mut d1, 2, false, 0x402, &mut mem),
        Err(GntSt::GeneralError)
    );
    // Its own grants are not "other mappers".
    assert_eq!((d1.granters(), d1.mappers()), (vec![1], vec![]));
    // A copy from its own grant, while mapped.
    assert_eq!(d1.acquire(1, 1, true, &mut mem), Ok(page(frame(1))));
    assert_eq!(d1.pins(1), Some((1, 2, 2)));
    d1.release(1, 1, true, &mut mem).unwrap();

    assert_eq!(
        pair::check_unmap_own(&d1, a.handle, 0x999),
        Err(GntSt::GeneralError)
    );
    assert!(matches!(
        unmap_own(&mut d1, a.handle, 0x400, &mut mem),
        Ok(Unmapped::Live(i)) if i.gref == 1 && i.granter == 1
    ));
    assert_eq!(flags(&mem, &d1, 1), RW);
    assert_eq!(
        unmap_own(&mut d1, a.handle, 0x400, &mut mem),
        Err(GntSt::BadHandle)
    );
    // A self-mapping is step (a)'s at death, with one lock.
    d1.start_dying();
    let released = pair::release_own_mappings(&mut d1, &mut mem).unwrap();
    assert_eq!(
        released,
        [Released {
            granter: 1,
            handle: b.handle,
            gref: 2,
            frame: frame(2),
            host_gfn: 0x401
        }]
    );
    assert_eq!(flags(&mem, &d1, 2), RO);
    assert!(d1.death_complete());
}

#[test]
fn a_handle_reused_for_another_granter() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1, mut d2) = (dom(0), dom(1), dom(2));
    grant(&mut mem, &d0, 1, RW, 2);
    grant(&mut mem, &d1, 1, RW, 2);
    let m = map(&mut d2, &mut d0, 1, false, 0x400, &mut mem).unwrap();
    // The kernel looks under d2's lock: granter d0.
    let Ok(Unmapped::Live(seen)) = d2.check_unmap(m.handle, 0x400) else {
        panic!("live mapping expected");
    };
    assert_eq!(seen.granter, 0);
    // Before it has both locks, another vCPU of d2 unmaps the handle and
    // maps d1's grant at the same gfn, reusing the handle.
    unmap(&mut d2, &mut d0, m.handle, 0x400, &mut mem).unwrap();
    let again = map(&mut d2, &mut d1, 1, false, 0x400, &mut mem).unwrap();
    assert_eq!(again.handle, m.handle);
    // Under d0's and d2's locks the handle is no longer a mapping of d0.
    assert_eq!(
        check_unmap(&d2, &d0, m.handle, 0x400),
        Err(GntSt::BadHandle)
    );
    assert_eq!(
        unmap(&mut d2, &mut d0, m.handle, 0x400, &mut mem),
        Err(GntSt::BadHandle)
    );
    assert_eq!(d1.pins(1), Some((2, 1, 1)), "d1's mapping untouched");
    assert!(unmap(&mut d2, &mut d1, m.handle, 0x400, &mut mem).is_ok());
}

#[test]
fn a_granter_that_lost_the_pin() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom(0), dom(1));
    grant(&mut mem, &d0, 1, RW, 1);
    let m = map(&mut d1, &mut d0, 1, true, 0x400, &mut mem).unwrap();
    // A state for d0 that never pinned the entry (what a kernel would pass
    // if it let a domid be reused before the old domain's death was done).
    let mut stranger = dom(0);
    assert_eq!(
        check_unmap(&d1, &stranger, m.handle, 0x400),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        unmap(&mut d1, &mut stranger, m.handle, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    // Nothing changed: the real granter still unmaps it.
    assert!(unmap(&mut d1, &mut d0, m.handle, 0x400, &mut mem).is_ok());
    assert_eq!(flags(&mem, &d0, 1), RW);
}

#[test]
fn copies_pin_only_the_granter() {
    let mut mem = FakeMem::default();
    let mut d0 = dom(0);
    grant(&mut mem, &d0, 1, RW, 1);
    grant(&mut mem, &d0, 2, RO, 1);
    for gref in [512, u32::MAX] {
        assert_eq!(d0.acquire(1, gref, false, &mut mem), Err(GntSt::BadGntref));
        assert_eq!(d0.release(1, gref, false, &mut mem), Err(GntSt::BadGntref));
    }
    assert_eq!(d0.acquire(2, 1, false, &mut mem), Err(GntSt::GeneralError));
    assert_eq!(d0.acquire(1, 2, true, &mut mem), Err(GntSt::GeneralError));
    assert_eq!(d0.acquire(1, 1, true, &mut mem), Ok(page(frame(1))));
    assert_eq!(flags(&mem, &d0, 1), RW | GTF_READING | GTF_WRITING);
    assert!(d0.is_frame_mapped(frame(1)));
    assert!(d0.mappers().is_empty(), "a copier is not a mapper");
    assert_eq!(d0.release(1, 1, false, &mut mem), Err(GntSt::GeneralError));
    assert_eq!(d0.release(1, 1, true, &mut mem), Ok(None));
    assert_eq!(flags(&mem, &d0, 1), RW);
    assert!(!d0.is_frame_mapped(frame(1)));
}

#[test]
fn a_dying_domain_is_refused_new_work() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom(0), dom(1));
    grant(&mut mem, &d0, 1, RW, 1);
    grant(&mut mem, &d0, 2, RW, 1);
    grant(&mut mem, &d1, 1, RW, 0);
    let live = map(&mut d1, &mut d0, 1, false, 0x400, &mut mem).unwrap();
    d0.acquire(1, 2, false, &mut mem).unwrap();
    d0.start_dying();
    d0.start_dying();
    assert!(d0.is_dying() && !d0.death_complete());
    // As a granter, as a mapper, as a table.
    assert_eq!(
        map(&mut d1, &mut d0, 2, false, 0x401, &mut mem),
        Err(GntSt::BadDomain)
    );
    assert_eq!(
        map(&mut d0, &mut d1, 1, false, 0x401, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        map_own(&mut d0, 1, false, 0x401, &mut mem),
        Err(GntSt::BadDomain)
    );
    assert_eq!(d0.acquire(1, 1, false, &mut mem), Err(GntSt::BadDomain));
    assert_eq!(d0.setup_table(2, || Some(0x9000)), Err(GntSt::BadDomain));
    assert_eq!(d0.map_table_frame(1, || Some(0x9000)), Err(Errno::ESRCH));
    assert_eq!(d0.add_table_frame(0x9000), Err(Error::Dying));
    assert_eq!(d0.nr_frames(), 1);
    // What is already there still unwinds: a copy in flight is released,
    // and a mapping the mapper unmaps before its revocation step is a live
    // unmap (the revocation then finds nothing).
    assert_eq!(d0.release(1, 2, false, &mut mem), Ok(None));
    assert_eq!(d0.mappers(), [1]);
    assert!(matches!(
        unmap(&mut d1, &mut d0, live.handle, 0x400, &mut mem),
        Ok(Unmapped::Live(_))
    ));
    assert!(d0.mappers().is_empty() && d0.death_complete());
    assert_eq!(
        pair::revoke_mappings(&mut d0, &mut d1, &mut mem),
        Ok(vec![])
    );
    assert_eq!((flags(&mem, &d0, 1), flags(&mem, &d0, 2)), (RW, RW));
}

#[test]
fn death_steps_need_a_dying_domain() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom(0), dom(1));
    grant(&mut mem, &d0, 1, RW, 1);
    map(&mut d1, &mut d0, 1, false, 0x400, &mut mem).unwrap();
    assert_eq!(
        pair::release_mappings(&mut d1, &mut d0, &mut mem),
        Err(Error::NotDying)
    );
    assert_eq!(
        pair::release_own_mappings(&mut d1, &mut mem),
        Err(Error::NotDying)
    );
    assert_eq!(
        pair::revoke_mappings(&mut d0, &mut d1, &mut mem),
        Err(Error::NotDying)
    );
    assert!(!d0.death_complete());
    assert_eq!(d0.pins(1), Some((1, 1, 1)));
}

/// d0 dies holding mappings of d1 and of itself, with d1 and d2 mapping
/// its grants and d2 copying from one; the kernel runs its death two
/// domains at a time.
#[test]
fn death_revokes_and_releases_pairwise() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1, mut d2) = (dom(0), dom(1), dom(2));
    grant(&mut mem, &d0, 1, RW, 1);
    grant(&mut mem, &d0, 2, RO, 2);
    grant(&mut mem, &d0, 3, RW, 0);
    grant(&mut mem, &d1, 4, RW, 0);
    grant(&mut mem, &d1, 5, RW, 2);
    let m1 = map(&mut d1, &mut d0, 1, false, 0x400, &mut mem).unwrap();
    let m2 = map(&mut d2, &mut d0, 2, true, 0x500, &mut mem).unwrap();
    let own = map_own(&mut d0, 3, false, 0x600, &mut mem).unwrap();
    let theirs = map(&mut d0, &mut d1, 4, false, 0x601, &mut mem).unwrap();
    let m3 = map(&mut d2, &mut d1, 5, false, 0x501, &mut mem).unwrap();
    d0.acquire(2, 2, false, &mut mem).unwrap();

    // Step 0, under d0's lock alone.
    d0.start_dying();
    assert_eq!(d0.granters(), [0, 1]);
    assert_eq!(d0.mappers(), [1, 2]);

    // (b) for d2 first: locks d0, d2.
    let r2 = pair::revoke_mappings(&mut d0, &mut d2, &mut mem).unwrap();
    assert_eq!(
        r2,
        [Revoked {
            mapper: 2,
            handle: m2.handle,
            gref: 2,
            frame: frame(2),
            host_gfn: 0x500
        }]
    );
    // d2's copy in flight keeps its pin; d2's mapping of d1 is untouched.
    assert_eq!(flags(&mem, &d0, 2), RO | GTF_READING);
    assert_eq!(d0.pins(2), Some((2, 1, 0)));
    assert_eq!(d2.granters(), [1]);
    // (a) for d1: locks d0, d1.
    let r = pair::release_mappings(&mut d0, &mut d1, &mut mem).unwrap();
    assert_eq!(
        r,
        [Released {
            granter: 1,
            handle: theirs.handle,
            gref: 4,
            frame: frame(4),
            host_gfn: 0x601
        }]
    );
    assert_eq!(flags(&mem, &d1, 4), RW);
    assert_eq!(d1.pins(4), None);
    // (b) for d1: locks d0, d1.
    let r1 = pair::revoke_mappings(&mut d0, &mut d1, &mut mem).unwrap();
    assert_eq!(r1.len(), 1);
    assert_eq!((r1[0].mapper, r1[0].handle), (1, m1.handle));
    assert_eq!(flags(&mem, &d0, 1), RW);
    // (a) for itself: one lock.
    let r = pair::release_own_mappings(&mut d0, &mut mem).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].granter, r[0].handle), (0, own.handle));
    assert_eq!(flags(&mem, &d0, 3), RW);
    // Every step again finds nothing.
    assert!(
        pair::revoke_mappings(&mut d0, &mut d2, &mut mem)
            .unwrap()
            .is_empty()
    );
    assert!(
        pair::release_mappings(&mut d0, &mut d1, &mut mem)
            .unwrap()
            .is_empty()
    );
    assert!(d0.granters().is_empty() && d0.mappers().is_empty());
    assert!(d0.death_complete());

    // The mappers' revoked handles: d1's unmaps with d0 gone from the
    // domain table (one lock), d2's with d0 still held by reference.
    assert_eq!(
        d1.check_unmap(m1.handle, 0x999)
            .map(|u| matches!(u, Unmapped::Revoked(_))),
        Ok(true)
    );
    assert_eq!(d1.unmap_revoked(m1.handle).map(|i| i.gref), Ok(1));
    assert_eq!(d1.unmap_revoked(m1.handle), Err(GntSt::BadHandle));
    assert!(matches!(
        unmap(&mut d2, &mut d0, m2.handle, 0x500, &mut mem),
        Ok(Unmapped::Revoked(i)) if i.gref == 2
    ));
    // The copy ends after the death and still drops its pin.
    assert_eq!(d0.release(2, 2, false, &mut mem), Ok(None));
    assert_eq!(flags(&mem, &d0, 2), RO);
    // d2's mapping of d1 was never involved.
    assert_eq!(d2.unmap_revoked(m3.handle), Err(GntSt::GeneralError));
    assert!(matches!(
        unmap(&mut d2, &mut d1, m3.handle, 0x501, &mut mem),
        Ok(Unmapped::Live(_))
    ));
    assert_eq!(flags(&mem, &d1, 5), RW);
}

#[test]
fn two_domains_dying_at_once() {
    // d0 and d1 map each other's grants and die together; each death runs
    // its steps, interleaved, and the pair steps find each mapping once.
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom(0), dom(1));
    grant(&mut mem, &d0, 1, RW, 1);
    grant(&mut mem, &d1, 2, RO, 0);
    map(&mut d1, &mut d0, 1, false, 0x400, &mut mem).unwrap();
    map(&mut d0, &mut d1, 2, true, 0x401, &mut mem).unwrap();
    d0.start_dying();
    d1.start_dying();
    // d0's (b) revokes d1's mapping of d0 ...
    assert_eq!(
        pair::revoke_mappings(&mut d0, &mut d1, &mut mem).map(|r| r.len()),
        Ok(1)
    );
    // ... so d1's (a) for d0 finds nothing left to release.
    assert_eq!(
        pair::release_mappings(&mut d1, &mut d0, &mut mem),
        Ok(vec![])
    );
    // d0's (a) for d1 releases d0's mapping, so d1's (b) finds nothing.
    assert_eq!(
        pair::release_mappings(&mut d0, &mut d1, &mut mem).map(|r| r.len()),
        Ok(1)
    );
    assert_eq!(
        pair::revoke_mappings(&mut d1, &mut d0, &mut mem),
        Ok(vec![])
    );
    assert!(d0.death_complete() && d1.death_complete());
    assert_eq!((flags(&mem, &d0, 1), flags(&mem, &d1, 2)), (RW, RO));
}
