//! Unit tests of [`Grants`]: every operation and error path, against the
//! fake frame memory.

use keel_hypercall::abi::domid::DOMID_SELF;
use keel_hypercall::abi::grant_table::{
    GTF_ACCEPT_TRANSFER, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_WRITING,
    GrantEntryV1,
};
use keel_hypercall::abi::memory::XENMAPIDX_GRANT_TABLE_STATUS;

use crate::entry::{self, EntryAt};
use crate::fake::FakeMem;
use crate::*;

const D0: DomId = 0;
const D1: DomId = 1;
const D2: DomId = 2;
const MAX_FRAMES: u32 = 4;
const MAPTRACK: u32 = 8;
const RW: u16 = GTF_PERMIT_ACCESS;
const RO: u16 = GTF_PERMIT_ACCESS | GTF_READONLY;

/// Three domains with one table frame each, and their memory.
struct World {
    g: Grants,
    mem: FakeMem,
    next_frame: u64,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            g: Grants::new(),
            mem: FakeMem::default(),
            next_frame: 0x1000,
        };
        for d in [D0, D1, D2] {
            w.g.add_domain(d, MAX_FRAMES, MAPTRACK).unwrap();
            w.setup(d, INITIAL_NR_GRANT_FRAMES).unwrap();
        }
        w
    }

    fn setup(&mut self, dom: DomId, nr: u32) -> Result<Vec<u64>, GntSt> {
        let next = &mut self.next_frame;
        self.g
            .setup_table(dom, nr, || {
                *next += 1;
                Some(*next)
            })
            .map(<[u64]>::to_vec)
    }

    fn at(&self, granter: DomId, gref: GrantRef) -> EntryAt {
        entry::locate(self.g.table_frames(granter).unwrap(), gref).unwrap()
    }

    /// The granter fills in entry `gref`.
    fn grant(&mut self, granter: DomId, gref: GrantRef, flags: u16, domid: DomId, frame: u32) {
        let at = self.at(granter, gref);
        self.mem.write_entry(
            at,
            GrantEntryV1 {
                flags,
                domid,
                frame,
            },
        );
    }

    fn entry(&self, granter: DomId, gref: GrantRef) -> GrantEntryV1 {
        entry::read(&self.mem, self.at(granter, gref))
    }

    fn flags(&self, granter: DomId, gref: GrantRef) -> u16 {
        self.entry(granter, gref).flags
    }

    fn map(
        &mut self,
        mapper: DomId,
        granter: DomId,
        gref: GrantRef,
        ro: bool,
        gfn: u64,
    ) -> Result<Mapped, GntSt> {
        self.g.map(mapper, granter, gref, ro, gfn, &mut self.mem)
    }

    fn unmap(&mut self, mapper: DomId, handle: GrantHandle, gfn: u64) -> Result<Unmapped, GntSt> {
        self.g.unmap(mapper, handle, gfn, &mut self.mem)
    }

    fn acquire(
        &mut self,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    ) -> Result<u64, GntSt> {
        self.g
            .acquire(acc, granter, gref, write, &mut self.mem)
            .map(|g| g.frame)
    }

    fn release(
        &mut self,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    ) -> Result<(), GntSt> {
        self.g.release(acc, granter, gref, write, &mut self.mem)
    }
}

#[test]
fn status_codes() {
    let codes: Vec<i16> = GntSt::ALL.iter().map(|s| s.code()).collect();
    assert_eq!(codes, (-13..=-1).rev().collect::<Vec<i16>>());
    for s in GntSt::ALL {
        assert_eq!(GntSt::from_code(s.code()), Some(s));
    }
    assert_eq!(GntSt::from_code(0), None);
    assert_eq!(GntSt::from_code(-14), None);
    assert_eq!(GntSt::status_of(&Ok::<(), GntSt>(())), 0);
    assert_eq!(GntSt::status_of(&Err::<(), _>(GntSt::NoSpace)), -13);
    assert_eq!(GntSt::BadGntref.to_string(), "invalid grant reference");
    assert_eq!(
        Error::TableFull.to_string(),
        "grant table at its maximum size"
    );
}

