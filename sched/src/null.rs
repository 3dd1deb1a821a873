//! `null`: one vCPU per pCPU, no time slicing (after Xen's null scheduler).
//!
//! # The algorithm
//!
//! Each vCPU is assigned to a pCPU when it is added: the lowest-numbered free one.
//! When every pCPU is taken, the vCPU waits in a FIFO queue. A pCPU runs its vCPU
//! whenever that vCPU is runnable and idles otherwise; there is no slice
//! (`slice_ns == u64::MAX`), so the kernel only asks again on block, yield or wake.
//! When an assigned vCPU is removed, its pCPU goes to the head of the queue. Weights
//! and caps are kept (so `params` reports them) but have no effect. Yield does
//! nothing: there is nobody to yield to.
//!
//! This suits partitioned systems (one vCPU per core, no overcommit), where it gives
//! the lowest overhead and jitter.
//!
//! # Invariants
//!
//! - A vCPU is either assigned to exactly one pCPU (`Entry::cpu`, mirrored by
//!   `Null::assigned`) or in the wait queue exactly once, never both.
//! - The wait queue is non-empty only while every pCPU is assigned.
//!
//! # Locking
//!
//! None: see the crate documentation.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::{Decision, Params, Policy, SchedError, VcpuId};

/// The policy's name.
pub const NAME: &str = "null";

struct Entry {
    params: Params,
    runnable: bool,
    cpu: Option<u32>,
}

/// The null policy for a fixed number of pCPUs. See the module documentation.
pub struct Null {
    vcpus: BTreeMap<VcpuId, Entry>,
    assigned: Vec<Option<VcpuId>>,
    waiting: VecDeque<VcpuId>,
}

impl Null {
    /// A policy for `nr_cpus` pCPUs (at least 1).
    pub fn new(nr_cpus: u32) -> Null {
        Null {
            vcpus: BTreeMap::new(),
            assigned: alloc::vec![None; nr_cpus.max(1) as usize],
            waiting: VecDeque::new(),
        }
    }

    /// The pCPU a vCPU is assigned to (`None` if waiting or unknown).
    pub fn cpu_of(&self, v: VcpuId) -> Option<u32> {
        self.vcpus.get(&v).and_then(|e| e.cpu)
    }

    /// The vCPUs waiting for a pCPU, first first.
    pub fn waiting(&self) -> impl Iterator<Item = VcpuId> + '_ {
        self.waiting.iter().copied()
    }
}

const NO_DEADLINE: u64 = u64::MAX;

impl Policy for Null {
    fn name(&self) -> &'static str {
        NAME
    }

    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        let params = p.check()?;
        if self.vcpus.contains_key(&v) {
            return Err(SchedError::already_added(v));
        }
        let free = self.assigned.iter().position(Option::is_none);
        let cpu = free.and_then(|i| u32::try_from(i).ok());
        match free {
            Some(i) => self.assigned[i] = Some(v),
            None => self.waiting.push_back(v),
        }
        self.vcpus.insert(
            v,
            Entry {
                params,
                runnable: false,
                cpu,
            },
        );
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

    fn remove(&mut self, v: VcpuId, _now: u64) -> Option<u32> {
        let e = self.vcpus.remove(&v)?;
        let Some(cpu) = e.cpu else {
            self.waiting.retain(|&w| w != v);
            return None;
        };
        let heir = self.waiting.pop_front();
        if let Some(slot) = self.assigned.get_mut(cpu as usize) {
            *slot = heir;
        }
        if let Some(h) = heir.and_then(|h| self.vcpus.get_mut(&h)) {
            h.cpu = Some(cpu);
        }
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
        let next = self
            .assigned
            .get(cpu as usize)
            .copied()
            .flatten()
            .filter(|v| self.vcpus.get(v).is_some_and(|e| e.runnable));
        Decision {
            next,
            slice_ns: NO_DEADLINE,
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
        Decision {
            next: None,
            slice_ns: NO_DEADLINE,
        }
    }

    fn runs(x: VcpuId) -> Decision {
        Decision {
            next: Some(x),
            slice_ns: NO_DEADLINE,
        }
    }

    #[test]
    fn one_vcpu_per_pcpu() {
        let mut n = Null::new(2);
        n.add(v(0, 0), Params::default()).unwrap();
        n.add(v(1, 0), Params::default()).unwrap();
        assert_eq!(n.cpu_of(v(0, 0)), Some(0));
        assert_eq!(n.cpu_of(v(1, 0)), Some(1));
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
        assert_eq!(n.cpu_of(v(1, 0)), Some(0));
        assert_eq!(n.waiting().count(), 0);
        assert_eq!(n.pick(0, 2), runs(v(1, 0)));
        assert_eq!(n.remove(v(1, 0), 3), Some(0));
        assert_eq!(n.pick(0, 3), idle());
        // The freed pCPU is taken by the next vCPU added.
        n.add(v(7, 1), Params::default()).unwrap();
        assert_eq!(n.cpu_of(v(7, 1)), Some(0));
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
    }
}
