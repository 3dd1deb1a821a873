//! `credit2`: weighted fair sharing with caps, after Xen's credit2 (not a copy of it).
//!
//! # The algorithm
//!
//! Every vCPU holds *credit*, in ns of "reference time". Running costs credit at a
//! rate inversely proportional to weight: `t` ns of CPU time cost
//! `t * max_weight / weight` credit, where `max_weight` is the largest weight of any
//! vCPU, so the heaviest vCPU pays 1:1 and one of half its weight pays double.
//!
//! - **Pick.** A pCPU runs the *candidate* with the most credit. Candidates are the
//!   vCPUs that are runnable, not running on another pCPU, and not parked by their
//!   cap. A vCPU that just yielded goes behind every other candidate for that one
//!   pick. Ties go to the vCPU that started running longest ago, then to the lowest
//!   [`VcpuId`].
//! - **Slice.** The chosen vCPU runs until its credit would fall [`SWITCH_GRACE`]
//!   below the next-best candidate's (or to 0 if it has no rival), clamped to
//!   [`MIN_SLICE_NS`] ..= [`MAX_SLICE_NS`]. So competing candidates' credits stay
//!   within a slice of each other, and equals take turns in slices of a few ms
//!   (2.5 to 5 ms in the simulations) rather than ping-ponging at the minimum.
//! - **Reset.** When the candidate picked has no credit left (≤ 0), every vCPU gets
//!   [`CREDIT_INIT`] more (as many times as needed to make the pick positive), and
//!   no vCPU keeps more than `CREDIT_INIT`. Because the best candidate is at ≤ 0, so
//!   is every candidate: their debts carry over exactly, which is what makes the
//!   shares proportional to weight over time; only vCPUs that were not competing
//!   (blocked, running elsewhere) are clamped, so sleeping cannot bank credit.
//! - **Wake.** A woken vCPU keeps its credit. `wake` asks for an idle pCPU if there
//!   is one, else for the pCPU running the vCPU with the least credit, if the woken
//!   one has more: it preempts at once.
//! - **Caps.** Time is cut into accounting periods of [`CAP_PERIOD_NS`], aligned on
//!   multiples of it. A vCPU with cap `c` % has a budget of `c * period / 100` ns per
//!   period; the time it runs is taken from it, and at 0 it is *parked* until the next
//!   period, which refills the budget (an overrun is carried as debt, unused budget
//!   is not). A capped vCPU's slice ends no later than its budget or the period;
//!   while any runnable vCPU is parked, every slice (and idling) ends at the period
//!   boundary so the kernel asks again when the parked vCPU can run.
//!
//! The result is fair by weight among CPU-bound vCPUs, work-conserving (a pCPU idles
//! only when every runnable vCPU is running elsewhere or parked by its cap), and
//! O(vCPUs + pCPUs) per call.
//!
//! # Invariants
//!
//! - A vCPU is the current vCPU of at most one pCPU (`Entry::on_cpu` and
//!   `Cpu::curr` mirror each other), and only while it is runnable.
//! - Credit never exceeds `CREDIT_INIT` after a reset; arithmetic saturates.
//! - Time never runs backwards here (`now` is clamped to the latest seen).
//!
//! # Locking
//!
//! None: see the crate documentation.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::{Decision, Params, Policy, SchedError, VcpuId};

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
/// The cap accounting period.
pub const CAP_PERIOD_NS: u64 = 10_000_000;

struct Entry {
    params: Params,
    credit: i64,
    runnable: bool,
    yielded: bool,
    /// The pCPU this vCPU is current on.
    on_cpu: Option<u32>,
    /// Cap budget left in this period, ns; negative after an overrun.
    budget: i64,
    /// When it was last picked (tie-break: longest waiting first).
    last_start: u64,
}

impl Entry {
    fn budget_per_period(&self) -> i64 {
        // cap <= 100, so this is at most CAP_PERIOD_NS.
        (u64::from(self.params.cap) * CAP_PERIOD_NS / 100) as i64
    }

    fn parked(&self) -> bool {
        self.params.cap != 0 && self.budget <= 0
    }
}

#[derive(Clone, Copy)]
struct Cpu {
    curr: Option<VcpuId>,
    since: u64,
}

/// The credit2 policy for a fixed number of pCPUs. See the module documentation.
pub struct Credit2 {
    vcpus: BTreeMap<VcpuId, Entry>,
    cpus: Vec<Cpu>,
    max_weight: u32,
    /// Index of the current cap period (`now / CAP_PERIOD_NS`).
    period: u64,
    /// Latest `now` seen.
    now: u64,
}

impl Credit2 {
    /// A policy for `nr_cpus` pCPUs (at least 1).
    pub fn new(nr_cpus: u32) -> Credit2 {
        let cpu = Cpu {
            curr: None,
            since: 0,
        };
        Credit2 {
            vcpus: BTreeMap::new(),
            cpus: alloc::vec![cpu; nr_cpus.max(1) as usize],
            max_weight: crate::DEFAULT_WEIGHT,
            period: 0,
            now: 0,
        }
    }