#[test]
fn add_domain_checks() {
    let mut g = Grants::new();
    assert_eq!(g.add_domain(DOMID_SELF, 4, 4), Err(Error::ReservedDomid));
    assert_eq!(g.add_domain(0x7fff, 4, 4), Err(Error::ReservedDomid));
    assert_eq!(g.add_domain(1, 0, 4), Err(Error::BadLimits));
    assert_eq!(
        g.add_domain(1, MAX_GRANT_FRAMES_LIMIT + 1, 4),
        Err(Error::BadLimits)
    );
    g.add_domain(1, MAX_GRANT_FRAMES_LIMIT, 0).unwrap();
    assert_eq!(g.add_domain(1, 4, 4), Err(Error::DomainExists));
    assert!(g.has_domain(1) && !g.has_domain(2));
    assert_eq!(
        (g.nr_frames(1), g.max_frames(1)),
        (Some(0), Some(MAX_GRANT_FRAMES_LIMIT))
    );
    assert_eq!(g.nr_frames(2), None);
}

#[test]
fn add_table_frame_up_to_max() {
    let mut g = Grants::new();
    g.add_domain(3, 2, 4).unwrap();
    assert_eq!(g.add_table_frame(3, 0xa), Ok(0));
    assert_eq!(g.add_table_frame(3, 0xb), Ok(1));
    assert_eq!(g.add_table_frame(3, 0xc), Err(Error::TableFull));
    assert_eq!(g.add_table_frame(4, 0xc), Err(Error::UnknownDomain));
    assert_eq!(g.table_frames(3), Some(&[0xa, 0xb][..]));
    assert_eq!(
        (g.table_frame(3, 1), g.table_frame(3, 2)),
        (Some(0xb), None)
    );
    assert_eq!(g.table_frame(4, 0), None);
}

#[test]
fn setup_table_grows_and_reports() {
    let mut w = World::new();
    let first = w.g.table_frames(D1).unwrap().to_vec();
    // Asking for fewer frames than there are changes nothing.
    assert_eq!(w.setup(D1, 0).unwrap(), first);
    assert_eq!(w.setup(D1, 1).unwrap(), first);
    let grown = w.setup(D1, 3).unwrap();
    assert_eq!(grown.len(), 3);
    assert_eq!(grown[0], first[0]);
    assert_eq!(w.g.query_size(D1), Ok((3, MAX_FRAMES)));
    assert_eq!(w.setup(D1, MAX_FRAMES + 1), Err(GntSt::GeneralError));
    assert_eq!(w.setup(D1, u32::MAX), Err(GntSt::GeneralError));
    assert_eq!(w.g.nr_frames(D1), Some(3));
    assert_eq!(w.setup(9, 1), Err(GntSt::BadDomain));
    // Allocation failure: general_error; what was allocated stays.
    let mut left = 1;
    let r = w.g.setup_table(D2, 3, || {
        if left == 0 {
            return None;
        }
        left -= 1;
        Some(0x9000)
    });
    assert_eq!(r, Err(GntSt::GeneralError));
    assert_eq!(w.g.table_frames(D2).map(<[u64]>::len), Some(2));
}

