//! Property tests: random sequences of what a guest (and the kernel) may do to a
//! domain of 32 frames, checked after every step against the invariants
//! recomputed from scratch ([`audit`]) and a model of pins, base pointers and frame
//! ownership; a failed operation must leave every reference as it was; and once
//! everything is dropped, every frame given to the domain comes back exactly once,
//! and every byte of bookkeeping goes back to the allocator. The domain's state
//! lives in a counting allocator ([`Counting`]), which one test makes fail.

use std::collections::{BTreeMap, BTreeSet};

use keel_hypercall::abi::mmu::{self as abi, MmuUpdate, MmuextOp};
use proptest::prelude::*;

use super::audit::audit;
use super::entry::*;
use super::fake::{Counting, FakeMem, freed, mfn};
use super::*;

const FIRST: u64 = 0x100;
const FRAMES: u64 = 32;
/// The last frame is keel's shared page.
const SPECIAL: u8 = FRAMES as u8 - 1;
const FOREIGN: u64 = 0x200;
const IO_RW: u64 = 0x300;
const IO_RO: u64 = 0x301;
const IO_DENIED: u64 = 0x302;

/// Where the domain's frames are: frame `f` is `first + f * stride`.
#[derive(Clone, Copy, Debug)]
struct Spread {
    first: u64,
    stride: u64,
}

/// 0x100..0x120: one chunk.
const DENSE: Spread = Spread {
    first: FIRST,
    stride: 1,
};

/// 0x10f0, 0x11b1, ... 0x28cf: one or two frames in each of 24 chunks, at odd
/// offsets, clear of the foreign and I/O frames.
const SPARSE: Spread = Spread {
    first: 0x10f0,
    stride: 0xc1,
};

impl Spread {
    fn frame(self, f: u8) -> u64 {
        self.first + u64::from(f) % FRAMES * self.stride
    }

    /// The `f` with `frame(f) == m`.
    fn index(self, m: u64) -> u8 {
        ((m - self.first) / self.stride) as u8
    }
}

fn frame(f: u8) -> u64 {
    DENSE.frame(f)
}

/// Which frame an operation is on: a frame of the domain, or, to reach deep
/// states often, the n-th of its validated tables, L1s or pinned frames (when it
/// has any), chosen when the step runs.
#[derive(Clone, Copy, Debug)]
enum Pick {
    Frame(u8),
    Table(u8),
    L1(u8),
    Pinned(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Update {
        table: Pick,
        index: usize,
        value: Val,
        cmd: u32,
    },
    Pin {
        frame: u8,
        level: u8,
    },
    Unpin {
        frame: Pick,
    },
    Baseptr {
        vcpu: usize,
        frame: u8,
    },
    UserBaseptr {
        vcpu: usize,
        frame: Option<u8>,
    },
    /// `value` is the whole entry wanted; a narrower access writes its part.
    Ptwr {
        table: Pick,
        index: usize,
        value: Val,
        access: u8,
        cmpxchg: Option<bool>,
    },
    Remove {
        frame: u8,
    },
    Assign {
        frame: u8,
    },
    /// The hardware walker sets accessed (and, in an L1, dirty) bits.
    Touch {
        frame: Pick,
        index: usize,
    },
    Clear {
        frame: u8,
    },
    Copy {
        dst: u8,
        src: u8,
    },
    SegGet {
        frame: u8,
    },
    SegPut {
        frame: u8,
    },
    Destroy {
        vcpu: usize,
    },
    /// The allocator grants this many more allocations, then fails (`None`:
    /// no limit).
    Budget(Option<u8>),
}

fn index() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..4, 1 => prop::sample::select(vec![256usize, 258, 271, 272, 511])]
}

/// An entry a guest would write, resolved when the step runs.
#[derive(Clone, Copy, Debug)]
enum Val {
    /// `flags` over the frame picked.
    To { target: Pick, flags: u64 },
    /// Exactly this (a frame that is not the domain's, or resolved).
    Raw(u64),
    /// The entry there now with these bits flipped: changing a mapping's rights.
    Flip(u64),
}

