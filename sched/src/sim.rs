//! Host simulation of the kernel's side of the contract, and the policy tests that
//! need time to pass: shares by weight, blocking, waking, caps, yield, 1 to 8 pCPUs,
//! affinity and migration, and property tests over random call sequences and
//! random workloads for both policies.

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use proptest::prelude::*;

use crate::credit2::{self, Credit2};
use crate::null::Null;
use crate::{CpuSet, Decision, Params, Policy, SchedError, VcpuId};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

const fn v(dom: u16, vcpu: u32) -> VcpuId {
    VcpuId::new(dom, vcpu)
}

fn set(cpus: &[u32]) -> CpuSet {
    let mut s = CpuSet::new();
    for &c in cpus {
        s.insert(c).unwrap();
    }
    s
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Wake(VcpuId),
    Block(VcpuId),
    /// `set_affinity(vcpu, hard, soft)`.
    Pin(VcpuId, CpuSet, CpuSet),
}

/// The kernel as the crate documentation describes it: picks when a slice ends, when
/// the running vCPU blocks, and when a call or a pick names a pCPU to kick (at
/// once: a kick costs no time here); runs exactly what it was told for exactly as
/// long as it was told. It checks on the way that no vCPU runs on two pCPUs or
/// outside its hard affinity.
struct Sim<P: Policy> {
    p: P,
    now: u64,
    /// Per pCPU: what runs and until when.
    cpus: Vec<(Option<VcpuId>, u64)>,
    need_pick: Vec<bool>,
    /// Time each vCPU ran on each pCPU.
    ran: BTreeMap<(VcpuId, u32), u64>,
    idle: Vec<u64>,
    /// Every pick that started a vCPU: (time, pCPU, vCPU).
    starts: Vec<(u64, u32, VcpuId)>,
    /// Hard affinities set through the simulation (others are all pCPUs).
    hard: BTreeMap<VcpuId, CpuSet>,
}

impl<P: Policy> Sim<P> {
    fn new(p: P) -> Self {
        let nr_cpus = p.nr_cpus() as usize;
        Sim {
            p,
            now: 0,
            cpus: vec![(None, 0); nr_cpus],
            need_pick: vec![true; nr_cpus],
            ran: BTreeMap::new(),
            idle: vec![0; nr_cpus],
            starts: Vec::new(),
            hard: BTreeMap::new(),
        }
    }

    /// Adds CPU-bound vCPUs with these parameters, runnable from now.
    fn cpu_bound(&mut self, vs: &[(VcpuId, Params)]) {
        for &(id, params) in vs {
            self.p.add(id, params).unwrap();
            self.wake(id);
        }
    }

    /// Adds a CPU-bound vCPU with this affinity, runnable from now.
    fn pinned(&mut self, id: VcpuId, params: Params, hard: CpuSet, soft: CpuSet) {
        self.p.add(id, params).unwrap();
        self.pin(id, hard, soft);
        self.wake(id);
    }

    fn kick(&mut self, cpu: Option<u32>) {
        if let Some(c) = cpu {
            assert!((c as usize) < self.cpus.len(), "kick of pCPU {c}");
            self.need_pick[c as usize] = true;
        }
    }

    fn wake(&mut self, id: VcpuId) {
        let k = self.p.wake(id, self.now);
        self.kick(k);
    }

    fn pin(&mut self, id: VcpuId, hard: CpuSet, soft: CpuSet) {
        let k = self.p.set_affinity(id, hard, soft).unwrap();
        self.hard.insert(id, hard);
        self.kick(k);
    }

    fn allowed(&self, id: VcpuId, cpu: usize) -> bool {
        self.hard.get(&id).is_none_or(|h| h.contains(cpu as u32))
    }

    fn apply(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(id) => self.wake(id),
            Ev::Pin(id, hard, soft) => self.pin(id, hard, soft),
            Ev::Block(id) => {
                self.p.block(id, self.now);
                for (c, cpu) in self.cpus.iter().enumerate() {
                    if cpu.0 == Some(id) {
                        self.need_pick[c] = true;
                    }
                }
            }
        }
    }

    /// Picks on every pCPU that must, until none must (a pick may kick another).
    fn pick_all(&mut self) {
        let mut picks = 0;
        while let Some(c) = self.need_pick.iter().position(|&n| n) {
            picks += 1;
            assert!(picks < 10 * self.cpus.len() + 10, "kicks never settle");
            self.need_pick[c] = false;
            let Decision {
                next,
                slice_ns,
                kick,
            } = self.p.pick(c as u32, self.now);
            assert!(slice_ns > 0);
            assert_ne!(kick, Some(c as u32), "a pick kicks its own pCPU");
            self.cpus[c] = (None, 0);
            if let Some(id) = next {
                assert!(self.p.is_runnable(id));
                assert!(self.allowed(id, c), "{id:?} picked on pCPU {c}");
                assert!(
                    self.cpus.iter().all(|cpu| cpu.0 != Some(id)),
                    "{id:?} runs on two pCPUs"
                );
                assert_eq!(self.p.processor(id), Some(c as u32));
                self.starts.push((self.now, c as u32, id));
            }
            self.cpus[c] = (next, self.now.saturating_add(slice_ns));
            self.kick(kick);
        }
    }

    /// Runs until `end`, applying `events` (sorted by time) on the way.
    fn run(&mut self, end: u64, events: &[(u64, Ev)]) {
        let mut events = events.iter().copied().peekable();
        loop {
            self.pick_all();
            let next_ev = events.peek().map_or(u64::MAX, |e| e.0);
            let deadline = self.cpus.iter().map(|c| c.1).min().unwrap_or(u64::MAX);
            let t = end.min(next_ev).min(deadline).max(self.now);
            let dt = t - self.now;
            for (c, cpu) in self.cpus.iter().enumerate() {
                match cpu.0 {
                    Some(id) => {
                        assert!(
                            dt == 0 || self.allowed(id, c),
                            "{id:?} ran on pCPU {c} outside its hard affinity"
                        );
                        *self.ran.entry((id, c as u32)).or_default() += dt;
                    }
                    None => self.idle[c] += dt,
                }
            }
            self.now = t;
            if t == end {
                return;
            }
            for c in 0..self.cpus.len() {
                if self.cpus[c].1 == t {
                    self.need_pick[c] = true;
                }
            }
            while let Some(&(at, ev)) = events.peek() {
                if at > t {
                    break;
                }
                events.next();
                self.apply(ev);
            }
        }
    }

    /// How long `id` ran, on any pCPU.
    fn ran(&self, id: VcpuId) -> u64 {
        self.ran
            .iter()
            .filter(|((x, _), _)| *x == id)
            .map(|(_, &t)| t)
            .sum()
    }

    /// How long `id` ran on `cpu`.
    fn ran_on(&self, id: VcpuId, cpu: u32) -> u64 {
        self.ran.get(&(id, cpu)).copied().unwrap_or(0)
    }

    fn share(&self, id: VcpuId, over: u64) -> f64 {
        self.ran(id) as f64 / over as f64
    }
}

