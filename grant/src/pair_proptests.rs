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
//! Domains use both grant-table versions (d1 starts at version 2, d0 may
//! switch, d2 may not), switch with and without live grants, swap entries,
//! and copy through transitive grants. A transitive copy runs the crate's
//! protocol one lock at a time: the granter's ([`DomainGrants::acquire`]),
//! the hop's ([`DomainGrants::acquire_target`]), the granter's again
//! ([`DomainGrants::finish_transitive`]), and releases likewise; with
//! `race`, a step of a death in progress runs between the locks. The kernel
//! keeps a dying domain's state while copies through it (as granter or as
//! hop) are in flight, and ends them before the death's end; while a death
//! is in progress, copies whose hop is the dying domain are not started
//! (the reference would not refuse them).
//!
//! After every operation, whatever is in progress, the per-domain state
//! keeps the invariants: every live maptrack slot holds exactly one map pin
//! of its kind on an active entry of its granter, which is still here;
//! map pins are exactly the slots', copy pins exactly the copies in flight,
//! hop pins exactly the hops of the transitive copies in flight;
//! `frame_users` counts the active page entries per frame; `GTF_reading`
//! and `GTF_writing` follow the pins, where each domain's version keeps
//! them.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use keel_hypercall::abi::grant_table::{
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TRANSITIVE, GTF_TYPE_MASK,
    GTF_WRITING,
};

use crate::fake::{FakeMem, GuestEntry, status_bits};
use crate::maptrack::Slot;
use crate::pair;
use crate::table::Target;
use crate::*;

