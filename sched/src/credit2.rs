//! `credit2`: weighted fair sharing with caps, a runqueue per pCPU, load balancing,
//! after Xen's credit2 (not a copy of it).
//!
//! # The algorithm
//!
//! Every vCPU holds *credit*, in ns of "reference time". Running costs credit at a
//! rate inversely proportional to weight: `t` ns of CPU time cost
//! `t * max_weight / weight` credit, where `max_weight` is the largest weight of any
//! vCPU, so the heaviest vCPU pays 1:1 and one of half its weight pays double.
//!
//! Every vCPU belongs to one *runqueue*, and there is one runqueue per pCPU (Xen
//! groups pCPUs per socket or core; one per pCPU keeps vCPUs where their caches are
//! and will let each runqueue have its own lock). A runnable vCPU that is not
//! running *waits* on its runqueue; a pCPU runs the vCPUs of its own runqueue, and
//! moves vCPUs between runqueues only in the ways below.
//!
//! - **Placement.** A vCPU that wakes goes to, in this order: its previous pCPU if
//!   that is idle and preferred (in its soft affinity, or it has none); an idle
//!   preferred pCPU; its previous pCPU if idle and allowed (in its hard affinity);
//!   an idle allowed pCPU; the allowed pCPU running the vCPU with the least credit,
//!   if the woken vCPU has more (preferred pCPUs first); else the allowed pCPU with
//!   the least load (runnable vCPUs, parked ones aside), preferred ones, then the
//!   previous one, winning ties. `wake` kicks the pCPU if it is idle or should be
//!   preempted.
//! - **Pick.** A pCPU first puts its previous vCPU back on its runqueue, unless it
//!   may not run there any more (it is placed as if it woke) or it prefers another
//!   pCPU that is idle (it goes there); [`Decision::kick`] then names where it went.
//!   Then the pCPU may *pull* one waiting vCPU (allowed on it) from another
//!   runqueue: when it has nothing of its own (work conservation: from the busiest
//!   runqueue, vCPUs that prefer this pCPU first); when another runqueue has at
//!   least two more vCPUs (load balance); or when it is the lighter and a waiting
//!   vCPU of the busier one has [`MIGRATE_RESIST`] more credit than its own best
//!   (fairness across runqueues, so that 3 vCPUs on 2 pCPUs each get about 2/3).
//!   It never pulls the best candidate of an idle pCPU that has been kicked and has
//!   not picked since (Xen's `rqd->tickled`): that pCPU is about to run it, and
//!   taking it would undo the placement. Then it runs the *candidate* of its
//!   runqueue with the most credit. Candidates are runnable, not running, and not
//!   parked by their cap. A vCPU that just yielded goes behind every other
//!   candidate of its runqueue for that one pick. Ties go to the vCPU that started
//!   running longest ago, then to the lowest [`VcpuId`]. If the previous vCPU stays
//!   waiting here while another pCPU it may use is idle, it moves there (and that
//!   pCPU is kicked).
//! - **Slice.** The chosen vCPU runs until its credit would fall [`SWITCH_GRACE`]
//!   below its rival's (or to 0 if it has none), clamped to [`MIN_SLICE_NS`] ..=
//!   [`MAX_SLICE_NS`]. The rival is the best other candidate of the runqueue, or a
//!   waiting vCPU of a busier runqueue that this pCPU may pull, less
//!   `MIGRATE_RESIST`. So competing candidates' credits stay within a slice of each
//!   other, and equals take turns in slices of a few ms (2.5 to 5 ms in the
//!   simulations) rather than ping-ponging at the minimum.
//! - **Reset.** When the candidate a pCPU picks has no credit left (≤ 0), every vCPU
//!   of that runqueue gets [`CREDIT_INIT`] more (as many times as needed to make the
//!   pick positive), and none keeps more than `CREDIT_INIT`. Because the pick is the
//!   best candidate, every candidate of the runqueue is at ≤ 0 too: their debts
//!   carry over exactly, which is what makes the shares proportional to weight over
//!   time; only vCPUs that were not competing (blocked, parked) are clamped, so
//!   sleeping cannot bank credit. Resets are per runqueue, as in Xen, so that the
//!   vCPUs pinned to a busy pCPU keep their proportions however often a quieter pCPU
//!   resets: credit is only exactly comparable within a runqueue, which is why
//!   pulling for fairness asks for a margin.
//! - **Caps.** Time is cut into accounting periods of [`CAP_PERIOD_NS`], aligned on
//!   multiples of it. A vCPU with cap `c` % has a budget of `c * period / 100` ns per
//!   period; the time it runs is taken from it, and at 0 it is *parked* until the next
//!   period, which refills the budget (an overrun is carried as debt, unused budget
//!   is not). A capped vCPU's slice ends no later than its budget or the period;
//!   while any runnable vCPU is parked, every slice (and idling) ends at the period
//!   boundary so the kernel asks again when the parked vCPU can run.
//!
//! The result is fair by weight among CPU-bound vCPUs sharing a pCPU, close to fair
//! across pCPUs, work-conserving (a pCPU idles only when every runnable vCPU allowed
//! on it is running elsewhere, parked by its cap, or about to run on an idle pCPU
//! just kicked for it), and O(vCPUs + pCPUs) per call.
//!
//! # Invariants
//!
//! - A vCPU is the current vCPU of at most one pCPU, only while it is runnable, and
//!   that pCPU is its runqueue's (`Entry::running` and `Runqueue::curr` mirror each
//!   other).
//! - A vCPU is in its runqueue's `waiting` set exactly when it is runnable and not
//!   running, and in no other runqueue's.
//! - A vCPU that is not running belongs to a runqueue in its hard affinity. A running
//!   one may not, just after [`Policy::set_affinity`] took its pCPU away; that pCPU
//!   was kicked, and its next pick moves the vCPU.
//! - Credit never exceeds `CREDIT_INIT`; arithmetic saturates.
//! - Time never runs backwards here (`now` is clamped to the latest seen).
//!
//! # Locking
//!
//! None: see the crate documentation (one lock around the policy; what a lock per
//! runqueue would take).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::{CpuSet, Decision, Params, Policy, SchedError, VcpuId};