/// Flags of a guest entry, mostly plausible, sometimes not.
fn flags() -> impl Strategy<Value = u64> {
    let w = prop::bool::weighted;
    (
        (w(0.85), w(0.4), w(0.5), w(0.5), w(0.2)),
        (w(0.05), w(0.05), w(0.05), w(0.1), w(0.1), w(0.1)),
    )
        .prop_map(|((p, rw, u, a, d), (pse, pcd, pwt, g, nx, avail))| {
            let bits = [
                (p, PRESENT),
                (rw, RW),
                (u, USER),
                (a, ACCESSED),
                (d, DIRTY),
                (pse, PSE),
                (pcd, PCD),
                (pwt, PWT),
                (g, GLOBAL),
                (nx, NX),
                (avail, AVAIL | GUEST_KERNEL),
            ];
            bits.iter()
                .filter(|(on, _)| *on)
                .fold(0, |e, (_, bit)| e | bit)
        })
}

fn value() -> impl Strategy<Value = Val> {
    let elsewhere = prop::sample::select(vec![FOREIGN, IO_RW, IO_RO, IO_DENIED, (1 << 40) - 1]);
    let flips = vec![
        RW,
        ACCESSED | DIRTY,
        NX,
        USER,
        GLOBAL,
        PRESENT,
        RW | DIRTY,
        PCD,
        AVAIL,
    ];
    prop_oneof![
        10 => (pick([3, 2, 0, 0]), flags()).prop_map(|(target, flags)| Val::To { target, flags }),
        1 => (elsewhere, flags()).prop_map(|(t, f)| Val::Raw((t << 12) | f)),
        3 => prop::sample::select(flips).prop_map(Val::Flip),
    ]
}

