//! The property test of the FIFO queues against a model, with the guest
//! consuming concurrently.
//!
//! keel's operations run whole (the kernel holds the table lock), but the
//! guest is not locked: its vCPUs run Linux's consumer and unmask
//! ([`super::guest`]) one atomic access per step, between keel's operations
//! and *inside* them, before any of keel's accesses to guest memory (a
//! [`FifoMem`] fake, [`Hook`], runs the steps an operation's script asks
//! for).
//!
//! The model is what the queues must hold: the fake sees keel set LINKED on
//! a word, which puts the port at the end of the queue the operation
//! targets (the port's vCPU and priority at that moment). Then:
//!
//! - each port the guest unlinks is the front of the model's queue it took
//!   it from: FIFO order within a queue, the vCPU it was bound to when
//!   linked, exactly once per link, nothing consumed that was not linked,
//!   and no corruption (a wrong or cyclic link is consumed out of order);
//! - each queue the guest picks is the highest-priority one with events,
//!   but for the one an operation in progress is linking into;
//! - keel's answers are what happened: `newly_pending` exactly when it set
//!   PENDING from clear, `mark` exactly when it set a `ready` bit from clear
//!   (and only then does the guest's upcall run);
//! - at the end, with the guest run until it has nothing left to do: every
//!   queue is empty, and no port is left pending and unmasked (no event
//!   lost), no word LINKED or BUSY.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::guest::{Consumer, Layout, Seen, Unmasked, Unmasker};
use super::*;

const VCPUS: u32 = 3;
/// Threads of the guest: one consumer per vCPU, then the unmasker.
const THREADS: u8 = VCPUS as u8 + 1;
/// Ports in play: both ends of both array pages, and a few more.
const PORTS: [Port; 6] = [1, 2, 3, 1023, 1024, 2047];

/// A queue: (vCPU, priority).
type Queue = (u32, u8);

/// The guest and the model.
struct World {
    layout: Layout,
    consumers: Vec<Consumer>,
    unmasker: Unmasker,
    /// Each vCPU's `evtchn_upcall_pending`.
    upcall: Vec<bool>,
    /// Per queue, the ports linked there and not yet consumed, in order.
    queues: BTreeMap<Queue, VecDeque<Port>>,
    /// The queue the keel operation in progress links into.
    target: Option<Queue>,
    /// What the guest does before keel's next accesses, one each.
    script: VecDeque<Inner>,
    /// Unmask hypercalls the guest made, for keel to run.
    hypercalls: VecDeque<Port>,
    /// During a keel operation: it set PENDING from clear; it set a
    /// `ready` bit from clear (of this vCPU); its accesses.
    set_pending: bool,
    set_ready: Option<u32>,
    accesses: usize,
    /// Events handled, per port.
    handled: BTreeMap<Port, u32>,
}

impl World {
    fn new(layout: Layout) -> World {
        World {
            layout,
            consumers: (0..VCPUS).map(Consumer::new).collect(),
            unmasker: Unmasker::default(),
            upcall: vec![false; VCPUS as usize],
            queues: BTreeMap::new(),
            target: None,
            script: VecDeque::new(),
            hypercalls: VecDeque::new(),
            set_pending: false,
            set_ready: None,
            accesses: 0,
            handled: BTreeMap::new(),
        }
    }

    fn idle(&self) -> bool {
        self.consumers.iter().all(Consumer::is_idle)
            && self.upcall.iter().all(|u| !u)
            && self.unmasker.is_idle()
            && self.hypercalls.is_empty()
    }

    /// One step of guest thread `t`, checked against the model.
    fn step(&mut self, mem: &PageMem, t: u8) {
        let t = t % THREADS;
        if u32::from(t) == VCPUS {
            if let Some(Unmasked::Hypercall(port)) = self.unmasker.step(mem, &self.layout) {
                self.hypercalls.push_back(port);
            }
            return;
        }
        let v = u32::from(t);
        let c = &mut self.consumers[v as usize];
        let seen = c.step(mem, &self.layout, &mut self.upcall[v as usize]);
        match seen {
            None => {}
            Some(Seen::Picked { q }) => {
                for higher in 0..q {
                    let nonempty = self.queues.get(&(v, higher)).is_some_and(|d| !d.is_empty());
                    assert!(
                        !nonempty || self.target == Some((v, higher)),
                        "vCPU {v} took queue {q} while queue {higher} has {:?}",
                        self.queues[&(v, higher)]
                    );
                }
            }
            Some(Seen::Consumed { q, port, .. }) => {
                let front = self.queues.entry((v, q)).or_default().pop_front();
                assert_eq!(front, Some(port), "vCPU {v} unlinked {port} from queue {q}");
            }
            Some(Seen::Handled { port }) => *self.handled.entry(port).or_default() += 1,
            Some(Seen::Bad { q, port }) => panic!("vCPU {v} queue {q} reached port {port}"),
        }
    }

