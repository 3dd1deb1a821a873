//! Property test: random sequences of map, unmap, copy (acquire, range
//! check, release), domain death and rebirth, granter writes, version
//! switches, swaps and status-frame queries, across three domains of both
//! grant-table versions, against a simple model.
//!
//! d0 and d1 may use version 2 (d1 starts there), d2 only version 1. The
//! granters write entries of every kind their layout has: full-page,
//! sub-page and transitive grants, with frames above 32 bits and hops that
//! are valid, loop back, name themselves or name grants that were revoked
//! or whose domain ended. Versions change with and without live grants.
//!
//! After every step: every result equals the model's; every tracked entry
//! reads as the model says (so a version switch converts the first 8 and
//! clears the rest, and a swap swaps); `GTF_reading`/`GTF_writing` are
//! where the entry's version keeps them (its flags, or its status word)
//! and equal "some pin / some writable pin exists", counting the pins a
//! transitive copy holds on its hop; the pins equal the model's; and
//! `is_frame_mapped` is exact. At the end every domain dies, and every
//! frame handle the crate was given has been handed back exactly once.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use keel_hypercall::abi::grant_table::{
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TRANSITIVE, GTF_TYPE_MASK,
    GTF_WRITING,
};

use crate::fake::{FakeMem, GuestEntry, status_bits};
use crate::*;

const DOMS: DomId = 3;
/// Each domain's `max_version`.
const MAX_VERSION: [u32; DOMS as usize] = [2, 2, 1];
/// Maptrack handles per domain.
const LIMIT: u32 = 3;
/// Refs the test uses in range: reserved ones (kept across a version
/// change), others (which hold one back while in use), and one that only
/// a version 1 table has.
const REFS: [GrantRef; 5] = [0, 1, 8, 9, 300];
/// Granter frame numbers the entries name (few, so they collide; one above
/// 32 bits, which version 1 cannot hold).
const FRAMES: [u64; 4] = [0, 1, 2, 1 << 32 | 1];
/// Bytes 4..8 of a version 2 entry: sub-page ranges, or hop domids.
const W1: [u32; 6] = [0, 1, 2, 0x0064_0000, 0x0010_0f00, 0x1000_0000];
/// Bytes 8..16: frames, or hop grant refs.
const W2: [u64; 6] = [0, 1, 2, 8, 9, 1 << 32 | 1];

#[derive(Clone, Debug)]
enum Op {
    /// With `grantee`, the mapper is whoever the entry names (so that
    /// maps succeed often), else `mapper`.
    Map {
        grantee: bool,
        mapper: DomId,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
        gfn: u64,
    },
    /// With `held`, the handle is the mapper's `pick`-th (modulo the
    /// number it holds), else `handle`.
    Unmap {
        held: bool,
        pick: usize,
        mapper: DomId,
        handle: GrantHandle,
        right_gfn: bool,
    },
    /// A copy's end: acquire (with `grantee` as for `Map`), check `len`
    /// bytes at `offset`, then keep it in flight if `keep` and in range,
    /// else release it.
    Copy {
        grantee: bool,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        offset: u16,
        len: u16,
        keep: bool,
    },
    /// Releases held copy `pick` (modulo the number held) if `held`, else
    /// the given arguments.
    Release {
        held: bool,
        pick: usize,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    },
    Remove {
        dom: DomId,
    },
    Add {
        dom: DomId,
    },
    /// The granter writes its own bits of an entry, in its layout.
    Write {
        granter: DomId,
        gref: GrantRef,
        entry: GuestEntry,
    },
    /// `t` grants `gref_t` to `a`, `a` grants it on transitively as
    /// `gref_a` to `copier`, which copies through it.
    Chain {
        t: DomId,
        gref_t: GrantRef,
        t_flags: u16,
        a: DomId,
        gref_a: GrantRef,
        copier: DomId,
        write: bool,
        offset: u16,
        len: u16,
        keep: bool,
    },
    /// `granter` grants `gref` (the whole page, or a sub-page range from
    /// [`W1`]) to `copier`, which copies at once.
    Offer {
        granter: DomId,
        gref: GrantRef,
        copier: DomId,
        flags: u16,
        w1: u32,
        write: bool,
        offset: u16,
        len: u16,
        keep: bool,
    },
    SetVersion {
        dom: DomId,
        version: u32,
        alloc_ok: bool,
    },
    Swap {
        dom: DomId,
        a: GrantRef,
        b: GrantRef,
    },
    StatusFrames {
        dom: DomId,
        nr: u32,
    },
}

