//! Unit tests of the FIFO ABI through the table: switching to it and back,
//! the port limit, each sub-op's errors in Xen's order, delivery, busy
//! ports, the frames handed back, and a guest scribbling over its words.

use std::sync::Arc;

use keel_hypercall::abi::Errno::*;
use keel_hypercall::abi::evtchn::{VIRQ_DEBUG, VIRQ_TIMER};
use proptest::prelude::*;

use super::*;
use crate::fifo::guest::{Consumer, Layout, Seen};
use crate::fifo::{LINKED, MASKED, PENDING, PageMem};
use crate::hub::Hub;
use crate::two_level::ArrayWords;

/// Frames of the fixture's memory: event-array pages at `0..128`, vCPU
/// `v`'s control block at `128 + v` (offset 0).
const CONTROL: u64 = 128;
const FRAMES: usize = 136;

/// A table of domain 1 with FIFO memory (not yet in use).
fn fifo_table(max_ports: u32, nr_vcpus: u32) -> (Table, Arc<PageMem>) {
    let mem = Arc::new(PageMem::new(FRAMES));
    let mut t = Table::new(1, max_ports, nr_vcpus).unwrap();
    t.enable_fifo(Box::new(mem.clone()));
    (t, mem)
}

/// Switches `t` to FIFO with every vCPU's control block and `pages` pages.
fn switch(t: &mut Table, pages: u64) {
    let words = ArrayWords::new(t.nr_vcpus());
    for v in 0..t.nr_vcpus() {
        assert_eq!(t.init_control(v, 0, CONTROL + u64::from(v), &words), Ok(17));
    }
    for p in 0..pages {
        assert_eq!(t.expand_array(p), Ok(vec![]));
    }
}

fn layout(nr_vcpus: u32) -> Layout {
    Layout {
        pages: (0..128).collect(),
        control: (0..u64::from(nr_vcpus)).map(|v| (CONTROL + v, 0)).collect(),
    }
}

fn word(mem: &PageMem, port: Port) -> u32 {
    mem.load(u64::from(port / 1024), 4 * (port % 1024) as usize)
}

/// Runs vCPU `vcpu`'s upcall to the end; the ports it handled.
fn drain(mem: &PageMem, vcpu: u32, nr_vcpus: u32) -> Vec<Port> {
    let l = layout(nr_vcpus);
    let mut c = Consumer::new(vcpu);
    let mut upcall = true;
    let mut handled = Vec::new();
    for _ in 0..100_000 {
        if let Some(Seen::Handled { port }) = c.step(mem, &l, &mut upcall) {
            handled.push(port);
        }
        if c.is_idle() && !upcall {
            return handled;
        }
    }
    panic!("the guest never finished");
}

/// Delivers `n` through the FIFO ops; the answer.
fn deliver(t: &mut Table, n: Notify) -> Raised {
    t.fifo_mut().unwrap().set_pending(n.port, n.vcpu)
}

fn mark(vcpu: u32) -> Raised {
    Raised {
        mark: Some(vcpu),
        newly_pending: true,
    }
}

#[test]
fn a_table_can_live_in_a_spin_mutex() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Table>();
}

#[test]
fn without_fifo_memory_the_abi_is_not_offered() {
    let mut t = Table::new(1, 64, 1).unwrap();
    let words = ArrayWords::new(1);
    assert_eq!(t.check_init_control(0, 0), Err(ENOSYS));
    assert_eq!(t.init_control(0, 0, 5, &words), Err(ENOSYS));
    assert_eq!(t.check_expand_array(), Err(ENOSYS));
    assert_eq!(t.expand_array(5), Err(ENOSYS));
    let p = t.bind_ipi(0).unwrap();
    assert_eq!(t.set_priority(64, 3), Err(EINVAL), "EINVAL first");
    assert_eq!(t.set_priority(p, 3), Err(ENOSYS));
    assert_eq!(t.abi(), Abi::TwoLevel);
    assert!(t.fifo_mut().is_none());
    assert!(t.take_released_frames().is_empty());
}

