//! vCPU scheduling policies: which vCPU each physical CPU runs next, and for how long.
//!
//! # What
//!
//! A [`Policy`] is Xen's `sched_ops` reduced to what a policy decides: it keeps the
//! set of vCPUs ([`VcpuId`]), whether each is runnable, where each may run (its hard
//! and soft affinity, a [`CpuSet`] each) and what each has consumed, and answers
//! [`Policy::pick`] with a [`Decision`]: the vCPU to run on a pCPU (or idle), the
//! longest it may run before the kernel must ask again, and another pCPU to kick if
//! the pick moved work there. Two policies:
//!
//! - [`credit2::Credit2`] (`"credit2"`, the default): a runqueue per pCPU, weighted
//!   fair sharing with optional caps, load balancing by pulling work, work-conserving.
//! - [`null::Null`] (`"null"`): one vCPU per pCPU, no time slicing.
//!
//! [`by_name`] makes one from its name (the `sched=` command-line option).
//!
//! # Affinity
//!
//! Every vCPU has a *hard* affinity (xl.cfg `cpus=`): the pCPUs it may run on, never
//! any other; and a *soft* affinity (`cpus_soft=`): the pCPUs it prefers, used when
//! one of them is free. Both start as "every pCPU" and "no preference" at
//! [`Policy::add`]; [`Policy::set_affinity`] changes them. The soft set that counts
//! is `soft ∩ hard`; when that is empty there is no preference (as in Xen).
//!
//! # The contract with the kernel
//!
//! The policy never reads a clock or touches hardware: every call that changes
//! something carries `now`, the kernel's monotonic time in ns. Time is charged
//! implicitly: the policy remembers which vCPU it gave each pCPU and since when, and
//! charges it `now - since` whenever that vCPU leaves the pCPU or changes state
//! ([`Policy::pick`] on its pCPU, [`Policy::block`], [`Policy::yield_now`],
//! [`Policy::remove`]). So the kernel must:
//!
//! 1. call `pick(cpu, now)` on a pCPU when the slice it got last ends, when the
//!    running vCPU blocks or yields, and when the pCPU is *kicked*;
//! 2. run exactly the vCPU it was given (or idle), until at most `now + slice_ns`;
//! 3. call `wake` when an event makes a blocked vCPU runnable;
//! 4. kick every pCPU a call names: the `Option<u32>` of [`Policy::wake`],
//!    [`Policy::remove`] and [`Policy::set_affinity`], and [`Decision::kick`]. To
//!    kick a pCPU is to make it call `pick` soon: directly if it is the caller's own
//!    pCPU, else by an IPI (Xen's `SCHEDULE_SOFTIRQ` raised on that CPU).
//!
//! A [`Decision::kick`] must be sent only once the pCPU that picked has stopped
//! running its previous vCPU and saved its state: it names the pCPU that previous
//! vCPU was moved to, which may run it as soon as it picks (Xen's
//! `context_saved` before the wake on the new pCPU).
//!
//! `slice_ns == u64::MAX` means "no deadline": nothing changes on that pCPU until it
//! is kicked. A `now` earlier than one already seen is treated as no time passing.
//!
//! # Invariants (property-tested for both policies, 1 to 8 pCPUs, with affinity)
//!
//! - `pick(cpu, _)` returns only a vCPU that is added, runnable, allowed on `cpu` by
//!   its hard affinity, and not the current vCPU of another pCPU.
//! - No call panics, whatever the sequence, ids, pCPUs or times.
//! - `credit2` never idles a pCPU while an uncapped runnable vCPU allowed on it is
//!   waiting anywhere, except the one vCPU an idle pCPU that was just kicked (and
//!   has not picked since) is about to run.
//! - `null` never idles a pCPU whose vCPU is runnable, and never leaves a pCPU
//!   unassigned while a waiting vCPU may use it.
//!
//! # Locking
//!
//! None here: a policy is a plain value behind `&mut self`, and the kernel holds one
//! lock around all of it (every pCPU's `pick`, every `wake`, `block`, ...). That is
//! correct for any number of pCPUs; it serialises scheduling decisions, which is
//! cheap while they are O(vCPUs + pCPUs) and the machine is small.
//!
//! Splitting it later (a lock per runqueue, as Xen's credit2 has) needs, in
//! `credit2`: each runqueue's waiting set, current vCPU and its members' credit
//! under that runqueue's lock (credit resets are already per runqueue); a pull or a
//! move between two runqueues taking both locks in pCPU order, the puller only
//! trying the second (Xen's `spin_trylock` in `balance_load`); placement and load
//! reading other runqueues' idleness and load as racy hints (Xen's `rqd->idle`
//! cpumask, as `credit2`'s set of pCPUs running nothing and its count of waiting
//! vCPUs would become); the cap budgets, the largest weight and the clock made per
//! vCPU or atomic; each vCPU's affinity and runqueue under its own lock, taken
//! before any runqueue's; and the vCPU table under every runqueue's lock where
//! `add` and `remove` renumber it. `null` would need only the assignment table
//! under its lock.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;

