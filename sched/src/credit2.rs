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
//! # Representation and cost
//!
//! `yield_now` + `pick` is the path a guest's `SCHEDOP_yield` takes, and `block`,
//! `wake` and `pick` that of every event; all run with the kernel's scheduler lock
//! held, so they are kept cheap. The vCPUs live in one `Vec` sorted by [`VcpuId`]
//! (looked up by binary search); runqueues name them by their index in it (a
//! *slot*), and each runqueue's waiting vCPUs are a small unordered `Vec` of slots
//! (every choice among them is by a total order, so their order does not matter).
//! Slots change only in `add` and `remove`, which renumber the runqueues.
//!
//! - Nothing on those paths allocates: every runqueue's `waiting` has room for
//!   every vCPU, reserved by `add` (a vCPU waits on one runqueue at most).
//! - Balancing looks at other runqueues only when something waits on one of them
//!   (`Credit2::nr_waiting`, the number of waiting vCPUs over all runqueues), so a
//!   single pCPU, or a machine whose other runqueues are empty, never scans them.
//! - Idle pCPUs are searched among those running nothing (`Credit2::no_curr`); when
//!   every other pCPU is busy the search is a few word operations.
//! - Cap bookkeeping (period refills, "is anything parked?") is skipped while no
//!   vCPU has a cap (`Credit2::nr_capped`).
//! - Charging no time costs nothing, and the credit arithmetic uses 64-bit
//!   multiplication and division unless the product would overflow.
//!
//! # Invariants
//!
//! - A vCPU is the current vCPU of at most one pCPU, only while it is runnable, and
//!   that pCPU is its runqueue's (`Entry::running` and `Runqueue::curr` mirror each
//!   other; `Credit2::no_curr` holds exactly the pCPUs with no current vCPU).
//! - A vCPU is in its runqueue's `waiting` list (once) exactly when it is runnable
//!   and not running, and in no other runqueue's; `Credit2::nr_waiting` is the
//!   length of all those lists together, and each list has room for every vCPU.
//! - A vCPU that is not running belongs to a runqueue in its hard affinity. A running
//!   one may not, just after [`Policy::set_affinity`] took its pCPU away; that pCPU
//!   was kicked, and its next pick moves the vCPU.
//! - `Credit2::vcpus` is sorted by id, with no id twice; every slot a runqueue holds
//!   is an index into it.
//! - Credit never exceeds `CREDIT_INIT`; arithmetic saturates.
//! - Time never runs backwards here (`now` is clamped to the latest seen).
//!
//! # Locking
//!
//! None: see the crate documentation (one lock around the policy; what a lock per
//! runqueue would take).

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

/// A vCPU's index in `Credit2::vcpus` (stable between `add`s and `remove`s).
type Slot = usize;

struct Entry {
    id: VcpuId,
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
    /// deterministic, whatever order the candidates are looked at in).
    fn rank(&self) -> (bool, i64, Reverse<u64>, Reverse<VcpuId>) {
        (
            !self.yielded,
            self.credit,
            Reverse(self.last_start),
            Reverse(self.id),
        )
    }
}

struct Runqueue {
    /// The vCPU this pCPU runs.
    curr: Option<Slot>,
    /// When `curr` was last charged.
    since: u64,
    /// Its runnable vCPUs that are not running (parked ones included), in no
    /// particular order; room for every vCPU is reserved, so pushing never allocates.
    waiting: Vec<Slot>,
    /// This pCPU was named as one to kick and has not picked since (Xen's
    /// `rqd->tickled`): if it is idle, the best candidate waiting here is spoken for.
    kicked: bool,
}

/// Credit cost of running `ns` at `weight`, when the largest weight is `max_weight`.
fn t2c(ns: u64, weight: u32, max_weight: u32) -> i64 {
    let weight = weight.max(1);
    let c = match ns.checked_mul(u64::from(max_weight)) {
        Some(p) => u128::from(p / u64::from(weight)),
        None => u128::from(ns) * u128::from(max_weight) / u128::from(weight),
    };
    i64::try_from(c).unwrap_or(i64::MAX)
}

