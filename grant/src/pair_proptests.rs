//! Property test: the per-domain API driven as an SMP kernel will drive it,
//! against [`Grants`] as the reference.
//!
//! The harness keeps each domain's [`DomainGrants`] as its own value (one
//! per notional domain lock) and never touches more than two at once,
//! taken lower domid first ([`lock_two`]). It plays the kernel's protocol
//! from the crate's `# Locking` notes: an unmap looks under the mapper's
//! lock alone, then takes both locks and checks again; a death marks the
//! domain dying, then runs its steps one pair at a time, in a random order,
//! interleaved with other operations (and even between the two halves of
//! an unmap).
//!
//! The reference runs each operation on one [`Grants`], and a death all at
//! once when its last step is done. While a death is in progress the two
//! legitimately differ: the dying domain refuses new work, its pins on
//! other domains' entries go when their step runs, and a mapping revoked
//! by a step unmaps as revoked. So during a death the harness does not
//! give the reference what only the per-domain form refuses, skips what
//! the dying domain's stopped vCPUs cannot do, and skips maps and copies
//! of entries the dying domain still pins in the reference. Everything
//! else must give equal results; when no death is in progress the two
//! states must be equal; and at a death's end the steps' revoked and
//! released mappings must be the reference's.
//!
//! After every operation, whatever is in progress, the per-domain state
//! keeps the invariants: every live maptrack slot holds exactly one map pin
//! of its kind on an active entry of its granter, which is still here;
//! map pins are exactly the slots', copy pins exactly the copies in flight;
//! `frame_users` counts the active entries per frame; `GTF_reading` and
//! `GTF_writing` follow the pins.

use std::collections::BTreeMap;

use proptest::prelude::*;

use keel_hypercall::abi::grant_table::{
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_WRITING, GrantEntryV1,
};

use crate::entry;
use crate::fake::FakeMem;
use crate::maptrack::Slot;
use crate::pair;
use crate::*;

const DOMS: DomId = 3;
const LIMIT: u32 = 3;
/// Refs the test uses in range; others are out of range.
const REFS: GrantRef = 3;
/// Granter frame numbers the entries name (few, so they collide).
const FRAMES: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    /// With `grantee`, the mapper is whoever the entry names.
    Map {
        grantee: bool,
        mapper: DomId,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
        gfn: u64,
    },
    /// With `held`, the mapper's `pick`-th occupied handle. With `race`, a
    /// death step runs between the look under the mapper's lock and the
    /// two-lock part, and the unmap is of some mapper's live mapping of the
    /// dying domain if there is one.
    Unmap {
        held: bool,
        pick: usize,
        mapper: DomId,
        handle: GrantHandle,
        right_gfn: bool,
        race: bool,
    },
    Acquire {
        grantee: bool,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    },
    /// With `held`, copy `pick` in flight.
    Release {
        held: bool,
        pick: usize,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    },
    /// Starts `dom`'s death (finishing one in progress first); with
    /// `busy`, that of a domain with mappings to release or revoke, if any.
    Remove {
        dom: DomId,
        busy: bool,
    },
    /// Runs step `pick` of the death in progress.
    Step {
        pick: usize,
    },
    Add {
        dom: DomId,
    },
    /// `granter` grants `gref` to `grantee`, which maps it at once (a
    /// `Write` then a `Map`, to build up mappings).
    Share {
        granter: DomId,
        gref: GrantRef,
        grantee: DomId,
        readonly: bool,
        gfn: u64,
    },
    /// The granter writes its own bits of an entry.
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
    prop_oneof![20 => 0..REFS, 1 => Just(512u32)]
}

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
        6 => (often(), any::<usize>(), dom(), 0..LIMIT + 1, often(), prop::bool::weighted(0.5))
            .prop_map(|(held, pick, mapper, handle, right_gfn, race)| {
                Op::Unmap { held, pick, mapper, handle, right_gfn, race }
            }),
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
        3 => (0..DOMS, prop::bool::weighted(0.7)).prop_map(|(dom, busy)| Op::Remove { dom, busy }),
        3 => any::<usize>().prop_map(|pick| Op::Step { pick }),
        4 => (0..DOMS).prop_map(|dom| Op::Add { dom }),
        4 => (0..DOMS, 0..REFS, 0..DOMS, any::<bool>(), 0..4u64).prop_map(
            |(granter, gref, grantee, readonly, gfn)| Op::Share { granter, gref, grantee, readonly, gfn }
        ),
        6 => (0..DOMS, 0..REFS, entry_flags(), 0..DOMS, 0..FRAMES).prop_map(
            |(granter, gref, flags, domid, frame)| Op::Write { granter, gref, flags, domid, frame }
        ),
    ]
}