/// The policy's name.
pub const NAME: &str = "credit2";
/// Credit a vCPU starts with and is topped up to at a reset (10 ms of reference time).
pub const CREDIT_INIT: i64 = 10_000_000;
/// The longest slice.
pub const MAX_SLICE_NS: u64 = 10_000_000;
/// The shortest slice (unless a cap budget or a period boundary is nearer).
pub const MIN_SLICE_NS: u64 = 1_000_000;
/// How far (in credit) the running vCPU may fall behind its rival before its slice
/// ends: fewer switches between equals, at the price of shares being exact only
/// over periods longer than this.
pub const SWITCH_GRACE: i64 = 2_500_000;
/// How much more credit a vCPU waiting on a busier runqueue must have than a pCPU's
/// own best candidate for that pCPU to pull it (Xen's `migrate_resist`): migrations
/// cost cache warmth, and credits of different runqueues drift apart by resets.
pub const MIGRATE_RESIST: i64 = 2_500_000;
/// The cap accounting period.
pub const CAP_PERIOD_NS: u64 = 10_000_000;

struct Entry {
    params: Params,
    credit: i64,
    runnable: bool,
    yielded: bool,
    /// The runqueue (and pCPU) it belongs to: where it runs, waits, or last did.
    cpu: u32,
    /// Whether it is the current vCPU of `cpu`.
    running: bool,
    /// Cap budget left in this period, ns; negative after an overrun.
    budget: i64,
    /// When it was last picked (tie-break: longest waiting first).
    last_start: u64,
    hard: CpuSet,
    soft: CpuSet,
}

impl Entry {
    fn budget_per_period(&self) -> i64 {
        // cap <= 100, so this is at most CAP_PERIOD_NS.
        (u64::from(self.params.cap) * CAP_PERIOD_NS / 100) as i64
    }

    fn parked(&self) -> bool {
        self.params.cap != 0 && self.budget <= 0
    }

    fn is_candidate(&self) -> bool {
        self.runnable && !self.running && !self.parked()
    }