/// Time it takes to burn `credit` at `weight`, when the largest weight is
/// `max_weight`.
fn c2t(credit: i64, weight: u32, max_weight: u32) -> u64 {
    let c = credit.max(0).unsigned_abs();
    let max_weight = max_weight.max(1);
    match c.checked_mul(u64::from(weight)) {
        Some(p) => p / u64::from(max_weight),
        None => {
            let t = u128::from(c) * u128::from(weight) / u128::from(max_weight);
            u64::try_from(t).unwrap_or(u64::MAX)
        }
    }
}

/// The credit2 policy for a fixed number of pCPUs. See the module documentation.
pub struct Credit2 {
    /// Every vCPU, sorted by id; runqueues refer to them by index ([`Slot`]).
    vcpus: Vec<Entry>,
    rqs: Vec<Runqueue>,
    /// How many vCPUs wait, on all runqueues together.
    nr_waiting: usize,
    /// The pCPUs with no current vCPU (the only ones that can be idle).
    no_curr: CpuSet,
    /// How many vCPUs have a cap.
    nr_capped: usize,
    max_weight: u32,
    /// Index of the current cap period (`now / CAP_PERIOD_NS`).
    period: u64,
    /// Latest `now` seen.
    now: u64,
}

impl Credit2 {
    /// A policy for `nr_cpus` pCPUs (at least 1, at most [`crate::MAX_CPUS`]).
    pub fn new(nr_cpus: u32) -> Credit2 {
        let nr = nr_cpus.clamp(1, crate::MAX_CPUS);
        let rqs = (0..nr)
            .map(|_| Runqueue {
                curr: None,
                since: 0,
                waiting: Vec::new(),
                kicked: false,
            })
            .collect();
        Credit2 {
            vcpus: Vec::new(),
            rqs,
            nr_waiting: 0,
            no_curr: CpuSet::all(nr),
            nr_capped: 0,
            max_weight: crate::DEFAULT_WEIGHT,
            period: 0,
            now: 0,
        }
    }

    /// A vCPU's credit (for tests and diagnostics).
    pub fn credit(&self, v: VcpuId) -> Option<i64> {
        self.entry(v).map(|e| e.credit)
    }

    fn nr(&self) -> u32 {
        // At most MAX_CPUS runqueues (see `new`).
        self.rqs.len() as u32
    }

    fn slot(&self, v: VcpuId) -> Option<Slot> {
        self.vcpus.binary_search_by_key(&v, |e| e.id).ok()
    }

    fn entry(&self, v: VcpuId) -> Option<&Entry> {
        self.vcpus.get(self.slot(v)?)
    }

    fn clock(&mut self, now: u64) -> u64 {
        self.now = self.now.max(now);
        self.now
    }

    /// Recomputes what is derived from every vCPU's parameters: the largest weight
    /// and how many vCPUs have a cap.
    fn recompute_params(&mut self) {
        self.max_weight = self
            .vcpus
            .iter()
            .map(|e| e.params.weight)
            .max()
            .unwrap_or(crate::DEFAULT_WEIGHT)
            .max(1);
        self.nr_capped = self.vcpus.iter().filter(|e| e.params.cap != 0).count();
    }

    /// Sets `cpu`'s current vCPU, keeping `no_curr` in step.
    fn set_curr(&mut self, cpu: usize, s: Option<Slot>) {
        let Some(rq) = self.rqs.get_mut(cpu) else {
            return;
        };
        rq.curr = s;
        // `cpu` indexes a runqueue, so it is below MAX_CPUS and the insert succeeds.
        let c = cpu as u32;
        match s {
            Some(_) => self.no_curr.remove(c),
            None => self.no_curr.insert(c).unwrap_or(()),
        }
    }

    /// Charges the current vCPU of `cpu` for the time since it was last charged.
    fn charge_cpu(&mut self, cpu: usize, now: u64) {
        let Some(rq) = self.rqs.get_mut(cpu) else {
            return;
        };
        let ran = now.saturating_sub(rq.since);
        rq.since = now;
        // No time, no cost: `t2c(0, ..)` is 0 and the budget is unchanged.
        if ran == 0 {
            return;
        }
        let Some(e) = rq.curr.and_then(|s| self.vcpus.get_mut(s)) else {
            return;
        };
        let cost = t2c(ran, e.params.weight, self.max_weight);
        e.credit = e.credit.saturating_sub(cost);
        if e.params.cap != 0 {
            e.budget = e
                .budget
                .saturating_sub(i64::try_from(ran).unwrap_or(i64::MAX));
        }
    }