#[test]
fn map_table_frame_grows_to_idx() {
    let mut w = World::new();
    let mut next = 0x5000;
    let mut alloc = || {
        next += 1;
        Some(next)
    };
    assert_eq!(w.g.map_table_frame(D0, 2, &mut alloc), Ok(0x5002));
    assert_eq!(w.g.nr_frames(D0), Some(3));
    assert_eq!(
        w.g.map_table_frame(D0, 0, &mut alloc),
        w.g.table_frame(D0, 0).ok_or(Errno::EINVAL)
    );
    assert_eq!(w.g.map_table_frame(D0, 3, &mut alloc), Ok(0x5003));
    assert_eq!(w.g.map_table_frame(D0, 4, &mut alloc), Err(Errno::EINVAL));
    let status = u64::from(XENMAPIDX_GRANT_TABLE_STATUS);
    assert_eq!(
        w.g.map_table_frame(D0, status, &mut alloc),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        w.g.map_table_frame(D0, u64::MAX, &mut alloc),
        Err(Errno::EINVAL)
    );
    assert_eq!(w.g.map_table_frame(9, 0, &mut alloc), Err(Errno::ESRCH));
    assert_eq!(w.g.map_table_frame(D1, 1, || None), Err(Errno::EINVAL));
    assert_eq!(w.g.nr_frames(D1), Some(1));
}

#[test]
fn query_size_and_versions() {
    let mut w = World::new();
    assert_eq!(w.g.query_size(D0), Ok((1, MAX_FRAMES)));
    assert_eq!(w.g.query_size(7), Err(GntSt::BadDomain));
    let reply = |result, version| VersionReply {
        result,
        version,
        freed: vec![],
    };
    // Domains added with `add_domain` may have version 1 only.
    assert_eq!(
        w.g.set_version(D0, 1, &mut w.mem, || None),
        reply(Ok(()), 1)
    );
    assert_eq!(
        w.g.set_version(D0, 2, &mut w.mem, || None),
        reply(Err(Errno::ENOSYS), 1)
    );
    for v in [0, 3, u32::MAX] {
        assert_eq!(
            w.g.set_version(D0, v, &mut w.mem, || None),
            reply(Err(Errno::EINVAL), 1)
        );
    }
    assert_eq!(
        w.g.set_version(7, 1, &mut w.mem, || None),
        reply(Err(Errno::ESRCH), 0)
    );
    assert_eq!(w.g.get_version(D2), Ok(1));
    assert_eq!(w.g.get_version(7), Err(Errno::ESRCH));
}

#[test]
fn map_and_unmap_writable() {
    let mut w = World::new();
    w.grant(D0, 5, RW, D1, 0x77);
    assert!(!w.g.is_frame_mapped(D0, 0x77));
    let m = w.map(D1, D0, 5, false, 0x400).unwrap();
    assert_eq!(
        m,
        Mapped {
            handle: 0,
            frame: 0x77
        }
    );
    assert_eq!(w.flags(D0, 5), RW | GTF_READING | GTF_WRITING);
    assert_eq!(w.entry(D0, 5).domid, D1, "domid untouched");
    assert!(w.g.is_frame_mapped(D0, 0x77));
    assert!(!w.g.is_frame_mapped(D1, 0x77) && !w.g.is_frame_mapped(D0, 0x78));
    assert_eq!(w.g.pins(D0, 5), Some((D1, 1, 1)));

    let info = MapInfo {
        granter: D0,
        gref: 5,
        frame: 0x77,
        host_gfn: 0x400,
        readonly: false,
    };
    assert_eq!(w.g.check_unmap(D1, 0, 0x400), Ok(Unmapped::Live(info)));
    assert_eq!(
        w.flags(D0, 5),
        RW | GTF_READING | GTF_WRITING,
        "check changes nothing"
    );
    assert_eq!(w.unmap(D1, 0, 0x400), Ok(Unmapped::Live(info)));
    assert_eq!(w.flags(D0, 5), RW);
    assert!(!w.g.is_frame_mapped(D0, 0x77));
    assert_eq!(w.g.pins(D0, 5), None);
}

#[test]
fn map_readonly_sets_only_reading() {
    let mut w = World::new();
    w.grant(D0, 1, RO, D1, 0x10);
    let m = w.map(D1, D0, 1, true, 0x400).unwrap();
    assert_eq!(w.flags(D0, 1), RO | GTF_READING);
    w.unmap(D1, m.handle, 0x400).unwrap();
    assert_eq!(w.flags(D0, 1), RO);
}

