//! Unit tests of the FIFO queues: each operation and error, the link
//! protocol's races at chosen points (a fake that runs a guest's change
//! before a given access), and a hostile guest's memory.

use core::cell::{Cell, RefCell};

use keel_hypercall::abi::Errno::*;
use proptest::prelude::*;

use super::guest::{Consumer, Layout, Seen};
use super::*;

/// Array pages at frames `0..pages`, vCPU `v`'s control block at frame
/// `pages + v`, offset `8 * v`; `control` vCPUs of `vcpus` have one.
fn setup(pages: usize, vcpus: u32, control: u32) -> (Fifo, PageMem, Layout) {
    let mem = PageMem::new(pages + vcpus as usize);
    let mut f = Fifo::new(vcpus).unwrap();
    for p in 0..pages {
        f.expand_array(p as u64).unwrap();
    }
    let mut layout = Layout {
        pages: (0..pages as u64).collect(),
        control: Vec::new(),
    };
    for v in 0..vcpus {
        let (frame, offset) = (pages as u64 + u64::from(v), 8 * v as usize);
        layout.control.push((frame, offset));
        if v < control {
            f.init_control(v, offset as u32, frame).unwrap();
        }
    }
    (f, mem, layout)
}

fn word(mem: &PageMem, l: &Layout, port: Port) -> u32 {
    let (f, o) = l.word(port).unwrap();
    mem.load(f, o)
}

fn set_word(mem: &PageMem, l: &Layout, port: Port, val: u32) {
    let (f, o) = l.word(port).unwrap();
    mem.store(f, o, val);
}

fn head(mem: &PageMem, l: &Layout, vcpu: u32, q: u8) -> u32 {
    let (f, o) = l.head(vcpu, q);
    mem.load(f, o)
}

fn ready(mem: &PageMem, l: &Layout, vcpu: u32) -> u32 {
    let (f, o) = l.ready(vcpu);
    mem.load(f, o)
}

fn raised(mark: Option<u32>, newly_pending: bool) -> Raised {
    Raised {
        mark,
        newly_pending,
    }
}

/// Runs vCPU `vcpu`'s upcall to the end; returns the ports it handled.
fn drain(mem: &PageMem, l: &Layout, vcpu: u32) -> Vec<Port> {
    let mut c = Consumer::new(vcpu);
    let mut upcall = true;
    let mut handled = Vec::new();
    for _ in 0..10_000 {
        if let Some(Seen::Handled { port }) = c.step(mem, l, &mut upcall) {
            handled.push(port);
        }
        if c.is_idle() && !upcall {
            return handled;
        }
    }
    panic!("the guest did not finish: a cycle?");
}

/// What a test runs before an access: given its number and the memory.
type Before<'a> = Box<dyn FnMut(usize, &PageMem) + 'a>;

/// A [`FifoMem`] over a [`PageMem`] that runs `before(n, mem)` before its
/// `n`th access (from 0) and counts them.
struct Hooked<'a> {
    mem: &'a PageMem,
    count: Cell<usize>,
    before: RefCell<Before<'a>>,
}

impl<'a> Hooked<'a> {
    fn new(mem: &'a PageMem, before: impl FnMut(usize, &PageMem) + 'a) -> Hooked<'a> {
        Hooked {
            mem,
            count: Cell::new(0),
            before: RefCell::new(Box::new(before)),
        }
    }

    fn tick(&self) {
        let n = self.count.get();
        self.count.set(n + 1);
        (self.before.borrow_mut())(n, self.mem);
    }
}

impl FifoMem for Hooked<'_> {
    fn load(&self, frame: u64, offset: usize) -> u32 {
        self.tick();
        self.mem.load(frame, offset)
    }
    fn store(&self, frame: u64, offset: usize, val: u32) {
        self.tick();
        self.mem.store(frame, offset, val);
    }
    fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.tick();
        self.mem.fetch_or(frame, offset, val)
    }
    fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.tick();
        self.mem.fetch_and(frame, offset, val)
    }
    fn compare_exchange(
        &self,
        frame: u64,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<u32, u32> {
        self.tick();
        self.mem.compare_exchange(frame, offset, current, new)
    }
}