fn w(weight: u32) -> Params {
    Params { weight, cap: 0 }
}

fn capped(cap: u32) -> Params {
    Params {
        weight: crate::DEFAULT_WEIGHT,
        cap,
    }
}

/// CPU-bound vCPUs with these weights on one pCPU for a second: each gets its
/// weight's proportion, within 2%, and the pCPU never idles.
fn assert_proportional(weights: &[u32]) {
    let mut s = Sim::new(Credit2::new(1));
    let vs: Vec<_> = (0..weights.len())
        .map(|i| (v(i as u16 + 1, 0), w(weights[i])))
        .collect();
    s.cpu_bound(&vs);
    s.run(SECOND, &[]);
    let total: u32 = weights.iter().sum();
    for (i, &(id, p)) in vs.iter().enumerate() {
        let want = f64::from(p.weight) / f64::from(total);
        let got = s.share(id, SECOND);
        assert!(
            (got - want).abs() <= 0.02 * want,
            "weights {weights:?}: vCPU {i} got {got:.4}, want {want:.4}"
        );
    }
    assert_eq!(s.idle[0], 0, "work-conserving");
}

#[test]
fn shares_follow_weights() {
    assert_proportional(&[512, 256]);
    assert_proportional(&[256, 256, 256]);
    assert_proportional(&[768, 256]);
    assert_proportional(&[1, 3]);
    assert_proportional(&[100, 200, 300, 400]);
    assert_proportional(&[65535, 65535 / 2]);
    assert_proportional(&[256]);
}

#[test]
fn a_blocked_vcpu_gets_nothing_and_its_peers_share_everything() {
    let mut s = Sim::new(Credit2::new(1));
    let (a, b, c) = (v(1, 0), v(2, 0), v(3, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(256))]);
    s.p.add(c, w(256)).unwrap(); // never woken
    s.run(SECOND, &[]);
    assert_eq!(s.ran(c), 0);
    assert_eq!(s.ran(a) + s.ran(b), SECOND);
    assert!((s.share(a, SECOND) - 0.5).abs() < 0.01);
}

#[test]
fn blocking_midway_hands_the_time_to_the_peers() {
    let mut s = Sim::new(Credit2::new(1));
    let (a, b) = (v(1, 0), v(2, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(256))]);
    s.run(SECOND, &[(SECOND / 2, Ev::Block(a))]);
    assert!(
        (s.share(a, SECOND) - 0.25).abs() < 0.01,
        "{}",
        s.share(a, SECOND)
    );
    assert_eq!(s.ran(a) + s.ran(b), SECOND);
}

#[test]
fn a_woken_vcpu_runs_within_one_slice() {
    let mut s = Sim::new(Credit2::new(1));
    let (a, b, c) = (v(1, 0), v(2, 0), v(3, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(256)), (c, w(256))]);
    let at = 500 * MS + 123;
    s.run(SECOND, &[(MS, Ev::Block(c)), (at, Ev::Wake(c))]);
    let first = s
        .starts
        .iter()
        .find(|&&(t, _, id)| t >= at && id == c)
        .map(|&(t, _, _)| t)
        .expect("c never ran again");
    assert!(
        first - at <= credit2::MAX_SLICE_NS,
        "waited {} ns",
        first - at
    );
    // Having slept, it had more credit than the others: it preempted at once.
    assert_eq!(first, at);
}

#[test]
fn an_interactive_vcpu_gets_its_time_and_low_latency() {
    // c wants 1 ms of every 10 ms; two hogs share the rest.
    let mut s = Sim::new(Credit2::new(1));
    let (a, b, c) = (v(1, 0), v(2, 0), v(3, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(256))]);
    s.p.add(c, w(256)).unwrap();
    let mut evs = Vec::new();
    for i in 0..100 {
        evs.push((i * 10 * MS + 5 * MS, Ev::Wake(c)));
        evs.push((i * 10 * MS + 6 * MS, Ev::Block(c)));
    }
    s.run(SECOND, &evs);
    assert!(s.share(c, SECOND) > 0.095, "{}", s.share(c, SECOND));
    assert_eq!(s.idle[0], 0);
}

#[test]
fn a_cap_limits_a_lone_vcpu_and_the_rest_is_idle() {
    let mut s = Sim::new(Credit2::new(1));
    let a = v(1, 0);
    s.cpu_bound(&[(a, capped(30))]);
    s.run(SECOND, &[]);
    let share = s.share(a, SECOND);
    assert!((0.29..=0.31).contains(&share), "{share}");
    assert_eq!(s.ran(a) + s.idle[0], SECOND);
}

#[test]
fn a_cap_gives_the_rest_to_an_uncapped_peer() {
    let mut s = Sim::new(Credit2::new(1));
    let (a, b) = (v(1, 0), v(2, 0));
    s.cpu_bound(&[(a, capped(20)), (b, w(256))]);
    s.run(SECOND, &[]);
    assert!(s.share(a, SECOND) <= 0.21, "{}", s.share(a, SECOND));
    assert!(
        s.share(a, SECOND) >= 0.19,
        "a cap above the fair share is no limit"
    );
    assert_eq!(s.idle[0], 0);
}

