//! Unit tests of grant tables version 2 and what came with it: version
//! switches, status frames, sub-page and transitive grants (the per-domain
//! protocol and [`Grants`]), swaps, and death with status frames. Status
//! codes and errnos are Xen's, in Xen's order of checks.

use keel_hypercall::abi::grant_table::{
    GTF_ACCEPT_TRANSFER, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
};

use crate::fake::{FakeMem, GuestEntry, status_bits};
use crate::pair::{self, map, unmap};
use crate::*;

const MAX_FRAMES: u32 = 16;
const MAPTRACK: u32 = 8;
const RW: u16 = GTF_PERMIT_ACCESS;
const RO: u16 = GTF_PERMIT_ACCESS | GTF_READONLY;
/// A frame number version 1 cannot hold.
const HIGH: u64 = 0x1_2345_6789;

/// Frame handles for the tables, from a counter.
struct Alloc(u64);

impl Alloc {
    fn new() -> Self {
        Alloc(0x9000)
    }

    fn next(&mut self) -> impl FnMut() -> Option<u64> + '_ {
        || {
            self.0 += 1;
            Some(self.0)
        }
    }
}

/// Domain `id` (max version 2) with one table frame, `0x1000 * (id + 1)`.
fn dom(id: DomId) -> DomainGrants {
    let mut d = DomainGrants::with_max_version(id, MAX_FRAMES, MAPTRACK, 2).unwrap();
    let frame = 0x1000 * (u64::from(id) + 1);
    d.setup_table(1, || Some(frame)).unwrap();
    d
}

/// [`dom`] switched to version 2, its status frame `0x1000 * (id + 1) + 1`.
fn dom_v2(id: DomId, mem: &mut FakeMem) -> DomainGrants {
    let mut d = dom(id);
    let status = 0x1000 * (u64::from(id) + 1) + 1;
    let r = d.set_version(2, mem, || Some(status));
    assert_eq!((r.result, r.version), (Ok(()), 2));
    assert_eq!(d.status_frames(), [status]);
    d
}

fn put(mem: &mut FakeMem, d: &DomainGrants, gref: GrantRef, e: GuestEntry) {
    assert!(e.write(mem, d, gref), "d{} has ref {gref}", d.id());
}

fn read(mem: &FakeMem, d: &DomainGrants, gref: GrantRef) -> GuestEntry {
    GuestEntry::read(mem, d, gref).unwrap()
}

fn bits(mem: &FakeMem, d: &DomainGrants, gref: GrantRef) -> u16 {
    status_bits(mem, d, gref)
}

fn page(frame: u64) -> Acquired {
    Acquired::Page(CopyGrant::page(frame))
}

// ------------------------------------------------------------- versions

#[test]
fn max_version_is_checked_at_creation() {
    for v in [0, 3, u32::MAX] {
        assert_eq!(
            DomainGrants::with_max_version(1, 4, 4, v).err(),
            Some(Error::BadVersion)
        );
    }
    let d = DomainGrants::with_max_version(1, 4, 4, 2).unwrap();
    assert_eq!((d.get_version(), d.version()), (1, Version::V1));
    assert!(d.status_frames().is_empty());
    let mut g = Grants::new();
    assert_eq!(
        g.add_domain_with_version(1, 4, 4, 0),
        Err(Error::BadVersion)
    );
    assert_eq!(Version::from_number(2), Some(Version::V2));
    assert_eq!(Version::V2.number(), 2);
    assert_eq!(Version::from_number(0), None);
    assert_eq!(
        Error::BadVersion.to_string(),
        "bad grant-table version limit"
    );
}