    fn charge_all(&mut self, now: u64) {
        for cpu in 0..self.rqs.len() {
            self.charge_cpu(cpu, now);
        }
    }

    /// Stops `s` running (after charging it); returns the pCPU it ran on.
    fn detach(&mut self, s: Slot, now: u64) -> Option<u32> {
        let e = self.vcpus.get(s)?;
        if !e.running {
            return None;
        }
        let cpu = e.cpu;
        self.charge_cpu(cpu as usize, now);
        self.set_curr(cpu as usize, None);
        if let Some(e) = self.vcpus.get_mut(s) {
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
        if self.nr_capped == 0 {
            return;
        }
        for e in &mut self.vcpus {
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
        // Only a capped vCPU can be parked.
        self.nr_capped != 0 && self.vcpus.iter().any(|e| e.runnable && e.parked())
    }

    /// Tops up every vCPU of `cpu`'s runqueue (see the module documentation).
    fn reset_credit(&mut self, cpu: u32, head_credit: i64) {
        // Enough top-ups to make the head positive again.
        let m = 1 + (head_credit.saturating_neg() / CREDIT_INIT).max(0);
        let add = m.saturating_mul(CREDIT_INIT);
        for e in self.vcpus.iter_mut().filter(|e| e.cpu == cpu) {
            e.credit = e.credit.saturating_add(add).min(CREDIT_INIT);
        }
    }

    /// The vCPUs waiting on `cpu`'s runqueue.
    fn waiting(&self, cpu: usize) -> &[Slot] {
        self.rqs.get(cpu).map_or(&[], |rq| rq.waiting.as_slice())
    }

    /// Whether another runqueue than `cpu`'s has a waiting vCPU: if not, there is
    /// nothing to pull, and no rival to expect from elsewhere.
    fn others_waiting(&self, cpu: usize) -> bool {
        self.nr_waiting > self.waiting(cpu).len()
    }

    fn candidates(&self, cpu: usize) -> impl Iterator<Item = (Slot, &Entry)> + '_ {
        self.waiting(cpu)
            .iter()
            .filter_map(|&s| Some((s, self.vcpus.get(s)?)))
            .filter(|(_, e)| e.is_candidate())
    }

    /// The candidate of `cpu`'s runqueue that should run next.
    fn best_candidate(&self, cpu: usize) -> Option<(Slot, &Entry)> {
        self.candidates(cpu).max_by_key(|(_, e)| e.rank())
    }

    /// Runnable vCPUs of `cpu`'s runqueue that are not parked: the running one and
    /// the candidates.
    fn load(&self, cpu: usize) -> usize {
        let running = self.rqs.get(cpu).is_some_and(|rq| rq.curr.is_some());
        usize::from(running) + self.candidates(cpu).count()
    }

    fn curr_credit(&self, cpu: usize) -> Option<i64> {
        let s = self.rqs.get(cpu)?.curr?;
        Some(self.vcpus.get(s)?.credit)
    }

    /// An idle pCPU for `e` other than `exclude`, by the placement order (previous
    /// pCPU, then preferred, then allowed).
    #[inline]
    fn idle_cpu_for(&self, e: &Entry, exclude: Option<u32>) -> Option<u32> {
        // An idle pCPU runs nothing: look only at those, usually none but `exclude`
        // (always so on a single pCPU), which this settles in a few word operations.
        let mut free = self.no_curr.intersect(&e.hard);
        if let Some(x) = exclude {
            free.remove(x);
        }
        if free.is_empty() {
            return None;
        }
        self.idle_cpu_among(e, &free)
    }

    /// `idle_cpu_for` once the pCPUs it may return are narrowed to
    /// `free`: allowed, not excluded, and running nothing.
    fn idle_cpu_among(&self, e: &Entry, free: &CpuSet) -> Option<u32> {
        let ok = |c: u32| free.contains(c) && self.candidates(c as usize).next().is_none();
        let preferred = e.preferred();
        let prev = e.cpu;
        if preferred.contains(prev) && ok(prev) {
            return Some(prev);
        }
        if let Some(c) = preferred.intersect(free).iter().find(|&c| ok(c)) {
            return Some(c);
        }
        // `free` is within the hard affinity.
        if ok(prev) {
            return Some(prev);
        }
        free.iter().find(|&c| ok(c))
    }

    /// Where `s` should wait (see "Placement" in the module documentation).
    fn place(&self, s: Slot, exclude: Option<u32>) -> Option<u32> {
        let e = self.vcpus.get(s)?;
        if let Some(c) = self.idle_cpu_for(e, exclude) {
            return Some(c);
        }
        let mut allowed = e.hard;
        if let Some(x) = exclude {
            allowed.remove(x);
        }
        let preferred = e.preferred();
        if !e.parked() {
            // The poorest running vCPU this one should preempt, preferred pCPUs first.
            let victim = allowed
                .iter()
                .filter_map(|c| Some((c, self.curr_credit(c as usize)?)))
                .filter(|&(_, credit)| credit < e.credit)
                .min_by_key(|&(c, credit)| (!preferred.contains(c), credit, c != e.cpu, c));
            if let Some((c, _)) = victim {
                return Some(c);
            }
        }
        allowed
            .iter()
            .min_by_key(|&c| (self.load(c as usize), !preferred.contains(c), c != e.cpu, c))
    }

    /// Makes waiting `s` (runnable, not running, in no `waiting` list) wait on `cpu`.
    fn enqueue(&mut self, s: Slot, cpu: u32) {
        if let Some(e) = self.vcpus.get_mut(s) {
            e.cpu = cpu;
        }
        if let Some(rq) = self.rqs.get_mut(cpu as usize)
            && !rq.waiting.contains(&s)
        {
            // Never allocates: `add` reserved room for every vCPU.
            rq.waiting.push(s);
            self.nr_waiting += 1;
        }
    }

    /// Takes `s` off `cpu`'s `waiting` list, if it is there.
    fn dequeue_from(&mut self, cpu: u32, s: Slot) {
        if let Some(rq) = self.rqs.get_mut(cpu as usize)
            && let Some(i) = rq.waiting.iter().position(|&w| w == s)
        {
            rq.waiting.swap_remove(i);
            self.nr_waiting = self.nr_waiting.saturating_sub(1);
        }
    }

    /// Takes `s` off its runqueue's `waiting` list, if it is there.
    fn dequeue(&mut self, s: Slot) {
        if let Some(cpu) = self.vcpus.get(s).map(|e| e.cpu) {
            self.dequeue_from(cpu, s);
        }
    }

    /// Moves waiting `s` from its runqueue to `cpu`'s.
    fn migrate(&mut self, s: Slot, cpu: u32) {
        self.dequeue(s);
        self.enqueue(s, cpu);
    }

    /// Whether `cpu` must pick now that `s` waits on it: it is idle, or it runs a
    /// vCPU with less credit than `s`.
    fn should_kick(&self, s: Slot, cpu: u32) -> bool {
        let Some(e) = self.vcpus.get(s) else {
            return false;
        };
        match self.curr_credit(cpu as usize) {
            None => true,
            Some(credit) => !e.parked() && e.credit > credit,
        }
    }

    /// Places waiting `s` (in no `waiting` list) and says which pCPU to kick.
    fn place_and_kick(&mut self, s: Slot, exclude: Option<u32>) -> Option<u32> {
        // `place` finds a pCPU for any known vCPU: its hard affinity is not empty,
        // and `exclude` (if any) is outside it.
        let cpu = self.place(s, exclude)?;
        self.enqueue(s, cpu);
        let kick = self.should_kick(s, cpu).then_some(cpu);
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
    fn reserved(&self, cpu: usize) -> Option<Slot> {
        let rq = self.rqs.get(cpu)?;
        if rq.curr.is_some() || !rq.kicked {
            return None;
        }
        self.best_candidate(cpu).map(|(s, _)| s)
    }

    /// Makes a vCPU that is not running (and not runnable, or about to be placed)
    /// belong to an allowed runqueue: its own if allowed, else a preferred one.
    fn rehome(&mut self, s: Slot) {
        if let Some(e) = self.vcpus.get_mut(s)
            && !e.hard.contains(e.cpu)
        {
            e.cpu = e.preferred().iter().next().unwrap_or(e.cpu);
        }
    }

    /// A waiting vCPU of another runqueue that `cpu` should pull, given the best
    /// candidate it has (see "Pick" in the module documentation). Only worth
    /// calling if `others_waiting`.
    fn pull_choice(&self, cpu: u32, own_best: Option<&Entry>) -> Option<Slot> {
        let x = cpu as usize;
        let load_x = self.candidates(x).count();
        let mut best = None;
        for (r, rq) in self.rqs.iter().enumerate() {
            // A runqueue with nobody waiting has nothing to give.
            if r == x || rq.waiting.is_empty() {
                continue;
            }
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
                    let key = (e.preferred().contains(cpu), load_r, e.rank());
                    if best.as_ref().is_none_or(|(k, _)| key > *k) {
                        best = Some((key, w));
                    }
                }
            }
        }
        best.map(|(_, w)| w)
    }