fn dom() -> impl Strategy<Value = DomId> {
    prop_oneof![20 => 0..DOMS, 1 => Just(7u16)]
}

fn gref() -> impl Strategy<Value = GrantRef> {
    prop_oneof![
        20 => prop::sample::select(REFS.to_vec()),
        1 => Just(512u32),
        1 => Just(u32::MAX),
    ]
}

/// The granter's bits of an entry: mostly `GTF_permit_access`, so that
/// maps succeed often; sometimes read-only, sub-page or another type
/// (transitive among them).
fn entry_flags() -> impl Strategy<Value = u16> {
    let ty = prop_oneof![6 => Just(GTF_PERMIT_ACCESS), 2 => Just(GTF_TRANSITIVE), 1 => 0..4u16];
    (ty, prop::bool::weighted(0.3), prop::bool::weighted(0.2)).prop_map(|(ty, ro, sub)| {
        ty | if ro { GTF_READONLY } else { 0 } | if sub { GTF_SUB_PAGE } else { 0 }
    })
}

fn guest_entry() -> impl Strategy<Value = GuestEntry> {
    (
        entry_flags(),
        0..DOMS,
        prop::sample::select(W1.to_vec()),
        prop::sample::select(W2.to_vec()),
    )
        .prop_map(|(flags, domid, w1, w2)| GuestEntry {
            flags,
            domid,
            w1,
            w2,
        })
}

/// A copy's range: `len` bytes at `offset`, within the page.
fn range() -> impl Strategy<Value = (u16, u16)> {
    (
        prop::sample::select(vec![0u16, 50, 0xf00, 4000]),
        prop::sample::select(vec![1u16, 16, 96, 100]),
    )
        .prop_map(|(o, l)| (o, l.min(4096 - o)))
}