#[test]
fn set_version_checks_in_xens_order() {
    let mut mem = FakeMem::default();
    let mut d = dom(1);
    let mut a = Alloc::new();
    let reply = |result, version| VersionReply {
        result,
        version,
        freed: vec![],
    };
    for v in [0, 3, u32::MAX] {
        assert_eq!(
            d.set_version(v, &mut mem, a.next()),
            reply(Err(Errno::EINVAL), 1)
        );
    }
    assert_eq!(d.set_version(1, &mut mem, a.next()), reply(Ok(()), 1));
    // v2 when the domain may only have v1: "as before set_version".
    let mut v1_only = DomainGrants::new(2, 4, 4).unwrap();
    assert_eq!(
        v1_only.set_version(2, &mut mem, a.next()),
        reply(Err(Errno::ENOSYS), 1)
    );
    assert_eq!(a.0, 0x9000, "nothing allocated for a refused switch");
    // In use past the reserved 8: busy, whatever the direction.
    put(&mut mem, &d, 8, GuestEntry::page(RW, 2, 5));
    d.acquire(2, 8, false, &mut mem).unwrap();
    assert_eq!(
        d.set_version(2, &mut mem, a.next()),
        reply(Err(Errno::EBUSY), 1)
    );
    assert_eq!(a.0, 0x9000);
    assert_eq!(d.release(2, 8, false, &mut mem), Ok(None));
    // Out of memory for the status frame: the ones it got come back.
    let mut big = DomainGrants::with_max_version(3, 16, 4, 2).unwrap();
    big.setup_table(9, a.next()).unwrap();
    let mut left = 1;
    let r = big.set_version(2, &mut mem, || {
        (left > 0).then(|| {
            left -= 1;
            0x7777
        })
    });
    assert_eq!(
        r,
        VersionReply {
            result: Err(Errno::ENOMEM),
            version: 1,
            freed: vec![0x7777],
        }
    );
    assert!(big.status_frames().is_empty());
    // Now it works: one status frame per eight table frames.
    let r = big.set_version(2, &mut mem, a.next());
    assert_eq!((r.result, r.version, r.freed), (Ok(()), 2, vec![]));
    assert_eq!(big.status_frames().len(), 2);
    assert_eq!(big.set_version(2, &mut mem, a.next()).result, Ok(()));
    assert_eq!(
        big.status_frames().len(),
        2,
        "nothing for the version in effect"
    );
    // Back to 1: the status frames are handed back.
    let frames = big.status_frames().to_vec();
    let r = big.set_version(1, &mut mem, a.next());
    assert_eq!((r.result, r.version), (Ok(()), 1));
    assert_eq!(r.freed, frames);
    assert!(big.status_frames().is_empty());
}

#[test]
fn a_switch_keeps_the_reserved_entries_and_clears_the_rest() {
    let mut mem = FakeMem::default();
    let mut d0 = dom(0);
    let mut d1 = dom(1);
    put(&mut mem, &d0, 0, GuestEntry::page(RW, 1, 0x77));
    put(&mut mem, &d0, 7, GuestEntry::page(RO, 2, 0x78));
    put(&mut mem, &d0, 8, GuestEntry::page(RW, 1, 0x79));
    put(&mut mem, &d0, 300, GuestEntry::page(RW, 1, 0x7a));
    // The console ring stays mapped through the switch.
    let m = map(&mut d1, &mut d0, 0, false, 0x400, &mut mem).unwrap();
    assert_eq!(bits(&mem, &d0, 0), GTF_READING | GTF_WRITING);
    let r = d0.set_version(2, &mut mem, || Some(0x5000));
    assert_eq!(r.result, Ok(()));
    // Converted, the bits moved to the status frame.
    assert_eq!(read(&mem, &d0, 0), GuestEntry::page(RW, 1, 0x77));
    assert_eq!(read(&mem, &d0, 7), GuestEntry::page(RO, 2, 0x78));
    assert_eq!(bits(&mem, &d0, 0), GTF_READING | GTF_WRITING);
    assert_eq!(
        mem.u16_at(entry::EntryAt {
            frame: 0x5000,
            offset: 0
        }),
        GTF_READING | GTF_WRITING
    );
    // Cleared beyond the 8; ref 300 no longer exists (256 per frame).
    assert_eq!(read(&mem, &d0, 8), GuestEntry::default());
    assert!(GuestEntry::read(&mem, &d0, 300).is_none());
    assert_eq!(d0.acquire(1, 300, false, &mut mem), Err(GntSt::BadGntref));
    // The mapping still unmaps, clearing the bits in the status frame.
    assert!(matches!(
        unmap(&mut d1, &mut d0, m.handle, 0x400, &mut mem),
        Ok(Unmapped::Live(_))
    ));
    assert_eq!(bits(&mem, &d0, 0), 0);
    // A pinned reserved entry goes back to version 1 with its bits.
    d0.acquire(1, 0, true, &mut mem).unwrap();
    put(&mut mem, &d0, 9, GuestEntry::page(RW, 1, HIGH));
    let r = d0.set_version(1, &mut mem, || None);
    assert_eq!((r.result, r.freed), (Ok(()), vec![0x5000]));
    let e = entry::read(&mem, entry::locate(d0.table_frames(), 0).unwrap());
    assert_eq!(e.flags, RW | GTF_READING | GTF_WRITING);
    assert_eq!((e.domid, e.frame), (1, 0x77));
    assert_eq!(read(&mem, &d0, 9), GuestEntry::default(), "cleared");
    assert_eq!(d0.release(1, 0, true, &mut mem), Ok(None));
    assert_eq!(bits(&mem, &d0, 0), 0);
}