    /// The pCPUs it prefers: its soft affinity within its hard one, or (if that is
    /// empty) its hard affinity.
    fn preferred(&self) -> CpuSet {
        let s = self.soft.intersect(&self.hard);
        if s.is_empty() { self.hard } else { s }
    }

    /// The order of candidates on a runqueue: not yielded first, then more credit,
    /// then longest waiting, then the lowest id (so that the choice is
    /// deterministic).
    fn rank(&self, id: VcpuId) -> (bool, i64, Reverse<u64>, Reverse<VcpuId>) {
        (!self.yielded, self.credit, Reverse(self.last_start), Reverse(id))
    }
}

struct Runqueue {
    /// The vCPU this pCPU runs.
    curr: Option<VcpuId>,
    /// When `curr` was last charged.
    since: u64,
    /// Its runnable vCPUs that are not running (parked ones included).
    waiting: BTreeSet<VcpuId>,
    /// This pCPU was named as one to kick and has not picked since (Xen's
    /// `rqd->tickled`): if it is idle, the best candidate waiting here is spoken for.
    kicked: bool,
}

/// The credit2 policy for a fixed number of pCPUs. See the module documentation.
pub struct Credit2 {
    vcpus: BTreeMap<VcpuId, Entry>,
    rqs: Vec<Runqueue>,
    max_weight: u32,
    /// Index of the current cap period (`now / CAP_PERIOD_NS`).
    period: u64,
    /// Latest `now` seen.
    now: u64,
}

impl Credit2 {
    /// A policy for `nr_cpus` pCPUs (at least 1, at most [`crate::MAX_CPUS`]).
    pub fn new(nr_cpus: u32) -> Credit2 {
        let rqs = (0..nr_cpus.clamp(1, crate::MAX_CPUS))
            .map(|_| Runqueue {
                curr: None,
                since: 0,
                waiting: BTreeSet::new(),
                kicked: false,
            })
            .collect();
        Credit2 {
            vcpus: BTreeMap::new(),
            rqs,
            max_weight: crate::DEFAULT_WEIGHT,
            period: 0,
            now: 0,
        }
    }

    /// A vCPU's credit (for tests and diagnostics).
    pub fn credit(&self, v: VcpuId) -> Option<i64> {
        self.vcpus.get(&v).map(|e| e.credit)
    }

    fn nr(&self) -> u32 {
        // At most MAX_CPUS runqueues (see `new`).
        self.rqs.len() as u32
    }

    fn clock(&mut self, now: u64) -> u64 {
        self.now = self.now.max(now);
        self.now
    }

    fn recompute_max_weight(&mut self) {
        self.max_weight = self
            .vcpus
            .values()
            .map(|e| e.params.weight)
            .max()
            .unwrap_or(crate::DEFAULT_WEIGHT)
            .max(1);
    }

    /// Credit cost of running `ns` at `weight`.
    fn t2c(&self, ns: u64, weight: u32) -> i64 {
        let c = u128::from(ns) * u128::from(self.max_weight) / u128::from(weight.max(1));
        i64::try_from(c).unwrap_or(i64::MAX)
    }

    /// Time it takes to burn `credit` at `weight`.
    fn c2t(&self, credit: i64, weight: u32) -> u64 {
        let c = u128::from(credit.max(0).unsigned_abs());
        let t = c * u128::from(weight) / u128::from(self.max_weight.max(1));
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    /// Charges the current vCPU of `cpu` for the time since it was last charged.
    fn charge_cpu(&mut self, cpu: usize, now: u64) {
        let Some(rq) = self.rqs.get_mut(cpu) else {
            return;
        };
        let ran = now.saturating_sub(rq.since);
        rq.since = now;
        let Some(v) = rq.curr else {
            return;
        };
        let Some(weight) = self.vcpus.get(&v).map(|e| e.params.weight) else {
            return;
        };
        let cost = self.t2c(ran, weight);
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.credit = e.credit.saturating_sub(cost);
            if e.params.cap != 0 {
                e.budget = e
                    .budget
                    .saturating_sub(i64::try_from(ran).unwrap_or(i64::MAX));
            }
        }
    }

    fn charge_all(&mut self, now: u64) {
        for cpu in 0..self.rqs.len() {
            self.charge_cpu(cpu, now);
        }
    }