fn op() -> impl Strategy<Value = Op> {
    let often = || prop::bool::weighted(0.8);
    prop_oneof![
        6 => (often(), dom(), dom(), gref(), any::<bool>(), 0..4u64).prop_map(
            |(grantee, mapper, granter, gref, readonly, gfn)| {
                Op::Map { grantee, mapper, granter, gref, readonly, gfn }
            }
        ),
        5 => (any::<bool>(), any::<usize>(), dom(), 0..LIMIT + 1, often()).prop_map(
            |(held, pick, mapper, handle, right_gfn)| {
                Op::Unmap { held, pick, mapper, handle, right_gfn }
            }
        ),
        4 => (often(), dom(), dom(), gref(), any::<bool>(), range(), any::<bool>()).prop_map(
            |(grantee, acc, granter, gref, write, (offset, len), keep)| {
                Op::Copy { grantee, acc, granter, gref, write, offset, len, keep }
            }
        ),
        3 => (any::<bool>(), any::<usize>(), dom(), dom(), gref(), any::<bool>()).prop_map(
            |(held, pick, acc, granter, gref, write)| {
                Op::Release { held, pick, acc, granter, gref, write }
            }
        ),
        1 => (0..DOMS).prop_map(|dom| Op::Remove { dom }),
        4 => (0..DOMS).prop_map(|dom| Op::Add { dom }),
        6 => (0..DOMS, prop::sample::select(REFS.to_vec()), guest_entry())
            .prop_map(|(granter, gref, entry)| Op::Write { granter, gref, entry }),
        3 => (
            (0..DOMS, prop::sample::select(REFS.to_vec()), entry_flags()),
            (0..DOMS, prop::sample::select(REFS.to_vec()), 0..DOMS),
            (any::<bool>(), range(), any::<bool>()),
        )
            .prop_map(|((t, gref_t, t_flags), (a, gref_a, copier), (write, (offset, len), keep))| {
                Op::Chain { t, gref_t, t_flags, a, gref_a, copier, write, offset, len, keep }
            }),
        3 => (
            (0..DOMS, prop::sample::select(REFS.to_vec()), 0..DOMS),
            (prop::bool::weighted(0.6), prop::bool::weighted(0.2), prop::sample::select(W1.to_vec())),
            (any::<bool>(), range(), any::<bool>()),
        )
            .prop_map(|((granter, gref, copier), (sub, ro, w1), (write, (offset, len), keep))| {
                let flags = GTF_PERMIT_ACCESS
                    | if sub { GTF_SUB_PAGE } else { 0 }
                    | if ro { GTF_READONLY } else { 0 };
                Op::Offer { granter, gref, copier, flags, w1, write, offset, len, keep }
            }),
        2 => (0..DOMS, prop_oneof![8 => 1..3u32, 1 => Just(0u32), 1 => Just(3u32)], often())
            .prop_map(|(dom, version, alloc_ok)| Op::SetVersion { dom, version, alloc_ok }),
        2 => (dom(), gref(), gref()).prop_map(|(dom, a, b)| Op::Swap { dom, a, b }),
        1 => (dom(), 0..3u32).prop_map(|(dom, nr)| Op::StatusFrames { dom, nr }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MMap {
    granter: DomId,
    gref: GrantRef,
    readonly: bool,
    gfn: u64,
    frame: u64,
    revoked: bool,
}

/// A copy in flight, and the hop it pins if it went through a transitive
/// grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MCopy {
    acc: DomId,
    granter: DomId,
    gref: GrantRef,
    write: bool,
    hop: Option<(DomId, GrantRef)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MTarget {
    Page { grant: CopyGrant, sub_page: bool },
    Hop(DomId, GrantRef),
}

/// What the crate should be doing.
#[derive(Default)]
struct Model {
    /// Live domains and their versions.
    alive: BTreeMap<DomId, Version>,
    /// Status frames by domain.
    status: BTreeMap<DomId, Vec<u64>>,
    /// (granter, ref) -> what the granter wrote; absent = all zero.
    entries: BTreeMap<(DomId, GrantRef), GuestEntry>,
    maps: BTreeMap<DomId, BTreeMap<GrantHandle, MMap>>,
    copies: Vec<MCopy>,
    /// (granter, ref) -> (accessor, target) while pinned.
    active: BTreeMap<(DomId, GrantRef), (DomId, MTarget)>,
}

/// `e` as a table of `version` holds it.
fn normalize(version: Version, e: GuestEntry) -> GuestEntry {
    match version {
        Version::V1 => GuestEntry {
            flags: e.flags & !(GTF_READING | GTF_WRITING),
            domid: e.domid,
            w1: 0,
            w2: e.w2 & 0xffff_ffff,
        },
        Version::V2 => e,
    }
}

impl Model {
    fn alive(&self, d: DomId) -> bool {
        self.alive.contains_key(&d)
    }

    fn nr_entries(&self, d: DomId) -> GrantRef {
        match self.alive.get(&d) {
            Some(Version::V1) => 512,
            Some(Version::V2) => 256,
            None => 0,
        }
    }

    fn entry(&self, g: DomId, r: GrantRef) -> GuestEntry {
        self.entries.get(&(g, r)).copied().unwrap_or_default()
    }

    /// (pins, writable pins) on (g, r), hop pins included.
    fn pins(&self, g: DomId, r: GrantRef) -> (u64, u64) {
        let mut p = (0, 0);
        for m in self.maps.values().flat_map(|t| t.values()) {
            if !m.revoked && (m.granter, m.gref) == (g, r) {
                p.0 += 1;
                p.1 += u64::from(!m.readonly);
            }
        }
        for c in &self.copies {
            if (c.granter, c.gref) == (g, r) || c.hop == Some((g, r)) {
                p.0 += 1;
                p.1 += u64::from(c.write);
            }
        }
        p
    }

    fn drop_idle(&mut self, g: DomId, r: GrantRef) {
        if self.pins(g, r).0 == 0 {
            self.active.remove(&(g, r));
        }
    }

    /// The outcome of pinning (g, r) for `acc`: Ok(target) or the error.
    /// Records a first pin in `active`; the caller records the pin itself.
    fn pin(
        &mut self,
        acc: DomId,
        g: DomId,
        r: GrantRef,
        readonly: bool,
        mapping: bool,
        allow_transitive: bool,
    ) -> Result<MTarget, GntSt> {
        if r >= self.nr_entries(g) {
            return Err(GntSt::BadGntref);
        }
        let v2 = self.alive[&g] == Version::V2;
        let e = self.entry(g, r);
        if let Some((who, target)) = self.active.get(&(g, r)).copied() {
            let blocks_maps = match target {
                MTarget::Page { sub_page, .. } => sub_page,
                MTarget::Hop(..) => true,
            };
            let hop = matches!(target, MTarget::Hop(..));
            if who != acc || (mapping && blocks_maps) || (hop && !allow_transitive) {
                return Err(GntSt::GeneralError);
            }
            if !readonly && self.pins(g, r).1 == 0 {
                if e.flags & GTF_READONLY != 0 {
                    return Err(GntSt::GeneralError);
                }
                if let MTarget::Page { grant, .. } = target
                    && !mapping
                    && e.w2 != grant.frame
                {
                    return Err(GntSt::GeneralError);
                }
            }
            return Ok(target);
        }
        let mask = if mapping {
            GTF_TYPE_MASK | GTF_SUB_PAGE
        } else {
            GTF_TYPE_MASK
        };
        let ty = e.flags & mask;
        let type_ok = ty == GTF_PERMIT_ACCESS || (v2 && !mapping && ty == GTF_TRANSITIVE);
        if !type_ok || e.domid != acc || (!readonly && e.flags & GTF_READONLY != 0) {
            return Err(GntSt::GeneralError);
        }
        let target = if !v2 {
            MTarget::Page {
                grant: CopyGrant::page(e.w2),
                sub_page: false,
            }
        } else if ty == GTF_TRANSITIVE {
            let hop_dom = e.w1 as u16;
            if !allow_transitive || hop_dom == g {
                return Err(GntSt::GeneralError);
            }
            MTarget::Hop(hop_dom, e.w2 as u32)
        } else if e.flags & GTF_SUB_PAGE != 0 {
            MTarget::Page {
                grant: CopyGrant {
                    frame: e.w2,
                    start: e.w1 as u16,
                    length: (e.w1 >> 16) as u16,
                },
                sub_page: true,
            }
        } else {
            MTarget::Page {
                grant: CopyGrant::page(e.w2),
                sub_page: false,
            }
        };
        self.active.insert((g, r), (acc, target));
        Ok(target)
    }

    /// A copy's acquire, the hop included; records the copy on success.
    fn acquire(
        &mut self,
        acc: DomId,
        g: DomId,
        r: GrantRef,
        write: bool,
    ) -> Result<CopyGrant, GntSt> {
        if !self.alive(g) {
            return Err(GntSt::BadDomain);
        }
        if !self.alive(acc) {
            return Err(GntSt::GeneralError);
        }
        let (grant, hop) = match self.pin(acc, g, r, !write, false, true)? {
            MTarget::Page { grant, .. } => (grant, None),
            MTarget::Hop(t, tr) => {
                let hop = if self.alive(t) {
                    self.pin(g, t, tr, !write, false, false)
                } else {
                    Err(GntSt::GeneralError)
                };
                match hop {
                    Ok(MTarget::Page { grant, .. }) => (grant, Some((t, tr))),
                    Ok(MTarget::Hop(..)) => unreachable!("no transitivity on a hop"),
                    Err(e) => {
                        self.drop_idle(g, r);
                        return Err(e);
                    }
                }
            }
        };
        self.copies.push(MCopy {
            acc,
            granter: g,
            gref: r,
            write,
            hop,
        });
        Ok(grant)
    }

    fn release(&mut self, acc: DomId, g: DomId, r: GrantRef, write: bool) -> Result<(), GntSt> {
        if !self.alive(g) {
            return Err(GntSt::BadDomain);
        }
        if r >= self.nr_entries(g) {
            return Err(GntSt::BadGntref);
        }
        let Some(i) = self
            .copies
            .iter()
            .position(|c| (c.acc, c.granter, c.gref, c.write) == (acc, g, r, write))
        else {
            return Err(GntSt::GeneralError);
        };
        let c = self.copies.remove(i);
        self.drop_idle(g, r);
        if let Some((t, tr)) = c.hop {
            self.drop_idle(t, tr);
        }
        Ok(())
    }

    /// `set_version`'s result (`alloc_ok`: the status frame it needs can
    /// be had).
    fn set_version(&mut self, d: DomId, version: u32, alloc_ok: bool) -> Result<(), Errno> {
        let cur = self.alive[&d];
        let new = match Version::from_number(version) {
            None => return Err(Errno::EINVAL),
            Some(Version::V2) if MAX_VERSION[usize::from(d)] == 1 => return Err(Errno::ENOSYS),
            Some(v) if v == cur => return Ok(()),
            Some(v) => v,
        };
        if self.active.keys().any(|&(g, r)| g == d && r >= 8) {
            return Err(Errno::EBUSY);
        }
        let reserved: Vec<GuestEntry> = (0..8).map(|r| self.entry(d, r)).collect();
        match cur {
            Version::V1 if !alloc_ok => return Err(Errno::ENOMEM),
            Version::V1 => {}
            Version::V2 => {
                for e in &reserved {
                    let ty = e.flags & GTF_TYPE_MASK;
                    if (ty == GTF_PERMIT_ACCESS && e.w2 >> 32 != 0) || ty == GTF_TRANSITIVE {
                        return Err(Errno::ERANGE);
                    }
                }
            }
        }
        self.entries.retain(|(g, _), _| *g != d);
        for (r, e) in (0..8).zip(reserved) {
            let converted = match new {
                Version::V2 => GuestEntry {
                    flags: e.flags,
                    domid: e.domid,
                    w1: 0,
                    w2: e.w2,
                },
                Version::V1 if e.flags & GTF_TYPE_MASK == GTF_PERMIT_ACCESS => GuestEntry {
                    flags: e.flags,
                    domid: e.domid,
                    w1: 0,
                    w2: e.w2,
                },
                Version::V1 => GuestEntry::default(),
            };
            if converted != GuestEntry::default() {
                self.entries.insert((d, r), converted);
            }
        }
        self.alive.insert(d, new);
        Ok(())
    }
}

struct Harness {
    g: Grants,
    mem: FakeMem,
    model: Model,
    next_frame: u64,
    /// Each live domain's one table frame.
    table_frame: BTreeMap<DomId, u64>,
    /// Every frame handle given to the crate.
    given: BTreeSet<u64>,
    /// Every frame handle the crate handed back, in order.
    back: Vec<u64>,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness {
            g: Grants::new(),
            mem: FakeMem::default(),
            model: Model::default(),
            next_frame: 0,
            table_frame: BTreeMap::new(),
            given: BTreeSet::new(),
            back: Vec::new(),
        };
        for d in 0..DOMS {
            h.add(d);
        }
        h.step(Op::SetVersion {
            dom: 1,
            version: 2,
            alloc_ok: true,
        });
        assert_eq!(h.model.alive[&1], Version::V2);
        h
    }

    fn fresh_frame(&mut self) -> u64 {
        self.next_frame += 1;
        self.given.insert(self.next_frame);
        self.next_frame
    }

    fn hand_back(&mut self, frames: &[u64]) {
        for f in frames {
            assert!(self.given.contains(f), "frame {f} was never given");
            assert!(!self.back.contains(f), "frame {f} handed back twice");
            self.back.push(*f);
        }
    }

    fn add(&mut self, d: DomId) {
        self.g
            .add_domain_with_version(d, 1, LIMIT, MAX_VERSION[usize::from(d)])
            .unwrap();
        // Fresh frames read as zero: the table starts empty.
        let f = self.fresh_frame();
        self.g.setup_table(d, 1, || Some(f)).unwrap();
        self.table_frame.insert(d, f);
        self.model.alive.insert(d, Version::V1);
        self.model.status.insert(d, Vec::new());
        self.model.maps.insert(d, BTreeMap::new());
    }

    fn release(&mut self, acc: DomId, granter: DomId, gref: GrantRef, write: bool) {
        let got = self.g.release(acc, granter, gref, write, &mut self.mem);
        let want = self.model.release(acc, granter, gref, write);
        assert_eq!(got, want, "release");
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Map {
                grantee,
                mapper,
                granter,
                gref,
                readonly,
                gfn,
            } => {
                let mapper = if grantee {
                    self.model.entry(granter, gref).domid
                } else {
                    mapper
                };
                let got = self
                    .g
                    .map(mapper, granter, gref, readonly, gfn, &mut self.mem);
                let m = &mut self.model;
                let want = if !m.alive(granter) {
                    Err(GntSt::BadDomain)
                } else if !m.alive(mapper) {
                    Err(GntSt::GeneralError)
                } else if m.maps[&mapper].len() >= LIMIT as usize {
                    Err(GntSt::NoSpace)
                } else {
                    m.pin(mapper, granter, gref, readonly, true, false)
                        .map(|target| {
                            let MTarget::Page { grant, .. } = target else {
                                panic!("a mapping of a transitive grant");
                            };
                            let table = m.maps.get_mut(&mapper).unwrap();
                            let handle = (0..).find(|h| !table.contains_key(h)).unwrap();
                            table.insert(
                                handle,
                                MMap {
                                    granter,
                                    gref,
                                    readonly,
                                    gfn,
                                    frame: grant.frame,
                                    revoked: false,
                                },
                            );
                            Mapped {
                                handle,
                                frame: grant.frame,
                            }
                        })
                };
                assert_eq!(got, want, "map");
            }
            Op::Unmap {
                held,
                pick,
                mapper,
                handle,
                right_gfn,
            } => {
                let handles: Vec<GrantHandle> = self
                    .model
                    .maps
                    .get(&mapper)
                    .map(|t| t.keys().copied().collect())
                    .unwrap_or_default();
                let handle = if held && !handles.is_empty() {
                    handles[pick % handles.len()]
                } else {
                    handle
                };
                let mapping = self
                    .model
                    .maps
                    .get(&mapper)
                    .and_then(|t| t.get(&handle))
                    .copied();
                let gfn = match mapping {
                    Some(mm) if right_gfn => mm.gfn,
                    _ => 99,
                };
                let got = self.g.unmap(mapper, handle, gfn, &mut self.mem);
                let want = match mapping {
                    None => Err(GntSt::BadHandle),
                    Some(mm) if !mm.revoked && mm.gfn != gfn => Err(GntSt::GeneralError),
                    Some(mm) => {
                        self.model.maps.get_mut(&mapper).unwrap().remove(&handle);
                        self.model.drop_idle(mm.granter, mm.gref);
                        let info = MapInfo {
                            granter: mm.granter,
                            gref: mm.gref,
                            frame: mm.frame,
                            host_gfn: mm.gfn,
                            readonly: mm.readonly,
                        };
                        Ok(if mm.revoked {
                            Unmapped::Revoked(info)
                        } else {
                            Unmapped::Live(info)
                        })
                    }
                };
                assert_eq!(got, want, "unmap");
            }
            Op::Copy {
                grantee,
                acc,
                granter,
                gref,
                write,
                offset,
                len,
                keep,
            } => {
                let acc = if grantee {
                    self.model.entry(granter, gref).domid
                } else {
                    acc
                };
                let got = self.g.acquire(acc, granter, gref, write, &mut self.mem);
                let want = self.model.acquire(acc, granter, gref, write);
                assert_eq!(got, want, "acquire");
                let Ok(grant) = got else { return };
                // Independently of `check_range`: within the granted bytes.
                let end = u32::from(offset) + u32::from(len);
                let inside = offset >= grant.start
                    && end <= u32::from(grant.start) + u32::from(grant.length);
                let checked = grant.check_range(offset, len);
                assert_eq!(checked.is_ok(), inside, "range check of {grant:?}");
                if checked.is_err() {
                    assert_eq!(checked, Err(GntSt::GeneralError));
                }
                if checked.is_err() || !keep {
                    self.release(acc, granter, gref, write);
                }
            }
            Op::Release {
                held,
                pick,
                acc,
                granter,
                gref,
                write,
            } => {
                let (acc, granter, gref, write) = if held && !self.model.copies.is_empty() {
                    let c = self.model.copies[pick % self.model.copies.len()];
                    (c.acc, c.granter, c.gref, c.write)
                } else {
                    (acc, granter, gref, write)
                };
                self.release(acc, granter, gref, write);
            }
            Op::Remove { dom } => self.remove(dom),
            Op::Add { dom } => {
                if self.model.alive(dom) {
                    assert_eq!(self.g.add_domain(dom, 1, LIMIT), Err(Error::DomainExists));
                } else {
                    self.add(dom);
                }
            }
            Op::Write {
                granter,
                gref,
                entry,
            } => {
                let Some(&version) = self.model.alive.get(&granter) else {
                    return;
                };
                if gref >= self.model.nr_entries(granter) {
                    return;
                }
                let d = self.g.domain(granter).unwrap();
                assert!(entry.write(&mut self.mem, d, gref));
                self.model
                    .entries
                    .insert((granter, gref), normalize(version, entry));
            }
            Op::Chain {
                t,
                gref_t,
                t_flags,
                a,
                gref_a,
                copier,
                write,
                offset,
                len,
                keep,
            } => {
                let t_entry = if t_flags & GTF_SUB_PAGE != 0 {
                    GuestEntry::sub_page(t_flags, a, 2, 0, 100)
                } else {
                    GuestEntry::page(t_flags, a, 1)
                };
                self.step(Op::Write {
                    granter: t,
                    gref: gref_t,
                    entry: t_entry,
                });
                self.step(Op::Write {
                    granter: a,
                    gref: gref_a,
                    entry: GuestEntry::transitive(0, copier, t, gref_t),
                });
                self.step(Op::Copy {
                    grantee: false,
                    acc: copier,
                    granter: a,
                    gref: gref_a,
                    write,
                    offset,
                    len,
                    keep,
                });
            }
            Op::Offer {
                granter,
                gref,
                copier,
                flags,
                w1,
                write,
                offset,
                len,
                keep,
            } => {
                self.step(Op::Write {
                    granter,
                    gref,
                    entry: GuestEntry {
                        flags,
                        domid: copier,
                        w1,
                        w2: 2,
                    },
                });
                self.step(Op::Copy {
                    grantee: false,
                    acc: copier,
                    granter,
                    gref,
                    write,
                    offset,
                    len,
                    keep,
                });
            }
            Op::SetVersion {
                dom,
                version,
                alloc_ok,
            } => {
                let new_frame = if alloc_ok {
                    Some(self.fresh_frame())
                } else {
                    None
                };
                let mut left = new_frame;
                let reply = self
                    .g
                    .set_version(dom, version, &mut self.mem, || left.take());
                self.hand_back(&reply.freed);
                // The frame the switch did not take goes back to the pool.
                if let Some(f) = left {
                    self.given.remove(&f);
                }
                if !self.model.alive(dom) {
                    assert_eq!(reply.result, Err(Errno::ESRCH));
                    assert!(reply.freed.is_empty());
                    return;
                }
                let before = self.model.alive[&dom];
                let want = self.model.set_version(dom, version, alloc_ok);
                assert_eq!(reply.result, want, "set_version({version}) by d{dom}");
                let after = self.model.alive[&dom];
                assert_eq!(reply.version, after.number());
                let status = self.model.status.get_mut(&dom).unwrap();
                match (before, after) {
                    (Version::V1, Version::V2) => {
                        assert!(reply.freed.is_empty());
                        *status = vec![new_frame.unwrap()];
                    }
                    (Version::V2, Version::V1) => {
                        assert_eq!(reply.freed, *status);
                        status.clear();
                    }
                    _ => assert!(reply.freed.is_empty()),
                }
                assert_eq!(self.g.status_frames(dom), Some(&status[..]));
            }
            Op::Swap { dom, a, b } => {
                let got = self.g.swap_grant_ref(dom, a, b, &mut self.mem);
                let m = &mut self.model;
                let n = m.nr_entries(dom);
                let want = if !m.alive(dom) {
                    Err(GntSt::BadDomain)
                } else if a >= n || b >= n {
                    Err(GntSt::BadGntref)
                } else if a == b {
                    Ok(())
                } else if m.active.contains_key(&(dom, a)) || m.active.contains_key(&(dom, b)) {
                    Err(GntSt::Eagain)
                } else {
                    let (ea, eb) = (m.entry(dom, a), m.entry(dom, b));
                    m.entries.insert((dom, a), eb);
                    m.entries.insert((dom, b), ea);
                    Ok(())
                };
                assert_eq!(got, want, "swap");
            }
            Op::StatusFrames { dom, nr } => {
                let got = self.g.get_status_frames(dom, nr).map(<[u64]>::to_vec);
                let want = match self.model.status.get(&dom) {
                    None => Err(GntSt::BadDomain),
                    Some(s) => s
                        .get(..nr as usize)
                        .map(<[u64]>::to_vec)
                        .ok_or(GntSt::GeneralError),
                };
                assert_eq!(got, want, "get_status_frames");
            }
        }
    }

    fn remove(&mut self, dom: DomId) {
        let got = self.g.remove_domain(dom, &mut self.mem);
        let m = &mut self.model;
        if !m.alive(dom) {
            assert_eq!(got, Err(Error::UnknownDomain));
            return;
        }
        let removal = got.unwrap();
        assert_eq!(removal.table_frames, [self.table_frame[&dom]]);
        assert_eq!(removal.status_frames, m.status[&dom]);
        let released: Vec<(DomId, GrantHandle)> = m.maps[&dom]
            .iter()
            .filter(|(_, mm)| !mm.revoked)
            .map(|(h, mm)| (mm.granter, *h))
            .collect();
        let got_released: Vec<_> = removal
            .released
            .iter()
            .map(|r| (r.granter, r.handle))
            .collect();
        assert_eq!(got_released, released);
        let mut revoked = Vec::new();
        for (&mapper, table) in m.maps.iter_mut() {
            if mapper == dom {
                continue;
            }
            for (&handle, mm) in table.iter_mut() {
                if mm.granter == dom && !mm.revoked {
                    mm.revoked = true;
                    revoked.push(Revoked {
                        mapper,
                        handle,
                        gref: mm.gref,
                        frame: mm.frame,
                        host_gfn: mm.gfn,
                    });
                }
            }
        }
        assert_eq!(removal.revoked, revoked);
        m.maps.remove(&dom);
        // Its copies, copies of its grants, and copies through it as a hop
        // are all forgotten.
        m.copies
            .retain(|c| c.acc != dom && c.granter != dom && c.hop.is_none_or(|(t, _)| t != dom));
        m.entries.retain(|(g, _), _| *g != dom);
        m.status.remove(&dom);
        m.alive.remove(&dom);
        let idle: Vec<_> = m.active.keys().copied().collect();
        for (g, r) in idle {
            if !m.alive(g) {
                m.active.remove(&(g, r));
            } else {
                m.drop_idle(g, r);
            }
        }
        self.table_frame.remove(&dom);
        self.hand_back(&removal.table_frames);
        self.hand_back(&removal.status_frames);
    }

    fn check(&self) {
        for g in 0..DOMS {
            let Some(d) = self.g.domain(g) else {
                assert!(!self.model.alive(g));
                continue;
            };
            assert_eq!(d.version(), self.model.alive[&g], "version of d{g}");
            for r in REFS {
                if r >= self.model.nr_entries(g) {
                    assert!(d.table.slot(r).is_none());
                    continue;
                }
                assert_eq!(
                    GuestEntry::read(&self.mem, d, r),
                    Some(self.model.entry(g, r)),
                    "entry d{g} ref {r}"
                );
                let (pins, write_pins) = self.model.pins(g, r);
                let bits = status_bits(&self.mem, d, r);
                assert_eq!(
                    bits & GTF_READING != 0,
                    pins > 0,
                    "GTF_reading of d{g} ref {r}"
                );
                assert_eq!(
                    bits & GTF_WRITING != 0,
                    write_pins > 0,
                    "GTF_writing of d{g} ref {r}"
                );
                let want = self
                    .model
                    .active
                    .get(&(g, r))
                    .map(|(acc, _)| (*acc, pins, write_pins));
                assert_eq!(self.g.pins(g, r), want, "pins of d{g} ref {r}");
            }
            for f in FRAMES {
                let mapped = self.model.active.iter().any(|((ag, _), (_, t))| {
                    *ag == g && matches!(t, MTarget::Page { grant, .. } if grant.frame == f)
                });
                assert_eq!(self.g.is_frame_mapped(g, f), mapped, "d{g} frame {f}");
            }
        }
    }

    /// Every domain dies; every frame given comes back once.
    fn end(&mut self) {
        for d in 0..DOMS {
            if self.model.alive(d) {
                self.remove(d);
                self.check();
            }
        }
        let back: BTreeSet<u64> = self.back.iter().copied().collect();
        assert_eq!(back.len(), self.back.len(), "a frame handed back twice");
        assert_eq!(back, self.given, "frames given and handed back");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn grants_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = Harness::new();
        h.check();
        for op in ops {
            h.step(op);
            h.check();
        }
        h.end();
    }
}

/// The interesting corners the random sequences reach, once each, so a
/// change that stops reaching them shows.
#[test]
fn the_model_covers_transitive_chains_and_switches() {
    let mut h = Harness::new();
    // d1 (version 2) passes d0's ref 8 on to d2 as its ref 9.
    h.step(Op::Chain {
        t: 0,
        gref_t: 8,
        t_flags: GTF_PERMIT_ACCESS,
        a: 1,
        gref_a: 9,
        copier: 2,
        write: true,
        offset: 0,
        len: 16,
        keep: true,
    });
    h.check();
    assert_eq!(
        h.model.copies,
        [MCopy {
            acc: 2,
            granter: 1,
            gref: 9,
            write: true,
            hop: Some((0, 8))
        }]
    );
    // In use: d1 cannot switch back; d0's hop pin holds d0 too.
    h.step(Op::SetVersion {
        dom: 1,
        version: 1,
        alloc_ok: true,
    });
    assert_eq!(h.model.alive[&1], Version::V2);
    h.step(Op::Release {
        held: true,
        pick: 0,
        acc: 0,
        granter: 0,
        gref: 0,
        write: false,
    });
    h.check();
    assert!(h.model.active.is_empty());
    h.step(Op::SetVersion {
        dom: 1,
        version: 1,
        alloc_ok: true,
    });
    assert_eq!(h.model.alive[&1], Version::V1);
    h.check();
    h.end();
}