#[test]
fn back_to_version_1_needs_representable_reserved_entries() {
    let mut mem = FakeMem::default();
    let mut d = dom_v2(1, &mut mem);
    for (e, why) in [
        (GuestEntry::page(RW, 2, HIGH), "a frame above 32 bits"),
        (GuestEntry::transitive(0, 2, 3, 4), "a transitive grant"),
    ] {
        put(&mut mem, &d, 5, e);
        let r = d.set_version(1, &mut mem, || None);
        assert_eq!((r.result, r.version), (Err(Errno::ERANGE), 2), "{why}");
        assert!(r.freed.is_empty());
        assert_eq!(read(&mem, &d, 5), e, "{why}: untouched");
    }
    // Past the reserved 8 anything goes (it is cleared); other types too
    // (they become empty).
    put(
        &mut mem,
        &d,
        5,
        GuestEntry::page(GTF_ACCEPT_TRANSFER, 2, HIGH),
    );
    put(&mut mem, &d, 9, GuestEntry::page(RW, 2, HIGH));
    assert_eq!(d.set_version(1, &mut mem, || None).result, Ok(()));
    assert_eq!(read(&mem, &d, 5), GuestEntry::default());
}

#[test]
fn status_frames_grow_with_the_table() {
    let mut mem = FakeMem::default();
    let mut d = dom_v2(1, &mut mem);
    let mut a = Alloc::new();
    // Up to 8 table frames share the first status frame.
    d.setup_table(8, a.next()).unwrap();
    assert_eq!(d.status_frames().len(), 1);
    // The ninth needs a second, allocated first.
    d.setup_table(9, a.next()).unwrap();
    assert_eq!(d.status_frames(), [0x2001, 0x9008]);
    assert_eq!(d.table_frame(8), Some(0x9009));
    // A failure between the two keeps what it got, consistently.
    let mut d = dom_v2(2, &mut mem);
    d.setup_table(8, a.next()).unwrap();
    let mut left = 1;
    let r = d.setup_table(9, || {
        (left > 0).then(|| {
            left -= 1;
            0x8888
        })
    });
    assert_eq!(r, Err(GntSt::GeneralError));
    assert_eq!((d.nr_frames(), d.status_frames().len()), (8, 2));
    assert_eq!(d.add_table_frame(0x1234), Err(Error::WrongVersion));
    // Entries of the new frames have their status words.
    d.setup_table(9, a.next()).unwrap();
    put(&mut mem, &d, 8 * 256, GuestEntry::page(RW, 3, 1));
    d.acquire(3, 8 * 256, true, &mut mem).unwrap();
    assert_eq!(
        mem.u16_at(entry::EntryAt {
            frame: 0x8888,
            offset: 0
        }),
        GTF_READING | GTF_WRITING
    );
}

#[test]
fn get_status_frames_counts_only() {
    let mut mem = FakeMem::default();
    let d = dom(1);
    // Version 1 has none: 0 is fine (Xen checks the count alone).
    assert_eq!(d.get_status_frames(0), Ok(&[][..]));
    assert_eq!(d.get_status_frames(1), Err(GntSt::GeneralError));
    let d = dom_v2(1, &mut mem);
    assert_eq!(d.get_status_frames(1), Ok(&[0x2001][..]));
    assert_eq!(d.get_status_frames(2), Err(GntSt::GeneralError));
    assert_eq!(d.get_status_frames(u32::MAX), Err(GntSt::GeneralError));
}