#[test]
fn readonly_rules() {
    let mut w = World::new();
    // A read-only grant refuses a writable mapping, and the entry is untouched.
    w.grant(D0, 1, RO, D1, 0x10);
    assert_eq!(w.map(D1, D0, 1, false, 0x400), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 1), RO);
    // ... also when already mapped read-only.
    let ro = w.map(D1, D0, 1, true, 0x400).unwrap();
    assert_eq!(w.map(D1, D0, 1, false, 0x401), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 1), RO | GTF_READING);
    assert_eq!(w.g.pins(D0, 1), Some((D1, 1, 0)));
    w.unmap(D1, ro.handle, 0x400).unwrap();

    // A writable grant mapped read-only, then writable: GTF_writing follows
    // the writable pin, GTF_reading the last pin.
    w.grant(D0, 2, RW, D1, 0x20);
    let a = w.map(D1, D0, 2, true, 0x500).unwrap();
    assert_eq!(w.flags(D0, 2), RW | GTF_READING);
    let b = w.map(D1, D0, 2, false, 0x501).unwrap();
    assert_eq!(w.flags(D0, 2), RW | GTF_READING | GTF_WRITING);
    w.unmap(D1, b.handle, 0x501).unwrap();
    assert_eq!(w.flags(D0, 2), RW | GTF_READING);
    w.unmap(D1, a.handle, 0x500).unwrap();
    assert_eq!(w.flags(D0, 2), RW);
}

#[test]
fn pins_count_and_flags_follow_the_last() {
    let mut w = World::new();
    w.grant(D0, 3, RW, D1, 0x30);
    let h: Vec<_> = (0..3)
        .map(|i| w.map(D1, D0, 3, false, 0x600 + i).unwrap().handle)
        .collect();
    assert_eq!(h, [0, 1, 2]);
    assert_eq!(w.g.pins(D0, 3), Some((D1, 3, 3)));
    w.unmap(D1, 1, 0x601).unwrap();
    w.unmap(D1, 0, 0x600).unwrap();
    assert_eq!(w.flags(D0, 3), RW | GTF_READING | GTF_WRITING);
    w.unmap(D1, 2, 0x602).unwrap();
    assert_eq!(w.flags(D0, 3), RW);
}

#[test]
fn out_of_range_grant_refs() {
    let mut w = World::new();
    for gref in [512, 513, 4096, u32::MAX] {
        assert_eq!(w.map(D1, D0, gref, true, 0x400), Err(GntSt::BadGntref));
        assert_eq!(w.acquire(D1, D0, gref, false), Err(GntSt::BadGntref));
        assert_eq!(w.release(D1, D0, gref, false), Err(GntSt::BadGntref));
    }
    // After growth the ref exists, in the second frame.
    w.setup(D0, 2).unwrap();
    w.grant(D0, 513, RW, D1, 0x99);
    assert_eq!(
        w.at(D0, 513),
        EntryAt {
            frame: w.g.table_frame(D0, 1).unwrap(),
            offset: 8
        }
    );
    assert_eq!(w.map(D1, D0, 513, true, 0x400).map(|m| m.frame), Ok(0x99));
    assert_eq!(w.flags(D0, 513), RW | GTF_READING);
    assert_eq!(w.flags(D0, 1), 0, "frame 0 untouched");
}

#[test]
fn bad_granter_domain() {
    let mut w = World::new();
    for granter in [7, DOMID_SELF, 0xffff] {
        assert_eq!(w.map(D1, granter, 0, true, 0x400), Err(GntSt::BadDomain));
        assert_eq!(w.acquire(D1, granter, 0, false), Err(GntSt::BadDomain));
        assert_eq!(w.release(D1, granter, 0, false), Err(GntSt::BadDomain));
    }
    // An unknown mapper/accessor is the kernel's bug: general_error.
    w.grant(D0, 0, RW, 7, 0x1);
    assert_eq!(w.map(7, D0, 0, true, 0x400), Err(GntSt::GeneralError));
    assert_eq!(w.acquire(7, D0, 0, false), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 0), RW);
}