#[test]
fn init_control_errors_in_xen_order() {
    let (mut t, _mem) = fifo_table(1024, 2);
    let words = ArrayWords::new(2);
    assert_eq!(t.check_init_control(2, 4025), Err(ENOENT), "ENOENT first");
    assert_eq!(t.init_control(2, 0, 5, &words), Err(ENOENT));
    assert_eq!(t.init_control(u32::MAX, 0, 5, &words), Err(ENOENT));
    assert_eq!(
        t.init_control(0, 4025, 5, &words),
        Err(EINVAL),
        "crosses the page"
    );
    assert_eq!(t.init_control(0, 4096, 5, &words), Err(EINVAL));
    assert_eq!(t.init_control(0, 12, 5, &words), Err(EINVAL), "unaligned");
    assert_eq!(t.abi(), Abi::TwoLevel, "failures switch nothing");
    assert_eq!(t.check_expand_array(), Err(EOPNOTSUPP));
    assert_eq!(t.expand_array(5), Err(EOPNOTSUPP));
    assert_eq!(t.init_control(0, 4024, CONTROL, &words), Ok(17));
    assert_eq!(t.abi(), Abi::Fifo);
    assert_eq!(
        t.init_control(0, 0, CONTROL + 1, &words),
        Err(EINVAL),
        "twice on one vCPU"
    );
    assert_eq!(t.check_init_control(1, 0), Ok(()));
    assert_eq!(t.init_control(1, 0, CONTROL + 1, &words), Ok(17));
    assert_eq!(t.expand_array(0), Ok(vec![]));
    let f = t.fifo_mut().unwrap();
    assert!(f.has_control_block(0) && f.has_control_block(1));
    assert_eq!(f.array_ports(), 1024);
}

#[test]
fn expand_array_stops_at_128_pages() {
    let (mut t, _mem) = fifo_table(u32::MAX, 1);
    switch(&mut t, 128);
    assert_eq!(t.check_expand_array(), Err(ENOSPC));
    assert_eq!(t.expand_array(0), Err(ENOSPC), "the 129th page");
    assert_eq!(t.fifo_mut().unwrap().array_ports(), 131_072);
}

#[test]
fn set_priority_errors_in_xen_order() {
    let (mut t, mem) = fifo_table(1024, 1);
    let p = t.bind_ipi(0).unwrap();
    assert_eq!(t.set_priority(p, 3), Err(ENOSYS), "2-level");
    switch(&mut t, 1);
    for bad in [64, 1024, u32::MAX] {
        assert_eq!(t.set_priority(bad, 3), Err(EINVAL), "port {bad}");
    }
    assert_eq!(t.set_priority(0, 3), Err(EACCES), "port 0 is reserved");
    assert_eq!(t.set_priority(40, 3), Err(EACCES), "free");
    assert_eq!(t.set_priority(40, 99), Err(EACCES), "EACCES before EINVAL");
    assert_eq!(t.set_priority(p, 16), Err(EINVAL));
    assert_eq!(t.set_priority(p, u32::MAX), Err(EINVAL));
    assert_eq!(t.set_priority(p, 15), Ok(()));
    assert_eq!(t.fifo_mut().unwrap().priority(p), Some(15));
    let n = t.send(p).unwrap();
    let Reach::Local(Some(n)) = n else {
        panic!("{n:?}")
    };
    assert_eq!(deliver(&mut t, n), mark(0));
    assert_eq!(mem.load(CONTROL, 8 + 4 * 15), p, "queue 15's head");
    // A port bound again starts at the default priority.
    assert_eq!(t.close(p), Ok(Reach::Local(())));
    assert_eq!(drain(&mem, 0, 1), [], "closed: not pending any more");
    assert_eq!(t.bind_ipi(0), Ok(p));
    assert_eq!(t.fifo_mut().unwrap().priority(p), Some(7));
}