    /// The best credit `cpu` may pull from a busier runqueue at its next pick, less
    /// `MIGRATE_RESIST`, with `load_x` vCPUs of its own. Only worth calling if
    /// `others_waiting`.
    fn remote_rival(&self, cpu: u32, load_x: usize) -> Option<i64> {
        let x = cpu as usize;
        (0..self.rqs.len())
            .filter(|&r| r != x && !self.waiting(r).is_empty() && self.load(r) > load_x)
            .flat_map(|r| self.candidates(r))
            .filter(|(_, e)| e.hard.contains(cpu) && !e.yielded)
            .map(|(_, e)| e.credit.saturating_sub(MIGRATE_RESIST))
            .max()
    }

    /// Puts `cpu`'s previous vCPU `p` (runnable, no longer running) back on
    /// `cpu`'s runqueue, unless it may not run there any more or it prefers another
    /// pCPU that is idle: then it is placed elsewhere. Returns the pCPU to kick.
    fn requeue_prev(&mut self, cpu: u32, p: Slot) -> Option<u32> {
        let e = self.vcpus.get(p)?;
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
    fn select(&mut self, cpu: u32) -> Option<(Slot, i64)> {
        let x = cpu as usize;
        let own_best = self.best_candidate(x);
        let pulled = if self.others_waiting(x) {
            self.pull_choice(cpu, own_best.map(|(_, e)| e))
        } else {
            None
        };
        let mut best = own_best.map(|(s, e)| (s, e.credit));
        if let Some(w) = pulled {
            self.migrate(w, cpu);
            best = self.best_candidate(x).map(|(s, e)| (s, e.credit));
        }
        for &w in self.rqs.get(x)?.waiting.iter() {
            if let Some(e) = self.vcpus.get_mut(w) {
                e.yielded = false;
            }
        }
        best
    }

    /// `p` was preempted on `cpu` and waits there: if a pCPU it may use is idle,
    /// it moves there. Returns that pCPU, to kick.
    fn spill(&mut self, cpu: u32, p: Slot) -> Option<u32> {
        let e = self.vcpus.get(p).filter(|e| e.is_candidate())?;
        let c = self.idle_cpu_for(e, Some(cpu))?;
        self.migrate(p, c);
        self.mark_kicked(Some(c))
    }

    /// How long `next`, just picked on `cpu`, may run (see "Slice" in the module
    /// documentation).
    fn slice(&self, cpu: u32, next: Slot, period_left: u64) -> u64 {
        let Some(e) = self.vcpus.get(next) else {
            return MIN_SLICE_NS;
        };
        // The rival: the best other candidate here, or one this pCPU may pull next.
        let (mut others, mut local_rival) = (0, None);
        for (_, c) in self.candidates(cpu as usize) {
            others += 1;
            local_rival = local_rival.max(Some(c.credit));
        }
        let remote_rival = if self.others_waiting(cpu as usize) {
            self.remote_rival(cpu, 1 + others)
        } else {
            None
        };
        let rival_credit = local_rival.max(remote_rival);
        let target = rival_credit.map_or(0, |c| c.saturating_sub(SWITCH_GRACE));
        let mut slice = c2t(
            e.credit.saturating_sub(target),
            e.params.weight,
            self.max_weight,
        )
        .clamp(MIN_SLICE_NS, MAX_SLICE_NS);
        if e.params.cap != 0 {
            slice = slice.min(e.budget.max(1).unsigned_abs()).min(period_left);
        }
        if self.any_parked() {
            slice = slice.min(period_left);
        }
        slice.max(1)
    }

    /// Renumbers the slots the runqueues hold after an entry was inserted at
    /// `at` (`inserted`) or removed from there.
    fn renumber(&mut self, at: Slot, inserted: bool) {
        let fix = |s: &mut Slot| {
            if inserted && *s >= at {
                *s += 1;
            } else if !inserted && *s > at {
                *s -= 1;
            }
        };
        for rq in &mut self.rqs {
            if let Some(s) = rq.curr.as_mut() {
                fix(s);
            }
            rq.waiting.iter_mut().for_each(fix);
        }
    }

    /// Checks the invariants of the module documentation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        if !self.vcpus.windows(2).all(|w| w[0].id < w[1].id) {
            return Err("vCPUs not sorted by id".into());
        }
        for (s, e) in self.vcpus.iter().enumerate() {
            let v = e.id;
            let rq = self
                .rqs
                .get(e.cpu as usize)
                .ok_or(format!("{v:?} on runqueue {}", e.cpu))?;
            if e.running != (rq.curr == Some(s)) {
                return Err(format!(
                    "{v:?}: running {} but curr {:?}",
                    e.running, rq.curr
                ));
            }
            if e.running && !e.runnable {
                return Err(format!("{v:?} runs but is not runnable"));
            }
            let here = rq.waiting.iter().filter(|&&w| w == s).count();
            if here != usize::from(e.runnable && !e.running) {
                return Err(format!("{v:?}: waiting list wrong"));
            }
            let elsewhere = self
                .rqs
                .iter()
                .enumerate()
                .any(|(i, rq)| i != e.cpu as usize && rq.waiting.contains(&s));
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
            if let Some(s) = rq.curr
                && self
                    .vcpus
                    .get(s)
                    .is_none_or(|e| !e.running || e.cpu as usize != i)
            {
                return Err(format!("pCPU {i} runs slot {s} which is not running there"));
            }
            if rq.waiting.iter().any(|&s| s >= self.vcpus.len()) {
                return Err(format!("runqueue {i} holds a removed vCPU"));
            }
            if rq.waiting.capacity() < self.vcpus.len() {
                return Err(format!("runqueue {i} has no room for every vCPU"));
            }
            if self.no_curr.contains(i as u32) != rq.curr.is_none() {
                return Err(format!("no_curr wrong for pCPU {i}"));
            }
        }
        if self.no_curr.iter().any(|c| c >= self.nr()) {
            return Err("no_curr names a pCPU that does not exist".into());
        }
        let nr_waiting: usize = self.rqs.iter().map(|rq| rq.waiting.len()).sum();
        if nr_waiting != self.nr_waiting {
            return Err(format!(
                "nr_waiting {} but {nr_waiting} wait",
                self.nr_waiting
            ));
        }
        let nr_capped = self.vcpus.iter().filter(|e| e.params.cap != 0).count();
        if nr_capped != self.nr_capped {
            return Err(format!(
                "nr_capped {} but {nr_capped} capped",
                self.nr_capped
            ));
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
        let Err(at) = self.vcpus.binary_search_by_key(&v, |e| e.id) else {
            return Err(SchedError::already_added(v));
        };
        // Start on the runqueue with the fewest members, so that first wakes spread.
        let mut members = alloc::vec![0usize; self.rqs.len()];
        for e in &self.vcpus {
            if let Some(m) = members.get_mut(e.cpu as usize) {
                *m += 1;
            }
        }
        let cpu = (0..self.nr())
            .min_by_key(|&c| (members[c as usize], c))
            .unwrap_or(0);
        let mut e = Entry {
            id: v,
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
        self.vcpus.insert(at, e);
        self.renumber(at, true);
        // Room on every runqueue for every vCPU, so that waking, blocking, picking
        // and moving vCPUs never allocate.
        let n = self.vcpus.len();
        for rq in &mut self.rqs {
            rq.waiting.reserve(n.saturating_sub(rq.waiting.len()));
        }
        self.recompute_params();
        Ok(())
    }

    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        let params = p.check()?;
        let s = self.slot(v).ok_or(SchedError::unknown(v))?;
        let e = self.vcpus.get_mut(s).ok_or(SchedError::unknown(v))?;
        let had_cap = e.params.cap != 0;
        e.params = params;
        let per = e.budget_per_period();
        e.budget = if had_cap { e.budget.min(per) } else { per };
        self.recompute_params();
        Ok(())
    }

