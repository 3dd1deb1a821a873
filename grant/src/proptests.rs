//! Property test: random sequences of map, unmap, acquire, release,
//! domain death and rebirth, and granter writes, across three domains,
//! against a simple model. After every step: every result equals the
//! model's, `GTF_reading`/`GTF_writing` in every entry equal "some pin /
//! some writable pin exists", the pins equal the model's, and
//! `is_frame_mapped` is exact.

use std::collections::BTreeMap;

use proptest::prelude::*;

use keel_hypercall::abi::grant_table::{
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
    GrantEntryV1,
};

use crate::entry;
use crate::fake::FakeMem;
use crate::*;

const DOMS: DomId = 3;
const LIMIT: u32 = 3;
/// Refs the test uses in range; others are out of range.
const REFS: GrantRef = 3;
/// Granter frame numbers the entries name (few, so they collide).
const FRAMES: u32 = 3;

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
    /// `grantee` as for `Map`.
    Acquire {
        grantee: bool,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
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
    /// The granter writes its own bits of an entry (Xen's two bits kept).
    Write {
        granter: DomId,
        gref: GrantRef,
        flags: u16,
        domid: DomId,
        frame: u32,
    },
}

fn dom() -> impl Strategy<Value = DomId> {
    prop_oneof![20 => 0..DOMS, 1 => Just(7u16)]
}

fn gref() -> impl Strategy<Value = GrantRef> {
    prop_oneof![20 => 0..REFS, 1 => Just(512u32), 1 => Just(u32::MAX)]
}

/// The granter's bits of an entry: mostly `GTF_permit_access`, so that
/// maps succeed often; sometimes read-only, sub-page or another type.
fn entry_flags() -> impl Strategy<Value = u16> {
    let ty = prop_oneof![6 => Just(GTF_PERMIT_ACCESS), 1 => 0..4u16];
    (ty, prop::bool::weighted(0.3), prop::bool::weighted(0.1)).prop_map(|(ty, ro, sub)| {
        ty | if ro { GTF_READONLY } else { 0 } | if sub { GTF_SUB_PAGE } else { 0 }
    })
}