#[test]
fn map_status_frame_grows_as_xen_does() {
    let mut mem = FakeMem::default();
    let mut a = Alloc::new();
    // Version 1: the index (flag and all) names no table frame.
    let mut d = dom(1);
    assert_eq!(d.map_status_frame(0, a.next()), Err(Errno::EINVAL));
    let mut d = dom_v2(1, &mut mem);
    assert_eq!(d.map_status_frame(0, a.next()), Ok(0x2001));
    // Status frame 1 comes with table frames 8..15: Xen grows to 16. (It
    // is allocated just before table frame 8, after frames 1..7.)
    assert_eq!(d.map_status_frame(1, a.next()), Ok(0x9008));
    assert_eq!((d.nr_frames(), d.status_frames().len()), (16, 2));
    // Status frame 2 would need 24 table frames: more than the maximum.
    assert_eq!(d.map_status_frame(2, a.next()), Err(Errno::EINVAL));
    assert_eq!(d.nr_frames(), 16, "no growth at all");
    assert_eq!(d.map_status_frame(u64::MAX, a.next()), Err(Errno::EINVAL));
    // A failed growth: what is missing is still missing.
    let mut d = dom_v2(2, &mut mem);
    assert_eq!(d.map_status_frame(1, || None), Err(Errno::EINVAL));
    let mut g = Grants::new();
    assert_eq!(g.map_status_frame(1, 0, || None), Err(Errno::ESRCH));
    d.start_dying();
    assert_eq!(d.map_status_frame(0, a.next()), Err(Errno::ESRCH));
}

// ------------------------------------------------------------ map, copy