    /// Stops `v` running (after charging it); returns the pCPU it ran on.
    fn detach(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let e = self.vcpus.get(&v)?;
        if !e.running {
            return None;
        }
        let cpu = e.cpu;
        self.charge_cpu(cpu as usize, now);
        if let Some(rq) = self.rqs.get_mut(cpu as usize) {
            rq.curr = None;
        }
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.running = false;
        }
        Some(cpu)
    }

    /// Starts a new cap period if `now` is past the current one: budgets refill.
    fn roll_period(&mut self, now: u64) {
        let idx = now / CAP_PERIOD_NS;
        if idx <= self.period {
            return;
        }
        let elapsed = i64::try_from(idx - self.period).unwrap_or(i64::MAX);
        self.period = idx;
        for e in self.vcpus.values_mut() {
            if e.params.cap != 0 {
                let per = e.budget_per_period();
                e.budget = e
                    .budget
                    .saturating_add(per.saturating_mul(elapsed))
                    .min(per);
            }
        }
    }

    fn period_end(&self) -> u64 {
        self.period.saturating_add(1).saturating_mul(CAP_PERIOD_NS)
    }

    fn any_parked(&self) -> bool {
        self.vcpus.values().any(|e| e.runnable && e.parked())
    }

    /// Tops up every vCPU of `cpu`'s runqueue (see the module documentation).
    fn reset_credit(&mut self, cpu: u32, head_credit: i64) {
        // Enough top-ups to make the head positive again.
        let m = 1 + (head_credit.saturating_neg() / CREDIT_INIT).max(0);
        let add = m.saturating_mul(CREDIT_INIT);
        for e in self.vcpus.values_mut().filter(|e| e.cpu == cpu) {
            e.credit = e.credit.saturating_add(add).min(CREDIT_INIT);
        }
    }

    fn candidates(&self, cpu: usize) -> impl Iterator<Item = (VcpuId, &Entry)> + '_ {
        self.rqs
            .get(cpu)
            .into_iter()
            .flat_map(|rq| rq.waiting.iter())
            .filter_map(|id| Some((*id, self.vcpus.get(id)?)))
            .filter(|(_, e)| e.is_candidate())
    }

    /// Runnable vCPUs of `cpu`'s runqueue that are not parked: the running one and
    /// the candidates.
    fn load(&self, cpu: usize) -> usize {
        let running = self.rqs.get(cpu).is_some_and(|rq| rq.curr.is_some());
        usize::from(running) + self.candidates(cpu).count()
    }

    fn is_idle(&self, cpu: usize) -> bool {
        self.load(cpu) == 0
    }

    fn curr_credit(&self, cpu: usize) -> Option<i64> {
        let v = self.rqs.get(cpu)?.curr?;
        Some(self.vcpus.get(&v)?.credit)
    }

    /// An idle pCPU for `v` other than `exclude`, by the placement order (previous
    /// pCPU, then preferred, then allowed).
    fn idle_cpu_for(&self, e: &Entry, exclude: Option<u32>) -> Option<u32> {
        let ok = |c: u32| Some(c) != exclude && self.is_idle(c as usize);
        let (preferred, hard) = (e.preferred(), e.hard);
        let prev = e.cpu;
        if preferred.contains(prev) && ok(prev) {
            return Some(prev);
        }
        if let Some(c) = preferred.iter().find(|&c| ok(c)) {
            return Some(c);
        }
        if hard.contains(prev) && ok(prev) {
            return Some(prev);
        }
        hard.iter().find(|&c| ok(c))
    }

    /// Where `v` should wait (see "Placement" in the module documentation).
    fn place(&self, v: VcpuId, exclude: Option<u32>) -> Option<u32> {
        let e = self.vcpus.get(&v)?;
        let allowed: Vec<u32> = e.hard.iter().filter(|&c| Some(c) != exclude).collect();
        if let Some(c) = self.idle_cpu_for(e, exclude) {
            return Some(c);
        }
        let preferred = e.preferred();
        if !e.parked() {
            // The poorest running vCPU this one should preempt, preferred pCPUs first.
            let victim = allowed
                .iter()
                .filter_map(|&c| Some((c, self.curr_credit(c as usize)?)))
                .filter(|&(_, credit)| credit < e.credit)
                .min_by_key(|&(c, credit)| (!preferred.contains(c), credit, c != e.cpu, c));
            if let Some((c, _)) = victim {
                return Some(c);
            }
        }
        allowed
            .iter()
            .copied()
            .min_by_key(|&c| (self.load(c as usize), !preferred.contains(c), c != e.cpu, c))
    }

    /// Makes waiting `v` (runnable, not running, in no `waiting` set) wait on `cpu`.
    fn enqueue(&mut self, v: VcpuId, cpu: u32) {
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.cpu = cpu;
        }
        if let Some(rq) = self.rqs.get_mut(cpu as usize) {
            rq.waiting.insert(v);
        }
    }

    /// Moves waiting `v` from its runqueue to `cpu`'s.
    fn migrate(&mut self, v: VcpuId, cpu: u32) {
        if let Some(from) = self.vcpus.get(&v).map(|e| e.cpu)
            && let Some(rq) = self.rqs.get_mut(from as usize)
        {
            rq.waiting.remove(&v);
        }
        self.enqueue(v, cpu);
    }

    /// Whether `cpu` must pick now that `v` waits on it: it is idle, or it runs a
    /// vCPU with less credit than `v`.
    fn should_kick(&self, v: VcpuId, cpu: u32) -> bool {
        let Some(e) = self.vcpus.get(&v) else {
            return false;
        };
        match self.curr_credit(cpu as usize) {
            None => true,
            Some(credit) => !e.parked() && e.credit > credit,
        }
    }

    /// Places waiting `v` (in no `waiting` set) and says which pCPU to kick.
    fn place_and_kick(&mut self, v: VcpuId, exclude: Option<u32>) -> Option<u32> {
        // `place` finds a pCPU for any known vCPU: its hard affinity is not empty,
        // and `exclude` (if any) is outside it.
        let cpu = self.place(v, exclude)?;
        self.enqueue(v, cpu);
        let kick = self.should_kick(v, cpu).then_some(cpu);
        self.mark_kicked(kick)
    }

    /// Remembers that the kernel is told to kick `cpu`; returns it.
    fn mark_kicked(&mut self, cpu: Option<u32>) -> Option<u32> {
        if let Some(rq) = cpu.and_then(|c| self.rqs.get_mut(c as usize)) {
            rq.kicked = true;
        }
        cpu
    }

    /// The candidate an idle, kicked pCPU is about to run: others leave it alone.
    fn reserved(&self, cpu: usize) -> Option<VcpuId> {
        let rq = self.rqs.get(cpu)?;
        if rq.curr.is_some() || !rq.kicked {
            return None;
        }
        self.candidates(cpu)
            .max_by_key(|&(id, e)| e.rank(id))
            .map(|(id, _)| id)
    }

    /// Makes a vCPU that is not running (and not runnable, or about to be placed)
    /// belong to an allowed runqueue: its own if allowed, else a preferred one.
    fn rehome(&mut self, v: VcpuId) {
        if let Some(e) = self.vcpus.get_mut(&v)
            && !e.hard.contains(e.cpu)
        {
            e.cpu = e.preferred().iter().next().unwrap_or(e.cpu);
        }
    }

    /// A waiting vCPU of another runqueue that `cpu` should pull, given the best
    /// candidate it has (see "Pick" in the module documentation).
    fn pull_choice(&self, cpu: u32, own_best: Option<&Entry>) -> Option<VcpuId> {
        let x = cpu as usize;
        let load_x = self.candidates(x).count();
        let mut best = None;
        for r in (0..self.rqs.len()).filter(|&r| r != x) {
            let load_r = self.load(r);
            if own_best.is_some() && load_r <= load_x {
                continue;
            }
            let reserved = self.reserved(r);
            for (w, e) in self
                .candidates(r)
                .filter(|&(w, e)| e.hard.contains(cpu) && Some(w) != reserved)
            {
                let worth = match own_best {
                    None => true,
                    Some(own) => {
                        load_r >= load_x + 2
                            || (!e.yielded && e.credit > own.credit.saturating_add(MIGRATE_RESIST))
                    }
                };
                if worth {
                    let key = (e.preferred().contains(cpu), load_r, e.rank(w));
                    if best.as_ref().is_none_or(|(k, _)| key > *k) {
                        best = Some((key, w));
                    }
                }
            }
        }
        best.map(|(_, w)| w)
    }

    /// The best credit `cpu` may pull from a busier runqueue at its next pick, less
    /// `MIGRATE_RESIST`, with `load_x` vCPUs of its own.
    fn remote_rival(&self, cpu: u32, load_x: usize) -> Option<i64> {
        let x = cpu as usize;
        (0..self.rqs.len())
            .filter(|&r| r != x && self.load(r) > load_x)
            .flat_map(|r| self.candidates(r))
            .filter(|(_, e)| e.hard.contains(cpu) && !e.yielded)
            .map(|(_, e)| e.credit.saturating_sub(MIGRATE_RESIST))
            .max()
    }

    /// Puts `cpu`'s previous vCPU `p` (runnable, no longer running) back on
    /// `cpu`'s runqueue, unless it may not run there any more or it prefers another
    /// pCPU that is idle: then it is placed elsewhere. Returns the pCPU to kick.
    fn requeue_prev(&mut self, cpu: u32, p: VcpuId) -> Option<u32> {
        let e = self.vcpus.get(&p)?;
        if !e.hard.contains(cpu) {
            return self.place_and_kick(p, Some(cpu));
        }
        let preferred = e.preferred();
        let better = self
            .idle_cpu_for(e, Some(cpu))
            .filter(|&c| !preferred.contains(cpu) && preferred.contains(c));
        match better {
            Some(c) => {
                self.enqueue(p, c);
                self.mark_kicked(Some(c))
            }
            None => {
                self.enqueue(p, cpu);
                None
            }
        }
    }

    /// Pulls a vCPU from another runqueue if `cpu` should, then chooses the best
    /// candidate of `cpu`'s runqueue: `(vCPU, its credit)`. Yields are spent.
    fn select(&mut self, cpu: u32) -> Option<(VcpuId, i64)> {
        let x = cpu as usize;
        let own_best = self
            .candidates(x)
            .max_by_key(|&(id, e)| e.rank(id))
            .map(|(_, e)| e);
        if let Some(w) = self.pull_choice(cpu, own_best) {
            self.migrate(w, cpu);
        }
        let best = self
            .candidates(x)
            .max_by_key(|&(id, e)| e.rank(id))
            .map(|(id, e)| (id, e.credit));
        let waiters: Vec<VcpuId> = self.rqs.get(x)?.waiting.iter().copied().collect();
        for w in waiters {
            if let Some(e) = self.vcpus.get_mut(&w) {
                e.yielded = false;
            }
        }
        best
    }

    /// `p` was preempted on `cpu` and waits there: if a pCPU it may use is idle,
    /// it moves there. Returns that pCPU, to kick.
    fn spill(&mut self, cpu: u32, p: VcpuId) -> Option<u32> {
        let e = self.vcpus.get(&p).filter(|e| e.is_candidate())?;
        let c = self.idle_cpu_for(e, Some(cpu))?;
        self.migrate(p, c);
        self.mark_kicked(Some(c))
    }

    /// How long `next`, just picked on `cpu`, may run (see "Slice" in the module
    /// documentation).
    fn slice(&self, cpu: u32, next: VcpuId, period_left: u64) -> u64 {
        let Some(e) = self.vcpus.get(&next) else {
            return MIN_SLICE_NS;
        };
        // The rival: the best other candidate here, or one this pCPU may pull next.
        let x = cpu as usize;
        let load_x = 1 + self.candidates(x).count();
        let local_rival = self.candidates(x).map(|(_, e)| e.credit).max();
        let rival_credit = local_rival.max(self.remote_rival(cpu, load_x));
        let target = rival_credit.map_or(0, |c| c.saturating_sub(SWITCH_GRACE));
        let mut slice = self
            .c2t(e.credit.saturating_sub(target), e.params.weight)
            .clamp(MIN_SLICE_NS, MAX_SLICE_NS);
        if e.params.cap != 0 {
            slice = slice.min(e.budget.max(1).unsigned_abs()).min(period_left);
        }
        if self.any_parked() {
            slice = slice.min(period_left);
        }
        slice.max(1)
    }

    /// Checks the invariants of the module documentation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        for (&v, e) in &self.vcpus {
            let rq = self
                .rqs
                .get(e.cpu as usize)
                .ok_or(format!("{v:?} on runqueue {}", e.cpu))?;
            if e.running != (rq.curr == Some(v)) {
                return Err(format!("{v:?}: running {} but curr {:?}", e.running, rq.curr));
            }
            if e.running && !e.runnable {
                return Err(format!("{v:?} runs but is not runnable"));
            }
            if rq.waiting.contains(&v) != (e.runnable && !e.running) {
                return Err(format!("{v:?}: waiting set wrong"));
            }
            let elsewhere = self
                .rqs
                .iter()
                .enumerate()
                .any(|(i, rq)| i != e.cpu as usize && rq.waiting.contains(&v));
            if elsewhere {
                return Err(format!("{v:?} waits on two runqueues"));
            }
            if !e.running && !e.hard.contains(e.cpu) {
                return Err(format!("{v:?} on runqueue {} outside {:?}", e.cpu, e.hard));
            }
            if e.credit > CREDIT_INIT {
                return Err(format!("{v:?} has credit {}", e.credit));
            }
        }
        for (i, rq) in self.rqs.iter().enumerate() {
            if let Some(v) = rq.curr
                && self.vcpus.get(&v).is_none_or(|e| !e.running || e.cpu as usize != i)
            {
                return Err(format!("pCPU {i} runs {v:?} which is not running there"));
            }
            if rq.waiting.iter().any(|v| !self.vcpus.contains_key(v)) {
                return Err(format!("runqueue {i} holds a removed vCPU"));
            }
        }
        Ok(())
    }
}