#[test]
fn a_cap_above_the_fair_share_changes_nothing() {
    let mut s = Sim::new(Credit2::new(1));
    let (a, b) = (v(1, 0), v(2, 0));
    s.cpu_bound(&[(a, capped(80)), (b, w(256))]);
    s.run(SECOND, &[]);
    assert!(
        (s.share(a, SECOND) - 0.5).abs() < 0.02,
        "{}",
        s.share(a, SECOND)
    );
}

#[test]
fn caps_hold_on_several_pcpus() {
    let mut s = Sim::new(Credit2::new(2));
    let (a, b) = (v(1, 0), v(1, 1));
    s.cpu_bound(&[(a, capped(50)), (b, capped(25))]);
    s.run(SECOND, &[]);
    assert!(s.share(a, SECOND) <= 0.51);
    assert!(s.share(b, SECOND) <= 0.26);
    assert!(s.share(a, SECOND) >= 0.49);
    assert!(s.share(b, SECOND) >= 0.24);
}

#[test]
fn a_parked_vcpu_that_wakes_on_an_idle_pcpu_gets_a_period_deadline() {
    let mut p = Credit2::new(1);
    let a = v(1, 0);
    p.add(a, capped(10)).unwrap();
    assert_eq!(p.wake(a, 0), Some(0));
    let d = p.pick(0, 0);
    assert_eq!(
        d,
        Decision {
            next: Some(a),
            slice_ns: MS,
            kick: None
        }
    );
    // Parked at 1 ms: idle until the period ends at 10 ms.
    let d = p.pick(0, MS);
    assert_eq!(
        d,
        Decision {
            next: None,
            slice_ns: 9 * MS,
            kick: None
        }
    );
    p.block(a, 2 * MS);
    assert_eq!(
        p.pick(0, 2 * MS).slice_ns,
        u64::MAX,
        "nothing parked is runnable"
    );
    assert_eq!(p.wake(a, 3 * MS), Some(0));
    assert_eq!(
        p.pick(0, 3 * MS),
        Decision {
            next: None,
            slice_ns: 7 * MS,
            kick: None
        }
    );
    assert_eq!(p.pick(0, 10 * MS).next, Some(a));
}

#[test]
fn yield_lets_the_peer_run() {
    let mut p = Credit2::new(1);
    let (a, b) = (v(1, 0), v(2, 0));
    p.add(a, w(256)).unwrap();
    p.add(b, w(256)).unwrap();
    p.wake(a, 0);
    p.wake(b, 0);
    let first = p.pick(0, 0).next.unwrap();
    let other = if first == a { b } else { a };
    p.yield_now(first, 10);
    assert_eq!(p.pick(0, 10).next, Some(other));
    // Alone, a yielding vCPU runs again.
    p.block(other, 20);
    p.yield_now(other, 20);
    assert_eq!(p.pick(0, 20).next, Some(first));
    p.yield_now(first, 30);
    assert_eq!(p.pick(0, 30).next, Some(first));
}

#[test]
fn yield_in_a_loop_shares_the_pcpu() {
    // b yields whenever it runs (a spinning guest): a gets nearly everything.
    let mut p = Credit2::new(1);
    let (a, b) = (v(1, 0), v(2, 0));
    p.add(a, w(256)).unwrap();
    p.add(b, w(256)).unwrap();
    p.wake(a, 0);
    p.wake(b, 0);
    let (mut now, mut ran_a) = (0, 0);
    while now < SECOND {
        let d = p.pick(0, now);
        if d.next == Some(b) {
            now += 1_000;
            p.yield_now(b, now);
        } else {
            let dt = d.slice_ns.min(SECOND - now);
            ran_a += dt;
            now += dt;
        }
    }
    assert!(ran_a as f64 / SECOND as f64 > 0.95);
}

#[test]
fn two_pcpus_run_two_vcpus_in_parallel() {
    let mut s = Sim::new(Credit2::new(2));
    let (a, b) = (v(1, 0), v(2, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(512))]);
    s.run(SECOND, &[]);
    assert_eq!(s.ran(a), SECOND);
    assert_eq!(s.ran(b), SECOND);
    assert_eq!(s.idle, [0, 0]);
}

#[test]
fn two_pcpus_share_three_vcpus_fairly() {
    let mut s = Sim::new(Credit2::new(2));
    let vs = [(v(1, 0), w(256)), (v(2, 0), w(256)), (v(3, 0), w(256))];
    s.cpu_bound(&vs);
    s.run(SECOND, &[]);
    for (id, _) in vs {
        let share = s.share(id, SECOND);
        assert!((share - 2.0 / 3.0).abs() < 0.03, "{id:?}: {share}");
    }
    assert_eq!(s.idle, [0, 0]);
}

#[test]
fn a_wake_on_a_busy_machine_preempts_the_poorest() {
    let mut p = Credit2::new(2);
    let (a, b, c) = (v(1, 0), v(2, 0), v(3, 0));
    for x in [a, b, c] {
        p.add(x, w(256)).unwrap();
    }
    p.wake(a, 0);
    p.wake(b, 0);
    assert_eq!(p.pick(0, 0).next, Some(a));
    assert_eq!(p.pick(1, 0).next, Some(b));
    // a has burnt 5 ms on pCPU 0, b 2 ms on pCPU 1 (it re-picked at 3 ms).
    assert_eq!(p.pick(1, 3 * MS).next, Some(b));
    assert_eq!(p.wake(c, 5 * MS), Some(0), "a has the least credit");
    assert_eq!(p.pick(0, 5 * MS).next, Some(c));
    // Waking something already runnable, or unknown, asks for nothing.
    assert_eq!(p.wake(c, 5 * MS), None);
    assert_eq!(p.wake(v(9, 9), 5 * MS), None);
}

#[test]
fn a_poorer_woken_vcpu_does_not_preempt() {
    let mut p = Credit2::new(1);
    let (a, b) = (v(1, 0), v(2, 0));
    p.add(a, w(256)).unwrap();
    p.add(b, w(256)).unwrap();
    p.wake(b, 0);
    assert_eq!(p.pick(0, 0).next, Some(b));
    p.wake(a, 0);
    assert_eq!(p.pick(0, 4 * MS).next, Some(a), "a has more credit");
    p.block(b, 4 * MS);
    assert_eq!(
        p.wake(b, 4 * MS + 1),
        None,
        "b burnt 4 ms, a none: no preemption"
    );
    assert_eq!(p.pick(0, 9 * MS).next, Some(b));
}