const DOMS: DomId = 3;
/// Each domain's `max_version`.
const MAX_VERSION: [u32; DOMS as usize] = [2, 2, 1];
const LIMIT: u32 = 3;
/// Refs the test uses in range (reserved and not; 300 in version 1 only).
const REFS: [GrantRef; 5] = [0, 1, 8, 9, 300];
/// Granter frame numbers the entries name (few, so they collide).
const FRAMES: [u64; 4] = [0, 1, 2, 1 << 32 | 1];
/// Bytes 4..8 of a version 2 entry: sub-page ranges, or hop domids.
const W1: [u32; 5] = [0, 1, 2, 0x0064_0000, 0x1000_0000];
/// Bytes 8..16: frames, or hop grant refs.
const W2: [u64; 6] = [0, 1, 2, 8, 9, 1 << 32 | 1];

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
    /// A copy's acquire, kept in flight. With `race`, a death step runs
    /// between a transitive acquire's locks.
    Acquire {
        grantee: bool,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        race: bool,
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
    /// The granter writes its own bits of an entry, in its layout.
    Write {
        granter: DomId,
        gref: GrantRef,
        entry: GuestEntry,
    },
    /// `t` grants `gref_t` to `a`, which grants it on transitively as
    /// `gref_a` to `copier`, which copies through it.
    Chain {
        t: DomId,
        gref_t: GrantRef,
        t_flags: u16,
        a: DomId,
        gref_a: GrantRef,
        copier: DomId,
        write: bool,
        race: bool,
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
}

fn dom() -> impl Strategy<Value = DomId> {
    prop_oneof![20 => 0..DOMS, 1 => Just(7u16)]
}

fn gref() -> impl Strategy<Value = GrantRef> {
    prop_oneof![20 => prop::sample::select(REFS.to_vec()), 1 => Just(512u32)]
}

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

fn op() -> impl Strategy<Value = Op> {
    let often = || prop::bool::weighted(0.8);
    let refs = || prop::sample::select(REFS.to_vec());
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
        3 => (often(), dom(), dom(), gref(), any::<bool>(), any::<bool>()).prop_map(
            |(grantee, acc, granter, gref, write, race)| {
                Op::Acquire { grantee, acc, granter, gref, write, race }
            }
        ),
        4 => (any::<bool>(), any::<usize>(), dom(), dom(), gref(), any::<bool>()).prop_map(
            |(held, pick, acc, granter, gref, write)| {
                Op::Release { held, pick, acc, granter, gref, write }
            }
        ),
        3 => (0..DOMS, prop::bool::weighted(0.7)).prop_map(|(dom, busy)| Op::Remove { dom, busy }),
        3 => any::<usize>().prop_map(|pick| Op::Step { pick }),
        4 => (0..DOMS).prop_map(|dom| Op::Add { dom }),
        4 => (0..DOMS, refs(), 0..DOMS, any::<bool>(), 0..4u64).prop_map(
            |(granter, gref, grantee, readonly, gfn)| Op::Share { granter, gref, grantee, readonly, gfn }
        ),
        6 => (0..DOMS, refs(), guest_entry())
            .prop_map(|(granter, gref, entry)| Op::Write { granter, gref, entry }),
        3 => (
            (0..DOMS, refs(), entry_flags()),
            (0..DOMS, refs(), 0..DOMS),
            (any::<bool>(), any::<bool>()),
        )
            .prop_map(|((t, gref_t, t_flags), (a, gref_a, copier), (write, race))| {
                Op::Chain { t, gref_t, t_flags, a, gref_a, copier, write, race }
            }),
        2 => (0..DOMS, prop_oneof![8 => 1..3u32, 1 => Just(0u32)], often())
            .prop_map(|(dom, version, alloc_ok)| Op::SetVersion { dom, version, alloc_ok }),
        2 => (0..DOMS, gref(), gref()).prop_map(|(dom, a, b)| Op::Swap { dom, a, b }),
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

/// A copy in flight: (accessor, granter, ref, write), and the hop it pins
/// if the grant was transitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Copy {
    acc: DomId,
    granter: DomId,
    gref: GrantRef,
    write: bool,
    hop: Option<Hop>,
}

struct Harness {
    /// The reference.
    g: Grants,
    gmem: FakeMem,
    /// Each domain's state, under its own (notional) lock.
    doms: BTreeMap<DomId, DomainGrants>,
    mem: FakeMem,
    next_frame: u64,
    /// Every frame handle given to the crate, and every one handed back.
    given: BTreeSet<u64>,
    back: Vec<u64>,
    copies: Vec<Copy>,
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
            given: BTreeSet::new(),
            back: Vec::new(),
            copies: Vec::new(),
            grantee: BTreeMap::new(),
            death: None,
        };
        for d in 0..DOMS {
            h.add(d);
        }
        h.step(Op::SetVersion {
            dom: 1,
            version: 2,
            alloc_ok: true,
        });
        assert_eq!(h.doms[&1].version(), Version::V2);
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
        let f = self.fresh_frame();
        let max = MAX_VERSION[usize::from(d)];
        self.g.add_domain_with_version(d, 1, LIMIT, max).unwrap();
        self.g.setup_table(d, 1, || Some(f)).unwrap();
        let mut dg = DomainGrants::with_max_version(d, 1, LIMIT, max).unwrap();
        dg.setup_table(1, || Some(f)).unwrap();
        self.doms.insert(d, dg);
    }

    /// Where a copy of (granter, gref) would hop, as far as the entry or
    /// its active record says.
    fn hop_of(&self, granter: DomId, gref: GrantRef) -> Option<Hop> {
        let d = self.doms.get(&granter)?;
        if let Some(act) = d.table.active.get(&gref) {
            return match act.target {
                Target::Transitive(hop) => Some(hop),
                Target::Page { .. } => None,
            };
        }
        let e = GuestEntry::read(&self.mem, d, gref)?;
        (d.version() == Version::V2 && e.flags & GTF_TYPE_MASK == GTF_TRANSITIVE).then_some(Hop {
            domid: e.w1 as u16,
            gref: e.w2 as u32,
        })
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

    /// A copy's acquire, as the kernel does it: the granter's lock, then
    /// for a transitive grant the hop's lock alone (with `race`, a death
    /// step runs before it), then the granter's again.
    fn kernel_acquire(
        &mut self,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        race: Option<usize>,
    ) -> (Result<CopyGrant, GntSt>, Option<Hop>) {
        if !self.doms.contains_key(&granter) {
            return (Err(GntSt::BadDomain), None);
        }
        if !self.doms.contains_key(&acc) {
            return (Err(GntSt::GeneralError), None);
        }
        let g = self.doms.get_mut(&granter).expect("checked above");
        let hop = match g.acquire(acc, gref, write, &mut self.mem) {
            Ok(Acquired::Page(grant)) => return (Ok(grant), None),
            Ok(Acquired::Transitive(hop)) => hop,
            Err(e) => return (Err(e), None),
        };
        if let Some(pick) = race {
            self.death_step(pick);
        }
        let target = match self.doms.get_mut(&hop.domid) {
            Some(t) => t.acquire_target(granter, hop.gref, write, &mut self.mem),
            None => Err(GntSt::GeneralError),
        };
        // The granter is still here: the kernel holds a reference to it, and
        // a death in progress is never the granter's (its copies are not
        // started) nor ends before the copies through it.
        let g = self.doms.get_mut(&granter).expect("held by reference");
        let r = g.finish_transitive(acc, gref, write, target, &mut self.mem);
        (r, Some(hop))
    }

    fn kernel_release(
        &mut self,
        acc: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
    ) -> Result<(), GntSt> {
        let g = self.doms.get_mut(&granter).ok_or(GntSt::BadDomain)?;
        if let Some(hop) = g.release(acc, gref, write, &mut self.mem)? {
            let t = self.doms.get_mut(&hop.domid).expect("held by reference");
            assert_eq!(
                t.release_target(granter, hop.gref, write, &mut self.mem),
                Ok(()),
                "the hop's pin"
            );
        }
        Ok(())
    }

    /// Releases a copy in flight in both forms.
    fn end_copy(&mut self, c: Copy) {
        assert_eq!(
            self.kernel_release(c.acc, c.granter, c.gref, c.write),
            Ok(())
        );
        assert_eq!(
            self.g
                .release(c.acc, c.granter, c.gref, c.write, &mut self.gmem),
            Ok(())
        );
        let i = self.copies.iter().position(|x| *x == c).expect("held");
        self.copies.remove(i);
    }

    // ----------------------------------------------------------------- death

    fn start_death(&mut self, dom: DomId) {
        // Its vCPUs stop: the copies they had in flight end first.
        let mine: Vec<_> = self
            .copies
            .iter()
            .filter(|c| c.acc == dom)
            .copied()
            .collect();
        for c in mine {
            self.end_copy(c);
        }
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
        // The kernel keeps the domain until copies through it end: of its
        // grants, and through others' transitive grants it was the hop of.
        let through: Vec<_> = self
            .copies
            .iter()
            .filter(|c| c.granter == d || c.hop.is_some_and(|h| h.domid == d))
            .copied()
            .collect();
        for c in through {
            self.end_copy(c);
        }
        let dead = self.doms.remove(&d).expect("dying, not gone");
        assert!(
            dead.table.active.is_empty(),
            "d{d}: nothing pinned at the end: {:?}",
            dead.table.active
        );
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
        assert_eq!(removal.status_frames, dead.status_frames());
        self.hand_back(dead.table_frames());
        self.hand_back(dead.status_frames());
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
                race,
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
                // A hop at the dying domain, or at an entry it pins, the
                // reference would not refuse.
                if dying != Some(granter)
                    && let Some(hop) = self.hop_of(granter, gref)
                    && (dying == Some(hop.domid) || self.pinned_by_dying(hop.domid, hop.gref))
                {
                    return;
                }
                let (got, hop) =
                    self.kernel_acquire(acc, granter, gref, write, race.then_some(gref as usize));
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
                    self.copies.push(Copy {
                        acc,
                        granter,
                        gref,
                        write,
                        hop,
                    });
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
                    let c = self.copies[pick % self.copies.len()];
                    (c.acc, c.granter, c.gref, c.write)
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
                    let i = self
                        .copies
                        .iter()
                        .position(|c| {
                            (c.acc, c.granter, c.gref, c.write) == (acc, granter, gref, write)
                        })
                        .expect("held");
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
                let frame = FRAMES[gref as usize % FRAMES.len()];
                self.step(Op::Write {
                    granter,
                    gref,
                    entry: GuestEntry::page(flags, grantee, frame),
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
                entry,
            } => {
                if dying == Some(granter) {
                    return;
                }
                let (Some(d), Some(gd)) = (self.doms.get(&granter), self.g.domain(granter)) else {
                    return;
                };
                assert_eq!(d.version(), gd.version());
                if !entry.write(&mut self.mem, d, gref) {
                    return;
                }
                assert!(entry.write(&mut self.gmem, gd, gref));
                self.grantee.insert((granter, gref), entry.domid);
            }
            Op::Chain {
                t,
                gref_t,
                t_flags,
                a,
                gref_a,
                copier,
                write,
                race,
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
                self.step(Op::Acquire {
                    grantee: false,
                    acc: copier,
                    granter: a,
                    gref: gref_a,
                    write,
                    race,
                });
            }
            Op::SetVersion {
                dom,
                version,
                alloc_ok,
            } => {
                if dying == Some(dom) || !self.doms.contains_key(&dom) {
                    return;
                }
                // The reference still sees the dying domain's pins.
                if dying.is_some_and(|x| {
                    self.g
                        .domain(dom)
                        .is_some_and(|d| d.table.active.values().any(|a| a.accessor == x))
                }) {
                    return;
                }
                let frame = alloc_ok.then(|| self.fresh_frame());
                let (mut left, mut gleft) = (frame, frame);
                let d = self.doms.get_mut(&dom).expect("checked above");
                let got = d.set_version(version, &mut self.mem, || left.take());
                let want = self
                    .g
                    .set_version(dom, version, &mut self.gmem, || gleft.take());
                assert_eq!(got, want, "set_version({version}) by d{dom}");
                assert_eq!(left, gleft, "the frame taken or not");
                if let Some(f) = left {
                    self.given.remove(&f);
                }
                self.hand_back(&got.freed);
            }
            Op::Swap { dom, a, b } => {
                if dying == Some(dom) {
                    return;
                }
                // The reference still sees the dying domain's pins.
                if self.pinned_by_dying(dom, a) || self.pinned_by_dying(dom, b) {
                    return;
                }
                let Some(d) = self.doms.get_mut(&dom) else {
                    return;
                };
                let got = d.swap_grant_ref(a, b, &mut self.mem);
                let want = self.g.swap_grant_ref(dom, a, b, &mut self.gmem);
                assert_eq!(got, want, "swap");
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
                assert_eq!(
                    act.target.frame(),
                    Some(info.frame),
                    "d{m} handle {h}: frame"
                );
                let c = claimed.entry((info.granter, info.gref)).or_default();
                if info.readonly {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        // Copy pins in flight: (granter, ref) -> (accessor, ro, rw); the
        // same for hop pins, held by the transitive grant's granter.
        let mut copying: BTreeMap<(DomId, GrantRef), (DomId, u32, u32)> = BTreeMap::new();
        let mut hopping: BTreeMap<(DomId, GrantRef), (DomId, u32, u32)> = BTreeMap::new();
        let count = |map: &mut BTreeMap<_, (DomId, u32, u32)>, key, acc, write| {
            let c = map.entry(key).or_insert((acc, 0, 0));
            assert_eq!(c.0, acc, "pins of {key:?} by two domains");
            if write {
                c.2 += 1;
            } else {
                c.1 += 1;
            }
        };
        for c in &self.copies {
            count(&mut copying, (c.granter, c.gref), c.acc, c.write);
            if let Some(hop) = c.hop {
                count(&mut hopping, (hop.domid, hop.gref), c.granter, c.write);
            }
        }
        for (&g, d) in &self.doms {
            let mut users: BTreeMap<u64, u32> = BTreeMap::new();
            for (&r, act) in &d.table.active {
                assert!(act.pins() > 0, "d{g} ref {r}: active without pins");
                let maps = claimed.remove(&(g, r)).unwrap_or_default();
                assert_eq!((act.map_ro, act.map_rw), maps, "map pins of d{g} ref {r}");
                for (map, pins, what) in [
                    (&mut copying, (act.copy_ro, act.copy_rw), "copy"),
                    (&mut hopping, (act.hop_ro, act.hop_rw), "hop"),
                ] {
                    let want = match map.remove(&(g, r)) {
                        Some((acc, ro, rw)) => {
                            assert_eq!(act.accessor, acc, "{what} pinner of d{g} ref {r}");
                            (ro, rw)
                        }
                        None => (0, 0),
                    };
                    assert_eq!(pins, want, "{what} pins of d{g} ref {r}");
                }
                if let Target::Transitive(_) = act.target {
                    assert_eq!(
                        act.pins(),
                        u64::from(act.copy_ro + act.copy_rw),
                        "d{g} ref {r}: a transitive entry has copy pins only"
                    );
                }
                if let Some(f) = act.target.frame() {
                    *users.entry(f).or_insert(0) += 1;
                }
            }
            assert_eq!(d.table.frame_users, users, "frame_users of d{g}");
            for r in REFS {
                if d.table.slot(r).is_none() {
                    continue;
                }
                let bits = status_bits(&self.mem, d, r);
                let (pins, write_pins) = d.pins(r).map_or((0, 0), |p| (p.1, p.2));
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
            }
            for f in FRAMES {
                assert_eq!(
                    d.is_frame_mapped(f),
                    users.contains_key(&f),
                    "d{g} frame {f}"
                );
            }
        }
        assert!(claimed.is_empty(), "pins claimed but not held: {claimed:?}");
        assert!(copying.is_empty(), "copies without pins: {copying:?}");
        assert!(hopping.is_empty(), "hops without pins: {hopping:?}");
    }

    /// With no death in progress, the two forms hold the same state.
    fn check_agreement(&self) {
        for dom in 0..DOMS {
            let (a, b) = (self.doms.get(&dom), self.g.domain(dom));
            assert_eq!(a.is_some(), b.is_some(), "d{dom} present");
            let (Some(a), Some(b)) = (a, b) else { continue };
            assert_eq!(a.version(), b.version(), "d{dom} version");
            assert_eq!(a.table_frames(), b.table_frames(), "d{dom} frames");
            assert_eq!(a.status_frames(), b.status_frames(), "d{dom} status frames");
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
            for r in REFS {
                if a.table.slot(r).is_none() {
                    continue;
                }
                assert_eq!(
                    GuestEntry::read(&self.mem, a, r),
                    GuestEntry::read(&self.gmem, b, r),
                    "d{dom} entry {r}"
                );
                assert_eq!(
                    status_bits(&self.mem, a, r),
                    status_bits(&self.gmem, b, r),
                    "d{dom} status of {r}"
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

    /// Every domain dies; every frame given comes back once.
    fn end(&mut self) {
        self.finish_death();
        for d in 0..DOMS {
            if self.doms.contains_key(&d) {
                self.start_death(d);
                self.finish_death();
                self.check();
            }
        }
        assert!(self.copies.is_empty(), "copies outlived every domain");
        let back: BTreeSet<u64> = self.back.iter().copied().collect();
        assert_eq!(back.len(), self.back.len(), "a frame handed back twice");
        assert_eq!(back, self.given, "frames given and handed back");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn per_domain_api_matches_grants(ops in proptest::collection::vec(op(), 1..150)) {
        let mut h = Harness::new();
        h.check();
        for op in ops {
            h.step(op);
            h.check();
        }
        h.end();
    }
}