#[test]
fn mapping_a_grant_not_granted_to_you() {
    let mut w = World::new();
    let cases = [
        (RW, D2, "granted to someone else"),
        (0, D1, "GTF_invalid"),
        (GTF_ACCEPT_TRANSFER, D1, "transfer, not access"),
        (3, D1, "transitive (v2 only)"),
        (RW | GTF_SUB_PAGE, D1, "sub-page grants are copy-only"),
        (GTF_READONLY, D1, "readonly without a type"),
    ];
    for (flags, domid, why) in cases {
        w.grant(D0, 4, flags, domid, 0x40);
        assert_eq!(
            w.map(D1, D0, 4, true, 0x400),
            Err(GntSt::GeneralError),
            "{why}"
        );
        assert_eq!(w.flags(D0, 4), flags, "{why}: untouched");
        assert_eq!(w.g.pins(D0, 4), None, "{why}");
    }
    // Sub-page grants may be copied, the rest may not.
    w.grant(D0, 4, RW | GTF_SUB_PAGE, D1, 0x40);
    assert_eq!(w.acquire(D1, D0, 4, false), Ok(0x40));
    w.grant(D0, 5, RW, D2, 0x50);
    assert_eq!(w.acquire(D1, D0, 5, false), Err(GntSt::GeneralError));
}

#[test]
fn an_entry_pinned_by_one_domain_refuses_another() {
    let mut w = World::new();
    w.grant(D0, 6, RW, D1, 0x60);
    w.map(D1, D0, 6, true, 0x400).unwrap();
    // Even if the granter now names D2 (it should not while in use).
    w.grant(D0, 6, RW | GTF_READING, D2, 0x61);
    assert_eq!(w.map(D2, D0, 6, true, 0x400), Err(GntSt::GeneralError));
    assert_eq!(w.acquire(D2, D0, 6, false), Err(GntSt::GeneralError));
    // The pinned frame is the one named at the first pin.
    assert_eq!(w.map(D1, D0, 6, true, 0x401).map(|m| m.frame), Ok(0x60));
    assert!(w.g.is_frame_mapped(D0, 0x60) && !w.g.is_frame_mapped(D0, 0x61));
}

#[test]
fn double_unmap_and_bad_handles() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    let m = w.map(D1, D0, 1, false, 0x400).unwrap();
    w.unmap(D1, m.handle, 0x400).unwrap();
    assert_eq!(w.unmap(D1, m.handle, 0x400), Err(GntSt::BadHandle));
    assert_eq!(w.flags(D0, 1), RW);
    for h in [1, MAPTRACK, u32::MAX] {
        assert_eq!(w.unmap(D1, h, 0x400), Err(GntSt::BadHandle));
    }
    assert_eq!(
        w.unmap(7, 0, 0x400),
        Err(GntSt::BadHandle),
        "unknown mapper"
    );
}

#[test]
fn unmapping_another_domains_handle() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    w.grant(D0, 2, RW, D2, 0x20);
    let m1 = w.map(D1, D0, 1, false, 0x400).unwrap();
    // D2 has no mappings: D1's handle means nothing to it.
    assert_eq!(w.unmap(D2, m1.handle, 0x400), Err(GntSt::BadHandle));
    // D2's own handle 0 names D2's mapping only.
    let m2 = w.map(D2, D0, 2, false, 0x400).unwrap();
    assert_eq!(m2.handle, m1.handle);
    assert!(matches!(w.unmap(D2, m2.handle, 0x400), Ok(Unmapped::Live(i)) if i.gref == 2));
    assert_eq!(
        w.flags(D0, 1),
        RW | GTF_READING | GTF_WRITING,
        "D1's mapping intact"
    );
    assert_eq!(w.g.pins(D0, 1), Some((D1, 1, 1)));
}