#[test]
fn init_control_checks_in_xen_order() {
    let mut f = Fifo::new(2).unwrap();
    assert_eq!(check_init_control(2, 2, 0), Err(ENOENT));
    assert_eq!(check_init_control(2, 2, 3), Err(ENOENT), "ENOENT first");
    assert_eq!(check_init_control(2, u32::MAX, 0), Err(ENOENT));
    for bad in [4025, 4032, 4096, u32::MAX, 4, 12, 4020] {
        assert_eq!(f.init_control(0, bad, 9), Err(EINVAL), "offset {bad}");
    }
    assert!(!f.has_control_block(0));
    assert_eq!(f.init_control(0, 4024, 9), Ok(()), "the last whole block");
    assert_eq!(f.init_control(0, 0, 10), Err(EINVAL), "twice on one vCPU");
    assert_eq!(f.init_control(1, 0, 9), Ok(()), "a frame may be shared");
    assert_eq!(f.init_control(2, 0, 9), Err(ENOENT));
    assert!(f.has_control_block(0) && f.has_control_block(1));
    assert!(!f.has_control_block(2));
    assert_eq!(f.frames().collect::<Vec<_>>(), [9, 9]);
}

#[test]
fn expand_array_grows_to_128_pages() {
    let mut f = Fifo::new(1).unwrap();
    f.init_control(0, 0, 500).unwrap();
    assert_eq!(f.nr_ports(), 0);
    assert_eq!(f.expand_array(0), Ok(0..1024));
    assert_eq!(f.expand_array(1), Ok(1024..2048));
    for p in 2..128 {
        assert_eq!(f.check_expand_array(), Ok(()));
        f.expand_array(p).unwrap();
    }
    assert_eq!(f.nr_ports(), 131_072);
    assert_eq!(f.check_expand_array(), Err(ENOSPC));
    assert_eq!(f.expand_array(999), Err(ENOSPC), "the 129th page");
    let frames: Vec<u64> = f.frames().collect();
    assert_eq!(frames.len(), 129);
    assert_eq!(frames[127], 127);
    assert_eq!(frames[128], 500, "then the control blocks");
    assert_eq!(f.into_frames(), frames);
}

#[test]
fn first_event_is_the_head_and_the_rest_link_behind_it() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let (mut p5, mut p6) = (PortFifo::NEW, PortFifo::NEW);
    assert_eq!(
        f.set_pending(&mem, 5, 0, &mut p5),
        raised(Some(0), true),
        "an empty queue: head, ready bit, mark"
    );
    assert_eq!(word(&mem, &l, 5), PENDING | LINKED);
    assert_eq!(head(&mem, &l, 0, 7), 5, "the default priority's queue");
    assert_eq!(ready(&mem, &l, 0), 1 << 7);
    assert_eq!(
        f.set_pending(&mem, 5, 0, &mut p5),
        Raised::NONE,
        "already pending: nothing"
    );
    assert_eq!(
        f.set_pending(&mem, 6, 0, &mut p6),
        raised(None, true),
        "linked behind the tail: no mark"
    );
    assert_eq!(word(&mem, &l, 5), PENDING | LINKED | 6);
    assert_eq!(word(&mem, &l, 6), PENDING | LINKED);
    assert_eq!(head(&mem, &l, 0, 7), 5);
    assert!(f.is_pending(&mem, 6) && f.is_busy(&mem, 6) && !f.is_masked(&mem, 6));
    assert_eq!(drain(&mem, &l, 0), [5, 6]);
    assert!(!f.is_pending(&mem, 5) && !f.is_busy(&mem, 5));
}

#[test]
fn consumed_tail_makes_a_new_head_and_marks_again() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let (mut p5, mut p6) = (PortFifo::NEW, PortFifo::NEW);
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    assert_eq!(drain(&mem, &l, 0), [5]);
    assert_eq!(ready(&mem, &l, 0), 0, "the guest took the ready word");
    assert_eq!(f.set_pending(&mem, 6, 0, &mut p6), raised(Some(0), true));
    assert_eq!(word(&mem, &l, 5), 0, "nothing written into the old tail");
    assert_eq!(head(&mem, &l, 0, 7), 6);
    assert_eq!(drain(&mem, &l, 0), [6]);
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    let mut p7 = PortFifo::NEW;
    assert_eq!(f.set_pending(&mem, 7, 0, &mut p7), raised(None, true));
    assert_eq!(drain(&mem, &l, 0), [5, 7]);
}

