//! The scheduling hot paths allocate nothing.
//!
//! The kernel calls `yield_now` + `pick` for every `SCHEDOP_yield`, and `block`,
//! `wake` and `pick` for every event, with its scheduler lock held; a heap
//! allocation there costs more than the scheduling decision itself. This test binary
//! installs a global allocator that counts, per thread, every allocation,
//! reallocation and free, drives both policies through those calls after a warm-up,
//! and asserts that the count did not move.
//!
//! It is an integration test (a binary of its own) because a `#[global_allocator]`
//! is process-wide, and the library forbids `unsafe`, which implementing one needs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use keel_sched::credit2::Credit2;
use keel_sched::null::Null;
use keel_sched::{CpuSet, Params, Policy, VcpuId};

/// Passes everything on to [`System`], counting calls on the calling thread (the
/// test harness runs tests on threads of their own, which must not disturb each
/// other's counts).
struct Counting;

thread_local! {
    /// Allocations and reallocations, and frees, on this thread.
    static CALLS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn count(alloc: u64, free: u64) {
    // `try_with`: the slot may be gone while the thread is exiting.
    let _ = CALLS.try_with(|c| {
        let (a, f) = c.get();
        c.set((a + alloc, f + free));
    });
}

fn calls() -> (u64, u64) {
    CALLS.with(Cell::get)
}

// SAFETY: every method passes its arguments on unchanged to `System`, which upholds
// the `GlobalAlloc` contract; counting touches only a const-initialised
// thread-local `Cell` with no destructor, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, 0);
        // SAFETY: our caller upholds `alloc`'s contract (a non-zero-sized layout).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(1, 0);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, 1);
        // SAFETY: our caller passes a block this allocator (that is, `System`)
        // returned, with the layout it was allocated with.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, 0);
        // SAFETY: our caller upholds `realloc`'s contract: `ptr` came from this
        // allocator with `layout`, and `new_size` is non-zero and fits `isize`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const US: u64 = 1_000;

/// A kernel as small as the contract allows: what each pCPU runs, and the pCPUs
/// that must pick. Fixed-size, so that driving the policy allocates nothing.
struct Kernel<P: Policy> {
    p: P,
    now: u64,
    running: [Option<VcpuId>; 4],
    need_pick: [bool; 4],
}

impl<P: Policy> Kernel<P> {
    fn new(p: P) -> Self {
        assert!(p.nr_cpus() <= 4);
        Kernel {
            p,
            now: 0,
            running: [None; 4],
            need_pick: [true; 4],
        }
    }

    fn kick(&mut self, cpu: Option<u32>) {
        if let Some(c) = cpu {
            self.need_pick[c as usize] = true;
        }
    }

    /// Picks wherever the kernel must, until no pick kicks another pCPU.
    fn settle(&mut self) {
        while let Some(c) = self.need_pick.iter().position(|&n| n) {
            self.need_pick[c] = false;
            let d = self.p.pick(c as u32, self.now);
            self.running[c] = d.next;
            self.kick(d.kick);
        }
    }

    /// One round on `cpu`, as the kernel does it: the running vCPU yields
    /// (`SCHEDOP_yield`), or blocks and is woken by an event; then every pCPU that
    /// must pick does.
    fn round(&mut self, cpu: usize, block: bool) {
        // Uneven steps, so that slices end, credits reset and cap periods roll.
        self.now += 37 * US + (self.now / US) % 23 * US;
        if let Some(v) = self.running[cpu] {
            if block {
                self.p.block(v, self.now);
                self.running[cpu] = None;
                self.need_pick[cpu] = true;
                self.settle();
                self.now += 5 * US;
                let k = self.p.wake(v, self.now);
                self.kick(k);
            } else {
                self.p.yield_now(v, self.now);
                self.need_pick[cpu] = true;
            }
        } else {
            self.need_pick[cpu] = true;
        }
        self.settle();
    }

    fn rounds(&mut self, n: usize) {
        let nr = self.p.nr_cpus() as usize;
        for i in 0..n {
            self.round(i % nr, i % 3 == 2);
        }
    }
}

fn vcpu(i: u32) -> VcpuId {
    VcpuId::new(1 + (i % 3) as u16, i)
}

fn cpus(ids: &[u32]) -> CpuSet {
    let mut s = CpuSet::new();
    for &c in ids {
        s.insert(c).expect("pCPU ids below MAX_CPUS");
    }
    s
}

/// Adds `nr_vcpus` vCPUs of mixed weights (one capped, and on several pCPUs some
/// pinned or preferring a pCPU, so that placement, pulls and moves happen), wakes
/// them, warms up, then counts `N` rounds.
fn steady_state_allocations<P: Policy>(p: P, nr_vcpus: u32) -> (u64, u64) {
    const WARM_UP: usize = 2_000;
    const N: usize = 20_000;
    let mut k = Kernel::new(p);
    let nr = k.p.nr_cpus();
    for i in 0..nr_vcpus {
        let params = Params {
            weight: 128 * (1 + i % 4),
            cap: if i == 1 { 40 } else { 0 },
        };
        k.p.add(vcpu(i), params)
            .expect("a fresh vCPU with valid parameters");
        if nr > 1 && i % 3 == 0 {
            let kick =
                k.p.set_affinity(vcpu(i), cpus(&[i % nr, (i + 1) % nr]), cpus(&[i % nr]));
            k.kick(kick.expect("pCPUs below nr_cpus"));
        }
        let kick = k.p.wake(vcpu(i), k.now);
        k.kick(kick);
    }
    k.settle();
    k.rounds(WARM_UP);
    let before = calls();
    k.rounds(N);
    let after = calls();
    (after.0 - before.0, after.1 - before.1)
}

#[test]
fn the_counter_counts() {
    let before = calls();
    let v: Vec<u8> = Vec::with_capacity(1);
    drop(v);
    let after = calls();
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
}

#[test]
fn credit2_yield_block_wake_and_pick_do_not_allocate() {
    for nr_cpus in [1, 4] {
        for nr_vcpus in [1, 2, 5, 12] {
            assert_eq!(
                steady_state_allocations(Credit2::new(nr_cpus), nr_vcpus),
                (0, 0),
                "(allocations, frees) with {nr_vcpus} vCPUs on {nr_cpus} pCPUs"
            );
        }
    }
}

#[test]
fn null_yield_block_wake_and_pick_do_not_allocate() {
    for nr_cpus in [1, 4] {
        for nr_vcpus in [1, 2, 5, 12] {
            assert_eq!(
                steady_state_allocations(Null::new(nr_cpus), nr_vcpus),
                (0, 0),
                "(allocations, frees) with {nr_vcpus} vCPUs on {nr_cpus} pCPUs"
            );
        }
    }
}