#[test]
fn unmap_at_the_wrong_gfn() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    let m = w.map(D1, D0, 1, false, 0x400).unwrap();
    assert_eq!(
        w.g.check_unmap(D1, m.handle, 0x401),
        Err(GntSt::GeneralError)
    );
    assert_eq!(w.unmap(D1, m.handle, 0x401), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 1), RW | GTF_READING | GTF_WRITING);
    assert!(w.unmap(D1, m.handle, 0x400).is_ok());
}

#[test]
fn maptrack_exhaustion() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    for i in 0..MAPTRACK {
        assert_eq!(
            w.map(D1, D0, 1, true, 0x400 + u64::from(i))
                .map(|m| m.handle),
            Ok(i)
        );
    }
    assert_eq!(w.map(D1, D0, 1, true, 0x500), Err(GntSt::NoSpace));
    // Xen checks for a handle before the ref.
    assert_eq!(w.map(D1, D0, 9999, true, 0x500), Err(GntSt::NoSpace));
    // ... but after the granter.
    assert_eq!(w.map(D1, 7, 1, true, 0x500), Err(GntSt::BadDomain));
    assert_eq!(w.g.pins(D0, 1), Some((D1, u64::from(MAPTRACK), 0)));
    // The lowest free handle is reused.
    w.unmap(D1, 3, 0x403).unwrap();
    assert_eq!(w.map(D1, D0, 1, true, 0x500).map(|m| m.handle), Ok(3));
    // Other domains have their own tables.
    w.grant(D0, 2, RW, D2, 0x20);
    assert_eq!(w.map(D2, D0, 2, true, 0x400).map(|m| m.handle), Ok(0));

    let mut g = Grants::new();
    g.add_domain(0, 1, 0).unwrap();
    let mut mem = FakeMem::default();
    g.add_table_frame(0, 1).unwrap();
    assert_eq!(g.map(0, 0, 0, true, 0, &mut mem), Err(GntSt::NoSpace));
}

#[test]
fn granter_dies_with_live_grants() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    w.grant(D0, 2, RO, D2, 0x20);
    w.grant(D1, 1, RW, D2, 0x30);
    let m1 = w.map(D1, D0, 1, false, 0x400).unwrap();
    let m2 = w.map(D2, D0, 2, true, 0x500).unwrap();
    let m3 = w.map(D2, D1, 1, false, 0x501).unwrap();
    w.acquire(D2, D0, 2, false).unwrap();
    let frames = w.g.table_frames(D0).unwrap().to_vec();

    let r = w.g.remove_domain(D0, &mut w.mem).unwrap();
    assert_eq!(
        r.revoked,
        [
            Revoked {
                mapper: D1,
                handle: m1.handle,
                gref: 1,
                frame: 0x10,
                host_gfn: 0x400
            },
            Revoked {
                mapper: D2,
                handle: m2.handle,
                gref: 2,
                frame: 0x20,
                host_gfn: 0x500
            },
        ]
    );
    assert!(r.released.is_empty());
    assert_eq!(r.table_frames, frames);
    assert!(!w.g.has_domain(D0) && !w.g.is_frame_mapped(D0, 0x10));
    assert_eq!(w.g.remove_domain(D0, &mut w.mem), Err(Error::UnknownDomain));

    // The revoked handles unmap fine, once, without touching anything.
    let words_before = w.mem.word(frames[0], 8);
    assert!(matches!(w.unmap(D1, m1.handle, 0x999), Ok(Unmapped::Revoked(i)) if i.gref == 1));
    assert_eq!(w.unmap(D1, m1.handle, 0x400), Err(GntSt::BadHandle));
    assert!(matches!(
        w.unmap(D2, m2.handle, 0x500),
        Ok(Unmapped::Revoked(_))
    ));
    assert_eq!(w.mem.word(frames[0], 8), words_before);
    // The copy in flight is forgotten; new operations see no domain.
    assert_eq!(w.release(D2, D0, 2, false), Err(GntSt::BadDomain));
    assert_eq!(w.map(D1, D0, 1, false, 0x400), Err(GntSt::BadDomain));
    // D2's mapping of D1 is untouched.
    assert_eq!(w.flags(D1, 1), RW | GTF_READING | GTF_WRITING);
    assert!(matches!(
        w.unmap(D2, m3.handle, 0x501),
        Ok(Unmapped::Live(_))
    ));
    assert_eq!(w.flags(D1, 1), RW);

    // A new domain with the old id starts afresh.
    w.g.add_domain(D0, MAX_FRAMES, MAPTRACK).unwrap();
    assert_eq!(w.g.query_size(D0), Ok((0, MAX_FRAMES)));
}