#[test]
fn priorities_have_queues_of_their_own() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let mut low = PortFifo::NEW;
    let mut high = PortFifo::NEW;
    let mut mid = PortFifo::NEW;
    low.set_priority(15).unwrap();
    high.set_priority(0).unwrap();
    assert_eq!(low.set_priority(16), Err(EINVAL));
    assert_eq!(low.set_priority(u32::MAX), Err(EINVAL));
    assert_eq!((low.priority(), mid.priority()), (15, 7));
    assert_eq!(f.set_pending(&mem, 3, 0, &mut low), raised(Some(0), true));
    assert_eq!(f.set_pending(&mem, 4, 0, &mut mid), raised(Some(0), true));
    assert_eq!(f.set_pending(&mem, 5, 0, &mut high), raised(Some(0), true));
    assert_eq!(ready(&mem, &l, 0), (1 << 15) | (1 << 7) | 1);
    assert_eq!(
        (
            head(&mem, &l, 0, 15),
            head(&mem, &l, 0, 7),
            head(&mem, &l, 0, 0)
        ),
        (3, 4, 5)
    );
    assert_eq!(drain(&mem, &l, 0), [5, 4, 3], "highest priority first");
    // A new priority applies to the next link only.
    assert_eq!(f.set_pending(&mem, 3, 0, &mut low), raised(Some(0), true));
    low.set_priority(1).unwrap();
    assert_eq!(f.set_pending(&mem, 3, 0, &mut low), Raised::NONE);
    assert_eq!(drain(&mem, &l, 0), [3]);
    assert_eq!(f.set_pending(&mem, 3, 0, &mut low), raised(Some(0), true));
    assert_eq!(head(&mem, &l, 0, 1), 3);
}

#[test]
fn masked_ports_wait_for_unmask() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let mut pf = PortFifo::NEW;
    set_word(&mem, &l, 9, MASKED);
    assert!(f.is_masked(&mem, 9));
    assert_eq!(
        f.set_pending(&mem, 9, 0, &mut pf),
        raised(None, true),
        "pending, for pollers, but not linked"
    );
    assert_eq!(word(&mem, &l, 9), PENDING | MASKED);
    assert_eq!(ready(&mem, &l, 0), 0);
    assert_eq!(f.unmask(&mem, 9, 0, &mut pf), raised(Some(0), false));
    assert_eq!(word(&mem, &l, 9), PENDING | LINKED);
    assert_eq!(head(&mem, &l, 0, 7), 9);
    assert_eq!(
        f.unmask(&mem, 9, 0, &mut pf),
        Raised::NONE,
        "linked already: not again"
    );
    assert_eq!(drain(&mem, &l, 0), [9]);
    // Unmasking a port that is not pending only clears MASKED.
    set_word(&mem, &l, 10, MASKED);
    assert_eq!(f.unmask(&mem, 10, 0, &mut pf), Raised::NONE);
    assert_eq!(word(&mem, &l, 10), 0);
}

#[test]
fn a_masked_head_is_skipped_and_relinked_on_unmask() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let mut pf = PortFifo::NEW;
    let mut other = PortFifo::NEW;
    assert_eq!(f.set_pending(&mem, 9, 0, &mut pf), raised(Some(0), true));
    assert_eq!(f.set_pending(&mem, 8, 0, &mut other), raised(None, true));
    mem.fetch_or(0, 4 * 9, MASKED);
    assert_eq!(drain(&mem, &l, 0), [8], "9 is unlinked, not handled");
    assert_eq!(word(&mem, &l, 9), PENDING | MASKED);
    assert_eq!(f.unmask(&mem, 9, 0, &mut pf), raised(Some(0), false));
    assert_eq!(drain(&mem, &l, 0), [9]);
}

