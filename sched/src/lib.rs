//! vCPU scheduling policies: which vCPU each physical CPU runs next, and for how long.
//!
//! # What
//!
//! A [`Policy`] is Xen's `sched_ops` reduced to what a policy decides: it keeps the
//! set of vCPUs ([`VcpuId`]), whether each is runnable, and what each has consumed,
//! and answers [`Policy::pick`] with a [`Decision`]: the vCPU to run on a pCPU (or
//! idle) and the longest it may run before the kernel must ask again. Two policies:
//!
//! - [`credit2::Credit2`] (`"credit2"`, the default): weighted fair sharing with
//!   optional caps, work-conserving.
//! - [`null::Null`] (`"null"`): one vCPU per pCPU, no time slicing.
//!
//! [`by_name`] makes one from its name (the `sched=` command-line option).
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
//! 1. call `pick(cpu, now)` when the slice it got last ends, when the running vCPU
//!    blocks or yields, and when a `wake` tells it to preempt that pCPU;
//! 2. run exactly the vCPU it was given (or idle), until at most `now + slice_ns`;
//! 3. call `wake` when an event makes a blocked vCPU runnable, and act on its answer.
//!
//! `slice_ns == u64::MAX` means "no deadline": nothing changes until a `wake`.
//! A `now` earlier than one already seen is treated as no time passing.
//!
//! # Invariants (property-tested for both policies, 1 to 3 pCPUs)
//!
//! - `pick` returns only a vCPU that is added, runnable, and not the current vCPU of
//!   another pCPU.
//! - No call panics, whatever the sequence, ids or times.
//! - `credit2` never idles a pCPU while an uncapped runnable vCPU is waiting.
//!
//! # Locking
//!
//! None here: a policy is a plain value behind `&mut self`. The kernel holds one lock
//! around it (one runqueue for all pCPUs, as Xen's credit2 has per socket).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;

pub mod credit2;
pub mod null;

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
    /// no deadline (only a `wake` changes anything). Never 0.
    pub slice_ns: u64,
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
}

/// A scheduling policy (Xen's `struct scheduler`). See the crate documentation for
/// the contract. Calls naming an unknown vCPU or pCPU are ignored (or return
/// [`SchedError::Unknown`] / an idle decision): they are kernel bugs, not reasons
/// to stop the machine.
pub trait Policy {
    /// The policy's name, as [`by_name`] takes it.
    fn name(&self) -> &'static str;
    /// Adds a vCPU. It starts blocked: the kernel calls [`Policy::wake`] when it may run.
    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError>;
    /// Changes a vCPU's parameters (effective from now on).
    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError>;
    /// A vCPU's parameters.
    fn params(&self, v: VcpuId) -> Option<Params>;
    /// Removes a vCPU (the domain is being destroyed or the vCPU brought down for
    /// good). Returns the pCPU that must `pick` now (the one it ran on, or one it
    /// handed on to another vCPU), if any.
    fn remove(&mut self, v: VcpuId, now: u64) -> Option<u32>;
    /// Makes a vCPU runnable. Returns the pCPU the kernel should make `pick` now
    /// (it is idle, or it runs a vCPU the woken one should preempt), if any.
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
    fn add(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        (**self).add(v, p)
    }
    fn set_params(&mut self, v: VcpuId, p: Params) -> Result<(), SchedError> {
        (**self).set_params(v, p)
    }
    fn params(&self, v: VcpuId) -> Option<Params> {
        (**self).params(v)
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
/// as 1), or `None` for a name keel does not know.
pub fn by_name(name: &str, nr_cpus: u32) -> Option<Box<dyn Policy + Send>> {
    let nr_cpus = nr_cpus.max(1);
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