    /// Before one of keel's accesses: the script's next guest steps.
    fn before_access(&mut self, mem: &PageMem) {
        self.accesses += 1;
        match self.script.pop_front() {
            None => {}
            Some(Inner::Run(t, n)) => {
                for _ in 0..n {
                    self.step(mem, t);
                }
            }
            Some(Inner::Mask(i)) => {
                let (f, o) = self.layout.word(PORTS[i]).unwrap();
                mem.fetch_or(f, o, MASKED);
            }
            Some(Inner::Clear(i)) => {
                let (f, o) = self.layout.word(PORTS[i]).unwrap();
                mem.fetch_and(f, o, !PENDING);
            }
        }
    }

    /// The port whose word is at (`frame`, `offset`), if any.
    fn port_at(&self, frame: u64, offset: usize) -> Option<Port> {
        let page = self.layout.pages.iter().position(|&f| f == frame)?;
        Some(u32::try_from(page * 1024 + offset / 4).unwrap())
    }

    /// The vCPU whose `ready` word is at (`frame`, `offset`), if any.
    fn ready_of(&self, frame: u64, offset: usize) -> Option<u32> {
        let v = self
            .layout
            .control
            .iter()
            .position(|&c| c == (frame, offset))?;
        Some(u32::try_from(v).unwrap())
    }

    /// What keel's `fetch_or` did, for the model.
    fn saw_or(&mut self, frame: u64, offset: usize, val: u32, old: u32) {
        if let Some(port) = self.port_at(frame, offset) {
            if val == LINKED && old & LINKED == 0 {
                let q = self.target.expect("a link outside an operation");
                self.queues.entry(q).or_default().push_back(port);
            }
            if val == PENDING && old & PENDING == 0 {
                self.set_pending = true;
            }
        } else if let Some(v) = self.ready_of(frame, offset)
            && old & val != val
        {
            assert!(self.set_ready.is_none(), "two ready bits in one operation");
            self.set_ready = Some(v);
        }
    }
}

/// The guest memory keel sees: runs the world's script before each access
/// and shows the world what keel did.
struct Hook<'a> {
    mem: &'a PageMem,
    world: &'a RefCell<World>,
}

impl FifoMem for Hook<'_> {
    fn load(&self, frame: u64, offset: usize) -> u32 {
        self.world.borrow_mut().before_access(self.mem);
        self.mem.load(frame, offset)
    }
    fn store(&self, frame: u64, offset: usize, val: u32) {
        self.world.borrow_mut().before_access(self.mem);
        self.mem.store(frame, offset, val);
    }
    fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32 {
        let mut w = self.world.borrow_mut();
        w.before_access(self.mem);
        let old = self.mem.fetch_or(frame, offset, val);
        w.saw_or(frame, offset, val, old);
        old
    }
    fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.world.borrow_mut().before_access(self.mem);
        self.mem.fetch_and(frame, offset, val)
    }
    fn compare_exchange(
        &self,
        frame: u64,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<u32, u32> {
        self.world.borrow_mut().before_access(self.mem);
        self.mem.compare_exchange(frame, offset, current, new)
    }
}

/// A port as the table would keep it.
#[derive(Clone, Copy, Debug)]
struct PortState {
    bound: bool,
    vcpu: u32,
    fifo: PortFifo,
}

/// What the guest does before one of keel's accesses.
#[derive(Clone, Copy, Debug)]
enum Inner {
    /// Steps of a guest thread.
    Run(u8, u8),
    /// Sets MASKED on a port.
    Mask(usize),
    /// Clears PENDING of a port.
    Clear(usize),
}

#[derive(Clone, Debug)]
enum Op {
    /// keel raises the port (on its vCPU, at its priority).
    Send(usize, Vec<Inner>),
    /// `EVTCHNOP_unmask` of the port.
    Unmask(usize, Vec<Inner>),
    SetPriority(usize, u32),
    BindVcpu(usize, u32),
    /// `EVTCHNOP_close`: PENDING cleared, no more sends.
    Close(usize, Vec<Inner>),
    /// Bound again (if free and not busy), on a vCPU.
    Rebind(usize, u32),
    /// The guest sets MASKED.
    Mask(usize),
    /// The guest starts unmasking (Linux's `evtchn_fifo_unmask`).
    GuestUnmask(usize),
    /// The guest clears PENDING of its own accord.
    GuestClear(usize),
    /// Guest steps between keel's operations.
    Run(u8, u8),
    /// `EVTCHNOP_expand_array` of the second page, which raises the ports
    /// on it that were raised before it existed.
    Expand,
}