mod cpuset;
pub mod credit2;
pub mod null;

pub use cpuset::{CpuSet, MAX_CPUS};

#[cfg(test)]
mod sim;

/// A vCPU: its domain and its index in the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuId {
    pub dom: u16,
    pub vcpu: u32,
}

impl VcpuId {
    pub const fn new(dom: u16, vcpu: u32) -> VcpuId {
        VcpuId { dom, vcpu }
    }
}

/// Default weight (xl's `cpu_weight`, Xen's `CSCHED2_DEFAULT_WEIGHT`).
pub const DEFAULT_WEIGHT: u32 = 256;
/// Largest weight (Xen's is a `uint16_t`).
pub const MAX_WEIGHT: u32 = 65535;
/// Largest cap: a single vCPU can use at most one pCPU.
pub const MAX_CAP: u32 = 100;

/// A vCPU's share of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Relative weight, `1..=65535`: two CPU-bound vCPUs get CPU time in proportion.
    pub weight: u32,
    /// Upper limit in percent of one pCPU, `0..=100`; 0 means no cap.
    pub cap: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            weight: DEFAULT_WEIGHT,
            cap: 0,
        }
    }
}

impl Params {
    /// Checks the ranges; `Ok` means every policy accepts these parameters.
    pub fn check(self) -> Result<Params, SchedError> {
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return Err(SchedError::BadWeight {
                weight: self.weight,
            });
        }
        if self.cap > MAX_CAP {
            return Err(SchedError::BadCap { cap: self.cap });
        }
        Ok(self)
    }
}

/// What a pCPU does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run; `None` is idle.
    pub next: Option<VcpuId>,
    /// Run (or idle) at most this long before calling `pick` again; `u64::MAX` means
    /// no deadline (only a kick changes anything). Never 0.
    pub slice_ns: u64,
    /// Another pCPU to kick once this one has saved the state of the vCPU it ran
    /// until now: that vCPU stays runnable but was moved to the kicked pCPU (it may
    /// not run here any more, it prefers a pCPU that is free, or it was preempted
    /// here while a pCPU it may use is idle). Never the picking pCPU itself.
    pub kick: Option<u32>,
}

impl Decision {
    /// Idle with no deadline and nothing to kick.
    pub const IDLE: Decision = Decision {
        next: None,
        slice_ns: u64::MAX,
        kick: None,
    };
}

/// Why a policy refused a request. The variant's doc is the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, displaydoc::Display)]
pub enum SchedError {
    /// d{dom}v{vcpu} is already known to the scheduler
    AlreadyAdded { dom: u16, vcpu: u32 },
    /// d{dom}v{vcpu} is not known to the scheduler
    Unknown { dom: u16, vcpu: u32 },
    /// weight {weight} is out of range (1..=65535)
    BadWeight { weight: u32 },
    /// cap {cap}% is out of range (0..=100, 0 = no cap)
    BadCap { cap: u32 },
    /// the hard affinity names no pCPU: a vCPU must be allowed to run somewhere
    EmptyAffinity,
    /// pCPU {cpu} does not exist (the scheduler has pCPUs 0..{nr_cpus})
    NoSuchCpu { cpu: u32, nr_cpus: u32 },
    /// pCPU {cpu} is beyond what a CPU set holds (0..{max})
    CpuSetOverflow { cpu: u32, max: u32 },
}

impl SchedError {
    fn already_added(v: VcpuId) -> SchedError {
        SchedError::AlreadyAdded {
            dom: v.dom,
            vcpu: v.vcpu,
        }
    }

    fn unknown(v: VcpuId) -> SchedError {
        SchedError::Unknown {
            dom: v.dom,
            vcpu: v.vcpu,
        }
    }

