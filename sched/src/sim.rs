//! Host simulation of the kernel's side of the contract, and the policy tests that
//! need time to pass: shares by weight, blocking, waking, caps, yield, several pCPUs,
//! and a property test over random call sequences for both policies.

use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;

use crate::credit2::{self, Credit2};
use crate::null::Null;
use crate::{Decision, Params, Policy, VcpuId};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

const fn v(dom: u16, vcpu: u32) -> VcpuId {
    VcpuId::new(dom, vcpu)
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Wake(VcpuId),
    Block(VcpuId),
}

/// The kernel as the crate documentation describes it: picks when a slice ends, when
/// the running vCPU blocks, and when `wake` names a pCPU; runs exactly what it was
/// told for exactly as long as it was told.
struct Sim<P: Policy> {
    p: P,
    now: u64,
    /// Per pCPU: what runs and until when.
    cpus: Vec<(Option<VcpuId>, u64)>,
    need_pick: Vec<bool>,
    ran: BTreeMap<VcpuId, u64>,
    idle: Vec<u64>,
    /// Every pick that started a vCPU: (time, pCPU, vCPU).
    starts: Vec<(u64, u32, VcpuId)>,
}

impl<P: Policy> Sim<P> {
    fn new(p: P, nr_cpus: usize) -> Self {
        Sim {
            p,
            now: 0,
            cpus: vec![(None, 0); nr_cpus],
            need_pick: vec![true; nr_cpus],
            ran: BTreeMap::new(),
            idle: vec![0; nr_cpus],
            starts: Vec::new(),
        }
    }

    /// Adds CPU-bound vCPUs with these parameters, runnable from now.
    fn cpu_bound(&mut self, vs: &[(VcpuId, Params)]) {
        for &(id, params) in vs {
            self.p.add(id, params).unwrap();
            self.wake(id);
        }
    }

    fn wake(&mut self, id: VcpuId) {
        if let Some(c) = self.p.wake(id, self.now) {
            self.need_pick[c as usize] = true;
        }
    }

