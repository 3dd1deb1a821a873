//! `null`: one vCPU per pCPU, no time slicing (after Xen's null scheduler).
//!
//! # The algorithm
//!
//! Each vCPU is *assigned* a pCPU of its own when it is added: a free one in its
//! hard affinity, preferring its soft affinity, lowest-numbered first. When no such
//! pCPU is free, the vCPU waits in a queue in admission order (the order of `add`;
//! a vCPU sent back to the queue keeps its place). A pCPU runs its vCPU whenever
//! that vCPU is runnable and idles otherwise; there is no slice
//! (`slice_ns == u64::MAX`), so the kernel only asks again on block, yield or a kick.
//! When a pCPU is freed (its vCPU is removed, or moves away), it goes to the first
//! waiting vCPU whose hard affinity allows it. Weights and caps are kept (so
//! `params` reports them) but have no effect. Yield does nothing: there is nobody
//! to yield to.
//!
//! A vCPU *moves* when its pCPU is no longer in its hard affinity, or is not in its
//! soft affinity while a pCPU that is, is free. A runnable vCPU moves only when its
//! pCPU next picks (it may be running there until then: [`Policy::set_affinity`]
//! returns that pCPU to kick, and the pick's [`Decision::kick`] names the pCPU the
//! vCPU moved to); a blocked one moves at once. It goes to a free pCPU it may use,
//! or back to the queue.
//!
//! This suits partitioned systems (one vCPU per core, no overcommit), where it gives
//! the lowest overhead and jitter.
//!
//! # Invariants
//!
//! - A vCPU is either assigned to exactly one pCPU (`Entry::cpu`, mirrored by
//!   `Null::assigned`) or in the wait queue exactly once, never both.
//! - No pCPU in a waiting vCPU's hard affinity is free.
//! - A vCPU is assigned to a pCPU outside its hard affinity only after
//!   `set_affinity` took that pCPU away while it was runnable, until that pCPU
//!   picks; `pick` never returns it there.
//!
//! # Locking
//!
//! None: see the crate documentation.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::{CpuSet, Decision, Params, Policy, SchedError, VcpuId};

/// The policy's name.
pub const NAME: &str = "null";

struct Entry {
    params: Params,
    runnable: bool,
    cpu: Option<u32>,
    hard: CpuSet,
    soft: CpuSet,
    /// Admission order: the place in the wait queue.
    seq: u64,
}

impl Entry {
    /// Its soft affinity within its hard one, or (if that is empty) its hard one.
    fn preferred(&self) -> CpuSet {
        let s = self.soft.intersect(&self.hard);
        if s.is_empty() { self.hard } else { s }
    }
}

/// The null policy for a fixed number of pCPUs. See the module documentation.
pub struct Null {
    vcpus: BTreeMap<VcpuId, Entry>,
    assigned: Vec<Option<VcpuId>>,
    /// The wait queue, by admission order.
    waiting: BTreeMap<u64, VcpuId>,
    next_seq: u64,
}

impl Null {
    /// A policy for `nr_cpus` pCPUs (at least 1, at most [`crate::MAX_CPUS`]).
    pub fn new(nr_cpus: u32) -> Null {
        Null {
            vcpus: BTreeMap::new(),
            assigned: alloc::vec![None; nr_cpus.clamp(1, crate::MAX_CPUS) as usize],
            waiting: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The vCPUs waiting for a pCPU, first first.
    pub fn waiting(&self) -> impl Iterator<Item = VcpuId> + '_ {
        self.waiting.values().copied()
    }

    fn nr(&self) -> u32 {
        // At most MAX_CPUS (see `new`).
        self.assigned.len() as u32
    }

    fn is_free(&self, cpu: u32) -> bool {
        self.assigned.get(cpu as usize).is_some_and(Option::is_none)
    }

    /// A free pCPU for `e` other than `exclude`: preferred ones first, then allowed
    /// ones, lowest first.
    fn free_cpu_for(&self, e: &Entry, exclude: Option<u32>) -> Option<u32> {
        let preferred = e.preferred();
        preferred
            .iter()
            .chain(e.hard.iter())
            .find(|&c| Some(c) != exclude && self.is_free(c))
    }

    /// Whether `v`, assigned to `cpu`, must or should move (see the module
    /// documentation).
    fn should_leave(&self, e: &Entry, cpu: u32) -> bool {
        let preferred = e.preferred();
        !e.hard.contains(cpu)
            || (!preferred.contains(cpu) && preferred.iter().any(|c| self.is_free(c)))
    }

    fn assign(&mut self, v: VcpuId, cpu: u32) {
        if let Some(slot) = self.assigned.get_mut(cpu as usize) {
            *slot = Some(v);
        }
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.cpu = Some(cpu);
        }
    }