    /// Checks a `(hard, soft)` affinity pair for a policy with `nr_cpus` pCPUs:
    /// neither set may name a pCPU `>= nr_cpus`, and `hard` must name one.
    fn check_affinity(hard: &CpuSet, soft: &CpuSet, nr_cpus: u32) -> Result<(), SchedError> {
        if let Some(cpu) = hard.iter().chain(soft.iter()).find(|&c| c >= nr_cpus) {
            return Err(SchedError::NoSuchCpu { cpu, nr_cpus });
        }
        if hard.is_empty() {
            return Err(SchedError::EmptyAffinity);
        }
        Ok(())
    }
}

/// A scheduling policy (Xen's `struct scheduler`). See the crate documentation for
/// the contract. Calls naming an unknown vCPU or pCPU are ignored (or return
/// [`SchedError::Unknown`] / an idle decision): they are kernel bugs, not reasons
/// to stop the machine.
///
/// Every `Option<u32>` a method returns is a pCPU the kernel must kick (make call
/// `pick` soon); `None` means no pCPU needs to.
pub trait Policy {
    /// The policy's name, as [`by_name`] takes it.
    fn name(&self) -> &'static str;
    /// How many pCPUs it schedules (`0..nr_cpus` are valid pCPU ids).
    fn nr_cpus(&self) -> u32;
    /// Adds a vCPU, allowed on every pCPU with no preference. It starts blocked: the
    /// kernel calls [`Policy::wake`] when it may run.
    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError>;
    /// Changes a vCPU's parameters (effective from now on).
    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError>;
    /// A vCPU's parameters.
    fn params(&self, v: VcpuId) -> Option<Params>;
    /// Sets a vCPU's hard affinity (the pCPUs it may run on; xl.cfg `cpus=`) and
    /// soft affinity (the pCPUs it prefers; `cpus_soft=`, empty for none). Refused
    /// if a set names a pCPU `>= nr_cpus` ([`SchedError::NoSuchCpu`]) or `hard` is
    /// empty ([`SchedError::EmptyAffinity`]); nothing changes then.
    ///
    /// Returns the pCPU to kick, if any: the pCPU the vCPU may be running on, if it
    /// must leave it (it is no longer allowed there, or it prefers a free pCPU); its
    /// next `pick` will not return the vCPU, and its [`Decision::kick`] names where
    /// the vCPU went. Otherwise, the pCPU a waiting vCPU was moved to, if that pCPU
    /// should pick now (it is idle or runs lower-priority work), or the pCPU that
    /// must pick because another vCPU may now have it.
    fn set_affinity(
        &mut self,
        v: VcpuId,
        hard: CpuSet,
        soft: CpuSet,
    ) -> Result<Option<u32>, SchedError>;
    /// A vCPU's `(hard, soft)` affinity, as last set.
    fn affinity(&self, v: VcpuId) -> Option<(CpuSet, CpuSet)>;
    /// The pCPU a vCPU belongs to: the one it runs on if it is running (Xen's
    /// `v->processor`), else the one whose runqueue it waits on or was last placed
    /// on. `None` for an unknown vCPU, or (`null`) one waiting for a pCPU.
    fn processor(&self, v: VcpuId) -> Option<u32>;
    /// Removes a vCPU (the domain is being destroyed or the vCPU brought down for
    /// good). Returns the pCPU that must `pick` now (the one it ran on, or one it
    /// handed on to another vCPU), if any.
    fn remove(&mut self, v: VcpuId, now: u64) -> Option<u32>;
    /// Makes a vCPU runnable and places it on a pCPU's runqueue. Returns the pCPU
    /// to kick: the pCPU it was placed on if that pCPU is idle, or if it runs a
    /// vCPU the woken one should preempt. `None` if the vCPU was already runnable or
    /// is unknown, or if it waits behind work at least as important (it runs when
    /// that pCPU's slice ends, or when another pCPU pulls it).
    fn wake(&mut self, v: VcpuId, now: u64) -> Option<u32>;
    /// Makes a vCPU not runnable (`SCHEDOP_block`, `_poll`, down, paused). A running
    /// vCPU is charged up to `now`; its pCPU must `pick` again.
    fn block(&mut self, v: VcpuId, now: u64);
    /// `SCHEDOP_yield`: the vCPU stays runnable but goes behind its peers; its pCPU
    /// must `pick` again.
    fn yield_now(&mut self, v: VcpuId, now: u64);
    /// Charges whatever ran on `cpu` up to `now`, then decides what runs there next.
    fn pick(&mut self, cpu: u32, now: u64) -> Decision;
    /// Whether the vCPU is added and runnable (possibly waiting, or parked by a cap).
    fn is_runnable(&self, v: VcpuId) -> bool;
}