#[test]
fn removing_the_running_vcpu_frees_its_pcpu() {
    let mut p = Credit2::new(2);
    let a = v(1, 0);
    p.add(a, w(256)).unwrap();
    p.set_affinity(a, set(&[1]), CpuSet::new()).unwrap();
    assert_eq!(p.wake(a, 0), Some(1));
    assert_eq!(p.pick(1, 0).next, Some(a));
    assert_eq!(p.remove(a, 10), Some(1));
    assert!(!p.is_runnable(a));
    assert_eq!(p.pick(1, 10).next, None);
    assert_eq!(p.remove(a, 10), None);
    assert_eq!(p.params(a), None);
}

#[test]
fn backwards_time_and_bad_pcpus_are_harmless() {
    let mut p = Credit2::new(1);
    let a = v(1, 0);
    p.add(a, w(256)).unwrap();
    p.wake(a, 0);
    p.pick(0, 5 * MS);
    let d = p.pick(0, MS);
    assert_eq!(d.next, Some(a));
    assert_eq!(p.credit(a), Some(credit2::CREDIT_INIT));
    assert_eq!(p.pick(7, 0), Decision::IDLE);
    p.pick(0, u64::MAX);
    p.pick(0, u64::MAX);
}

#[test]
fn set_params_reweights_and_recaps() {
    let mut s = Sim::new(Credit2::new(1));
    let (a, b) = (v(1, 0), v(2, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(256))]);
    s.p.set_params(a, w(768)).unwrap();
    assert_eq!(s.p.params(a), Some(w(768)));
    s.run(SECOND, &[]);
    assert!((s.share(a, SECOND) - 0.75).abs() < 0.015);
    s.p.set_params(b, capped(10)).unwrap();
    s.ran.clear();
    s.run(2 * SECOND, &[]);
    assert!(s.share(b, SECOND) <= 0.11);
    assert!(s.p.set_params(v(5, 5), w(1)).is_err());
    assert!(s.p.set_params(a, w(0)).is_err());
    assert!(s.p.add(a, w(1)).is_err(), "already added");
}

// ---- many pCPUs, affinity and migration ----

/// `n` CPU-bound vCPUs of default weight, d1v0, d2v0, ...
fn hogs(n: u16) -> Vec<(VcpuId, Params)> {
    (1..=n).map(|i| (v(i, 0), Params::default())).collect()
}

#[test]
fn four_vcpus_on_four_pcpus_each_get_a_pcpu() {
    fn check<P: Policy>(p: P) {
        let mut s = Sim::new(p);
        let vs = hogs(4);
        s.cpu_bound(&vs);
        s.run(SECOND, &[]);
        for (id, _) in vs {
            let share = s.share(id, SECOND);
            assert!(share >= 0.9, "{}: {id:?} got {share}", s.p.name());
        }
    }
    check(Credit2::new(4));
    check(Null::new(4));
}

#[test]
fn eight_vcpus_on_four_pcpus_get_half_a_pcpu_each() {
    let mut s = Sim::new(Credit2::new(4));
    let vs = hogs(8);
    s.cpu_bound(&vs);
    s.run(SECOND, &[]);
    for (id, _) in vs {
        let share = s.share(id, SECOND);
        assert!((share - 0.5).abs() <= 0.05, "{id:?} got {share}");
    }
    assert_eq!(s.idle, [0; 4], "work-conserving");
}

#[test]
fn null_runs_the_first_vcpus_admitted_and_seats_the_next_when_a_pcpu_frees() {
    let mut s = Sim::new(Null::new(4));
    let vs = hogs(8);
    s.cpu_bound(&vs);
    s.run(SECOND, &[]);
    for (i, &(id, _)) in vs.iter().enumerate() {
        let want = if i < 4 { SECOND } else { 0 };
        assert_eq!(s.ran(id), want, "{id:?}");
    }
    // d2v0 goes: its pCPU is handed to the first waiting vCPU, d5v0.
    let cpu = s.p.processor(v(2, 0)).unwrap();
    let k = s.p.remove(v(2, 0), s.now);
    assert_eq!(k, Some(cpu));
    s.kick(k);
    s.run(2 * SECOND, &[]);
    assert_eq!(s.ran_on(v(5, 0), cpu), SECOND);
    assert_eq!(s.ran(v(6, 0)), 0);
}

#[test]
fn weights_pinned_to_one_shared_pcpu_keep_their_ratio() {
    // a and b share pCPU 1 at 2:1, while unpinned vCPUs run on the other three
    // (and may come to pCPU 1 too): one each, whose credit runs out (and is reset)
    // faster than a's and b's, or two each.
    for n in [3, 6] {
        let mut s = Sim::new(Credit2::new(4));
        let (a, b) = (v(1, 0), v(1, 1));
        let one = set(&[1]);
        s.pinned(a, w(512), one, CpuSet::new());
        s.pinned(b, w(256), one, CpuSet::new());
        let others: Vec<_> = (10..10 + n).map(|d| (v(d, 0), w(256))).collect();
        s.cpu_bound(&others);
        s.run(SECOND, &[]);
        let ratio = s.ran(a) as f64 / s.ran(b) as f64;
        assert!((ratio - 2.0).abs() <= 0.2, "{n} others: a:b = {ratio}");
        assert_eq!(s.ran_on(a, 1), s.ran(a), "a ran only on pCPU 1");
        assert_eq!(s.ran_on(b, 1), s.ran(b), "b ran only on pCPU 1");
        for (id, _) in others {
            let share = s.share(id, SECOND);
            assert!(
                share >= 3.0 / n as f64 - 0.05,
                "{n} others: {id:?} got {share}"
            );
        }
        assert_eq!(s.idle, [0; 4]);
    }
}