fn op() -> impl Strategy<Value = Op> {
    let often = || prop::bool::weighted(0.8);
    prop_oneof![
        8 => (often(), dom(), dom(), gref(), any::<bool>(), 0..4u64).prop_map(
            |(grantee, mapper, granter, gref, readonly, gfn)| {
                Op::Map { grantee, mapper, granter, gref, readonly, gfn }
            }
        ),
        6 => (any::<bool>(), any::<usize>(), dom(), 0..LIMIT + 1, often()).prop_map(
            |(held, pick, mapper, handle, right_gfn)| {
                Op::Unmap { held, pick, mapper, handle, right_gfn }
            }
        ),
        3 => (often(), dom(), dom(), gref(), any::<bool>()).prop_map(
            |(grantee, acc, granter, gref, write)| {
                Op::Acquire { grantee, acc, granter, gref, write }
            }
        ),
        3 => (any::<bool>(), any::<usize>(), dom(), dom(), gref(), any::<bool>()).prop_map(
            |(held, pick, acc, granter, gref, write)| {
                Op::Release { held, pick, acc, granter, gref, write }
            }
        ),
        1 => (0..DOMS).prop_map(|dom| Op::Remove { dom }),
        5 => (0..DOMS).prop_map(|dom| Op::Add { dom }),
        6 => (0..DOMS, 0..REFS, entry_flags(), 0..DOMS, 0..FRAMES).prop_map(
            |(granter, gref, flags, domid, frame)| Op::Write { granter, gref, flags, domid, frame }
        ),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MMap {
    granter: DomId,
    gref: GrantRef,
    readonly: bool,
    gfn: u64,
    frame: u32,
    revoked: bool,
}

/// What the crate should be doing.
#[derive(Default)]
struct Model {
    alive: BTreeMap<DomId, ()>,
    /// (granter, ref) -> (guest flags, domid, frame); absent = all zero.
    entries: BTreeMap<(DomId, GrantRef), (u16, DomId, u32)>,
    maps: BTreeMap<DomId, BTreeMap<GrantHandle, MMap>>,
    /// Copies in progress: (accessor, granter, ref, write).
    copies: Vec<(DomId, DomId, GrantRef, bool)>,
    /// (granter, ref) -> (accessor, frame) while pinned.
    active: BTreeMap<(DomId, GrantRef), (DomId, u32)>,
}

impl Model {
    fn alive(&self, d: DomId) -> bool {
        self.alive.contains_key(&d)
    }

    fn entry(&self, g: DomId, r: GrantRef) -> (u16, DomId, u32) {
        self.entries.get(&(g, r)).copied().unwrap_or((0, 0, 0))
    }

    /// (pins, writable pins) on (g, r).
    fn pins(&self, g: DomId, r: GrantRef) -> (u64, u64) {
        let mut p = (0, 0);
        for m in self.maps.values().flat_map(|t| t.values()) {
            if !m.revoked && (m.granter, m.gref) == (g, r) {
                p.0 += 1;
                p.1 += u64::from(!m.readonly);
            }
        }
        for &(_, cg, cr, w) in &self.copies {
            if (cg, cr) == (g, r) {
                p.0 += 1;
                p.1 += u64::from(w);
            }
        }
        p
    }

    fn drop_idle(&mut self, g: DomId, r: GrantRef) {
        if self.pins(g, r).0 == 0 {
            self.active.remove(&(g, r));
        }
    }

    /// The outcome of pinning (g, r) for `acc`: Ok(frame) or the error.
    fn pin(
        &mut self,
        acc: DomId,
        g: DomId,
        r: GrantRef,
        readonly: bool,
        mapping: bool,
    ) -> Result<u32, GntSt> {
        if r >= 512 {
            return Err(GntSt::BadGntref);
        }
        let (flags, domid, frame) = self.entry(g, r);
        match self.active.get(&(g, r)).copied() {
            Some((who, pinned)) => {
                if who != acc {
                    return Err(GntSt::GeneralError);
                }
                let upgrade = !readonly && self.pins(g, r).1 == 0;
                if upgrade && flags & GTF_READONLY != 0 {
                    return Err(GntSt::GeneralError);
                }
                if upgrade && !mapping && frame != pinned {
                    return Err(GntSt::GeneralError);
                }
                Ok(pinned)
            }
            None => {
                let mask = if mapping {
                    GTF_TYPE_MASK | GTF_SUB_PAGE
                } else {
                    GTF_TYPE_MASK
                };
                if flags & mask != GTF_PERMIT_ACCESS || domid != acc {
                    return Err(GntSt::GeneralError);
                }
                if !readonly && flags & GTF_READONLY != 0 {
                    return Err(GntSt::GeneralError);
                }
                self.active.insert((g, r), (acc, frame));
                Ok(frame)
            }
        }
    }
}

struct Harness {
    g: Grants,
    mem: FakeMem,
    model: Model,
    next_frame: u64,
    /// Each live domain's one table frame.
    table_frame: BTreeMap<DomId, u64>,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness {
            g: Grants::new(),
            mem: FakeMem::default(),
            model: Model::default(),
            next_frame: 0,
            table_frame: BTreeMap::new(),
        };
        for d in 0..DOMS {
            h.add(d);
        }
        h
    }

    fn add(&mut self, d: DomId) {
        self.g.add_domain(d, 1, LIMIT).unwrap();
        // Fresh frames read as zero: the table starts empty.
        self.next_frame += 1;
        let f = self.next_frame;
        self.g.setup_table(d, 1, || Some(f)).unwrap();
        self.table_frame.insert(d, f);
        self.model.alive.insert(d, ());
        self.model.maps.insert(d, BTreeMap::new());
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
                    self.model.entry(granter, gref).1
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
                    m.pin(mapper, granter, gref, readonly, true).map(|frame| {
                        let table = m.maps.get_mut(&mapper).unwrap();
                        let handle = (0..).find(|h| !table.contains_key(h)).unwrap();
                        table.insert(
                            handle,
                            MMap {
                                granter,
                                gref,
                                readonly,
                                gfn,
                                frame,
                                revoked: false,
                            },
                        );
                        Mapped {
                            handle,
                            frame: u64::from(frame),
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
                            frame: u64::from(mm.frame),
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
            Op::Acquire {
                grantee,
                acc,
                granter,
                gref,
                write,
            } => {
                let acc = if grantee {
                    self.model.entry(granter, gref).1
                } else {
                    acc
                };
                let got = self.g.acquire(acc, granter, gref, write, &mut self.mem);
                let m = &mut self.model;
                let want = if !m.alive(granter) {
                    Err(GntSt::BadDomain)
                } else if !m.alive(acc) {
                    Err(GntSt::GeneralError)
                } else {
                    m.pin(acc, granter, gref, !write, false).map(|frame| {
                        m.copies.push((acc, granter, gref, write));
                        u64::from(frame)
                    })
                };
                assert_eq!(got, want, "acquire");
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
                    self.model.copies[pick % self.model.copies.len()]
                } else {
                    (acc, granter, gref, write)
                };
                let got = self.g.release(acc, granter, gref, write, &mut self.mem);
                let m = &mut self.model;
                let want = if !m.alive(granter) {
                    Err(GntSt::BadDomain)
                } else if gref >= 512 {
                    Err(GntSt::BadGntref)
                } else if let Some(i) = m
                    .copies
                    .iter()
                    .position(|c| *c == (acc, granter, gref, write))
                {
                    m.copies.remove(i);
                    m.drop_idle(granter, gref);
                    Ok(())
                } else {
                    Err(GntSt::GeneralError)
                };
                assert_eq!(got, want, "release");
            }
            Op::Remove { dom } => {
                let got = self.g.remove_domain(dom, &mut self.mem);
                let m = &mut self.model;
                if !m.alive(dom) {
                    assert_eq!(got, Err(Error::UnknownDomain));
                    return;
                }
                let removal = got.unwrap();
                assert_eq!(removal.table_frames, [self.table_frame[&dom]]);
                let m = &mut self.model;
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
                                frame: u64::from(mm.frame),
                                host_gfn: mm.gfn,
                            });
                        }
                    }
                }
                assert_eq!(removal.revoked, revoked);
                m.maps.remove(&dom);
                m.copies.retain(|c| c.0 != dom && c.1 != dom);
                m.active.retain(|(g, _), (acc, _)| *g != dom && *acc != dom);
                m.entries.retain(|(g, _), _| *g != dom);
                m.alive.remove(&dom);
            }
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
                flags,
                domid,
                frame,
            } => {
                let Some(frames) = self.g.table_frames(granter) else {
                    return;
                };
                let at = entry::locate(frames, gref).unwrap();
                let xen_bits = entry::read(&self.mem, at).flags & (GTF_READING | GTF_WRITING);
                self.mem.write_entry(
                    at,
                    GrantEntryV1 {
                        flags: flags | xen_bits,
                        domid,
                        frame,
                    },
                );
                self.model
                    .entries
                    .insert((granter, gref), (flags, domid, frame));
            }
        }
    }

    fn check(&self) {
        for g in 0..DOMS {
            let Some(frames) = self.g.table_frames(g) else {
                assert!(!self.model.alive(g));
                continue;
            };
            for r in 0..REFS {
                let (pins, write_pins) = self.model.pins(g, r);
                let flags = entry::read(&self.mem, entry::locate(frames, r).unwrap()).flags;
                assert_eq!(
                    flags & GTF_READING != 0,
                    pins > 0,
                    "GTF_reading of d{g} ref {r}"
                );
                assert_eq!(
                    flags & GTF_WRITING != 0,
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
            for f in 0..FRAMES {
                let mapped = self
                    .model
                    .active
                    .iter()
                    .any(|((ag, _), (_, af))| *ag == g && *af == f);
                assert_eq!(
                    self.g.is_frame_mapped(g, u64::from(f)),
                    mapped,
                    "d{g} frame {f}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn grants_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut h = Harness::new();
        for op in ops {
            h.step(op);
            h.check();
        }
    }
}