#[test]
fn mapper_dies_with_live_mappings() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    w.grant(D0, 2, RO, D1, 0x20);
    w.grant(D2, 3, RW, D1, 0x30);
    w.grant(D0, 4, RW, D2, 0x40);
    let a = w.map(D1, D0, 1, false, 0x400).unwrap();
    let b = w.map(D1, D0, 2, true, 0x401).unwrap();
    let c = w.map(D1, D2, 3, false, 0x402).unwrap();
    w.acquire(D1, D2, 3, true).unwrap();
    let other = w.map(D2, D0, 4, false, 0x400).unwrap();

    let r = w.g.remove_domain(D1, &mut w.mem).unwrap();
    assert!(r.revoked.is_empty());
    assert_eq!(
        r.released,
        [
            Released {
                granter: D0,
                handle: a.handle,
                gref: 1,
                frame: 0x10,
                host_gfn: 0x400
            },
            Released {
                granter: D0,
                handle: b.handle,
                gref: 2,
                frame: 0x20,
                host_gfn: 0x401
            },
            Released {
                granter: D2,
                handle: c.handle,
                gref: 3,
                frame: 0x30,
                host_gfn: 0x402
            },
        ]
    );
    assert_eq!(
        (w.flags(D0, 1), w.flags(D0, 2), w.flags(D2, 3)),
        (RW, RO, RW)
    );
    for (g, r, f) in [(D0, 1, 0x10), (D0, 2, 0x20), (D2, 3, 0x30)] {
        assert_eq!(w.g.pins(g, r), None);
        assert!(!w.g.is_frame_mapped(g, f));
    }
    // D2's own mapping of D0 is untouched.
    assert_eq!(w.flags(D0, 4), RW | GTF_READING | GTF_WRITING);
    assert!(w.g.is_frame_mapped(D0, 0x40));
    // The copy's late release finds nothing.
    assert_eq!(w.release(D1, D2, 3, true), Err(GntSt::GeneralError));
    assert_eq!(w.map(D1, D0, 1, false, 0x400), Err(GntSt::GeneralError));
    w.unmap(D2, other.handle, 0x400).unwrap();
}

#[test]
fn self_mapping_and_death() {
    let mut w = World::new();
    w.grant(D1, 1, RW, D1, 0x10);
    let m = w.map(D1, D1, 1, false, 0x400).unwrap();
    assert_eq!(w.flags(D1, 1), RW | GTF_READING | GTF_WRITING);
    let r = w.g.remove_domain(D1, &mut w.mem).unwrap();
    assert!(r.revoked.is_empty());
    assert_eq!(r.released.len(), 1);
    assert_eq!(r.released[0].handle, m.handle);
    assert_eq!(r.table_frames.len(), 1);
}