fn pick(weights: [u32; 4]) -> impl Strategy<Value = Pick> {
    let f = || 0u8..FRAMES as u8;
    prop_oneof![
        weights[0] => f().prop_map(Pick::Frame),
        weights[1] => any::<u8>().prop_map(Pick::Table),
        weights[2] => any::<u8>().prop_map(Pick::L1),
        weights[3] => any::<u8>().prop_map(Pick::Pinned),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let f = || 0u8..FRAMES as u8;
    let cmd = prop_oneof![8 => Just(0u32), 2 => Just(2), 1 => Just(3), 1 => 0u32..8];
    prop_oneof![
        12 => (pick([2, 2, 0, 0]), index(), value(), cmd)
            .prop_map(|(table, index, value, cmd)| Op::Update { table, index, value, cmd }),
        6 => (f(), 1u8..=4).prop_map(|(frame, level)| Op::Pin { frame, level }),
        3 => pick([1, 0, 0, 3]).prop_map(|frame| Op::Unpin { frame }),
        2 => (0usize..2, f()).prop_map(|(vcpu, frame)| Op::Baseptr { vcpu, frame }),
        1 => (0usize..2, prop::option::of(f())).prop_map(|(vcpu, frame)| Op::UserBaseptr { vcpu, frame }),
        5 => (pick([1, 0, 4, 0]), index(), value(), 0u8..5, prop::option::of(any::<bool>()))
            .prop_map(|(table, index, value, access, cmpxchg)| Op::Ptwr { table, index, value, access, cmpxchg }),
        2 => f().prop_map(|frame| Op::Remove { frame }),
        2 => f().prop_map(|frame| Op::Assign { frame }),
        2 => (pick([1, 3, 0, 0]), index()).prop_map(|(frame, index)| Op::Touch { frame, index }),
        1 => f().prop_map(|frame| Op::Clear { frame }),
        1 => (f(), f()).prop_map(|(dst, src)| Op::Copy { dst, src }),
        1 => f().prop_map(|frame| Op::SegGet { frame }),
        1 => f().prop_map(|frame| Op::SegPut { frame }),
        1 => (0usize..2).prop_map(|vcpu| Op::Destroy { vcpu }),
    ]
}

/// Everything about one frame's references, but the type of a frame with no type
/// references (a failed validation may leave another one there).
#[derive(Debug, PartialEq, Eq)]
struct Refs {
    mfn: Mfn,
    count: u32,
    allocated: bool,
    type_count: u32,
    pinned: bool,
    linear: (u16, u16),
    typed: Option<(PageType, bool)>,
}

fn references(d: &DomainFrames<Counting>) -> Vec<Refs> {
    d.pages()
        .map(|(mfn, p)| Refs {
            mfn,
            count: p.count(),
            allocated: p.is_allocated(),
            type_count: p.type_count(),
            pinned: p.is_pinned(),
            linear: (p.linear_entries(), p.linear_uses()),
            typed: (p.type_count() > 0).then(|| (p.page_type(), p.is_validated())),
        })
        .collect()
}

struct World {
    d: DomainFrames<Counting>,
    alloc: Counting,
    spread: Spread,
    mem: FakeMem,
    vcpus: [PvVcpu; 2],
    seg: BTreeMap<Mfn, u32>,
    /// Frames given to the domain and not yet handed back.
    given: BTreeSet<Mfn>,
    assigned: BTreeMap<Mfn, u32>,
    freed: BTreeMap<Mfn, u32>,
    pinned: BTreeSet<Mfn>,
}

impl World {
    fn new(policy: Policy) -> World {
        World::with(policy, DENSE)
    }

    fn with(policy: Policy, spread: Spread) -> World {
        let alloc = Counting::new();
        let mut w = World {
            d: DomainFrames::new_in(policy, alloc.clone()),
            alloc,
            spread,
            mem: FakeMem::new(),
            vcpus: [PvVcpu::new(), PvVcpu::new()],
            seg: BTreeMap::new(),
            given: BTreeSet::new(),
            assigned: BTreeMap::new(),
            freed: BTreeMap::new(),
            pinned: BTreeSet::new(),
        };
        for f in 0..SPECIAL {
            let m = mfn(spread.frame(f));
            w.d.assign(m).unwrap();
            w.gave(m);
        }
        let special = mfn(spread.frame(SPECIAL));
        w.d.assign_special(special).unwrap();
        w.gave(special);
        w.mem.io.insert(mfn(IO_RW), IoFrame::ReadWrite);
        w.mem.io.insert(mfn(IO_RO), IoFrame::ReadOnly);
        w.mem.io.insert(mfn(IO_DENIED), IoFrame::Denied);
        w
    }

    fn gave(&mut self, m: Mfn) {
        self.given.insert(m);
        *self.assigned.entry(m).or_default() += 1;
    }

    /// The frame number `p` stands for now.
    fn resolve(&self, p: Pick) -> u64 {
        let nth = |n: u8, want: &dyn Fn(&PageInfo) -> bool| {
            let found: Vec<Mfn> = self
                .d
                .pages()
                .filter(|(_, p)| want(p))
                .map(|(m, _)| m)
                .collect();
            match found.len() {
                0 => self.spread.frame(n),
                len => found[usize::from(n) % len].as_u64(),
            }
        };
        let table =
            |p: &PageInfo| matches!(p.page_type(), PageType::PageTable(_)) && p.is_validated();
        match p {
            Pick::Frame(f) => self.spread.frame(f),
            Pick::Table(n) => nth(n, &table),
            Pick::L1(n) => nth(n, &|p| {
                table(p) && p.page_type() == PageType::PageTable(Level::L1)
            }),
            Pick::Pinned(n) => nth(n, &|p| p.is_pinned()),
        }
    }

    /// `op` with its frames and entries chosen.
    fn concrete(&self, op: &Op) -> Op {
        let fix = |p: Pick| Pick::Frame(self.spread.index(self.resolve(p)));
        let val = |table: Pick, index: usize, v: Val| match v {
            Val::To { target, flags } => Val::Raw((self.resolve(target) << 12) | flags),
            Val::Raw(e) => Val::Raw(e),
            Val::Flip(bits) => Val::Raw(self.mem.get(mfn(self.resolve(table)), index) ^ bits),
        };
        match op.clone() {
            Op::Update {
                table,
                index,
                value,
                cmd,
            } => {
                let value = val(table, index, value);
                Op::Update {
                    table: fix(table),
                    index,
                    value,
                    cmd,
                }
            }
            Op::Unpin { frame } => Op::Unpin { frame: fix(frame) },
            Op::Ptwr {
                table,
                index,
                value,
                access,
                cmpxchg,
            } => {
                let value = val(table, index, value);
                Op::Ptwr {
                    table: fix(table),
                    index,
                    value,
                    access,
                    cmpxchg,
                }
            }
            Op::Touch { frame, index } => Op::Touch {
                frame: fix(frame),
                index,
            },
            other => other,
        }
    }

    /// Runs one step; `Err` only for a property violated.
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let op = &self.concrete(op);
        let before = references(&self.d);
        let vcpus_before = self.vcpus.clone();
        let watched = match *op {
            Op::Update { table, index, .. } | Op::Ptwr { table, index, .. } => {
                Some((mfn(self.resolve(table)), index))
            }
            _ => None,
        };
        let entry_before = watched.map(|(m, i)| self.mem.get(m, i));
        let result = self.apply(op);
        if let Err(e) = result {
            prop_assert!(!e.is_domain_fatal(), "{op:?}: {e}");
            prop_assert!(
                e != PvError::NoMemory || matches!(op, Op::Assign { .. }),
                "{:?} allocated",
                op
            );
            prop_assert_eq!(
                &references(&self.d),
                &before,
                "{:?} failed ({}) but changed references",
                op,
                e
            );
            prop_assert_eq!(&self.vcpus, &vcpus_before);
            if let Some((m, i)) = watched {
                prop_assert_eq!(
                    Some(self.mem.get(m, i)),
                    entry_before,
                    "{:?} failed but wrote",
                    op
                );
            }
        }
        for m in freed(&mut self.d) {
            prop_assert!(self.given.remove(&m), "{m} freed but not given");
            prop_assert!(!self.d.owns(m));
            *self.freed.entry(m).or_default() += 1;
            self.pinned.remove(&m);
            self.mem.scrub(m);
        }
        for m in &self.given {
            prop_assert!(self.d.owns(*m), "{m} given, not freed, but gone");
        }
        prop_assert_eq!(self.d.len(), self.given.len());
        for (m, p) in self.d.pages() {
            prop_assert_eq!(p.is_pinned(), self.pinned.contains(&m), "pin of {}", m);
        }
        audit(&self.d, &self.mem, &self.vcpus, &self.seg).map_err(TestCaseError::fail)?;
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), PvError> {
        let op = &self.concrete(op);
        let spread = self.spread;
        let frame = move |f: u8| spread.frame(f);
        let picked = |p: Pick| match p {
            Pick::Frame(f) => frame(f),
            _ => unreachable!("resolved by `concrete`"),
        };
        let raw = |v: Val| match v {
            Val::Raw(e) => e,
            _ => unreachable!("resolved by `concrete`"),
        };
        let (d, mem) = (&mut self.d, &mut self.mem);
        match *op {
            Op::Update {
                table,
                index,
                value,
                cmd,
            } => {
                let req = MmuUpdate {
                    ptr: (picked(table) << 12) + 8 * index as u64 + u64::from(cmd),
                    val: raw(value),
                };
                d.mmu_update(mem, &req).map(drop)
            }
            Op::Pin { frame: f, level } => {
                let m = mfn(frame(f));
                let cmd = abi::MMUEXT_PIN_L1_TABLE + u32::from(level) - 1;
                let was = self.pinned.contains(&m);
                let r = ext(d, mem, &mut self.vcpus[0], cmd, m.as_u64(), 0);
                if r.is_ok() {
                    assert!(!was, "pinned twice");
                    self.pinned.insert(m);
                }
                r
            }
            Op::Unpin { frame: f } => {
                let m = mfn(picked(f));
                let r = ext(
                    d,
                    mem,
                    &mut self.vcpus[0],
                    abi::MMUEXT_UNPIN_TABLE,
                    m.as_u64(),
                    0,
                );
                assert_eq!(r.is_ok(), self.pinned.remove(&m), "unpin of {m}: {r:?}");
                r
            }
            Op::Baseptr { vcpu, frame: f } => ext(
                d,
                mem,
                &mut self.vcpus[vcpu],
                abi::MMUEXT_NEW_BASEPTR,
                frame(f),
                0,
            ),
            Op::UserBaseptr { vcpu, frame: f } => ext(
                d,
                mem,
                &mut self.vcpus[vcpu],
                abi::MMUEXT_NEW_USER_BASEPTR,
                f.map_or(0, frame),
                0,
            ),
            Op::Ptwr {
                table,
                index,
                value,
                access,
                cmpxchg,
            } => {
                let (offset, bytes) = [(0, 8), (0, 4), (4, 4), (0, 1), (6, 2)][usize::from(access)];
                let m = mfn(picked(table));
                let cur = mem.get(m, index);
                let width = if bytes == 8 {
                    u64::MAX
                } else {
                    (1 << (8 * bytes)) - 1
                };
                let part = |e: u64| (e >> (8 * offset)) & width;
                let expected = cmpxchg.map(|hit| part(cur) ^ u64::from(!hit));
                d.ptwr_emulate(
                    mem,
                    m,
                    index * 8 + offset,
                    bytes,
                    part(raw(value)),
                    expected,
                )
                .map(drop)
            }
            Op::Remove { frame: f } => {
                let m = mfn(frame(f));
                let r = d.remove_page(mem, m);
                if r.is_ok() {
                    self.pinned.remove(&m);
                }
                r
            }
            Op::Assign { frame: f } => {
                let m = mfn(frame(f));
                if d.owns(m) {
                    assert_eq!(d.assign(m), Err(PvError::AlreadyAssigned(m)));
                    return Ok(());
                }
                mem.scrub(m);
                d.assign(m)?;
                self.gave(m);
                Ok(())
            }
            Op::Touch { frame: f, index } => {
                let m = mfn(picked(f));
                if let Some(p) = d.page(m)
                    && let PageType::PageTable(level) = p.page_type()
                    && p.is_validated()
                    && is_guest_slot(level, index)
                {
                    let e = mem.get(m, index);
                    if is_present(e) {
                        let hw = if level == Level::L1 {
                            ACCESSED | DIRTY
                        } else {
                            ACCESSED
                        };
                        mem.set(m, index, e | hw);
                    }
                }
                Ok(())
            }
            Op::Clear { frame: f } => ext(
                d,
                mem,
                &mut self.vcpus[0],
                abi::MMUEXT_CLEAR_PAGE,
                frame(f),
                0,
            ),
            Op::Copy { dst, src } => ext(
                d,
                mem,
                &mut self.vcpus[0],
                abi::MMUEXT_COPY_PAGE,
                frame(dst),
                frame(src),
            ),
            Op::SegGet { frame: f } => {
                let m = mfn(frame(f));
                d.get_segdesc_page(mem, m)?;
                *self.seg.entry(m).or_default() += 1;
                Ok(())
            }
            Op::SegPut { frame: f } => {
                let m = mfn(frame(f));
                let Some(n) = self.seg.get_mut(&m) else {
                    return Ok(());
                };
                *n -= 1;
                if *n == 0 {
                    self.seg.remove(&m);
                }
                d.put_segdesc_page(mem, m)
            }
            Op::Destroy { vcpu } => d.destroy_pagetables(mem, &mut self.vcpus[vcpu]),
            Op::Budget(n) => {
                self.alloc.set_budget(n.map(usize::from));
                Ok(())
            }
        }
    }

    /// Drops everything the kernel holds, then the domain: every frame given
    /// must come back exactly once.
    fn teardown(mut self) -> Result<(), TestCaseError> {
        for v in &mut self.vcpus {
            self.d
                .destroy_pagetables(&mut self.mem, v)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for (m, n) in std::mem::take(&mut self.seg) {
            for _ in 0..n {
                self.d
                    .put_segdesc_page(&mut self.mem, m)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
        self.d
            .relinquish(&mut self.mem)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(self.d.is_empty(), "left over: {:?}", references(&self.d));
        for m in freed(&mut self.d) {
            prop_assert!(self.given.remove(&m));
            *self.freed.entry(m).or_default() += 1;
        }
        prop_assert!(self.given.is_empty());
        prop_assert_eq!(&self.freed, &self.assigned);
        // Every chunk went with its last frame, and the index with the last chunk,
        // without a single allocation (the budget may be spent).
        prop_assert_eq!(self.alloc.live(), 0, "bookkeeping left allocated");
        Ok(())
    }
}

fn ext(
    d: &mut DomainFrames<Counting>,
    mem: &mut FakeMem,
    v: &mut PvVcpu,
    cmd: u32,
    arg1: u64,
    arg2: u64,
) -> Result<(), PvError> {
    let op = MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    };
    d.mmuext_op(mem, v, &op).map(drop)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn page_types_match_the_model(
        nx in any::<bool>(),
        io_caps in any::<bool>(),
        linear_pt in prop::bool::weighted(0.75),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut w = World::new(Policy { nx, io_caps, linear_pt, l1tf_safe_maddr: None });
        for op in &ops {
            w.step(op)?;
        }
        w.teardown()?;
    }
}

/// A request word: near the domain's frames half the time, anything otherwise.
fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u8..FRAMES as u8, any::<u16>())
            .prop_map(|(f, low)| (frame(f) << 12) | u64::from(low & 0xFFF)),
        (0u8..FRAMES as u8).prop_map(frame),
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Requests as a hostile guest writes them: no panic, no broken invariant,
    /// nothing the kernel would have to crash the domain for.
    #[test]
    fn arbitrary_requests_keep_the_invariants(
        reqs in prop::collection::vec((any::<bool>(), 0u32..24, word(), word()), 1..150),
    ) {
        let mut w = World::new(Policy { io_caps: true, ..Policy::default() });
        for (update, cmd, a, b) in reqs {
            let before = references(&w.d);
            let r = if update {
                w.d.mmu_update(&mut w.mem, &MmuUpdate { ptr: a, val: b }).map(drop)
            } else {
                let op = MmuextOp { cmd, pad: 0, arg1: a, arg2: b };
                w.d.mmuext_op(&mut w.mem, &mut w.vcpus[0], &op).map(drop)
            };
            if let Err(e) = r {
                prop_assert!(!e.is_domain_fatal(), "{e}");
                prop_assert_eq!(references(&w.d), before);
            }
            w.pinned = w.d.pages().filter(|(_, p)| p.is_pinned()).map(|(m, _)| m).collect();
            for m in freed(&mut w.d) {
                prop_assert!(w.given.remove(&m));
                *w.freed.entry(m).or_default() += 1;
                w.mem.scrub(m);
            }
            audit(&w.d, &w.mem, &w.vcpus, &w.seg).map_err(TestCaseError::fail)?;
        }
        w.teardown()?;
    }
}