    /// Gives unassigned `v` a free pCPU other than `exclude`, or a place in the
    /// queue. Returns the pCPU to kick: the one it got, if it is runnable.
    fn seat(&mut self, v: VcpuId, exclude: Option<u32>) -> Option<u32> {
        let e = self.vcpus.get(&v)?;
        let (seq, runnable) = (e.seq, e.runnable);
        match self.free_cpu_for(e, exclude) {
            Some(c) => {
                self.assign(v, c);
                runnable.then_some(c)
            }
            None => {
                self.waiting.insert(seq, v);
                None
            }
        }
    }

    /// Hands free `cpu` to the first waiting vCPU allowed on it.
    fn hand_on(&mut self, cpu: u32) {
        let heir = self.waiting.iter().find_map(|(&seq, v)| {
            let allowed = self.vcpus.get(v).is_some_and(|e| e.hard.contains(cpu));
            allowed.then_some((seq, *v))
        });
        if let Some((seq, v)) = heir {
            self.waiting.remove(&seq);
            self.assign(v, cpu);
        }
    }

    /// Moves `v` off `cpu` (to a free pCPU or the queue) and hands `cpu` on.
    /// Returns the pCPU `v` got, if it is runnable and so must be kicked there.
    fn leave(&mut self, v: VcpuId, cpu: u32) -> Option<u32> {
        if let Some(slot) = self.assigned.get_mut(cpu as usize) {
            *slot = None;
        }
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.cpu = None;
        }
        // Not back to `cpu`: it must or should not be there.
        let kick = self.seat(v, Some(cpu));
        self.hand_on(cpu);
        kick
    }

    /// Checks the invariants of the module documentation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        for (&v, e) in &self.vcpus {
            let queued = self.waiting.values().filter(|&&w| w == v).count();
            match e.cpu {
                Some(c) if self.assigned.get(c as usize) != Some(&Some(v)) || queued != 0 => {
                    return Err(format!("{v:?} assigned to {c} but not there, or queued"));
                }
                None if queued != 1 || self.waiting.get(&e.seq) != Some(&v) => {
                    return Err(format!("{v:?} is neither assigned nor queued once"));
                }
                None => {
                    if let Some(c) = e.hard.iter().find(|&c| self.is_free(c)) {
                        return Err(format!("{v:?} waits while pCPU {c} is free"));
                    }
                }
                Some(_) => {}
            }
        }
        for (c, slot) in self.assigned.iter().enumerate() {
            if let Some(v) = slot
                && self.vcpus.get(v).and_then(|e| e.cpu) != Some(c as u32)
            {
                return Err(format!("pCPU {c} assigned to {v:?} which is not there"));
            }
        }
        Ok(())
    }
}

const NO_DEADLINE: u64 = u64::MAX;