#[test]
fn the_switch_carries_pending_ports_over() {
    let (mut t, mem) = fifo_table(4096, 2);
    let h = GlobalVirqHandlers::new();
    let a = t.bind_ipi(1).unwrap();
    let b = t.bind_virq(VIRQ_TIMER, 0, &h).unwrap();
    let c = t.bind_virq(VIRQ_DEBUG, 0, &h).unwrap();
    let mut words = ArrayWords::new(2);
    assert!(two_level::set_pending(&mut words, a, 1));
    let _ = two_level::set_pending(&mut words, c, 0);
    words.pending[0] |= 1 << 40; // A free port's bit: not carried over.
    assert_eq!(t.init_control(0, 0, CONTROL, &words), Ok(17));
    assert_eq!(t.init_control(1, 0, CONTROL + 1, &words), Ok(17));
    assert_eq!(t.port_limit(), 4096);
    {
        let f = t.fifo_mut().unwrap();
        assert!(!f.is_pending(a), "no array page yet");
        assert!(f.is_masked(a));
        assert_eq!(f.priority(b), Some(7));
    }
    // The first page raises the saved ports, on their vCPUs.
    let raised = t.expand_array(0).unwrap();
    assert_eq!(raised, vec![(a, mark(1)), (c, mark(0))]);
    assert_eq!(word(&mem, a), PENDING | LINKED);
    assert_eq!(word(&mem, b), 0);
    assert_eq!(word(&mem, 40), 0);
    assert_eq!(drain(&mem, 1, 2), [a]);
    assert_eq!(drain(&mem, 0, 2), [c]);
    assert_eq!(t.expand_array(1), Ok(vec![]), "raised once only");
}

#[test]
fn ports_beyond_the_array_wait_for_their_page() {
    let (mut t, mem) = fifo_table(4096, 1);
    switch(&mut t, 1);
    for _ in 1..1100 {
        t.bind_ipi(0).unwrap();
    }
    let f = &mut t.fifo_mut().unwrap();
    assert_eq!(f.set_pending(1050, 0), Raised::NONE, "saved");
    assert_eq!(f.set_pending(1051, 0), Raised::NONE, "saved");
    assert!(!f.is_pending(1050));
    assert_eq!(t.close(1051), Ok(Reach::Local(())), "closing forgets it");
    assert_eq!(t.expand_array(1), Ok(vec![(1050, mark(0))]));
    assert_eq!(drain(&mem, 0, 1), [1050]);
}

#[test]
fn the_port_limit_follows_the_abi() {
    // xl's default: max_evtchn_port 1023.
    let (mut t, _mem) = fifo_table(1024, 1);
    assert_eq!(t.port_limit(), 1024);
    switch(&mut t, 0);
    assert_eq!(t.port_limit(), 1024, "the configured limit still holds");

    let (mut t, _mem) = fifo_table(u32::MAX, 1);
    assert_eq!(t.port_limit(), 4096);
    for want in 1..4096 {
        assert_eq!(t.bind_ipi(0), Ok(want));
    }
    assert_eq!(t.bind_ipi(0), Err(ENOSPC), "2-level: 4096 ports");
    switch(&mut t, 0);
    assert_eq!(t.port_limit(), 131_072);
    assert_eq!(t.bind_ipi(0), Ok(4096));
    assert_eq!(t.valid_ports(), 4096 + PORTS_PER_BUCKET);
}

