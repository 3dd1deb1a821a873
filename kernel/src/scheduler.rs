//! The scheduling policy (`keel_sched`) behind one lock, and the scheduler's clock.
//!
//! # Locking
//! [`SCHED`] is the innermost lock keel takes for domains: nothing else is taken
//! while it is held (a wake first updates the vCPU's own state under its `st` lock,
//! drops it, then tells the policy). The policy decides for every pCPU under this
//! one lock; `keel_sched`'s `# Locking` note says what splitting it per run queue
//! would take.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use keel_sched::{Decision, Params, Policy, VcpuId};

use crate::clock;

static SCHED: spin::Mutex<Option<Box<dyn Policy + Send>>> = spin::Mutex::new(None);

/// keel's own time between slices (switching, scheduling), which the scheduler's
/// clock leaves out: a vCPU is charged for the time it ran (and exits handled in
/// its slice), not for keel's switch to or from it. Under emulation a switch can
/// cost as much as a short slice, and charging it would skew shares against
/// vCPUs with short slices. Summed over pCPUs, as the policy's clock is one.
static OVERHEAD: AtomicU64 = AtomicU64::new(0);

/// Installs the policy (once, at boot).
pub fn init(policy: Box<dyn Policy + Send>) {
    *SCHED.lock() = Some(policy);
}

/// The policy's name, for the banner.
pub fn name() -> &'static str {
    SCHED.lock().as_ref().map_or("none", |p| p.name())
}

/// Runs `f` on the policy, if there is one.
fn with<R>(f: impl FnOnce(&mut dyn Policy) -> R) -> Option<R> {
    let mut g = SCHED.lock();
    g.as_mut().map(|p| f(p.as_mut()))
}

/// The scheduler's clock: system time less keel's switching overhead.
pub fn now() -> u64 {
    clock::now().saturating_sub(OVERHEAD.load(Ordering::Relaxed))
}

/// Adds `ns` of keel's own time to what the scheduler's clock leaves out.
pub fn add_overhead(ns: u64) {
    OVERHEAD.fetch_add(ns, Ordering::Relaxed);
}

/// Adds a vCPU with its (hard, soft) affinity, if it has one, and makes it
/// runnable if `runnable` (placed where its affinity lets it run from the
/// first wake); a vCPU that starts down waits for its first wake.
pub fn add(
    v: VcpuId,
    p: Params,
    affinity: Option<(keel_sched::CpuSet, keel_sched::CpuSet)>,
    runnable: bool,
) -> Result<(), keel_sched::SchedError> {
    with(|s| {
        s.add(v, p)?;
        if let Some((hard, soft)) = affinity
            && let Err(e) = s.set_affinity(v, hard, soft)
        {
            s.remove(v, now());
            return Err(e);
        }
        if runnable {
            s.wake(v, now());
        }
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// Removes a vCPU (its domain is ending); the pCPU to kick, if any.
pub fn remove(v: VcpuId) -> Option<u32> {
    with(|s| s.remove(v, now())).flatten()
}

/// Makes a vCPU runnable; the pCPU the policy wants kicked, if any.
pub fn wake(v: VcpuId) -> Option<u32> {
    with(|s| s.wake(v, now())).flatten()
}

/// The vCPU blocks.
pub fn block(v: VcpuId) {
    with(|s| s.block(v, now()));
}

/// The vCPU yields.
pub fn yield_now(v: VcpuId) {
    with(|s| s.yield_now(v, now()));
}

/// What pCPU `cpu` runs next.
pub fn pick(cpu: u32) -> Decision {
    with(|s| s.pick(cpu, now())).unwrap_or(Decision::IDLE)
}