#[test]
fn null_pins_each_vcpu_to_its_hard_affinity() {
    let mut s = Sim::new(Null::new(4));
    let (a, b, c) = (v(1, 0), v(2, 0), v(3, 0));
    s.pinned(a, w(256), set(&[3]), CpuSet::new());
    s.pinned(b, w(256), set(&[3]), CpuSet::new());
    s.pinned(c, w(256), set(&[0, 3]), CpuSet::new());
    s.run(SECOND, &[]);
    assert_eq!(s.ran_on(a, 3), SECOND);
    assert_eq!(s.ran(b), 0, "b waits for pCPU 3");
    assert_eq!(s.ran_on(c, 0), SECOND);
}

#[test]
fn unpinning_spreads_the_load() {
    // Four vCPUs pinned to pCPU 0 of 2, then let go: the idle pCPU pulls work
    // until each runqueue has two.
    let mut s = Sim::new(Credit2::new(2));
    let vs = hogs(4);
    for &(id, p) in &vs {
        s.pinned(id, p, set(&[0]), CpuSet::new());
    }
    let evs: Vec<_> = vs
        .iter()
        .map(|&(id, _)| (SECOND, Ev::Pin(id, CpuSet::all(2), CpuSet::new())))
        .collect();
    s.run(SECOND, &evs);
    assert_eq!(s.idle[1], SECOND);
    s.ran.clear();
    s.run(2 * SECOND, &evs);
    for (id, _) in vs {
        let share = s.share(id, SECOND);
        assert!((share - 0.5).abs() <= 0.05, "{id:?} got {share}");
    }
    assert_eq!(s.idle, [0, SECOND], "no idling once unpinned");
}

#[test]
fn a_running_vcpu_whose_pcpu_is_taken_away_moves_at_once() {
    fn check<P: Policy>(p: P) {
        let mut s = Sim::new(p);
        let a = v(1, 0);
        s.pinned(a, w(256), set(&[0]), CpuSet::new());
        let at = 300 * MS;
        s.run(SECOND, &[(at, Ev::Pin(a, set(&[3]), CpuSet::new()))]);
        assert_eq!(s.ran_on(a, 0), at, "{}", s.p.name());
        assert_eq!(s.ran_on(a, 3), SECOND - at, "{}", s.p.name());
    }
    check(Credit2::new(4));
    check(Null::new(4));
}

#[test]
fn soft_affinity_is_honoured_when_the_preferred_pcpu_is_free() {
    fn check<P: Policy>(p: P) {
        // vCPU i prefers pCPU 3 - i; nothing else runs.
        let mut s = Sim::new(p);
        let vs = hogs(4);
        for (i, &(id, p)) in vs.iter().enumerate() {
            s.pinned(id, p, CpuSet::all(4), set(&[3 - i as u32]));
        }
        s.run(SECOND, &[]);
        for (i, &(id, _)) in vs.iter().enumerate() {
            assert_eq!(s.ran_on(id, 3 - i as u32), SECOND, "{}: {id:?}", s.p.name());
        }
    }
    check(Credit2::new(4));
    check(Null::new(4));
}

#[test]
fn soft_affinity_yields_to_a_busy_pcpu_and_returns_when_it_frees() {
    fn check<P: Policy>(p: P) {
        // h is pinned to pCPU 0 and runs there; a prefers pCPU 0 but may run
        // anywhere: it runs on pCPU 1 until h blocks, then on pCPU 0.
        let mut s = Sim::new(p);
        let (h, a) = (v(1, 0), v(2, 0));
        s.pinned(h, w(256), set(&[0]), CpuSet::new());
        s.pinned(a, w(256), CpuSet::all(2), set(&[0]));
        let at = 500 * MS;
        s.run(SECOND, &[(at, Ev::Block(h))]);
        let name = s.p.name();
        assert_eq!(s.ran_on(h, 0), at, "{name}");
        assert_eq!(
            s.ran_on(a, 1) + s.ran_on(a, 0),
            SECOND,
            "{name}: a never waits"
        );
        assert!(
            s.ran_on(a, 0) >= SECOND - at - credit2::MAX_SLICE_NS,
            "{name}"
        );
    }
    check(Credit2::new(2));
    // null moves a when its pCPU next picks: make pCPU 1 pick at once.
    let mut n = Null::new(2);
    let (h, a) = (v(1, 0), v(2, 0));
    n.add(h, w(256)).unwrap();
    n.add(a, w(256)).unwrap();
    n.wake(h, 0);
    n.wake(a, 0);
    n.set_affinity(a, CpuSet::all(2), set(&[0])).unwrap();
    assert_eq!(n.processor(a), Some(1), "pCPU 0 is h's");
    n.remove(h, 1);
    let d = n.pick(1, 1);
    assert_eq!((d.next, d.kick), (None, Some(0)));
    assert_eq!(n.pick(0, 1).next, Some(a));
}

#[test]
fn blocked_vcpus_take_no_cpu_on_many_pcpus() {
    fn check<P: Policy>(p: P, cpus: u32) {
        let mut s = Sim::new(p);
        let vs = hogs(6);
        s.cpu_bound(&vs[..4]);
        for &(id, p) in &vs[4..] {
            s.p.add(id, p).unwrap(); // never woken
        }
        let (a, b) = (vs[0].0, vs[1].0);
        let evs = [
            (100 * MS, Ev::Block(a)),
            (200 * MS, Ev::Block(b)),
            (300 * MS, Ev::Wake(b)),
        ];
        s.run(SECOND, &evs);
        let name = s.p.name();
        assert_eq!(s.ran(vs[4].0) + s.ran(vs[5].0), 0, "{name}");
        assert!(s.ran(a) <= 100 * MS, "{name}: {}", s.ran(a));
        let busy: u64 = vs.iter().map(|&(id, _)| s.ran(id)).sum();
        let idle: u64 = s.idle.iter().sum();
        assert_eq!(busy + idle, u64::from(cpus) * SECOND, "{name}");
    }
    check(Credit2::new(4), 4);
    check(Credit2::new(3), 3);
    check(Null::new(4), 4);
}