#[test]
fn ports_beyond_ten_thousand_work() {
    let (mut t, mem) = fifo_table(10_241, 2);
    switch(&mut t, 11);
    let mut last = 0;
    for want in 1..10_241 {
        last = t.bind_ipi(want % 2).unwrap();
        assert_eq!(last, want);
    }
    assert_eq!(t.bind_ipi(0), Err(ENOSPC), "max_evtchn_port 10,240");
    assert_eq!(t.valid_ports(), 10_240 + PORTS_PER_BUCKET);
    let Ok(Reach::Local(Some(n))) = t.send(last) else {
        panic!()
    };
    assert_eq!(n.vcpu, 0);
    assert_eq!(deliver(&mut t, n), mark(0));
    let Ok(Reach::Local(Some(n))) = t.send(10_001) else {
        panic!()
    };
    assert_eq!(deliver(&mut t, n), mark(1));
    let Ok(Reach::Local(Some(n))) = t.send(10_003) else {
        panic!()
    };
    assert_eq!(
        deliver(&mut t, n),
        Raised {
            mark: None,
            newly_pending: true
        }
    );
    assert_eq!(drain(&mem, 1, 2), [10_001, 10_003]);
    assert_eq!(drain(&mem, 0, 2), [10_240]);
}

#[test]
fn a_linked_port_is_busy_until_the_guest_consumes_it() {
    let (mut t, mem) = fifo_table(1024, 1);
    switch(&mut t, 1);
    let p = t.bind_ipi(0).unwrap();
    let q = t.bind_ipi(0).unwrap();
    let Ok(Reach::Local(Some(n))) = t.send(p) else {
        panic!()
    };
    assert_eq!(deliver(&mut t, n), mark(0));
    assert_eq!(t.close(p), Ok(Reach::Local(())));
    assert_eq!(word(&mem, p), LINKED, "PENDING cleared, still on the queue");
    assert!(t.fifo_mut().unwrap().is_busy(p));
    assert!(!t.fifo_mut().unwrap().is_pending(p), "free: not pending");
    assert_eq!(t.bind_ipi(0), Ok(q + 1), "the busy port is skipped");
    assert_eq!(drain(&mem, 0, 1), [], "the guest unlinks and ignores it");
    assert_eq!(t.bind_ipi(0), Ok(p), "free again");
}

#[test]
fn closes_clear_pending_on_every_path() {
    let (mut a, mem) = fifo_table(1024, 1);
    let mut b = Table::new(2, 1024, 1).unwrap();
    switch(&mut a, 1);
    // Interdomain, closed from a's side.
    let pa = a.alloc_unbound(1, false, 2).unwrap();
    let (pb, _) = bind_interdomain(&mut b, &mut a, pa).unwrap();
    mem.fetch_or(0, 4 * pa as usize, MASKED);
    let n = send_interdomain(&b, pb, &a).unwrap().unwrap();
    assert_eq!(
        deliver(&mut a, n),
        Raised {
            mark: None,
            newly_pending: true
        }
    );
    assert!(a.fifo_mut().unwrap().is_pending(pa));
    close_interdomain(&mut a, pa, &mut b).unwrap();
    assert_eq!(word(&mem, pa), MASKED);
    // Closed by the peer's reset: a's end is only unbound, and keeps its
    // pending state, as in Xen.
    let (qa, _) = bind_interdomain(&mut a, &mut b, pb).unwrap();
    let n = send_interdomain(&b, pb, &a).unwrap().unwrap();
    assert!(deliver(&mut a, n).newly_pending);
    assert_eq!(close_peer(&mut b, &mut a), 1);
    assert_ne!(word(&mem, qa) & PENDING, 0);
    // Closed by a's own reset: cleared.
    assert_eq!(a.close_local(), None);
    assert_eq!(a.abi(), Abi::TwoLevel, "and the reset ends FIFO");
    assert_eq!(word(&mem, qa) & PENDING, 0);
}