/// `a`'s and `b`'s state, as the kernel holds them once it has locked both,
/// lower domid first (`range_mut` reaches them in that order). `None` if
/// either is not there.
fn lock_two(
    doms: &mut BTreeMap<DomId, DomainGrants>,
    a: DomId,
    b: DomId,
) -> Option<(&mut DomainGrants, &mut DomainGrants)> {
    assert_ne!(a, b, "one domain takes one lock");
    let (lo, hi) = (a.min(b), a.max(b));
    let mut range = doms.range_mut(lo..=hi);
    let (&lo_id, lo_dom) = range.next()?;
    let (&hi_id, hi_dom) = range.next_back()?;
    if (lo_id, hi_id) != (lo, hi) {
        return None;
    }
    Some(if a < b {
        (lo_dom, hi_dom)
    } else {
        (hi_dom, lo_dom)
    })
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// (a): release the dying domain's mappings of this granter's grants.
    Release(DomId),
    /// (b): revoke this mapper's mappings of the dying domain's grants.
    Revoke(DomId),
}

/// A death in progress.
struct Death {
    dom: DomId,
    /// As listed at step 0.
    granters: Vec<DomId>,
    mappers: Vec<DomId>,
    steps: Vec<Step>,
    revoked: Vec<Revoked>,
    released: Vec<Released>,
    /// (mapper, handle) revoked by a step, then unmapped before the end
    /// (the reference, which revokes at the end, saw a live unmap).
    unmapped: Vec<(DomId, GrantHandle)>,
}