#[test]
fn a_vcpu_woken_while_its_pcpu_is_idle_gets_that_pcpu_kicked() {
    fn check<P: Policy>(mut p: P) {
        let name = p.name();
        let a = v(1, 0);
        p.add(a, w(256)).unwrap();
        p.set_affinity(a, CpuSet::all(4), set(&[2])).unwrap();
        assert_eq!(p.wake(a, 0), Some(2), "{name}");
        assert_eq!(p.pick(2, 0).next, Some(a), "{name}");
        assert_eq!(p.processor(a), Some(2));
        p.block(a, MS);
        assert_eq!(p.pick(2, MS).next, None, "{name}");
        // Every pCPU is idle: it goes back where it was.
        assert_eq!(p.wake(a, 2 * MS), Some(2), "{name}");
        assert_eq!(p.wake(a, 2 * MS), None, "{name}: already runnable");
        assert_eq!(p.pick(2, 2 * MS).next, Some(a), "{name}");
    }
    check(Credit2::new(4));
    check(Null::new(4));

    // No preference: the previous pCPU wins while it is idle, even with other
    // pCPUs idle too; while it is busy, another idle pCPU is kicked.
    let mut p = Credit2::new(4);
    let (a, c) = (v(1, 0), v(2, 0));
    p.add(a, w(256)).unwrap();
    p.add(c, w(256)).unwrap();
    p.set_affinity(c, set(&[1]), CpuSet::new()).unwrap();
    assert_eq!(p.wake(a, 0), Some(0));
    assert_eq!(
        p.pick(1, 0),
        Decision::IDLE,
        "a is pCPU 0's, which was kicked"
    );
    assert_eq!(p.pick(0, 0).next, Some(a));
    p.block(a, MS);
    assert_eq!(p.pick(0, MS), Decision::IDLE);
    assert_eq!(p.wake(a, 2 * MS), Some(0));
    assert_eq!(p.pick(0, 2 * MS).next, Some(a));
    // c, pinned to pCPU 1, takes the idle pCPU 1; then a leaves 0 and comes back.
    assert_eq!(p.wake(c, 2 * MS), Some(1));
    assert_eq!(p.pick(1, 2 * MS).next, Some(c));
    // c is moved to pCPU 0, where it preempts a, which goes to idle pCPU 1.
    assert_eq!(p.set_affinity(c, set(&[0]), CpuSet::new()), Ok(Some(1)));
    assert_eq!(p.pick(1, 3 * MS).kick, Some(0));
    let d = p.pick(0, 3 * MS);
    assert_eq!((d.next, d.kick), (Some(c), Some(1)));
    assert_eq!(p.processor(a), Some(1));
    assert_eq!(p.pick(1, 3 * MS).next, Some(a));
    // a blocks; c goes back to pCPU 1; a wakes to find pCPU 1 busy: another
    // idle pCPU is kicked.
    p.block(a, 4 * MS);
    assert_eq!(p.pick(1, 4 * MS), Decision::IDLE);
    assert_eq!(p.set_affinity(c, set(&[1]), CpuSet::new()), Ok(Some(0)));
    assert_eq!(p.pick(0, 4 * MS).kick, Some(1));
    assert_eq!(p.pick(1, 4 * MS).next, Some(c));
    assert_eq!(p.wake(a, 5 * MS), Some(0));
}

#[test]
fn a_preempted_vcpu_moves_to_an_idle_pcpu() {
    // a runs on pCPU 0 with pCPU 1 idle; b, pinned to 0, wakes with more credit
    // and preempts a, which is sent to pCPU 1 by the pick's kick.
    let mut p = Credit2::new(2);
    let (a, b) = (v(1, 0), v(2, 0));
    p.add(a, w(256)).unwrap();
    p.add(b, w(256)).unwrap();
    p.set_affinity(b, set(&[0]), CpuSet::new()).unwrap();
    assert_eq!(p.wake(a, 0), Some(0));
    assert_eq!(p.pick(0, 0).next, Some(a));
    assert_eq!(p.pick(1, 0), Decision::IDLE);
    assert_eq!(p.wake(b, 5 * MS), Some(0), "b preempts a");
    let d = p.pick(0, 5 * MS);
    assert_eq!((d.next, d.kick), (Some(b), Some(1)));
    assert_eq!(p.pick(1, 5 * MS).next, Some(a));
}

#[test]
fn bad_pcpus_and_empty_sets_are_errors() {
    fn check<P: Policy>(mut p: P) {
        let a = v(1, 0);
        p.add(a, w(256)).unwrap();
        let none = CpuSet::new();
        assert_eq!(
            p.set_affinity(a, none, none),
            Err(SchedError::EmptyAffinity)
        );
        assert_eq!(
            p.set_affinity(a, set(&[1, 4]), none),
            Err(SchedError::NoSuchCpu { cpu: 4, nr_cpus: 4 })
        );
        assert_eq!(
            p.set_affinity(a, set(&[200]), none),
            Err(SchedError::NoSuchCpu {
                cpu: 200,
                nr_cpus: 4
            }),
            "a pCPU only beyond nr_cpus is not a hard affinity"
        );
        assert_eq!(
            p.set_affinity(a, set(&[1]), set(&[5])),
            Err(SchedError::NoSuchCpu { cpu: 5, nr_cpus: 4 })
        );
        assert_eq!(
            p.set_affinity(v(9, 9), set(&[1]), none),
            Err(SchedError::Unknown { dom: 9, vcpu: 9 })
        );
        assert_eq!(p.affinity(a), Some((CpuSet::all(4), none)), "unchanged");
        assert_eq!(p.set_affinity(a, set(&[1]), set(&[0])), Ok(None));
        assert_eq!(p.affinity(a), Some((set(&[1]), set(&[0]))));
        assert_eq!(p.affinity(v(9, 9)), None);
        assert_eq!(p.processor(v(9, 9)), None);
        assert_eq!(p.pick(4, 0), Decision::IDLE, "no such pCPU");
        assert_eq!(p.pick(u32::MAX, 0), Decision::IDLE);
    }
    check(Credit2::new(4));
    check(Null::new(4));
    assert_eq!(
        CpuSet::single(crate::MAX_CPUS),
        Err(SchedError::CpuSetOverflow { cpu: 256, max: 256 })
    );
}