#[test]
fn a_moved_tail_is_forgotten() {
    // Port 5 is vCPU 0's tail; the guest consumes it; it moves to vCPU 1
    // and is linked there. vCPU 0's next event must become its head, not
    // be linked into 5's word, which is now in vCPU 1's queue.
    let (mut f, mem, l) = setup(1, 2, 2);
    let (mut p5, mut p6) = (PortFifo::NEW, PortFifo::NEW);
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    assert_eq!(drain(&mem, &l, 0), [5]);
    assert_eq!(f.set_pending(&mem, 5, 1, &mut p5), raised(Some(1), true));
    assert_eq!(f.set_pending(&mem, 6, 0, &mut p6), raised(Some(0), true));
    assert_eq!(word(&mem, &l, 5), PENDING | LINKED, "no link to 6");
    assert_eq!(head(&mem, &l, 0, 7), 6);
    assert_eq!(drain(&mem, &l, 1), [5]);
    assert_eq!(drain(&mem, &l, 0), [6]);

    // The same within one queue: a consumed tail linked again is the head,
    // not linked to itself.
    assert_eq!(f.set_pending(&mem, 6, 0, &mut p6), raised(Some(0), true));
    assert_eq!(word(&mem, &l, 6), PENDING | LINKED);
    assert_eq!(drain(&mem, &l, 0), [6]);
}

#[test]
fn an_event_already_linked_stays_on_its_queue() {
    // Closing clears PENDING only; the word stays LINKED on vCPU 0. A new
    // event after a move to vCPU 1 is found there, on vCPU 0.
    let (mut f, mem, l) = setup(1, 2, 2);
    let mut p5 = PortFifo::NEW;
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    f.clear_pending(&mem, 5, &mut p5);
    assert_eq!(word(&mem, &l, 5), LINKED);
    assert!(f.is_busy(&mem, 5) && !f.is_pending(&mem, 5));
    assert_eq!(f.set_pending(&mem, 5, 1, &mut p5), raised(None, true));
    assert_eq!(ready(&mem, &l, 1), 0);
    assert_eq!(drain(&mem, &l, 1), []);
    assert_eq!(drain(&mem, &l, 0), [5]);
}

#[test]
fn no_control_block_drops_the_event() {
    let (mut f, mem, l) = setup(1, 2, 1);
    let mut pf = PortFifo::NEW;
    assert_eq!(f.set_pending(&mem, 5, 1, &mut pf), Raised::NONE);
    assert_eq!(f.set_pending(&mem, 5, 7, &mut pf), Raised::NONE, "no vCPU");
    assert_eq!(word(&mem, &l, 5), 0, "not even pending");
    assert!(!pf.saved_pending());
}

#[test]
fn beyond_the_array_is_saved() {
    let (mut f, mem, _) = setup(1, 1, 1);
    let mut pf = PortFifo::NEW;
    for port in [1024, 5000, 131_071, 131_072, u32::MAX] {
        assert_eq!(f.set_pending(&mem, port, 0, &mut pf), Raised::NONE);
        assert!(pf.saved_pending());
        assert!(!f.is_pending(&mem, port) && f.is_masked(&mem, port));
        assert!(!f.is_busy(&mem, port));
        assert_eq!(f.unmask(&mem, port, 0, &mut pf), Raised::NONE);
        f.clear_pending(&mem, port, &mut pf);
        assert!(!pf.saved_pending());
    }
    for frame in 0..2 {
        for off in (0..4096).step_by(4) {
            assert_eq!(mem.load(frame, off), 0, "nothing written");
        }
    }
}

#[test]
fn clear_pending_clears_pending_only() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let mut pf = PortFifo::NEW;
    set_word(&mem, &l, 4, MASKED);
    assert_eq!(f.set_pending(&mem, 4, 0, &mut pf), raised(None, true));
    f.clear_pending(&mem, 4, &mut pf);
    assert_eq!(word(&mem, &l, 4), MASKED);
}