#[test]
fn v2_map_and_copy_of_full_pages() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom_v2(0, &mut mem), dom(1));
    put(&mut mem, &d0, 3, GuestEntry::page(RW, 1, HIGH));
    let m = map(&mut d1, &mut d0, 3, false, 0x400, &mut mem).unwrap();
    assert_eq!(m.frame, HIGH, "64-bit frames");
    assert_eq!(bits(&mem, &d0, 3), GTF_READING | GTF_WRITING);
    assert_eq!(
        read(&mem, &d0, 3),
        GuestEntry::page(RW, 1, HIGH),
        "flags untouched"
    );
    assert!(d0.is_frame_mapped(HIGH));
    assert_eq!(d0.acquire(1, 3, false, &mut mem), Ok(page(HIGH)));
    assert!(d0.is_frame_pinned_by(1, HIGH) && !d0.is_frame_pinned_by(2, HIGH));
    assert_eq!(d0.release(1, 3, false, &mut mem), Ok(None));
    unmap(&mut d1, &mut d0, m.handle, 0x400, &mut mem).unwrap();
    assert_eq!(bits(&mem, &d0, 3), 0);
    // Read-only grants, and grants to another.
    put(&mut mem, &d0, 4, GuestEntry::page(RO, 1, 9));
    assert_eq!(
        map(&mut d1, &mut d0, 4, false, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(d0.acquire(1, 4, true, &mut mem), Err(GntSt::GeneralError));
    assert_eq!(d0.acquire(2, 4, false, &mut mem), Err(GntSt::GeneralError));
    assert_eq!(bits(&mem, &d0, 4), 0);
    assert_eq!(d0.acquire(1, 256, false, &mut mem), Err(GntSt::BadGntref));
}

#[test]
fn sub_page_grants_are_copied_within_range_never_mapped() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom_v2(0, &mut mem), dom(1));
    put(
        &mut mem,
        &d0,
        2,
        GuestEntry::sub_page(RW, 1, 0x55, 0x100, 0x80),
    );
    assert_eq!(
        map(&mut d1, &mut d0, 2, true, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(bits(&mem, &d0, 2), 0);
    let grant = CopyGrant {
        frame: 0x55,
        start: 0x100,
        length: 0x80,
    };
    assert_eq!(d0.acquire(1, 2, true, &mut mem), Ok(Acquired::Page(grant)));
    // Xen's bounds: [offset, offset + len) within [start, start + length).
    assert_eq!(grant.check_range(0x100, 0x80), Ok(()));
    assert_eq!(grant.check_range(0x140, 0x10), Ok(()));
    for (offset, len) in [(0xff, 1), (0x100, 0x81), (0x17f, 2), (0, 4096)] {
        assert_eq!(
            grant.check_range(offset, len),
            Err(GntSt::GeneralError),
            "{offset:#x}+{len:#x}"
        );
    }
    // Copy-pinned as a sub-page grant: no mapping, even if the granter now
    // says otherwise.
    put(&mut mem, &d0, 2, GuestEntry::page(RW, 1, 0x55));
    assert_eq!(
        map(&mut d1, &mut d0, 2, true, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    // A second copy gets the range of the first pin.
    assert_eq!(d0.acquire(1, 2, false, &mut mem), Ok(Acquired::Page(grant)));
    assert_eq!(d0.release(1, 2, true, &mut mem), Ok(None));
    assert_eq!(d0.release(1, 2, false, &mut mem), Ok(None));
    assert_eq!(bits(&mem, &d0, 2), 0);
    // A full page is the whole page.
    assert_eq!(CopyGrant::page(1).check_range(0, 4096), Ok(()));
    assert_eq!(
        CopyGrant::page(1).check_range(1, 4096),
        Err(GntSt::GeneralError)
    );
    // In version 1 the flag only stops maps: a copy gets the whole page.
    let mut v1 = dom(2);
    put(
        &mut mem,
        &v1,
        2,
        GuestEntry::sub_page(RW, 1, 0x55, 0x100, 0x80),
    );
    assert_eq!(v1.acquire(1, 2, false, &mut mem), Ok(page(0x55)));
}

// ------------------------------------------------------------ transitive

/// d1 passes d0's ref 4 (granted to d1) on to d2 as its ref 6.
fn chain(mem: &mut FakeMem) -> (DomainGrants, DomainGrants, DomainGrants) {
    let (d0, d1, d2) = (dom(0), dom_v2(1, mem), dom(2));
    put(mem, &d0, 4, GuestEntry::page(RW, 1, 0x44));
    put(mem, &d1, 6, GuestEntry::transitive(0, 2, 0, 4));
    (d0, d1, d2)
}

#[test]
fn a_transitive_copy_one_lock_at_a_time() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1, d2) = chain(&mut mem);
    // 1. d1's lock: its entry pinned for d2, the hop named.
    let hop = Hop { domid: 0, gref: 4 };
    assert_eq!(
        d1.acquire(2, 6, true, &mut mem),
        Ok(Acquired::Transitive(hop))
    );
    assert_eq!(bits(&mem, &d1, 6), GTF_READING | GTF_WRITING);
    assert_eq!(d1.pins(6), Some((2, 1, 1)));
    // 2. d0's lock alone: the hop pinned for d1.
    let target = d0.acquire_target(1, 4, true, &mut mem);
    assert_eq!(target, Ok(CopyGrant::page(0x44)));
    assert_eq!(bits(&mem, &d0, 4), GTF_READING | GTF_WRITING);
    assert_eq!(d0.pins(4), Some((1, 1, 1)));
    // 3. d1's lock again: the copy may touch d0's frame.
    assert_eq!(
        d1.finish_transitive(2, 6, true, target, &mut mem),
        Ok(CopyGrant::page(0x44))
    );
    // d1 does not own that frame; d0 does.
    assert!(!d1.is_frame_mapped(0x44) && d0.is_frame_mapped(0x44));
    // Neither is mappable meanwhile: d1's is transitive, d0's is d1's.
    let mut d2 = d2;
    assert_eq!(
        map(&mut d2, &mut d1, 6, true, 0x400, &mut mem),
        Err(GntSt::GeneralError)
    );
    // The hop's pin is d1's as a hop, not as a copier: d1's own release
    // cannot drop it.
    assert_eq!(d0.release(1, 4, true, &mut mem), Err(GntSt::GeneralError));
    // Release: d1's lock, then d0's.
    assert_eq!(d1.release(2, 6, true, &mut mem), Ok(Some(hop)));
    assert_eq!(bits(&mem, &d1, 6), 0);
    assert_eq!(d0.release_target(1, 4, true, &mut mem), Ok(()));
    assert_eq!(
        d0.release_target(1, 4, true, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        d0.release_target(1, 256 * 4, true, &mut mem),
        Err(GntSt::BadGntref)
    );
    assert_eq!(bits(&mem, &d0, 4), 0);
    assert!(d0.pins(4).is_none() && d1.pins(6).is_none());
}

#[test]
fn transitive_failures_answer_as_the_target_and_drop_the_pin() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1, _d2) = chain(&mut mem);
    let fail_at_target = |d0: &mut DomainGrants, d1: &mut DomainGrants, mem: &mut FakeMem| {
        let Ok(Acquired::Transitive(hop)) = d1.acquire(2, 6, false, mem) else {
            panic!("a transitive grant");
        };
        let target = d0.acquire_target(1, hop.gref, false, mem);
        let r = d1.finish_transitive(2, 6, false, target, mem);
        assert_eq!(bits(mem, d1, 6), 0, "d1's pin dropped");
        assert!(d1.pins(6).is_none());
        r
    };
    // Revoked: not granted to d1 any more.
    put(&mut mem, &d0, 4, GuestEntry::page(0, 1, 0x44));
    assert_eq!(
        fail_at_target(&mut d0, &mut d1, &mut mem),
        Err(GntSt::GeneralError)
    );
    put(&mut mem, &d0, 4, GuestEntry::page(RW, 2, 0x44));
    assert_eq!(
        fail_at_target(&mut d0, &mut d1, &mut mem),
        Err(GntSt::GeneralError)
    );
    // Beyond the target's table.
    put(&mut mem, &d1, 6, GuestEntry::transitive(0, 2, 0, 512));
    assert_eq!(
        fail_at_target(&mut d0, &mut d1, &mut mem),
        Err(GntSt::BadGntref)
    );
    // A loop: the target is transitive itself (back to d1, or anywhere).
    let mut d0v2 = dom_v2(0, &mut FakeMem::default());
    put(&mut mem, &d0v2, 4, GuestEntry::transitive(0, 1, 1, 6));
    put(&mut mem, &d1, 6, GuestEntry::transitive(0, 2, 0, 4));
    assert_eq!(
        fail_at_target(&mut d0v2, &mut d1, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(bits(&mem, &d0v2, 4), 0, "the target's bits taken back");
    // A dying target.
    put(&mut mem, &d0, 4, GuestEntry::page(RW, 1, 0x44));
    d0.start_dying();
    assert_eq!(
        fail_at_target(&mut d0, &mut d1, &mut mem),
        Err(GntSt::BadDomain)
    );
    // A hop naming no domain: the kernel finds none.
    put(&mut mem, &d1, 6, GuestEntry::transitive(0, 2, 0x7ff0, 4));
    assert_eq!(
        d1.acquire(2, 6, false, &mut mem),
        Ok(Acquired::Transitive(Hop {
            domid: 0x7ff0,
            gref: 4
        }))
    );
    assert_eq!(
        d1.finish_transitive(2, 6, false, Err(GntSt::GeneralError), &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(bits(&mem, &d1, 6), 0);
    // Self-referential: refused at once.
    put(&mut mem, &d1, 6, GuestEntry::transitive(0, 2, 1, 4));
    assert_eq!(d1.acquire(2, 6, false, &mut mem), Err(GntSt::GeneralError));
    assert_eq!(bits(&mem, &d1, 6), 0);
    // Read-only transitive grants are copied from only.
    put(
        &mut mem,
        &d1,
        6,
        GuestEntry::transitive(GTF_READONLY, 2, 0, 4),
    );
    assert_eq!(d1.acquire(2, 6, true, &mut mem), Err(GntSt::GeneralError));
    // Version 1 has no transitive grants.
    let mut v1 = dom(3);
    put(&mut mem, &v1, 6, GuestEntry::transitive(0, 2, 0, 4));
    assert_eq!(v1.acquire(2, 6, false, &mut mem), Err(GntSt::GeneralError));
}

#[test]
fn transitive_grants_back_to_the_copier_and_through_a_read_only_target() {
    let mut mem = FakeMem::default();
    // d2 grants to d1, which passes it back to d2: allowed.
    let (mut d1, mut d2) = (dom_v2(1, &mut mem), dom(2));
    put(&mut mem, &d2, 3, GuestEntry::page(RO, 1, 0x33));
    put(&mut mem, &d1, 6, GuestEntry::transitive(0, 2, 2, 3));
    let Ok(Acquired::Transitive(hop)) = d1.acquire(2, 6, false, &mut mem) else {
        panic!("transitive");
    };
    let t = d2.acquire_target(1, hop.gref, false, &mut mem);
    assert_eq!(
        d1.finish_transitive(2, 6, false, t, &mut mem),
        Ok(CopyGrant::page(0x33))
    );
    // A write through it fails at the read-only target.
    let Ok(Acquired::Transitive(_)) = d1.acquire(2, 6, true, &mut mem) else {
        panic!("transitive");
    };
    let t = d2.acquire_target(1, 3, true, &mut mem);
    assert_eq!(t, Err(GntSt::GeneralError));
    assert_eq!(
        d1.finish_transitive(2, 6, true, t, &mut mem),
        Err(GntSt::GeneralError)
    );
    // The read pin is intact on both, with GTF_writing back off on d1.
    assert_eq!(bits(&mem, &d1, 6), GTF_READING);
    assert_eq!(d1.pins(6), Some((2, 1, 0)));
    assert_eq!(d2.pins(3), Some((1, 1, 0)));
    assert_eq!(d1.release(2, 6, false, &mut mem), Ok(Some(hop)));
    assert_eq!(d2.release_target(1, 3, false, &mut mem), Ok(()));
    assert!(d1.pins(6).is_none() && d2.pins(3).is_none());
}

#[test]
fn a_dying_intermediate_keeps_its_hop_pins_for_copies_in_flight() {
    let mut mem = FakeMem::default();
    let (mut d0, mut d1, _) = chain(&mut mem);
    let Ok(Acquired::Transitive(hop)) = d1.acquire(2, 6, false, &mut mem) else {
        panic!("transitive");
    };
    let t = d0.acquire_target(1, 4, false, &mut mem);
    d1.finish_transitive(2, 6, false, t, &mut mem).unwrap();
    // d1 dies while d2's copy is in flight: its death steps leave the
    // hop's pin alone.
    d1.start_dying();
    assert!(d1.granters().is_empty());
    assert_eq!(
        pair::release_mappings(&mut d1, &mut d0, &mut mem),
        Ok(vec![])
    );
    assert_eq!(d0.pins(4), Some((1, 1, 0)));
    assert!(d1.death_complete());
    // The copy ends: both pins go, d1 dying or not.
    assert_eq!(d1.release(2, 6, false, &mut mem), Ok(Some(hop)));
    assert_eq!(d0.release_target(1, 4, false, &mut mem), Ok(()));
    assert_eq!((bits(&mem, &d0, 4), bits(&mem, &d1, 6)), (0, 0));
    // A dying granter takes no new copies.
    assert_eq!(d1.acquire(2, 6, false, &mut mem), Err(GntSt::BadDomain));
}

#[test]
fn grants_runs_the_whole_chain() {
    let mut mem = FakeMem::default();
    let mut g = Grants::new();
    let mut a = Alloc::new();
    for d in 0..4 {
        g.add_domain_with_version(d, 4, 4, 2).unwrap();
        g.setup_table(d, 1, a.next()).unwrap();
    }
    assert_eq!(g.set_version(1, 2, &mut mem, a.next()).result, Ok(()));
    let (d0, d1) = (g.domain(0).unwrap(), g.domain(1).unwrap());
    put(&mut mem, d0, 4, GuestEntry::page(RW, 1, 0x44));
    put(&mut mem, d1, 6, GuestEntry::transitive(0, 2, 0, 4));
    put(&mut mem, d1, 7, GuestEntry::transitive(0, 2, 9, 4));
    assert_eq!(
        g.acquire(2, 1, 6, true, &mut mem),
        Ok(CopyGrant::page(0x44))
    );
    assert_eq!(g.pins(0, 4), Some((1, 1, 1)));
    // A hop naming no domain.
    assert_eq!(
        g.acquire(2, 1, 7, false, &mut mem),
        Err(GntSt::GeneralError)
    );
    assert_eq!(g.pins(1, 7), None);
    assert_eq!(g.release(2, 1, 6, true, &mut mem), Ok(()));
    assert_eq!((g.pins(1, 6), g.pins(0, 4)), (None, None));
    // The hop's domain ends with a copy in flight: the copy is forgotten.
    g.acquire(2, 1, 6, false, &mut mem).unwrap();
    let r = g.remove_domain(0, &mut mem).unwrap();
    assert_eq!(r.status_frames, Vec::<u64>::new());
    assert_eq!(g.pins(1, 6), None);
    assert_eq!(bits(&mem, g.domain(1).unwrap(), 6), 0);
    assert_eq!(
        g.release(2, 1, 6, false, &mut mem),
        Err(GntSt::GeneralError)
    );
    // The intermediate ends with a copy in flight: the hop's pin goes too.
    g.add_domain(0, 4, 4).unwrap();
    g.setup_table(0, 1, a.next()).unwrap();
    put(
        &mut mem,
        g.domain(0).unwrap(),
        4,
        GuestEntry::page(RW, 1, 0x45),
    );
    g.acquire(2, 1, 6, false, &mut mem).unwrap();
    assert_eq!(g.pins(0, 4), Some((1, 1, 0)));
    let status = g.status_frames(1).unwrap().to_vec();
    let r = g.remove_domain(1, &mut mem).unwrap();
    assert_eq!(r.status_frames, status);
    assert_eq!(g.pins(0, 4), None);
    assert_eq!(bits(&mem, g.domain(0).unwrap(), 4), 0);
    // The copier ends with a copy in flight: both pins go.
    g.add_domain_with_version(1, 4, 4, 2).unwrap();
    g.setup_table(1, 1, a.next()).unwrap();
    g.set_version(1, 2, &mut mem, a.next());
    put(
        &mut mem,
        g.domain(1).unwrap(),
        6,
        GuestEntry::transitive(0, 2, 0, 4),
    );
    g.acquire(2, 1, 6, false, &mut mem).unwrap();
    g.remove_domain(2, &mut mem).unwrap();
    assert_eq!((g.pins(1, 6), g.pins(0, 4)), (None, None));
}

// ------------------------------------------------------------------ swap

#[test]
fn swap_grant_ref_both_versions() {
    let mut mem = FakeMem::default();
    for v2 in [false, true] {
        let mut d = if v2 { dom_v2(1, &mut mem) } else { dom(1) };
        let (ea, eb) = (GuestEntry::page(RW, 2, 0x10), GuestEntry::page(RO, 3, 0x20));
        put(&mut mem, &d, 1, ea);
        put(&mut mem, &d, 9, eb);
        // Bad refs first (a before b), then the same ref, then in use.
        assert_eq!(d.swap_grant_ref(1, 4096, &mut mem), Err(GntSt::BadGntref));
        assert_eq!(d.swap_grant_ref(4096, 1, &mut mem), Err(GntSt::BadGntref));
        assert_eq!(d.swap_grant_ref(1, 1, &mut mem), Ok(()));
        d.acquire(2, 1, false, &mut mem).unwrap();
        assert_eq!(d.swap_grant_ref(1, 9, &mut mem), Err(GntSt::Eagain));
        assert_eq!(d.swap_grant_ref(9, 1, &mut mem), Err(GntSt::Eagain));
        assert_eq!(d.release(2, 1, false, &mut mem), Ok(None));
        assert_eq!(d.swap_grant_ref(1, 9, &mut mem), Ok(()));
        assert_eq!((read(&mem, &d, 1), read(&mem, &d, 9)), (eb, ea), "v2 {v2}");
        if v2 {
            // Status words go with their entries (whatever the guest put
            // in an idle one).
            let status = d.status_frames().to_vec();
            let s = |r| entry::locate_status(&status, r).unwrap();
            mem.set_u16(s(1), 0x8000);
            d.swap_grant_ref(1, 9, &mut mem).unwrap();
            assert_eq!((mem.u16_at(s(1)), mem.u16_at(s(9))), (0, 0x8000));
        }
    }
    let mut g = Grants::new();
    assert_eq!(g.swap_grant_ref(1, 0, 1, &mut mem), Err(GntSt::BadDomain));
}

// ----------------------------------------------------------------- death

#[test]
fn death_hands_back_status_frames() {
    let mut mem = FakeMem::default();
    let mut g = Grants::new();
    let mut a = Alloc::new();
    g.add_domain_with_version(1, 16, 4, 2).unwrap();
    g.setup_table(1, 9, a.next()).unwrap();
    let r = g.set_version(1, 2, &mut mem, a.next());
    assert_eq!(r.result, Ok(()));
    let (table, status) = (
        g.table_frames(1).unwrap().to_vec(),
        g.status_frames(1).unwrap().to_vec(),
    );
    assert_eq!(status.len(), 2);
    assert_eq!(
        g.get_status_frames(1, 2).map(<[u64]>::to_vec),
        Ok(status.clone())
    );
    assert_eq!(g.get_status_frames(7, 0), Err(GntSt::BadDomain));
    let removal = g.remove_domain(1, &mut mem).unwrap();
    assert_eq!(
        (removal.table_frames, removal.status_frames),
        (table, status)
    );
}

#[test]
fn status_bits_stay_in_the_status_frame() {
    // The granter may clear its own flags' bits 3 and 4 in version 2: they
    // mean nothing there, and nothing of keel's changes.
    let mut mem = FakeMem::default();
    let (mut d0, mut d1) = (dom_v2(0, &mut mem), dom(1));
    put(&mut mem, &d0, 1, GuestEntry::page(RW, 1, 0x10));
    let m = map(&mut d1, &mut d0, 1, false, 0x400, &mut mem).unwrap();
    assert_eq!(read(&mem, &d0, 1).flags & (GTF_READING | GTF_WRITING), 0);
    put(
        &mut mem,
        &d0,
        1,
        GuestEntry::page(RW | GTF_READING, 1, 0x10),
    );
    assert_eq!(bits(&mem, &d0, 1), GTF_READING | GTF_WRITING);
    unmap(&mut d1, &mut d0, m.handle, 0x400, &mut mem).unwrap();
    assert_eq!(bits(&mem, &d0, 1), 0);
    assert_eq!(
        read(&mem, &d0, 1).flags,
        RW | GTF_READING,
        "the guest's own"
    );
}