    /// A vCPU's credit (for tests and diagnostics).
    pub fn credit(&self, v: VcpuId) -> Option<i64> {
        self.vcpus.get(&v).map(|e| e.credit)
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
        let Some(slot) = self.cpus.get_mut(cpu) else {
            return;
        };
        let ran = now.saturating_sub(slot.since);
        slot.since = now;
        let Some(v) = slot.curr else {
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
        for cpu in 0..self.cpus.len() {
            self.charge_cpu(cpu, now);
        }
    }

    /// Detaches `v` from the pCPU it is current on (after charging it).
    fn detach(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let cpu = self.vcpus.get(&v)?.on_cpu?;
        self.charge_cpu(cpu as usize, now);
        if let Some(slot) = self.cpus.get_mut(cpu as usize) {
            slot.curr = None;
        }
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.on_cpu = None;
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

    fn is_candidate(e: &Entry) -> bool {
        e.runnable && e.on_cpu.is_none() && !e.parked()
    }

    fn any_parked(&self) -> bool {
        self.vcpus.values().any(|e| e.runnable && e.parked())
    }

    fn reset_credit(&mut self, head_credit: i64) {
        // Enough top-ups to make the head positive again.
        let m = 1 + (head_credit.saturating_neg() / CREDIT_INIT).max(0);
        let add = m.saturating_mul(CREDIT_INIT);
        for e in self.vcpus.values_mut() {
            e.credit = e.credit.saturating_add(add).min(CREDIT_INIT);
        }
    }
}

impl Policy for Credit2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        let params = p.check()?;
        if self.vcpus.contains_key(&v) {
            return Err(SchedError::already_added(v));
        }
        let mut e = Entry {
            params,
            credit: CREDIT_INIT,
            runnable: false,
            yielded: false,
            on_cpu: None,
            budget: 0,
            last_start: 0,
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

    fn remove(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let now = self.clock(now);
        let cpu = self.detach(v, now);
        self.vcpus.remove(&v)?;
        self.recompute_max_weight();
        cpu
    }

    fn wake(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        let now = self.clock(now);
        let e = self.vcpus.get_mut(&v)?;
        if e.runnable {
            return None;
        }
        e.runnable = true;
        e.yielded = false;
        let parked = e.parked();
        // An idle pCPU: let it look (even for a parked vCPU, so that its idle slice
        // ends at the period boundary).
        if let Some(cpu) = self.cpus.iter().position(|c| c.curr.is_none()) {
            return u32::try_from(cpu).ok();
        }
        if parked {
            return None;
        }
        self.charge_all(now);
        let mine = self.vcpus.get(&v).map_or(i64::MIN, |e| e.credit);
        let victim = self
            .cpus
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let cur = c.curr?;
                Some((i, self.vcpus.get(&cur).map_or(i64::MIN, |e| e.credit)))
            })
            .min_by_key(|&(_, credit)| credit)?;
        if mine > victim.1 {
            u32::try_from(victim.0).ok()
        } else {
            None
        }
    }

    fn block(&mut self, v: VcpuId, now: u64) {
        let now = self.clock(now);
        self.detach(v, now);
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.runnable = false;
            e.yielded = false;
        }
    }

    fn yield_now(&mut self, v: VcpuId, now: u64) {
        let now = self.clock(now);
        if let Some(cpu) = self.vcpus.get(&v).and_then(|e| e.on_cpu) {
            self.charge_cpu(cpu as usize, now);
        }
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.yielded = e.runnable;
        }
    }

    fn pick(&mut self, cpu: u32, now: u64) -> Decision {
        let now = self.clock(now);
        let idx = cpu as usize;
        if idx >= self.cpus.len() {
            return Decision {
                next: None,
                slice_ns: u64::MAX,
            };
        }
        // Charge everyone running, so that credits and budgets are current before
        // comparing and before a period boundary refills budgets.
        self.charge_all(now);
        if let Some(prev) = self.cpus[idx].curr.take()
            && let Some(e) = self.vcpus.get_mut(&prev)
        {
            e.on_cpu = None;
        }
        self.roll_period(now);

        // Order: not yielded first, then more credit, then longest waiting, then the
        // lowest id (so that the choice is deterministic).
        let best = self
            .vcpus
            .iter()
            .filter(|(_, e)| Self::is_candidate(e))
            .max_by_key(|&(&id, e)| {
                use core::cmp::Reverse;
                (!e.yielded, e.credit, Reverse(e.last_start), Reverse(id))
            })
            .map(|(&id, e)| (id, e.credit));
        for e in self.vcpus.values_mut() {
            if Self::is_candidate(e) {
                e.yielded = false;
            }
        }
        let period_left = self.period_end().saturating_sub(now).max(1);

        let Some((next, head_credit)) = best else {
            let slice_ns = if self.any_parked() {
                period_left
            } else {
                u64::MAX
            };
            return Decision {
                next: None,
                slice_ns,
            };
        };
        if head_credit <= 0 {
            self.reset_credit(head_credit);
        }
        // The rival: the best other candidate, whose credit this one may burn down to.
        let rival_credit = self
            .vcpus
            .iter()
            .filter(|&(&id, e)| id != next && Self::is_candidate(e))
            .map(|(_, e)| e.credit)
            .max();

        let Some(e) = self.vcpus.get(&next) else {
            return Decision {
                next: None,
                slice_ns: u64::MAX,
            };
        };
        let credit = e.credit;
        let weight = e.params.weight;
        let capped = e.params.cap != 0;
        let budget = e.budget.max(1).unsigned_abs();
        let target = rival_credit.map_or(0, |c| c.saturating_sub(SWITCH_GRACE));
        let mut slice = self
            .c2t(credit.saturating_sub(target), weight)
            .clamp(MIN_SLICE_NS, MAX_SLICE_NS);
        if capped {
            slice = slice.min(budget).min(period_left);
        }
        if self.any_parked() {
            slice = slice.min(period_left);
        }

        if let Some(e) = self.vcpus.get_mut(&next) {
            e.on_cpu = Some(cpu);
            e.last_start = now;
        }
        self.cpus[idx] = Cpu {
            curr: Some(next),
            since: now,
        };
        Decision {
            next: Some(next),
            slice_ns: slice.max(1),
        }
    }

    fn is_runnable(&self, v: VcpuId) -> bool {
        self.vcpus.get(&v).is_some_and(|e| e.runnable)
    }
}