#[test]
fn a_racing_mask_makes_keel_set_busy_and_retry() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let (mut p5, mut p6) = (PortFifo::NEW, PortFifo::NEW);
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    // Sending 6: PENDING(0) MASKED(1) LINKED(2), load tail (3), cmpxchg
    // (4). The guest masks 5 just before the cmpxchg.
    let hooked = Hooked::new(&mem, |n, m| {
        if n == 4 {
            m.fetch_or(0, 4 * 5, MASKED);
        }
        if n == 6 {
            // After BUSY is set (5): the word shows it.
            assert_ne!(m.load(0, 4 * 5) & BUSY, 0);
        }
    });
    assert_eq!(f.set_pending(&hooked, 6, 0, &mut p6), raised(None, true));
    assert_eq!(
        word(&mem, &l, 5),
        PENDING | MASKED | LINKED | 6,
        "BUSY cleared"
    );
    assert_eq!(
        hooked.count.get(),
        8,
        "fetch_or BUSY, load, a second cmpxchg"
    );
}

#[test]
fn a_racing_consumption_makes_keel_write_the_head() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let (mut p5, mut p6) = (PortFifo::NEW, PortFifo::NEW);
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    mem.store(l.ready(0).0, l.ready(0).1, 0);
    // The guest consumes 5 between keel's load of the tail and its cmpxchg.
    let hooked = Hooked::new(&mem, |n, m| {
        if n == 4 {
            m.fetch_and(0, 4 * 5, !(LINKED | LINK_MASK | PENDING));
        }
    });
    assert_eq!(f.set_pending(&hooked, 6, 0, &mut p6), raised(Some(0), true));
    assert_eq!(word(&mem, &l, 5), 0, "BUSY cleared again, no link");
    assert_eq!(head(&mem, &l, 0, 7), 6);
    assert_eq!(drain(&mem, &l, 0), [6]);
}

#[test]
fn a_guest_that_never_stops_changing_the_tail_gets_four_tries() {
    let (mut f, mem, l) = setup(1, 1, 1);
    let (mut p5, mut p6) = (PortFifo::NEW, PortFifo::NEW);
    assert_eq!(f.set_pending(&mem, 5, 0, &mut p5), raised(Some(0), true));
    let hooked = Hooked::new(&mem, |n, m| {
        if n >= 3 {
            // Flip PENDING before every access from the tail's load on.
            m.fetch_or(0, 4 * 5, 0);
            let w = m.load(0, 4 * 5);
            m.store(0, 4 * 5, w ^ PENDING);
        }
    });
    // Xen gives up and counts the port linked: no head, no mark.
    assert_eq!(f.set_pending(&hooked, 6, 0, &mut p6), raised(None, true));
    assert_eq!(word(&mem, &l, 5) & (BUSY | LINK_MASK), 0);
    assert_eq!(head(&mem, &l, 0, 7), 5);
    // PENDING, MASKED, LINKED; load, cmpxchg, BUSY, load, 4 cmpxchg, BUSY.
    assert_eq!(hooked.count.get(), 12);
    assert!(hooked.count.get() <= MAX_ACCESSES);
}

#[test]
fn page_mem_ignores_what_it_does_not_have() {
    let m = PageMem::new(1);
    m.store(1, 0, 5);
    m.store(0, 4096, 5);
    m.store(0, 2, 5);
    assert_eq!(m.load(1, 0), 0);
    assert_eq!(m.load(0, 4096), 0);
    assert_eq!(m.fetch_or(u64::MAX, 0, 1), 0);
    assert_eq!(m.fetch_and(0, 3, 1), 0);
    assert_eq!(m.compare_exchange(7, 0, 0, 1), Err(0));
    assert_eq!(m.compare_exchange(0, 0, 0, 1), Ok(0));
    assert_eq!(m.load(0, 0), 1);
}

/// Where a hostile test's accesses went.
struct Checked<'a> {
    mem: &'a PageMem,
    frames: u64,
    count: Cell<usize>,
    /// Scribbles to make before the accesses, in turn: (frame, word, value).
    scribbles: RefCell<Vec<(u64, usize, u32)>>,
}