impl Policy for Null {
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
        let seq = self.next_seq;
        self.next_seq += 1;
        self.vcpus.insert(
            v,
            Entry {
                params,
                runnable: false,
                cpu: None,
                hard: CpuSet::all(self.nr()),
                soft: CpuSet::new(),
                seq,
            },
        );
        self.seat(v, None);
        Ok(())
    }

    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        let params = p.check()?;
        let e = self.vcpus.get_mut(&v).ok_or(SchedError::unknown(v))?;
        e.params = params;
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
        let e = self.vcpus.get_mut(&v).ok_or(SchedError::unknown(v))?;
        e.hard = hard;
        e.soft = soft;
        let (cpu, runnable, seq) = (e.cpu, e.runnable, e.seq);
        let Some(cpu) = cpu else {
            // Waiting: a pCPU it may now use may be free.
            self.waiting.remove(&seq);
            return Ok(self.seat(v, None));
        };
        let leave = self
            .vcpus
            .get(&v)
            .is_some_and(|e| self.should_leave(e, cpu));
        if !leave {
            return Ok(None);
        }
        if runnable {
            // It may be running there: that pCPU's next pick moves it.
            return Ok(Some(cpu));
        }
        // Blocked: move it now; `cpu` must pick if its new vCPU can run.
        self.leave(v, cpu);
        let heir_runs = self
            .assigned
            .get(cpu as usize)
            .copied()
            .flatten()
            .is_some_and(|h| self.vcpus.get(&h).is_some_and(|e| e.runnable));
        Ok(heir_runs.then_some(cpu))
    }

    fn affinity(&self, v: VcpuId) -> Option<(CpuSet, CpuSet)> {
        self.vcpus.get(&v).map(|e| (e.hard, e.soft))
    }

    fn processor(&self, v: VcpuId) -> Option<u32> {
        self.vcpus.get(&v).and_then(|e| e.cpu)
    }

    fn remove(&mut self, v: VcpuId, _now: u64) -> Option<u32> {
        let e = self.vcpus.remove(&v)?;
        let Some(cpu) = e.cpu else {
            self.waiting.remove(&e.seq);
            return None;
        };
        if let Some(slot) = self.assigned.get_mut(cpu as usize) {
            *slot = None;
        }
        self.hand_on(cpu);
        Some(cpu)
    }

    fn wake(&mut self, v: VcpuId, _now: u64) -> Option<u32> {
        let e = self.vcpus.get_mut(&v)?;
        if e.runnable {
            return None;
        }
        e.runnable = true;
        e.cpu
    }

    fn block(&mut self, v: VcpuId, _now: u64) {
        if let Some(e) = self.vcpus.get_mut(&v) {
            e.runnable = false;
        }
    }

    fn yield_now(&mut self, _v: VcpuId, _now: u64) {}

    fn pick(&mut self, cpu: u32, _now: u64) -> Decision {
        let Some(&slot) = self.assigned.get(cpu as usize) else {
            return Decision::IDLE;
        };
        let mut kick = None;
        if let Some(v) = slot
            && self
                .vcpus
                .get(&v)
                .is_some_and(|e| self.should_leave(e, cpu))
        {
            kick = self.leave(v, cpu);
        }
        let next = self
            .assigned
            .get(cpu as usize)
            .copied()
            .flatten()
            .filter(|v| {
                self.vcpus
                    .get(v)
                    .is_some_and(|e| e.runnable && e.hard.contains(cpu))
            });
        Decision {
            next,
            slice_ns: NO_DEADLINE,
            kick,
        }
    }

    fn is_runnable(&self, v: VcpuId) -> bool {
        self.vcpus.get(&v).is_some_and(|e| e.runnable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn v(dom: u16, vcpu: u32) -> VcpuId {
        VcpuId::new(dom, vcpu)
    }

    fn idle() -> Decision {
        Decision::IDLE
    }

    fn runs(x: VcpuId) -> Decision {
        Decision {
            next: Some(x),
            slice_ns: NO_DEADLINE,
            kick: None,
        }
    }

    fn set(cpus: &[u32]) -> CpuSet {
        let mut s = CpuSet::new();
        for &c in cpus {
            s.insert(c).unwrap();
        }
        s
    }

    #[test]
    fn one_vcpu_per_pcpu() {
        let mut n = Null::new(2);
        n.add(v(0, 0), Params::default()).unwrap();
        n.add(v(1, 0), Params::default()).unwrap();
        assert_eq!(n.processor(v(0, 0)), Some(0));
        assert_eq!(n.processor(v(1, 0)), Some(1));
        // Added blocked: both pCPUs idle.
        assert_eq!(n.pick(0, 0), idle());
        assert_eq!(n.pick(1, 0), idle());
        assert_eq!(n.wake(v(1, 0), 5), Some(1));
        assert_eq!(n.wake(v(1, 0), 6), None, "already runnable");
        assert_eq!(n.pick(1, 7), runs(v(1, 0)));
        assert_eq!(n.pick(0, 7), idle(), "never runs another pCPU's vCPU");
        n.yield_now(v(1, 0), 8);
        assert_eq!(n.pick(1, 9), runs(v(1, 0)), "yield: nobody to yield to");
        n.block(v(1, 0), 10);
        assert_eq!(n.pick(1, 10), idle());
        assert!(!n.is_runnable(v(1, 0)));
    }

    #[test]
    fn extra_vcpus_queue_and_removal_hands_the_pcpu_on() {
        let mut n = Null::new(1);
        for i in 0..3 {
            n.add(v(i, 0), Params::default()).unwrap();
            n.wake(v(i, 0), 0);
        }
        assert_eq!(n.waiting().collect::<Vec<_>>(), [v(1, 0), v(2, 0)]);
        assert_eq!(n.pick(0, 0), runs(v(0, 0)));
        // A waiting vCPU is runnable but never picked.
        assert!(n.is_runnable(v(2, 0)));
        assert_eq!(n.remove(v(2, 0), 1), None, "removed from the queue");
        assert_eq!(n.waiting().collect::<Vec<_>>(), [v(1, 0)]);
        assert_eq!(n.remove(v(0, 0), 2), Some(0));
        assert_eq!(n.processor(v(1, 0)), Some(0));
        assert_eq!(n.waiting().count(), 0);
        assert_eq!(n.pick(0, 2), runs(v(1, 0)));
        assert_eq!(n.remove(v(1, 0), 3), Some(0));
        assert_eq!(n.pick(0, 3), idle());
        // The freed pCPU is taken by the next vCPU added.
        n.add(v(7, 1), Params::default()).unwrap();
        assert_eq!(n.processor(v(7, 1)), Some(0));
    }

    #[test]
    fn errors_and_unknowns() {
        let mut n = Null::new(1);
        n.add(v(0, 0), Params::default()).unwrap();
        assert_eq!(
            n.add(v(0, 0), Params::default()),
            Err(SchedError::AlreadyAdded { dom: 0, vcpu: 0 })
        );
        assert_eq!(
            n.set_params(v(9, 9), Params::default()),
            Err(SchedError::Unknown { dom: 9, vcpu: 9 })
        );
        let p = Params { weight: 5, cap: 0 };
        n.set_params(v(0, 0), p).unwrap();
        assert_eq!(n.params(v(0, 0)), Some(p));
        assert_eq!(n.wake(v(9, 9), 0), None);
        n.block(v(9, 9), 0);
        assert_eq!(n.remove(v(9, 9), 0), None);
        assert_eq!(n.pick(5, 0), idle(), "no such pCPU");
        assert_eq!(n.processor(v(9, 9)), None);
        assert_eq!(
            n.set_affinity(v(9, 9), set(&[0]), CpuSet::new()),
            Err(SchedError::Unknown { dom: 9, vcpu: 9 })
        );
        assert_eq!(
            n.set_affinity(v(0, 0), set(&[1]), CpuSet::new()),
            Err(SchedError::NoSuchCpu { cpu: 1, nr_cpus: 1 })
        );
        assert_eq!(
            n.set_affinity(v(0, 0), CpuSet::new(), set(&[0])),
            Err(SchedError::EmptyAffinity)
        );
        assert_eq!(
            n.affinity(v(0, 0)),
            Some((CpuSet::all(1), CpuSet::new())),
            "a refused affinity changes nothing"
        );
    }

    #[test]
    fn hard_affinity_chooses_the_pcpu_and_the_queue_respects_it() {
        let mut n = Null::new(3);
        let (a, b, c, d) = (v(1, 0), v(2, 0), v(3, 0), v(4, 0));
        n.add(a, Params::default()).unwrap();
        assert_eq!(n.processor(a), Some(0));
        // Pinning a blocked vCPU moves it at once; pCPU 0 is free again.
        assert_eq!(n.set_affinity(a, set(&[2]), CpuSet::new()), Ok(None));
        assert_eq!(n.processor(a), Some(2));
        n.add(b, Params::default()).unwrap();
        n.add(c, Params::default()).unwrap();
        assert_eq!((n.processor(b), n.processor(c)), (Some(0), Some(1)));
        // d may only use pCPU 2, which a has: it waits, though nothing else does.
        n.add(d, Params::default()).unwrap();
        n.set_affinity(d, set(&[2]), CpuSet::new()).unwrap();
        assert_eq!(n.processor(d), None);
        for x in [a, b, c, d] {
            n.wake(x, 0);
        }
        // b leaving frees pCPU 0, which d may not use: d keeps waiting.
        assert_eq!(n.remove(b, 1), Some(0));
        assert_eq!(n.processor(d), None);
        assert_eq!(n.pick(0, 1), idle());
        // Widening d's affinity seats it on the free pCPU 0, which must pick.
        assert_eq!(n.set_affinity(d, set(&[0, 2]), CpuSet::new()), Ok(Some(0)));
        assert_eq!(n.pick(0, 2), runs(d));
    }

    #[test]
    fn moving_a_running_vcpu_waits_for_its_pcpu_to_pick() {
        let mut n = Null::new(2);
        let (a, b, c) = (v(1, 0), v(2, 0), v(3, 0));
        for x in [a, b, c] {
            n.add(x, Params::default()).unwrap();
            n.wake(x, 0);
        }
        assert_eq!(n.pick(0, 0), runs(a));
        assert_eq!(n.pick(1, 0), runs(b));
        assert_eq!(n.waiting().collect::<Vec<_>>(), [c]);
        // a may no longer run on 0: pCPU 0 is told to pick, and until it does a
        // stays there (it may be running), so no other pCPU can run it.
        assert_eq!(n.set_affinity(a, set(&[1]), CpuSet::new()), Ok(Some(0)));
        assert_eq!(n.processor(a), Some(0));
        // pCPU 0 picks: a goes back to the queue (pCPU 1 is taken), in its
        // admission place ahead of c; c may use pCPU 0 and gets it.
        let d = n.pick(0, 1);
        assert_eq!(d, runs(c));
        assert_eq!(n.waiting().collect::<Vec<_>>(), [a]);
        // When b leaves, a takes pCPU 1, which must pick.
        assert_eq!(n.remove(b, 2), Some(1));
        assert_eq!(n.pick(1, 2), runs(a));
    }

    #[test]
    fn soft_affinity_prefers_a_free_pcpu_and_moves_to_one() {
        let mut n = Null::new(3);
        let (a, b) = (v(1, 0), v(2, 0));
        n.add(a, Params::default()).unwrap();
        n.wake(a, 0);
        assert_eq!(n.pick(0, 0), runs(a));
        // a prefers pCPU 2, which is free: pCPU 0 must let it go, and its pick
        // names pCPU 2 as the one to kick.
        assert_eq!(n.set_affinity(a, CpuSet::all(3), set(&[2])), Ok(Some(0)));
        assert_eq!(
            n.pick(0, 1),
            Decision {
                next: None,
                slice_ns: NO_DEADLINE,
                kick: Some(2)
            }
        );
        assert_eq!(n.processor(a), Some(2));
        assert_eq!(n.pick(2, 1), runs(a));
        // b prefers pCPU 2 too, but it is taken: b gets a free one, and stays.
        n.add(b, Params::default()).unwrap();
        assert_eq!(n.set_affinity(b, CpuSet::all(3), set(&[2])), Ok(None));
        assert_eq!(n.processor(b), Some(0));
    }
}