fn script() -> impl Strategy<Value = Vec<Inner>> {
    let inner = prop_oneof![
        6 => (0..THREADS, 0u8..4).prop_map(|(t, n)| Inner::Run(t, n)),
        1 => (0..PORTS.len()).prop_map(Inner::Mask),
        1 => (0..PORTS.len()).prop_map(Inner::Clear),
    ];
    proptest::collection::vec(inner, 0..12)
}

fn op() -> impl Strategy<Value = Op> {
    let port = 0..PORTS.len();
    prop_oneof![
        6 => (port.clone(), script()).prop_map(|(p, s)| Op::Send(p, s)),
        1 => (port.clone(), script()).prop_map(|(p, s)| Op::Unmask(p, s)),
        1 => (port.clone(), prop_oneof![0u32..3, 6u32..8, 15u32..17])
            .prop_map(|(p, q)| Op::SetPriority(p, q)),
        1 => (port.clone(), 0..VCPUS).prop_map(|(p, v)| Op::BindVcpu(p, v)),
        1 => (port.clone(), script()).prop_map(|(p, s)| Op::Close(p, s)),
        1 => (port.clone(), 0..VCPUS).prop_map(|(p, v)| Op::Rebind(p, v)),
        1 => port.clone().prop_map(Op::Mask),
        1 => port.clone().prop_map(Op::GuestUnmask),
        1 => port.prop_map(Op::GuestClear),
        4 => (0..THREADS, 1u8..12).prop_map(|(t, n)| Op::Run(t, n)),
        1 => Just(Op::Expand),
    ]
}

/// The fixture: array pages at frames 0 and 1 (the second not given to
/// keel yet), control blocks of vCPUs 0, 1, 2 in frames 2, 3, 4 at offsets
/// 0, 4024, 64.
fn fixture() -> (Fifo, PageMem, Layout) {
    let mem = PageMem::new(5);
    let mut f = Fifo::new(VCPUS).unwrap();
    f.expand_array(0).unwrap();
    let control = vec![(2, 0), (3, 4024), (4, 64)];
    for (v, &(frame, offset)) in control.iter().enumerate() {
        f.init_control(v as u32, offset as u32, frame).unwrap();
    }
    let layout = Layout {
        pages: vec![0, 1],
        control,
    };
    (f, mem, layout)
}