#[test]
fn fifo_ports_answer_for_free_and_invalid_ports() {
    let (mut t, mem) = fifo_table(1024, 2);
    switch(&mut t, 1);
    let p = t.alloc_unbound(1, false, 2).unwrap();
    let f = &mut t.fifo_mut().unwrap();
    assert_eq!(f.set_pending(40, 0), Raised::NONE, "free");
    assert_eq!(f.set_pending(u32::MAX, 0), Raised::NONE);
    assert_eq!(f.set_pending(p, 9), Raised::NONE, "no such vCPU");
    assert_eq!(f.unmask(64), Err(EINVAL));
    assert_eq!(f.unmask(40), Ok(Raised::NONE));
    assert!(!f.is_pending(40) && f.is_masked(40) && !f.is_busy(40));
    assert_eq!(f.priority(64), None);
    for port in 0..1024 {
        assert_eq!(word(&mem, port), 0);
    }
    // Masked, pending, unmasked through the table: relinked on the port's
    // notify vCPU, which bind_vcpu moved.
    mem.fetch_or(0, 4 * p as usize, MASKED);
    assert!(f.set_pending(p, 0).newly_pending);
    t.bind_vcpu(p, 1).unwrap();
    assert_eq!(
        t.fifo_mut().unwrap().unmask(p),
        Ok(Raised {
            mark: Some(1),
            newly_pending: false
        })
    );
    assert_eq!(drain(&mem, 1, 2), [p]);
}

#[test]
fn reset_returns_to_two_level_and_hands_back_the_frames() {
    let (mut t, _mem) = fifo_table(u32::MAX, 2);
    let mut peer = Table::new(2, 64, 1).unwrap();
    switch(&mut t, 5);
    for _ in 0..5000 {
        t.bind_ipi(1).unwrap();
    }
    let pt = t.alloc_unbound(1, false, 2).unwrap();
    bind_interdomain(&mut peer, &mut t, pt).unwrap();
    assert_eq!(t.reset(1, false), Ok(Some(2)));
    assert_eq!(t.abi(), Abi::Fifo, "not empty yet");
    assert!(t.take_released_frames().is_empty());
    assert_eq!(close_peer(&mut t, &mut peer), 1);
    assert_eq!(t.close_local(), None);
    assert_eq!(t.abi(), Abi::TwoLevel);
    assert_eq!(t.port_limit(), 4096);
    assert_eq!(t.valid_ports(), 5056, "the table keeps its size");
    assert_eq!(
        t.take_released_frames(),
        [0, 1, 2, 3, 4, CONTROL, CONTROL + 1]
    );
    assert!(t.take_released_frames().is_empty(), "once");
    assert_eq!(t.set_priority(1, 3), Err(ENOSYS));
    // The guest can switch again, with new frames.
    switch(&mut t, 1);
    assert_eq!(t.abi(), Abi::Fifo);
    assert!(!t.is_dying());
    // A second reset with the frames not taken: both sets are kept.
    assert_eq!(t.reset(1, false), Ok(None));
    switch(&mut t, 2);
    assert_eq!(t.reset(1, false), Ok(None));
    assert_eq!(
        t.take_released_frames(),
        [0, CONTROL, CONTROL + 1, 0, 1, CONTROL, CONTROL + 1]
    );
}

#[test]
fn destroy_hands_back_the_frames() {
    let (mut t, _mem) = fifo_table(1024, 1);
    let mut peer = Table::new(2, 64, 1).unwrap();
    switch(&mut t, 1);
    let p = t.alloc_unbound(1, false, 2).unwrap();
    bind_interdomain(&mut peer, &mut t, p).unwrap();
    assert_eq!(t.destroy(), Some(2));
    assert_eq!(close_peer(&mut t, &mut peer), 1);
    assert_eq!(t.destroy(), None);
    assert_eq!(t.take_released_frames(), [0, CONTROL]);
    assert_eq!(t.abi(), Abi::TwoLevel);

    let mut hub = Hub::new();
    hub.add_domain(3, 64, 1).unwrap();
    hub.add_domain(4, 64, 1).unwrap();
    let mem = Arc::new(PageMem::new(FRAMES));
    let t3 = hub.table_mut(3).unwrap();
    t3.enable_fifo(Box::new(mem));
    switch(t3, 2);
    let p = hub.alloc_unbound(3, false, 3, 4).unwrap();
    hub.bind_interdomain(4, 3, p).unwrap();
    assert_eq!(hub.remove_domain(3), [0, 1, CONTROL]);
    assert_eq!(hub.remove_domain(4), []);
    assert!(hub.table_mut(3).is_none());
}