/// `op()`, more frames given back and given again (so that chunks empty and are
/// needed again), and now and then a change of the allocator's budget: mostly a
/// few allocations, sometimes none, sometimes no limit.
fn op_or_budget() -> impl Strategy<Value = Op> {
    let f = || 0u8..FRAMES as u8;
    let budget = prop_oneof![3 => (0u8..3).prop_map(Some), 1 => Just(None)];
    prop_oneof![
        12 => op(),
        2 => budget.prop_map(Op::Budget),
        2 => f().prop_map(|frame| Op::Remove { frame }),
        3 => f().prop_map(|frame| Op::Assign { frame }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The model test over frames spread across chunks, under an allocator that
    /// runs dry and recovers: only `assign` may fail for memory, and then changes
    /// nothing; the teardown needs no memory; and when it is over every chunk is
    /// freed.
    #[test]
    fn page_types_match_the_model_with_a_failing_allocator(
        nx in any::<bool>(),
        linear_pt in prop::bool::weighted(0.75),
        budget in prop::option::of(0u8..4),
        ops in prop::collection::vec(op_or_budget(), 1..120),
    ) {
        let mut w = World::with(Policy { nx, io_caps: false, linear_pt, l1tf_safe_maddr: None }, SPARSE);
        w.alloc.set_budget(budget.map(usize::from));
        for op in &ops {
            w.step(op)?;
        }
        w.teardown()?;
    }
}