    fn apply(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(id) => self.wake(id),
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

    /// Runs until `end`, applying `events` (sorted by time) on the way.
    fn run(&mut self, end: u64, events: &[(u64, Ev)]) {
        let mut events = events.iter().copied().peekable();
        loop {
            for c in 0..self.cpus.len() {
                if self.need_pick[c] {
                    self.need_pick[c] = false;
                    let Decision { next, slice_ns } = self.p.pick(c as u32, self.now);
                    assert!(slice_ns > 0);
                    if let Some(id) = next {
                        assert!(self.p.is_runnable(id));
                        self.starts.push((self.now, c as u32, id));
                    }
                    self.cpus[c] = (next, self.now.saturating_add(slice_ns));
                }
            }
            let next_ev = events.peek().map_or(u64::MAX, |e| e.0);
            let deadline = self.cpus.iter().map(|c| c.1).min().unwrap_or(u64::MAX);
            let t = end.min(next_ev).min(deadline).max(self.now);
            let dt = t - self.now;
            for (c, cpu) in self.cpus.iter().enumerate() {
                match cpu.0 {
                    Some(id) => *self.ran.entry(id).or_default() += dt,
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

    fn ran(&self, id: VcpuId) -> u64 {
        self.ran.get(&id).copied().unwrap_or(0)
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
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(1), 1);
    let a = v(1, 0);
    s.cpu_bound(&[(a, capped(30))]);
    s.run(SECOND, &[]);
    let share = s.share(a, SECOND);
    assert!((0.29..=0.31).contains(&share), "{share}");
    assert_eq!(s.ran(a) + s.idle[0], SECOND);
}

#[test]
fn a_cap_gives_the_rest_to_an_uncapped_peer() {
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(1), 1);
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
    let mut s = Sim::new(Credit2::new(2), 2);
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
            slice_ns: MS
        }
    );
    // Parked at 1 ms: idle until the period ends at 10 ms.
    let d = p.pick(0, MS);
    assert_eq!(
        d,
        Decision {
            next: None,
            slice_ns: 9 * MS
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
            slice_ns: 7 * MS
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
    let mut s = Sim::new(Credit2::new(2), 2);
    let (a, b) = (v(1, 0), v(2, 0));
    s.cpu_bound(&[(a, w(256)), (b, w(512))]);
    s.run(SECOND, &[]);
    assert_eq!(s.ran(a), SECOND);
    assert_eq!(s.ran(b), SECOND);
    assert_eq!(s.idle, [0, 0]);
}

#[test]
fn two_pcpus_share_three_vcpus_fairly() {
    let mut s = Sim::new(Credit2::new(2), 2);
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
    p.wake(a, 0);
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
    assert_eq!(
        p.pick(7, 0),
        Decision {
            next: None,
            slice_ns: u64::MAX
        }
    );
    p.pick(0, u64::MAX);
    p.pick(0, u64::MAX);
}

#[test]
fn set_params_reweights_and_recaps() {
    let mut s = Sim::new(Credit2::new(1), 1);
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

// ---- property test: random call sequences ----

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
}

fn any_vcpu() -> impl Strategy<Value = VcpuId> {
    (0u16..3, 0u32..3).prop_map(|(d, i)| v(d, i))
}

fn any_op() -> impl Strategy<Value = Op> {
    let weight = prop_oneof![Just(256u32), 0u32..70_000];
    let cap = prop_oneof![Just(0u32), 0u32..120];
    prop_oneof![
        (any_vcpu(), weight.clone(), cap.clone()).prop_map(|(x, w, c)| Op::Add(x, w, c)),
        any_vcpu().prop_map(Op::Remove),
        any_vcpu().prop_map(Op::Wake),
        any_vcpu().prop_map(Op::Block),
        any_vcpu().prop_map(Op::Yield),
        (0u32..4).prop_map(Op::Pick),
        (0u32..4).prop_map(Op::Pick),
        prop_oneof![0u64..20 * MS, Just(0), any::<u64>()].prop_map(Op::Advance),
        (any_vcpu(), weight, cap).prop_map(|(x, w, c)| Op::SetParams(x, w, c)),
    ]
}

/// What the kernel knows: the vCPUs added (with their parameters), which are
/// runnable, and what each pCPU runs.
#[derive(Default)]
struct Model {
    params: BTreeMap<VcpuId, Params>,
    runnable: BTreeMap<VcpuId, bool>,
    current: BTreeMap<u32, VcpuId>,
}

fn check_ops<P: Policy>(
    p: &mut P,
    nr_cpus: u32,
    ops: &[Op],
    on_idle: impl Fn(&P, &Model, u32) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut m = Model::default();
    let mut now = 0u64;
    for op in ops {
        match *op {
            Op::Add(x, weight, cap) => {
                let params = Params { weight, cap };
                let r = p.add(x, params);
                let ok = params.check().is_ok() && !m.params.contains_key(&x);
                prop_assert_eq!(r.is_ok(), ok);
                if ok {
                    m.params.insert(x, params);
                    m.runnable.insert(x, false);
                }
            }
            Op::SetParams(x, weight, cap) => {
                let params = Params { weight, cap };
                let r = p.set_params(x, params);
                let ok = params.check().is_ok() && m.params.contains_key(&x);
                prop_assert_eq!(r.is_ok(), ok);
                if ok {
                    m.params.insert(x, params);
                }
            }
            Op::Remove(x) => {
                let cpu = p.remove(x, now);
                if let Some(c) = cpu {
                    prop_assert!(c < nr_cpus);
                }
                m.params.remove(&x);
                m.runnable.remove(&x);
                m.current.retain(|_, y| *y != x);
            }
            Op::Wake(x) => {
                if let Some(c) = p.wake(x, now) {
                    prop_assert!(c < nr_cpus);
                }
                if let Some(r) = m.runnable.get_mut(&x) {
                    *r = true;
                }
            }
            Op::Block(x) => {
                p.block(x, now);
                if let Some(r) = m.runnable.get_mut(&x) {
                    *r = false;
                }
                m.current.retain(|_, y| *y != x);
            }
            Op::Yield(x) => p.yield_now(x, now),
            Op::Advance(dt) => now = now.saturating_add(dt),
            Op::Pick(cpu) => {
                let d = p.pick(cpu, now);
                prop_assert!(d.slice_ns > 0);
                m.current.remove(&cpu);
                match d.next {
                    Some(x) => {
                        prop_assert!(cpu < nr_cpus);
                        prop_assert_eq!(m.runnable.get(&x), Some(&true), "{:?}", x);
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
        for (x, &r) in &m.runnable {
            prop_assert_eq!(p.is_runnable(*x), r);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn credit2_random_sequences(nr_cpus in 1u32..4, ops in prop::collection::vec(any_op(), 0..200)) {
        let mut p = Credit2::new(nr_cpus);
        check_ops(&mut p, nr_cpus, &ops, |_, m, cpu| {
            // Work-conserving: idle only if every uncapped runnable vCPU runs elsewhere.
            for (x, params) in &m.params {
                if params.cap == 0 && m.runnable[x] {
                    prop_assert!(
                        m.current.values().any(|y| y == x),
                        "pCPU {} idles while {:?} waits", cpu, x
                    );
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn null_random_sequences(nr_cpus in 1u32..4, ops in prop::collection::vec(any_op(), 0..200)) {
        let mut p = Null::new(nr_cpus);
        check_ops(&mut p, nr_cpus, &ops, |p, m, cpu| {
            // Idle only if this pCPU's vCPU (if any) is not runnable.
            for (x, r) in &m.runnable {
                if p.cpu_of(*x) == Some(cpu) {
                    prop_assert!(!r);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn by_name_policies_survive_anything(name in prop_oneof![Just("credit2"), Just("null")],
                                         ops in prop::collection::vec(any_op(), 0..100)) {
        let mut p = crate::by_name(name, 2).unwrap();
        check_ops(&mut p, 2, &ops, |_, _, _| Ok(()))?;
    }
}