struct Harness {
    /// The reference.
    g: Grants,
    gmem: FakeMem,
    /// Each domain's state, under its own (notional) lock.
    doms: BTreeMap<DomId, DomainGrants>,
    mem: FakeMem,
    next_frame: u64,
    /// Copies in flight: (accessor, granter, ref, write).
    copies: Vec<(DomId, DomId, GrantRef, bool)>,
    /// The domid each written entry names.
    grantee: BTreeMap<(DomId, GrantRef), DomId>,
    death: Option<Death>,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness {
            g: Grants::new(),
            gmem: FakeMem::default(),
            doms: BTreeMap::new(),
            mem: FakeMem::default(),
            next_frame: 0,
            copies: Vec::new(),
            grantee: BTreeMap::new(),
            death: None,
        };
        for d in 0..DOMS {
            h.add(d);
        }
        h
    }

    fn add(&mut self, d: DomId) {
        self.next_frame += 1;
        let f = self.next_frame;
        self.g.add_domain(d, 1, LIMIT).unwrap();
        self.g.setup_table(d, 1, || Some(f)).unwrap();
        let mut dg = DomainGrants::new(d, 1, LIMIT).unwrap();
        dg.setup_table(1, || Some(f)).unwrap();
        self.doms.insert(d, dg);
    }

    fn dying(&self) -> Option<DomId> {
        self.death.as_ref().map(|d| d.dom)
    }

    /// Whether the dying domain still pins (granter, gref) in the
    /// reference, where its pins last until the death's end.
    fn pinned_by_dying(&self, granter: DomId, gref: GrantRef) -> bool {
        self.dying()
            .is_some_and(|d| self.g.pins(granter, gref).is_some_and(|p| p.0 == d))
    }

    /// The mappers holding live mappings of `granter`'s grants (the same
    /// mapper once per mapping).
    fn mappings_of(&self, granter: DomId) -> Vec<DomId> {
        self.doms
            .iter()
            .filter(|(m, _)| **m != granter)
            .flat_map(|(m, d)| {
                d.maptrack
                    .slots()
                    .filter(move |(_, s)| matches!(s, Slot::Live(i) if i.granter == granter))
                    .map(move |_| *m)
            })
            .collect()
    }

    // ---------------------------------------------------------------- kernel

    fn kernel_map(
        &mut self,
        mapper: DomId,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
        gfn: u64,
    ) -> Result<Mapped, GntSt> {
        if !self.doms.contains_key(&granter) {
            return Err(GntSt::BadDomain);
        }
        if !self.doms.contains_key(&mapper) {
            return Err(GntSt::GeneralError);
        }
        if mapper == granter {
            let d = self.doms.get_mut(&mapper).expect("checked above");
            return pair::map_own(d, gref, readonly, gfn, &mut self.mem);
        }
        let (m, g) = lock_two(&mut self.doms, mapper, granter).expect("checked above");
        pair::map(m, g, gref, readonly, gfn, &mut self.mem)
    }

    fn kernel_unmap(
        &mut self,
        mapper: DomId,
        handle: GrantHandle,
        gfn: u64,
        race: Option<usize>,
    ) -> Result<Unmapped, GntSt> {
        // Under the mapper's lock alone: which granter?
        let Some(m) = self.doms.get_mut(&mapper) else {
            return Err(GntSt::BadHandle);
        };
        let info = match m.check_unmap(handle, gfn)? {
            Unmapped::Revoked(_) => return m.unmap_revoked(handle).map(Unmapped::Revoked),
            Unmapped::Live(info) => info,
        };
        if info.granter == mapper {
            let d = self.doms.get_mut(&mapper).expect("looked up above");
            pair::check_unmap_own(d, handle, gfn)?;
            return pair::unmap_own(d, handle, gfn, &mut self.mem);
        }
        // The mapper's lock is dropped to take both in domid order: a step
        // of a death may run in between.
        if let Some(pick) = race {
            self.death_step(pick);
        }
        match lock_two(&mut self.doms, mapper, info.granter) {
            Some((m, g)) => {
                pair::check_unmap(m, g, handle, gfn)?;
                // The kernel removes the p2m entry and flushes here.
                pair::unmap(m, g, handle, gfn, &mut self.mem)
            }
            None => {
                // The granter's death ended: it revoked the mapping.
                let m = self.doms.get_mut(&mapper).expect("the mapper is not dying");
                m.unmap_revoked(handle).map(Unmapped::Revoked)
            }
        }
    }

    fn kernel_acquire(
        &mut self,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    ) -> Result<u64, GntSt> {
        if !self.doms.contains_key(&granter) {
            return Err(GntSt::BadDomain);
        }
        if !self.doms.contains_key(&acc) {
            return Err(GntSt::GeneralError);
        }
        let g = self.doms.get_mut(&granter).expect("checked above");
        g.acquire(acc, gref, write, &mut self.mem)
    }

    fn kernel_release(
        &mut self,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    ) -> Result<(), GntSt> {
        let g = self.doms.get_mut(&granter).ok_or(GntSt::BadDomain)?;
        g.release(acc, gref, write, &mut self.mem)
    }

    // ----------------------------------------------------------------- death

    fn start_death(&mut self, dom: DomId) {
        // Its vCPUs stop: the copies they had in flight end first.
        let mine: Vec<_> = self.copies.iter().filter(|c| c.0 == dom).copied().collect();
        for (acc, granter, gref, write) in mine {
            assert_eq!(self.kernel_release(acc, granter, gref, write), Ok(()));
            assert_eq!(
                self.g.release(acc, granter, gref, write, &mut self.gmem),
                Ok(())
            );
        }
        self.copies.retain(|c| c.0 != dom);
        // Step 0, under its lock alone.
        let d = self.doms.get_mut(&dom).expect("alive");
        d.start_dying();
        let (granters, mappers) = (d.granters(), d.mappers());
        let steps = granters
            .iter()
            .map(|&g| Step::Release(g))
            .chain(mappers.iter().map(|&m| Step::Revoke(m)))
            .collect();
        self.death = Some(Death {
            dom,
            granters,
            mappers,
            steps,
            revoked: Vec::new(),
            released: Vec::new(),
            unmapped: Vec::new(),
        });
        if self.death.as_ref().is_some_and(|d| d.steps.is_empty()) {
            self.end_death();
        }
    }

    /// Runs step `pick` of the death in progress, if any.
    fn death_step(&mut self, pick: usize) {
        let Some(death) = self.death.as_mut() else {
            return;
        };
        let d = death.dom;
        let step = death.steps.remove(pick % death.steps.len());
        match step {
            Step::Release(g) if g == d => {
                let dead = self.doms.get_mut(&d).expect("dying, not gone");
                let r = pair::release_own_mappings(dead, &mut self.mem).unwrap();
                death.released.extend(r);
            }
            Step::Release(g) => {
                let (dead, granter) = lock_two(&mut self.doms, d, g).expect("one death at a time");
                let r = pair::release_mappings(dead, granter, &mut self.mem).unwrap();
                assert!(r.iter().all(|r| r.granter == g));
                death.released.extend(r);
            }
            Step::Revoke(m) => {
                let (dead, mapper) = lock_two(&mut self.doms, d, m).expect("one death at a time");
                let r = pair::revoke_mappings(dead, mapper, &mut self.mem).unwrap();
                assert!(r.iter().all(|r| r.mapper == m));
                // Each is now revoked in the mapper's maptrack.
                for r in &r {
                    assert!(matches!(
                        mapper.maptrack.get(r.handle),
                        Some(Slot::Revoked(_))
                    ));
                }
                death.revoked.extend(r);
            }
        }
        if death.steps.is_empty() {
            self.end_death();
        }
    }

    fn end_death(&mut self) {
        let death = self.death.take().expect("a death in progress");
        let d = death.dom;
        let dead = self.doms.remove(&d).expect("dying, not gone");
        assert!(dead.death_complete(), "d{d}: every step done");
        assert!(dead.granters().is_empty() && dead.mappers().is_empty());
        assert!(
            death
                .released
                .iter()
                .all(|r| death.granters.contains(&r.granter))
        );
        assert!(
            death
                .revoked
                .iter()
                .all(|r| death.mappers.contains(&r.mapper))
        );

        let removal = self.g.remove_domain(d, &mut self.gmem).unwrap();
        assert_eq!(removal.table_frames, dead.table_frames());
        let mut released = death.released;
        released.sort_by_key(|r| r.handle);
        assert_eq!(removal.released, released, "released by d{d}'s death");
        let mut revoked: Vec<Revoked> = death
            .revoked
            .into_iter()
            .filter(|r| !death.unmapped.contains(&(r.mapper, r.handle)))
            .collect();
        revoked.sort_by_key(|r| (r.mapper, r.handle));
        assert_eq!(removal.revoked, revoked, "revoked by d{d}'s death");
        // Copies of its grants in flight are forgotten with it.
        self.copies.retain(|c| c.1 != d);
        self.grantee.retain(|(g, _), _| *g != d);
    }

    fn finish_death(&mut self) {
        while self.death.is_some() {
            self.death_step(0);
        }
    }

    // ------------------------------------------------------------------ ops

    fn step(&mut self, op: Op) {
        let dying = self.dying();
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
                    self.grantee.get(&(granter, gref)).copied().unwrap_or(0)
                } else {
                    mapper
                };
                let with_dying = dying.is_some_and(|d| d == mapper || d == granter);
                if !with_dying && self.pinned_by_dying(granter, gref) {
                    return;
                }
                let got = self.kernel_map(mapper, granter, gref, readonly, gfn);
                if with_dying {
                    // Unknown granter, unknown mapper (the kernel's checks),
                    // then dying granter, dying mapper (the crate's).
                    let refused = if !self.doms.contains_key(&granter) {
                        GntSt::BadDomain
                    } else if !self.doms.contains_key(&mapper) {
                        GntSt::GeneralError
                    } else if dying == Some(granter) {
                        GntSt::BadDomain
                    } else {
                        GntSt::GeneralError
                    };
                    assert_eq!(got, Err(refused), "map with a dying domain");
                } else {
                    let want = self
                        .g
                        .map(mapper, granter, gref, readonly, gfn, &mut self.gmem);
                    assert_eq!(got, want, "map");
                }
            }
            Op::Unmap {
                held,
                pick,
                mapper,
                handle,
                right_gfn,
                race,
            } => {
                let mapper = match dying {
                    Some(d) if race => self
                        .mappings_of(d)
                        .get(pick % self.mappings_of(d).len().max(1))
                        .copied()
                        .unwrap_or(mapper),
                    _ => mapper,
                };
                if dying == Some(mapper) {
                    return;
                }
                let slots: Vec<(GrantHandle, Slot)> = self
                    .doms
                    .get(&mapper)
                    .map(|d| d.maptrack.slots().collect())
                    .unwrap_or_default();
                let racing: Vec<GrantHandle> = slots
                    .iter()
                    .filter(|(_, s)| matches!(s, Slot::Live(i) if race && dying == Some(i.granter)))
                    .map(|(h, _)| *h)
                    .collect();
                let handle = if !racing.is_empty() {
                    racing[pick % racing.len()]
                } else if held && !slots.is_empty() {
                    slots[pick % slots.len()].0
                } else {
                    handle
                };
                let gfn = match slots.iter().find(|(h, _)| *h == handle) {
                    Some((_, Slot::Live(i) | Slot::Revoked(i))) if right_gfn => i.host_gfn,
                    _ => 99,
                };
                let got = self.kernel_unmap(mapper, handle, gfn, race.then_some(pick));
                let revoked_by_step = self.death.as_mut().filter(|death| {
                    death
                        .revoked
                        .iter()
                        .any(|r| (r.mapper, r.handle) == (mapper, handle))
                });
                match (got, revoked_by_step) {
                    (Ok(Unmapped::Revoked(info)), Some(death)) => {
                        // Revoked by a step of the death in progress, which
                        // the reference runs at its end: there it is still
                        // live, and unmaps as such (at its own gfn, since a
                        // revoked mapping unmaps at any).
                        assert_eq!(info.granter, death.dom);
                        death.unmapped.push((mapper, handle));
                        let want = self.g.unmap(mapper, handle, info.host_gfn, &mut self.gmem);
                        assert_eq!(want, Ok(Unmapped::Live(info)), "unmap in the reference");
                    }
                    (got, _) => {
                        let want = self.g.unmap(mapper, handle, gfn, &mut self.gmem);
                        assert_eq!(got, want, "unmap");
                    }
                }
            }
            Op::Acquire {
                grantee,
                acc,
                granter,
                gref,
                write,
            } => {
                let acc = if grantee {
                    self.grantee.get(&(granter, gref)).copied().unwrap_or(0)
                } else {
                    acc
                };
                if dying == Some(acc)
                    || (dying != Some(granter) && self.pinned_by_dying(granter, gref))
                {
                    return;
                }
                let got = self.kernel_acquire(acc, granter, gref, write);
                if dying == Some(granter) {
                    let refused = if self.doms.contains_key(&acc) {
                        GntSt::BadDomain
                    } else {
                        GntSt::GeneralError
                    };
                    assert_eq!(got, Err(refused), "copy from a dying domain");
                    return;
                }
                let want = self.g.acquire(acc, granter, gref, write, &mut self.gmem);
                assert_eq!(got, want, "acquire");
                if got.is_ok() {
                    self.copies.push((acc, granter, gref, write));
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
                let (acc, granter, gref, write) = if held && !self.copies.is_empty() {
                    self.copies[pick % self.copies.len()]
                } else {
                    (acc, granter, gref, write)
                };
                if dying == Some(acc) {
                    return;
                }
                let got = self.kernel_release(acc, granter, gref, write);
                let want = self.g.release(acc, granter, gref, write, &mut self.gmem);
                assert_eq!(got, want, "release");
                if got.is_ok() {
                    let c = (acc, granter, gref, write);
                    let i = self.copies.iter().position(|x| *x == c).expect("held");
                    self.copies.remove(i);
                }
            }
            Op::Remove { dom, busy } => {
                if dying.is_some() {
                    self.finish_death();
                    if dying == Some(dom) {
                        return;
                    }
                }
                let dom = if busy {
                    let work = |d: &DomainGrants| d.granters().len() + d.mappers().len();
                    self.doms
                        .values()
                        .filter(|d| work(d) > 0)
                        .max_by_key(|d| (work(d), d.id() == dom))
                        .map_or(dom, DomainGrants::id)
                } else {
                    dom
                };
                if self.doms.contains_key(&dom) {
                    self.start_death(dom);
                } else {
                    assert_eq!(
                        self.g.remove_domain(dom, &mut self.gmem),
                        Err(Error::UnknownDomain)
                    );
                }
            }
            Op::Step { pick } => self.death_step(pick),
            Op::Share {
                granter,
                gref,
                grantee,
                readonly,
                gfn,
            } => {
                let flags = if readonly {
                    GTF_PERMIT_ACCESS | GTF_READONLY
                } else {
                    GTF_PERMIT_ACCESS
                };
                let frame = gref % FRAMES;
                self.step(Op::Write {
                    granter,
                    gref,
                    flags,
                    domid: grantee,
                    frame,
                });
                self.step(Op::Map {
                    grantee: true,
                    mapper: grantee,
                    granter,
                    gref,
                    readonly,
                    gfn,
                });
            }
            Op::Add { dom } => {
                if dying == Some(dom) {
                    // A domid is reused only once its death is done.
                    self.finish_death();
                }
                if self.doms.contains_key(&dom) {
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
                if dying == Some(granter) {
                    return;
                }
                let Some(d) = self.doms.get(&granter) else {
                    return;
                };
                assert_eq!(Some(d.table_frames()), self.g.table_frames(granter));
                let at = entry::locate(d.table_frames(), gref).unwrap();
                for mem in [&mut self.mem, &mut self.gmem] {
                    let xen_bits = entry::read(mem, at).flags & (GTF_READING | GTF_WRITING);
                    mem.write_entry(
                        at,
                        GrantEntryV1 {
                            flags: flags | xen_bits,
                            domid,
                            frame,
                        },
                    );
                }
                self.grantee.insert((granter, gref), domid);
            }
        }
    }

    // ---------------------------------------------------------------- checks

    /// The per-domain state's invariants, at any time.
    fn check_invariants(&self) {
        // Map pins the live maptrack slots claim: (granter, ref) -> (ro, rw).
        let mut claimed: BTreeMap<(DomId, GrantRef), (u32, u32)> = BTreeMap::new();
        for (&m, d) in &self.doms {
            for (h, slot) in d.maptrack.slots() {
                let Slot::Live(info) = slot else { continue };
                let g = self.doms.get(&info.granter);
                let act = g.and_then(|g| g.table.active.get(&info.gref));
                let act = act.unwrap_or_else(|| panic!("d{m} handle {h}: no pin for {info:?}"));
                assert_eq!(act.accessor, m, "d{m} handle {h}: pinned by another");
                assert_eq!(u64::from(act.frame), info.frame, "d{m} handle {h}: frame");
                let c = claimed.entry((info.granter, info.gref)).or_default();
                if info.readonly {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        // Copy pins in flight: (granter, ref) -> (accessor, ro, rw).
        let mut copying: BTreeMap<(DomId, GrantRef), (DomId, u32, u32)> = BTreeMap::new();
        for &(acc, g, r, write) in &self.copies {
            let c = copying.entry((g, r)).or_insert((acc, 0, 0));
            assert_eq!(c.0, acc, "copies of d{g} ref {r} by two domains");
            if write {
                c.2 += 1;
            } else {
                c.1 += 1;
            }
        }
        for (&g, d) in &self.doms {
            let mut users: BTreeMap<u32, u32> = BTreeMap::new();
            for (&r, act) in &d.table.active {
                assert!(act.pins() > 0, "d{g} ref {r}: active without pins");
                let maps = claimed.remove(&(g, r)).unwrap_or_default();
                assert_eq!((act.map_ro, act.map_rw), maps, "map pins of d{g} ref {r}");
                let copies = match copying.remove(&(g, r)) {
                    Some((acc, ro, rw)) => {
                        assert_eq!(act.accessor, acc, "copier of d{g} ref {r}");
                        (ro, rw)
                    }
                    None => (0, 0),
                };
                assert_eq!(
                    (act.copy_ro, act.copy_rw),
                    copies,
                    "copy pins of d{g} ref {r}"
                );
                *users.entry(act.frame).or_insert(0) += 1;
            }
            assert_eq!(d.table.frame_users, users, "frame_users of d{g}");
            for r in 0..REFS {
                let at = entry::locate(d.table_frames(), r).unwrap();
                let flags = entry::read(&self.mem, at).flags;
                let (pins, write_pins) = d.pins(r).map_or((0, 0), |p| (p.1, p.2));
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
            }
            for f in 0..FRAMES {
                assert_eq!(
                    d.is_frame_mapped(u64::from(f)),
                    users.contains_key(&f),
                    "d{g} frame {f}"
                );
            }
        }
        assert!(claimed.is_empty(), "pins claimed but not held: {claimed:?}");
        assert!(copying.is_empty(), "copies without pins: {copying:?}");
    }

    /// With no death in progress, the two forms hold the same state.
    fn check_agreement(&self) {
        for dom in 0..DOMS {
            let (a, b) = (self.doms.get(&dom), self.g.domain(dom));
            assert_eq!(a.is_some(), b.is_some(), "d{dom} present");
            let (Some(a), Some(b)) = (a, b) else { continue };
            assert_eq!(a.table_frames(), b.table_frames(), "d{dom} frames");
            assert_eq!(a.table.active, b.table.active, "d{dom} active entries");
            assert_eq!(
                a.table.frame_users, b.table.frame_users,
                "d{dom} frame_users"
            );
            assert_eq!(
                a.maptrack.slots().collect::<Vec<_>>(),
                b.maptrack.slots().collect::<Vec<_>>(),
                "d{dom} maptrack"
            );
            for r in 0..REFS {
                let at = entry::locate(a.table_frames(), r).unwrap();
                assert_eq!(
                    self.mem.word(at.frame, at.offset),
                    self.gmem.word(at.frame, at.offset),
                    "d{dom} entry {r}"
                );
            }
        }
    }

    fn check(&self) {
        self.check_invariants();
        if self.death.is_none() {
            self.check_agreement();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn per_domain_api_matches_grants(ops in proptest::collection::vec(op(), 1..150)) {
        let mut h = Harness::new();
        for op in ops {
            h.step(op);
            h.check();
        }
        h.finish_death();
        h.check();
    }
}