/// Runs one keel operation on `port` with `script` interleaved, and checks
/// its answer against what the world saw; a mark sets the upcall flag.
fn keel(
    world: &RefCell<World>,
    mem: &PageMem,
    st: &PortState,
    script: &[Inner],
    op: impl FnOnce(&Hook<'_>) -> Raised,
) {
    {
        let mut w = world.borrow_mut();
        w.target = Some((st.vcpu, st.fifo.priority() as u8));
        w.script = script.iter().copied().collect();
        w.set_pending = false;
        w.set_ready = None;
        w.accesses = 0;
    }
    let r = op(&Hook { mem, world });
    let mut w = world.borrow_mut();
    w.target = None;
    assert!(w.accesses <= MAX_ACCESSES, "{} accesses", w.accesses);
    assert_eq!(r.newly_pending, w.set_pending, "newly_pending");
    assert_eq!(r.mark, w.set_ready, "mark");
    if let Some(v) = r.mark {
        w.upcall[v as usize] = true;
    }
}

fn run(ops: Vec<Op>) {
    let (mut f, mem, layout) = fixture();
    let world = RefCell::new(World::new(layout.clone()));
    let mut ports = [PortState {
        bound: true,
        vcpu: 0,
        fifo: PortFifo::NEW,
    }; PORTS.len()];
    let word = |i: usize| {
        let (fr, o) = layout.word(PORTS[i]).unwrap();
        (fr, o)
    };

    let unmask = |f: &mut Fifo, ports: &mut [PortState], i: usize, script: &[Inner]| {
        let st = ports[i];
        if st.bound {
            let mut pf = st.fifo;
            keel(&world, &mem, &st, script, |m| {
                f.unmask(m, PORTS[i], st.vcpu, &mut pf)
            });
            ports[i].fifo = pf;
        }
    };

    // Xen's add_page_to_event_array, as the table does it.
    let expand = |f: &mut Fifo, ports: &mut [PortState]| {
        if f.nr_ports() >= 2048 {
            return;
        }
        let covered = f.expand_array(1).unwrap();
        for (i, &port) in PORTS.iter().enumerate() {
            let st = ports[i];
            if covered.contains(&port) && st.bound && st.fifo.saved_pending() {
                let mut pf = st.fifo;
                pf.clear_saved_pending();
                keel(&world, &mem, &st, &[], |m| {
                    f.set_pending(m, port, st.vcpu, &mut pf)
                });
                ports[i].fifo = pf;
            }
        }
    };

    for op in ops {
        // The guest's unmask hypercalls run first, as keel operations.
        loop {
            let next = world.borrow_mut().hypercalls.pop_front();
            let Some(port) = next else { break };
            let i = PORTS.iter().position(|&p| p == port).unwrap();
            unmask(&mut f, &mut ports, i, &[]);
        }
        match op {
            Op::Send(i, s) => {
                let st = ports[i];
                if st.bound {
                    let mut pf = st.fifo;
                    keel(&world, &mem, &st, &s, |m| {
                        f.set_pending(m, PORTS[i], st.vcpu, &mut pf)
                    });
                    ports[i].fifo = pf;
                }
            }
            Op::Unmask(i, s) => unmask(&mut f, &mut ports, i, &s),
            Op::SetPriority(i, q) => {
                let r = ports[i].fifo.set_priority(q);
                assert_eq!(r.is_ok(), q <= 15);
            }
            Op::BindVcpu(i, v) => ports[i].vcpu = v,
            Op::Close(i, s) => {
                let st = ports[i];
                if st.bound {
                    let mut pf = st.fifo;
                    keel(&world, &mem, &st, &s, |m| {
                        f.clear_pending(m, PORTS[i], &mut pf);
                        Raised::NONE
                    });
                    ports[i] = PortState {
                        bound: false,
                        vcpu: 0,
                        fifo: pf,
                    };
                }
            }
            Op::Rebind(i, v) => {
                if !ports[i].bound && !f.is_busy(&mem, PORTS[i]) {
                    ports[i].bound = true;
                    ports[i].vcpu = v;
                    ports[i].fifo.set_default_priority();
                }
            }
            Op::Mask(i) => {
                let (fr, o) = word(i);
                mem.fetch_or(fr, o, MASKED);
            }
            Op::GuestUnmask(i) => world.borrow_mut().unmasker.start(PORTS[i]),
            Op::GuestClear(i) => {
                let (fr, o) = word(i);
                mem.fetch_and(fr, o, !PENDING);
            }
            Op::Run(t, n) => {
                let mut w = world.borrow_mut();
                for _ in 0..n {
                    w.step(&mem, t);
                }
            }
            Op::Expand => expand(&mut f, &mut ports),
        }
    }
    // Every port reachable, so that every event can be consumed.
    expand(&mut f, &mut ports);

    // Quiesce: let every guest thread (and keel's unmask hypercalls) run
    // until there is nothing left to do. Bounded: no cycles.
    let mut rounds = 0;
    loop {
        loop {
            let next = world.borrow_mut().hypercalls.pop_front();
            let Some(port) = next else { break };
            let i = PORTS.iter().position(|&p| p == port).unwrap();
            unmask(&mut f, &mut ports, i, &[]);
        }
        let mut w = world.borrow_mut();
        if w.idle() {
            break;
        }
        for t in 0..THREADS {
            w.step(&mem, t);
        }
        rounds += 1;
        assert!(rounds < 10_000, "the guest never finished");
    }

    let w = world.borrow();
    for (q, d) in &w.queues {
        assert!(d.is_empty(), "queue {q:?} still holds {d:?}");
    }
    for (i, &port) in PORTS.iter().enumerate() {
        let (fr, o) = word(i);
        let v = mem.load(fr, o);
        assert_eq!(v & (LINKED | BUSY), 0, "port {port}: {v:#x}");
        assert!(
            v & PENDING == 0 || v & MASKED != 0,
            "port {port} lost an event: {v:#x} ({:?})",
            ports[i]
        );
    }
}

#[test]
fn a_masked_head_moved_to_another_vcpu() {
    // A fixed sequence that exercises the move while masked.
    run(vec![
        Op::Send(0, vec![]),
        Op::Mask(0),
        Op::Run(0, 20),
        Op::BindVcpu(0, 1),
        Op::Send(1, vec![]),
        Op::GuestUnmask(0),
        Op::Run(3, 5),
        Op::Send(0, vec![Inner::Run(1, 3), Inner::Run(0, 2)]),
    ]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// See the module documentation.
    #[test]
    fn queues_follow_the_model(ops in proptest::collection::vec(op(), 0..160)) {
        run(ops);
    }
}