/// A boxed policy (what [`by_name`] returns) is a policy.
impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn nr_cpus(&self) -> u32 {
        (**self).nr_cpus()
    }
    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        (**self).add(v, p)
    }
    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        (**self).set_params(v, p)
    }
    fn params(&self, v: VcpuId) -> Option<Params> {
        (**self).params(v)
    }
    fn set_affinity(
        &mut self,
        v: VcpuId,
        hard: CpuSet,
        soft: CpuSet,
    ) -> Result<Option<u32>, SchedError> {
        (**self).set_affinity(v, hard, soft)
    }
    fn affinity(&self, v: VcpuId) -> Option<(CpuSet, CpuSet)> {
        (**self).affinity(v)
    }
    fn processor(&self, v: VcpuId) -> Option<u32> {
        (**self).processor(v)
    }
    fn remove(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        (**self).remove(v, now)
    }
    fn wake(&mut self, v: VcpuId, now: u64) -> Option<u32> {
        (**self).wake(v, now)
    }
    fn block(&mut self, v: VcpuId, now: u64) {
        (**self).block(v, now)
    }
    fn yield_now(&mut self, v: VcpuId, now: u64) {
        (**self).yield_now(v, now)
    }
    fn pick(&mut self, cpu: u32, now: u64) -> Decision {
        (**self).pick(cpu, now)
    }
    fn is_runnable(&self, v: VcpuId) -> bool {
        (**self).is_runnable(v)
    }
}

/// The policy named `name` (`"credit2"`, `"null"`) for `nr_cpus` pCPUs (0 is taken
/// as 1, more than [`MAX_CPUS`] as `MAX_CPUS`), or `None` for a name keel does not
/// know.
pub fn by_name(name: &str, nr_cpus: u32) -> Option<Box<dyn Policy + Send>> {
    match name {
        credit2::NAME => Some(Box::new(credit2::Credit2::new(nr_cpus))),
        null::NAME => Some(Box::new(null::Null::new(nr_cpus))),
        _ => None,
    }
}

/// The policy used when none is named.
pub const DEFAULT_POLICY: &str = credit2::NAME;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_knows_both_policies() {
        assert_eq!(by_name("credit2", 1).map(|p| p.name()), Some("credit2"));
        assert_eq!(by_name("null", 2).map(|p| p.name()), Some("null"));
        assert_eq!(
            by_name(DEFAULT_POLICY, 0).map(|p| p.name()),
            Some("credit2")
        );
        assert!(by_name("credit", 1).is_none());
        assert!(by_name("", 1).is_none());
        assert_eq!(by_name("credit2", 0).map(|p| p.nr_cpus()), Some(1));
        assert_eq!(by_name("null", 8).map(|p| p.nr_cpus()), Some(8));
        assert_eq!(by_name("null", 1000).map(|p| p.nr_cpus()), Some(MAX_CPUS));
    }

    #[test]
    fn affinity_is_checked() {
        let all = CpuSet::all(4);
        let none = CpuSet::new();
        assert_eq!(SchedError::check_affinity(&all, &none, 4), Ok(()));
        assert_eq!(
            SchedError::check_affinity(&none, &all, 4),
            Err(SchedError::EmptyAffinity)
        );
        let five = CpuSet::single(5).unwrap();
        assert_eq!(
            SchedError::check_affinity(&five, &none, 4),
            Err(SchedError::NoSuchCpu { cpu: 5, nr_cpus: 4 })
        );
        assert_eq!(
            SchedError::check_affinity(&all, &five, 4),
            Err(SchedError::NoSuchCpu { cpu: 5, nr_cpus: 4 }),
            "soft affinity is checked too"
        );
        assert_eq!(
            alloc::format!("{}", SchedError::NoSuchCpu { cpu: 5, nr_cpus: 4 }),
            "pCPU 5 does not exist (the scheduler has pCPUs 0..4)"
        );
    }

    #[test]
    fn params_are_checked() {
        assert!(Params::default().check().is_ok());
        let p = |weight, cap| Params { weight, cap }.check();
        assert_eq!(p(0, 0), Err(SchedError::BadWeight { weight: 0 }));
        assert_eq!(p(65536, 0), Err(SchedError::BadWeight { weight: 65536 }));
        assert_eq!(p(1, 101), Err(SchedError::BadCap { cap: 101 }));
        assert!(p(65535, 100).is_ok());
        assert_eq!(
            alloc::format!("{}", SchedError::BadCap { cap: 101 }),
            "cap 101% is out of range (0..=100, 0 = no cap)"
        );
    }
}