#[derive(Clone, Debug)]
enum Op {
    Ipi(u32),
    Close(Port),
    Send(Port),
    Unmask(Port),
    Priority(Port, u32),
    BindVcpu(Port, u32),
    Expand(u64),
    Reset,
    /// The guest writes a value into a word of one of its frames.
    Scribble(u64, usize, u32),
    /// The guest consumes a few events on a vCPU.
    Consume(u32, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let port = prop_oneof![0u32..70, 1020u32..1030, any::<u32>()];
    let val = prop_oneof![
        any::<u32>(),
        (0u32..80).prop_map(|p| LINKED | p),
        (0u32..80).prop_map(|p| LINKED | PENDING | p),
        Just(u32::MAX),
    ];
    prop_oneof![
        3 => (0u32..3).prop_map(Op::Ipi),
        1 => port.clone().prop_map(Op::Close),
        3 => port.clone().prop_map(Op::Send),
        1 => port.clone().prop_map(Op::Unmask),
        1 => (port.clone(), 0u32..18).prop_map(|(p, q)| Op::Priority(p, q)),
        1 => (port, 0u32..3).prop_map(|(p, v)| Op::BindVcpu(p, v)),
        1 => (0u64..3).prop_map(Op::Expand),
        1 => Just(Op::Reset),
        4 => (prop_oneof![0u64..2, CONTROL..CONTROL + 2], 0usize..1024, val)
            .prop_map(|(f, w, v)| Op::Scribble(f, w, v)),
        2 => (0u32..2, 1u8..40).prop_map(|(v, n)| Op::Consume(v, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A guest that writes anything into its event words and control
    /// blocks, and consumes (following links wherever they point) while
    /// keel delivers: nothing panics, every operation answers, and the table
    /// keeps its own invariants (ports in use below the limit).
    #[test]
    fn a_scribbling_guest_is_survived(ops in proptest::collection::vec(op(), 0..150)) {
        let (mut t, mem) = fifo_table(2048, 2);
        switch(&mut t, 1);
        let l = layout(2);
        let mut consumers = [Consumer::new(0), Consumer::new(1)];
        for op in ops {
            match op {
                Op::Ipi(v) => {
                    let _ = t.bind_ipi(v);
                }
                Op::Close(p) => {
                    let _ = t.close(p);
                }
                Op::Send(p) => {
                    if let Ok(Reach::Local(Some(n))) = t.send(p)
                        && let Some(mut f) = t.fifo_mut()
                    {
                        let _ = f.set_pending(n.port, n.vcpu);
                    }
                }
                Op::Unmask(p) => {
                    if let Some(mut f) = t.fifo_mut() {
                        let _ = f.unmask(p);
                    }
                }
                Op::Priority(p, q) => {
                    let _ = t.set_priority(p, q);
                }
                Op::BindVcpu(p, v) => {
                    let _ = t.bind_vcpu(p, v);
                }
                Op::Expand(frame) => {
                    let _ = t.expand_array(frame);
                }
                Op::Reset => {
                    prop_assert_eq!(t.reset(1, false), Ok(None));
                    let _ = t.take_released_frames();
                    switch(&mut t, 1);
                }
                Op::Scribble(f, w, v) => mem.store(f, 4 * w, v),
                Op::Consume(v, n) => {
                    let mut upcall = true;
                    for _ in 0..n {
                        let _ = consumers[v as usize].step(&*mem, &l, &mut upcall);
                    }
                }
            }
            prop_assert!(t.ports_in_use() < t.port_limit());
        }
    }
}