    fn params(&self, v: VcpuId) -> Option<Params> {
        self.entry(v).map(|e| e.params)
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
        let s = self.slot(v).ok_or(SchedError::unknown(v))?;
        let e = self.vcpus.get_mut(s).ok_or(SchedError::unknown(v))?;
        e.hard = hard;
        e.soft = soft;
        let (cpu, running, runnable) = (e.cpu, e.running, e.runnable);
        if running {
            // Its pCPU's next pick moves it, if it must or should go.
            let leave = self.vcpus.get(s).is_some_and(|e| {
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
            self.dequeue_from(cpu, s);
            self.rehome(s);
            return Ok(self.place_and_kick(s, None));
        }
        self.rehome(s);
        Ok(None)
    }

    fn affinity(&self, v: VcpuId) -> Option<(CpuSet, CpuSet)> {
        self.entry(v).map(|e| (e.hard, e.soft))
    }

    fn processor(&self, v: VcpuId) -> Option<u32> {
        self.entry(v).map(|e| e.cpu)
    }

    fn remove(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let now = self.clock(now);
        let s = self.slot(v)?;
        let cpu = self.detach(s, now);
        self.dequeue(s);
        self.vcpus.remove(s);
        self.renumber(s, false);
        self.recompute_params();
        self.mark_kicked(cpu)
    }

    fn wake(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let now = self.clock(now);
        let s = self.slot(v)?;
        let e = self.vcpus.get_mut(s)?;
        if e.runnable {
            return None;
        }
        e.runnable = true;
        e.yielded = false;
        // Credits of running vCPUs must be current to decide on preemption.
        self.charge_all(now);
        self.place_and_kick(s, None)
    }

    fn block(&mut self, v: VcpuId, now: u64) {
        let now = self.clock(now);
        let Some(s) = self.slot(v) else {
            return;
        };
        self.detach(s, now);
        let Some(e) = self.vcpus.get_mut(s) else {
            return;
        };
        e.runnable = false;
        e.yielded = false;
        self.dequeue(s);
        // It may have been running where it is no longer allowed.
        self.rehome(s);
    }

    fn yield_now(&mut self, v: VcpuId, now: u64) {
        let now = self.clock(now);
        let Some(s) = self.slot(v) else {
            return;
        };
        if let Some(cpu) = self.vcpus.get(s).filter(|e| e.running).map(|e| e.cpu) {
            self.charge_cpu(cpu as usize, now);
        }
        if let Some(e) = self.vcpus.get_mut(s) {
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
        let prev = self.rqs[x].curr;
        self.set_curr(x, None);
        if let Some(e) = prev.and_then(|p| self.vcpus.get_mut(p)) {
            e.running = false;
        }
        self.rqs[x].kicked = false;
        self.roll_period(now);

        let prev = prev.filter(|&p| self.vcpus.get(p).is_some_and(|e| e.runnable));
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
        self.dequeue_from(cpu, next);
        let Some(e) = self.vcpus.get_mut(next) else {
            // `select` returns only slots of `vcpus`.
            return Decision {
                kick,
                ..Decision::IDLE
            };
        };
        e.running = true;
        e.last_start = now;
        let id = e.id;
        self.set_curr(x, Some(next));
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
            next: Some(id),
            slice_ns: self.slice(cpu, next, period_left),
            kick,
        }
    }

    fn is_runnable(&self, v: VcpuId) -> bool {
        self.entry(v).is_some_and(|e| e.runnable)
    }
}