impl Policy for Credit2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn nr_cpus(&self) -> u32 {
        self.nr()
    }

    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        let params = p.check()?;
        if self.vcpus.contains_key(&v) {
            return Err(SchedError::already_added(v));
        }
        // Start on the runqueue with the fewest members, so that first wakes spread.
        let mut members = alloc::vec![0usize; self.rqs.len()];
        for e in self.vcpus.values() {
            if let Some(m) = members.get_mut(e.cpu as usize) {
                *m += 1;
            }
        }
        let cpu = (0..self.nr())
            .min_by_key(|&c| (members[c as usize], c))
            .unwrap_or(0);
        let mut e = Entry {
            params,
            credit: CREDIT_INIT,
            runnable: false,
            yielded: false,
            cpu,
            running: false,
            budget: 0,
            last_start: 0,
            hard: CpuSet::all(self.nr()),
            soft: CpuSet::new(),
        };
        e.budget = e.budget_per_period();
        self.vcpus.insert(v, e);
        self.recompute_max_weight();
        Ok(())
    }

    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        let params = p.check()?;
        let e = self.vcpus.get_mut(&v).ok_or(SchedError::unknown(v))?;
        let had_cap = e.params.cap != 0;
        e.params = params;
        let per = e.budget_per_period();
        e.budget = if had_cap { e.budget.min(per) } else { per };
        self.recompute_max_weight();
        Ok(())
    }

    fn params(&self, v: VcpuId) -> Option<Params> {
        self.vcpus.get(&v).map(|e| e.params)
    }

    fn set_affinity(
        &mut self,
        v: VcpuId,
        hard: CpuSet,
        soft: CpuSet,
    ) -> Result<Option<u32>, SchedError> {
        SchedError::check_affinity(&hard, &soft, self.nr())?;
        let now = self.now;
        self.charge_all(now);
        let e = self.vcpus.get_mut(&v).ok_or(SchedError::unknown(v))?;
        e.hard = hard;
        e.soft = soft;
        let (cpu, running, runnable) = (e.cpu, e.running, e.runnable);
        if running {
            // Its pCPU's next pick moves it, if it must or should go.
            let leave = self.vcpus.get(&v).is_some_and(|e| {
                !hard.contains(cpu)
                    || (!e.preferred().contains(cpu)
                        && self
                            .idle_cpu_for(e, Some(cpu))
                            .is_some_and(|c| e.preferred().contains(c)))
            });
            return Ok(self.mark_kicked(leave.then_some(cpu)));
        }
        if runnable {
            // Waiting: placed afresh, as the pCPUs it may use have changed.
            if let Some(rq) = self.rqs.get_mut(cpu as usize) {
                rq.waiting.remove(&v);
            }
            self.rehome(v);
            return Ok(self.place_and_kick(v, None));
        }
        self.rehome(v);
        Ok(None)
    }

    fn affinity(&self, v: VcpuId) -> Option<(CpuSet, CpuSet)> {
        self.vcpus.get(&v).map(|e| (e.hard, e.soft))
    }

    fn processor(&self, v: VcpuId) -> Option<u32> {
        self.vcpus.get(&v).map(|e| e.cpu)
    }

    fn remove(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let now = self.clock(now);
        let cpu = self.detach(v, now);
        let e = self.vcpus.remove(&v)?;
        if let Some(rq) = self.rqs.get_mut(e.cpu as usize) {
            rq.waiting.remove(&v);
        }
        self.recompute_max_weight();
        self.mark_kicked(cpu)
    }

    fn wake(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let now = self.clock(now);
        let e = self.vcpus.get_mut(&v)?;
        if e.runnable {
            return None;
        }
        e.runnable = true;
        e.yielded = false;
        // Credits of running vCPUs must be current to decide on preemption.
        self.charge_all(now);
        self.place_and_kick(v, None)
    }

    fn block(&mut self, v: VcpuId, now: u64) {
        let now = self.clock(now);
        self.detach(v, now);
        let Some(e) = self.vcpus.get_mut(&v) else {
            return;
        };
        e.runnable = false;
        e.yielded = false;
        let cpu = e.cpu;
        if let Some(rq) = self.rqs.get_mut(cpu as usize) {
            rq.waiting.remove(&v);
        }
        // It may have been running where it is no longer allowed.
        self.rehome(v);
    }

    fn yield_now(&mut self, v: VcpuId, now: u64) {
        let now = self.clock(now);
        if let Some(cpu) = self.vcpus.get(&v).filter(|e| e.running).map(|e| e.cpu) {
            self.charge_cpu(cpu as usize, now);
        }
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.yielded = e.runnable;
        }
    }

    fn pick(&mut self, cpu: u32, now: u64) -> Decision {
        let now = self.clock(now);
        let x = cpu as usize;
        if x >= self.rqs.len() {
            return Decision::IDLE;
        }
        // Charge everyone running, so that credits and budgets are current before
        // comparing and before a period boundary refills budgets.
        self.charge_all(now);
        let prev = self.rqs[x].curr.take();
        if let Some(e) = prev.and_then(|p| self.vcpus.get_mut(&p)) {
            e.running = false;
        }
        self.rqs[x].kicked = false;
        self.roll_period(now);

        let prev = prev.filter(|p| self.is_runnable(*p));
        let mut kick = prev.and_then(|p| self.requeue_prev(cpu, p));
        let period_left = self.period_end().saturating_sub(now).max(1);
        let Some((next, head_credit)) = self.select(cpu) else {
            let slice_ns = if self.any_parked() {
                period_left
            } else {
                u64::MAX
            };
            return Decision {
                next: None,
                slice_ns,
                kick,
            };
        };
        self.rqs[x].waiting.remove(&next);
        if let Some(e) = self.vcpus.get_mut(&next) {
            e.running = true;
            e.last_start = now;
        }
        self.rqs[x].curr = Some(next);
        self.rqs[x].since = now;
        if head_credit <= 0 {
            self.reset_credit(cpu, head_credit);
        }
        if kick.is_none()
            && let Some(p) = prev.filter(|&p| p != next)
        {
            kick = self.spill(cpu, p);
        }
        Decision {
            next: Some(next),
            slice_ns: self.slice(cpu, next, period_left),
            kick,
        }
    }

    fn is_runnable(&self, v: VcpuId) -> bool {
        self.vcpus.get(&v).is_some_and(|e| e.runnable)
    }
}