impl Checked<'_> {
    fn tick(&self, frame: u64, offset: usize) {
        assert!(frame < self.frames, "frame {frame} was never handed over");
        assert!(offset.is_multiple_of(4) && offset < 4096, "offset {offset}");
        self.count.set(self.count.get() + 1);
        if let Some((f, w, v)) = self.scribbles.borrow_mut().pop() {
            self.mem.store(f % self.frames, 4 * (w % 1024), v);
        }
    }
}

impl FifoMem for Checked<'_> {
    fn load(&self, frame: u64, offset: usize) -> u32 {
        self.tick(frame, offset);
        self.mem.load(frame, offset)
    }
    fn store(&self, frame: u64, offset: usize, val: u32) {
        self.tick(frame, offset);
        self.mem.store(frame, offset, val);
    }
    fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.tick(frame, offset);
        self.mem.fetch_or(frame, offset, val)
    }
    fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.tick(frame, offset);
        self.mem.fetch_and(frame, offset, val)
    }
    fn compare_exchange(
        &self,
        frame: u64,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<u32, u32> {
        self.tick(frame, offset);
        self.mem.compare_exchange(frame, offset, current, new)
    }
}

#[derive(Clone, Debug)]
enum HostileOp {
    Send(Port, u32),
    Unmask(Port, u32),
    Clear(Port),
    Priority(Port, u32),
    /// The guest writes `value` into word `word` of frame `frame`, now.
    Scribble(u64, usize, u32),
}

fn hostile_op() -> impl Strategy<Value = HostileOp> {
    let port = prop_oneof![0u32..64, 1000u32..1100, 2040u32..2050, any::<u32>()];
    let val = prop_oneof![
        any::<u32>(),
        Just(LINKED),
        Just(LINKED | 5),
        Just(BUSY | LINKED),
        Just(MASKED),
        Just(u32::MAX),
        (0u32..64).prop_map(|p| LINKED | p),
    ];
    prop_oneof![
        (port.clone(), 0u32..4).prop_map(|(p, v)| HostileOp::Send(p, v)),
        (port.clone(), 0u32..4).prop_map(|(p, v)| HostileOp::Unmask(p, v)),
        port.clone().prop_map(HostileOp::Clear),
        (port, 0u32..20).prop_map(|(p, q)| HostileOp::Priority(p, q)),
        (0u64..4, 0usize..1024, val).prop_map(|(f, w, v)| HostileOp::Scribble(f, w, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A guest writing anything anywhere in its array and control blocks,
    /// also between keel's accesses: no panic, every access in a frame it
    /// handed over, at most MAX_ACCESSES per operation.
    #[test]
    fn hostile_memory_is_survived(
        ops in proptest::collection::vec(hostile_op(), 0..200),
        inner in proptest::collection::vec((0u64..4, 0usize..1024, any::<u32>()), 0..300),
    ) {
        // Frames 0 and 1: the array (2048 ports); 2 and 3: control blocks
        // of vCPUs 0 and 1 (vCPU 2 has none; 3 does not exist).
        let mem = PageMem::new(4);
        let mut f = Fifo::new(3).unwrap();
        f.expand_array(0).unwrap();
        f.expand_array(1).unwrap();
        f.init_control(0, 0, 2).unwrap();
        f.init_control(1, 4024, 3).unwrap();
        let checked = Checked { mem: &mem, frames: 4, count: Cell::new(0), scribbles: RefCell::new(inner) };
        let mut ports = std::collections::HashMap::<Port, PortFifo>::new();
        for op in ops {
            checked.count.set(0);
            match op {
                HostileOp::Send(p, v) => {
                    let _ = f.set_pending(&checked, p, v, ports.entry(p).or_default());
                }
                HostileOp::Unmask(p, v) => {
                    let _ = f.unmask(&checked, p, v, ports.entry(p).or_default());
                }
                HostileOp::Clear(p) => f.clear_pending(&checked, p, ports.entry(p).or_default()),
                HostileOp::Priority(p, q) => {
                    let _ = ports.entry(p).or_default().set_priority(q);
                }
                HostileOp::Scribble(fr, w, v) => mem.store(fr, 4 * w, v),
            }
            prop_assert!(checked.count.get() <= MAX_ACCESSES, "{} accesses", checked.count.get());
        }
    }
}