#[test]
fn copy_acquire_and_release() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    assert_eq!(w.acquire(D1, D0, 1, false), Ok(0x10));
    assert_eq!(w.flags(D0, 1), RW | GTF_READING);
    assert_eq!(w.acquire(D1, D0, 1, true), Ok(0x10));
    assert_eq!(w.flags(D0, 1), RW | GTF_READING | GTF_WRITING);
    assert!(w.g.is_frame_mapped(D0, 0x10));
    // Releases must match a pin of the same kind.
    assert_eq!(w.release(D2, D0, 1, true), Err(GntSt::GeneralError));
    w.release(D1, D0, 1, true).unwrap();
    assert_eq!(w.release(D1, D0, 1, true), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 1), RW | GTF_READING);
    w.release(D1, D0, 1, false).unwrap();
    assert_eq!(w.flags(D0, 1), RW);
    assert_eq!(w.release(D1, D0, 1, false), Err(GntSt::GeneralError));
    assert!(!w.g.is_frame_mapped(D0, 0x10));

    // A copy does not release a mapping's pin.
    let m = w.map(D1, D0, 1, true, 0x400).unwrap();
    assert_eq!(w.release(D1, D0, 1, false), Err(GntSt::GeneralError));
    assert_eq!(w.g.pins(D0, 1), Some((D1, 1, 0)));
    w.unmap(D1, m.handle, 0x400).unwrap();

    // Read-only grants are copied from, never to.
    w.grant(D0, 2, RO, D1, 0x20);
    assert_eq!(w.acquire(D1, D0, 2, true), Err(GntSt::GeneralError));
    assert_eq!(w.acquire(D1, D0, 2, false), Ok(0x20));
    assert_eq!(w.acquire(D1, D0, 2, true), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 2), RO | GTF_READING);
}

#[test]
fn copy_write_upgrade_checks_the_frame() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    w.acquire(D1, D0, 1, false).unwrap();
    // The granter (wrongly) changes the frame while it is in use.
    w.grant(D0, 1, RW | GTF_READING, D1, 0x11);
    assert_eq!(w.acquire(D1, D0, 1, true), Err(GntSt::GeneralError));
    assert_eq!(w.flags(D0, 1), RW | GTF_READING, "GTF_writing taken back");
    assert_eq!(w.g.pins(D0, 1), Some((D1, 1, 0)));
    // A mapping does not re-read the entry (Xen): it gets the pinned frame.
    assert_eq!(w.map(D1, D0, 1, false, 0x400).map(|m| m.frame), Ok(0x10));
    assert_eq!(w.flags(D0, 1), RW | GTF_READING | GTF_WRITING);
}

#[test]
fn concurrent_revoke_by_the_granter() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    // The granter clears the entry between our read and our exchange.
    w.mem.interfere = Some(Box::new(|word| word & !0xffff_ffff));
    assert_eq!(w.map(D1, D0, 1, false, 0x400), Err(GntSt::GeneralError));
    assert_eq!(w.g.pins(D0, 1), None);
    assert!(!w.g.is_frame_mapped(D0, 0x10));
    w.mem.interfere = None;
    assert_eq!(w.flags(D0, 1), 0);
    // And nothing was allocated in the maptrack.
    w.grant(D0, 1, RW, D1, 0x10);
    assert_eq!(w.map(D1, D0, 1, false, 0x400).map(|m| m.handle), Ok(0));
}

#[test]
fn granter_rewrites_flags_while_mapped() {
    let mut w = World::new();
    w.grant(D0, 1, RW, D1, 0x10);
    let m = w.map(D1, D0, 1, false, 0x400).unwrap();
    // A misbehaving granter drops GTF_permit_access; Xen's bits stay ours.
    w.grant(D0, 1, GTF_READING | GTF_WRITING, D1, 0x10);
    w.unmap(D1, m.handle, 0x400).unwrap();
    assert_eq!(w.flags(D0, 1), 0);
}