// ---- property tests: random call sequences ----

#[derive(Clone, Debug)]
enum Op {
    Add(VcpuId, u32, u32),
    Remove(VcpuId),
    Wake(VcpuId),
    Block(VcpuId),
    Yield(VcpuId),
    Pick(u32),
    Advance(u64),
    SetParams(VcpuId, u32, u32),
    /// pCPU ids for hard and soft affinity; ids past `nr_cpus` must be refused.
    SetAffinity(VcpuId, Vec<u32>, Vec<u32>),
}

fn any_vcpu() -> impl Strategy<Value = VcpuId> {
    (0u16..3, 0u32..3).prop_map(|(d, i)| v(d, i))
}

fn any_cpus() -> impl Strategy<Value = Vec<u32>> {
    prop_oneof![
        prop::collection::vec(0u32..8, 0..4),
        prop::collection::vec(0u32..3, 1..3),
        Just(Vec::new()),
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    let weight = prop_oneof![Just(256u32), 0u32..70_000];
    let cap = prop_oneof![Just(0u32), 0u32..120];
    prop_oneof![
        2 => (any_vcpu(), weight.clone(), cap.clone()).prop_map(|(x, w, c)| Op::Add(x, w, c)),
        1 => any_vcpu().prop_map(Op::Remove),
        3 => any_vcpu().prop_map(Op::Wake),
        2 => any_vcpu().prop_map(Op::Block),
        1 => any_vcpu().prop_map(Op::Yield),
        5 => (0u32..9).prop_map(Op::Pick),
        2 => prop_oneof![0u64..20 * MS, Just(0), any::<u64>()].prop_map(Op::Advance),
        1 => (any_vcpu(), weight, cap).prop_map(|(x, w, c)| Op::SetParams(x, w, c)),
        2 => (any_vcpu(), any_cpus(), any_cpus()).prop_map(|(x, h, s)| Op::SetAffinity(x, h, s)),
    ]
}

/// What the kernel knows: the vCPUs added (with their parameters and hard
/// affinity), which are runnable, what each pCPU runs, and which pCPUs it was
/// told to kick that have not picked since.
#[derive(Default)]
struct Model {
    params: BTreeMap<VcpuId, Params>,
    runnable: BTreeMap<VcpuId, bool>,
    hard: BTreeMap<VcpuId, CpuSet>,
    current: BTreeMap<u32, VcpuId>,
    kicked: BTreeSet<u32>,
}

impl Model {
    fn allowed(&self, x: VcpuId, cpu: u32) -> bool {
        self.hard.get(&x).is_none_or(|h| h.contains(cpu))
    }
}

fn check_ops<P: Policy>(
    p: &mut P,
    nr_cpus: u32,
    ops: &[Op],
    invariants: impl Fn(&P) -> Result<(), String>,
    on_idle: impl Fn(&P, &Model, u32) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let mut now = 0u64;
    for op in ops {
        let mut kick = None;
        match op {
            &Op::Add(x, weight, cap) => {
                let params = Params { weight, cap };
                let r = p.add(x, params);
                let ok = params.check().is_ok() && !m.params.contains_key(&x);
                prop_assert_eq!(r.is_ok(), ok);
                if ok {
                    m.params.insert(x, params);
                    m.runnable.insert(x, false);
                    m.hard.insert(x, CpuSet::all(nr_cpus));
                }
            }
            &Op::SetParams(x, weight, cap) => {
                let params = Params { weight, cap };
                let r = p.set_params(x, params);
                let ok = params.check().is_ok() && m.params.contains_key(&x);
                prop_assert_eq!(r.is_ok(), ok);
                if ok {
                    m.params.insert(x, params);
                }
            }
            Op::SetAffinity(x, hard, soft) => {
                let (x, hard, soft) = (*x, set(hard), set(soft));
                let r = p.set_affinity(x, hard, soft);
                let in_range = hard.iter().chain(soft.iter()).all(|c| c < nr_cpus);
                let ok = m.params.contains_key(&x) && in_range && !hard.is_empty();
                prop_assert_eq!(r.is_ok(), ok, "{:?}", r);
                if let Ok(k) = r {
                    m.hard.insert(x, hard);
                    prop_assert_eq!(p.affinity(x), Some((hard, soft)));
                    kick = k;
                }
            }
            &Op::Remove(x) => {
                kick = p.remove(x, now);
                m.params.remove(&x);
                m.runnable.remove(&x);
                m.hard.remove(&x);
                m.current.retain(|_, y| *y != x);
            }
            &Op::Wake(x) => {
                kick = p.wake(x, now);
                if let Some(r) = m.runnable.get_mut(&x) {
                    *r = true;
                }
            }
            &Op::Block(x) => {
                p.block(x, now);
                if let Some(r) = m.runnable.get_mut(&x) {
                    *r = false;
                }
                m.current.retain(|_, y| *y != x);
            }
            &Op::Yield(x) => p.yield_now(x, now),
            &Op::Advance(dt) => now = now.saturating_add(dt),
            &Op::Pick(cpu) => {
                let d = p.pick(cpu, now);
                prop_assert!(d.slice_ns > 0);
                prop_assert_ne!(d.kick, Some(cpu));
                m.current.remove(&cpu);
                m.kicked.remove(&cpu);
                if let Some(c) = d.kick {
                    // Told before the pick's result is acted on.
                    m.kicked.insert(c);
                }
                kick = d.kick;
                match d.next {
                    Some(x) => {
                        prop_assert!(cpu < nr_cpus);
                        prop_assert_eq!(m.runnable.get(&x), Some(&true), "{:?}", x);
                        prop_assert!(m.allowed(x, cpu), "{:?} runs outside its hard affinity", x);
                        prop_assert!(
                            !m.current.values().any(|&y| y == x),
                            "{:?} runs on two pCPUs",
                            x
                        );
                        m.current.insert(cpu, x);
                    }
                    None if cpu < nr_cpus => on_idle(p, &m, cpu)?,
                    None => {}
                }
            }
        }
        if let Some(c) = kick {
            prop_assert!(c < nr_cpus, "kick of pCPU {}", c);
            m.kicked.insert(c);
        }
        for (x, &r) in &m.runnable {
            prop_assert_eq!(p.is_runnable(*x), r);
        }
        for (&c, &x) in &m.current {
            prop_assert_eq!(p.processor(x), Some(c), "{:?} runs on {}", x, c);
        }
        if let Err(e) = invariants(p) {
            return Err(TestCaseError::fail(e));
        }
    }
    Ok(())
}

/// credit2 idles `cpu` only if every uncapped runnable vCPU allowed there runs, or
/// is the one vCPU an idle pCPU that was just kicked is about to run.
fn credit2_work_conserving(p: &Credit2, m: &Model, cpu: u32) -> Result<(), TestCaseError> {
    let mut spoken_for = BTreeMap::<u32, usize>::new();
    for (x, params) in &m.params {
        if params.cap != 0 || !m.runnable[x] || !m.allowed(*x, cpu) {
            continue;
        }
        if m.current.values().any(|y| y == x) {
            continue;
        }
        let at = p.processor(*x);
        let excused =
            at.filter(|&c| c != cpu && m.kicked.contains(&c) && !m.current.contains_key(&c));
        let Some(c) = excused else {
            return Err(TestCaseError::fail(format!(
                "pCPU {cpu} idles while {x:?} waits on {at:?}"
            )));
        };
        let n = spoken_for.entry(c).or_default();
        *n += 1;
        prop_assert!(
            *n == 1,
            "pCPU {} idles while two vCPUs wait on kicked pCPU {}",
            cpu,
            c
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn credit2_random_sequences(nr_cpus in 1u32..=8, ops in prop::collection::vec(any_op(), 0..200)) {
        let mut p = Credit2::new(nr_cpus);
        check_ops(&mut p, nr_cpus, &ops, Credit2::check_invariants, credit2_work_conserving)?;
    }

    #[test]
    fn null_random_sequences(nr_cpus in 1u32..=8, ops in prop::collection::vec(any_op(), 0..200)) {
        let mut p = Null::new(nr_cpus);
        check_ops(&mut p, nr_cpus, &ops, Null::check_invariants, |p, m, cpu| {
            // Idle only if this pCPU's vCPU (if any) is not runnable.
            for (x, r) in &m.runnable {
                if p.processor(*x) == Some(cpu) {
                    prop_assert!(!r, "pCPU {} idles while its {:?} is runnable", cpu, x);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn by_name_policies_survive_anything(name in prop_oneof![Just("credit2"), Just("null")],
                                         nr_cpus in 1u32..=8,
                                         ops in prop::collection::vec(any_op(), 0..100)) {
        let mut p = crate::by_name(name, nr_cpus).unwrap();
        check_ops(&mut p, nr_cpus, &ops, |_| Ok(()), |_, _, _| Ok(()))?;
    }
}

// ---- property test: random workloads over time ----

#[derive(Clone, Debug)]
struct Workload {
    nr_cpus: u32,
    /// Per vCPU: weight, hard and soft affinity (pCPU ids, taken modulo `nr_cpus`).
    vcpus: Vec<(u32, Vec<u32>, Vec<u32>)>,
    /// (time in ms, vCPU index, what): 0 block, 1 wake, 2 re-pin to the ids given.
    events: Vec<(u64, usize, u8, Vec<u32>)>,
}

fn any_workload() -> impl Strategy<Value = Workload> {
    (1u32..=8)
        .prop_flat_map(|nr_cpus| {
            let cpus = prop::collection::vec(0u32..8, 0..4);
            let vcpu = (
                prop_oneof![Just(256u32), 1u32..2048],
                cpus.clone(),
                cpus.clone(),
            );
            let event = (0u64..300, 0usize..12, 0u8..3, cpus);
            (
                Just(nr_cpus),
                prop::collection::vec(vcpu, 1..12),
                prop::collection::vec(event, 0..20),
            )
        })
        .prop_map(|(nr_cpus, vcpus, mut events)| {
            events.sort_by_key(|e| e.0);
            Workload {
                nr_cpus,
                vcpus,
                events,
            }
        })
}

/// A hard affinity from arbitrary ids: taken modulo `nr`, never empty.
fn hard_of(ids: &[u32], nr: u32) -> CpuSet {
    let s = set(&ids.iter().map(|c| c % nr).collect::<Vec<_>>());
    if s.is_empty() { CpuSet::all(nr) } else { s }
}

fn run_workload<P: Policy>(p: P, wl: &Workload) -> Sim<P> {
    let nr = wl.nr_cpus;
    let mut s = Sim::new(p);
    let ids: Vec<VcpuId> = (0..wl.vcpus.len()).map(|i| v(i as u16 + 1, 0)).collect();
    for (i, (weight, hard, soft)) in wl.vcpus.iter().enumerate() {
        let soft = set(&soft.iter().map(|c| c % nr).collect::<Vec<_>>());
        s.pinned(ids[i], w(*weight), hard_of(hard, nr), soft);
    }
    let evs: Vec<(u64, Ev)> = wl
        .events
        .iter()
        .filter(|e| e.1 < ids.len())
        .map(|(t, i, what, cpus)| {
            let id = ids[*i];
            let ev = match what {
                0 => Ev::Block(id),
                1 => Ev::Wake(id),
                _ => Ev::Pin(id, hard_of(cpus, nr), CpuSet::new()),
            };
            (t * MS, ev)
        })
        .collect();
    s.run(300 * MS, &evs);
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Pinned vCPUs never run outside their hard affinity, nothing runs twice at
    /// once (both checked by the simulation as it goes), and credit2 wastes no
    /// pCPU time that an allowed runnable vCPU could have used.
    #[test]
    fn random_workloads_respect_affinity(wl in any_workload()) {
        let s = run_workload(Credit2::new(wl.nr_cpus), &wl);
        let busy: u64 = s.ran.values().sum();
        let idle: u64 = s.idle.iter().sum();
        prop_assert_eq!(busy + idle, u64::from(wl.nr_cpus) * 300 * MS);
        run_workload(Null::new(wl.nr_cpus), &wl);
    }
}
