//! FIFO event channels from the guest's side (pvh64): the control block, the
//! event array, and consuming the queues as Linux's `events_fifo.c` does.
//!
//! # What
//!
//! Xen's FIFO ABI (`public/event_channel.h`): each port has a 32-bit *event
//! word* (PENDING, MASKED, LINKED, BUSY and a 17-bit LINK to the next port) in
//! an event array the guest hands over a page at a time
//! (`EVTCHNOP_expand_array`, 1024 ports per page); each vCPU has a *control
//! block* (`EVTCHNOP_init_control`) with a `ready` word (bit q: queue q has
//! events) and the head port of each of its 16 priority queues (0 highest).
//! The hypervisor links a newly pending, unmasked port at the tail of the
//! queue of its vCPU and priority; the guest takes events from the heads.
//!
//! [`collect`] is Linux's `__evtchn_fifo_handle_events` for vCPU 0: take the
//! ready word (exchange with 0), and while any queue is ready take one event
//! from the highest-priority one: the head is the guest's own copy, or the
//! control block's when the copy ran out; clear LINKED and the LINK field
//! with compare-and-exchange and keep the link as the next head (0: the
//! queue is empty, its ready bit is dropped); count the port if it is
//! pending and not masked (clearing PENDING, as Linux's ack does). Every
//! consumed port is also appended to an order log while [`log_order`] is on.
//!
//! [`crate::events::collect`] calls [`collect`] once [`is_active`], so the
//! upcall handler and every wait of [`crate::events`] work the same over
//! either ABI; events on ports below [`crate::events::TRACKED`] are counted
//! there too.
//!
//! # Invariants and hazards
//!
//! - One vCPU's control block (vCPU 0); the array has [`ARRAY_PAGES`] pages
//!   of its own, all ports unmasked at start (Linux masks them and unmasks
//!   on bind; the modes here mask explicitly where they need to).
//! - A head or link naming a port beyond the array (the hypervisor's bug, or
//!   a scribbling mode's own doing) is not followed: the queue is dropped
//!   and counted in [`bad_links`].

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering};

use keel_hypercall::abi::evtchn::{
    EVTCHN_FIFO_LINK_BITS, EVTCHNOP_EXPAND_ARRAY, EVTCHNOP_INIT_CONTROL, EVTCHNOP_SET_PRIORITY,
    EvtchnExpandArray, EvtchnInitControl, EvtchnSetPriority,
};

use crate::hypercall;
use crate::paging::Page;
use crate::{events, shared};

/// `EVTCHN_FIFO_PENDING` and the other event-word bits.
pub const PENDING: u32 = 1 << 31;
pub const MASKED: u32 = 1 << 30;
pub const LINKED: u32 = 1 << 29;
pub const BUSY: u32 = 1 << 28;
pub const LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Priority queues per vCPU.
pub const QUEUES: usize = 16;
/// `EVTCHN_FIFO_PRIORITY_DEFAULT`.
pub const DEFAULT_PRIORITY: u32 = 7;
/// Event words per array page.
pub const WORDS_PER_PAGE: usize = 1024;
/// Array pages this guest owns: 12,288 ports.
pub const ARRAY_PAGES: usize = 12;
/// Ports with a counter here.
pub const PORTS: usize = ARRAY_PAGES * WORDS_PER_PAGE;

static CONTROL: Page = Page::new();
static ARRAY: [Page; ARRAY_PAGES] = [const { Page::new() }; ARRAY_PAGES];
/// Array pages handed to the hypervisor so far.
static PAGES: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The guest's copy of each queue's head (Linux's per-CPU `q->head`).
static HEADS: [AtomicU32; QUEUES] = [const { AtomicU32::new(0) }; QUEUES];
static COUNTS: [AtomicU16; PORTS] = [const { AtomicU16::new(0) }; PORTS];
static BAD_LINKS: AtomicU32 = AtomicU32::new(0);
static LOGGING: AtomicBool = AtomicBool::new(false);
/// Consumed ports, in order, while logging.
static ORDER: [AtomicU32; ORDER_LEN] = [const { AtomicU32::new(0) }; ORDER_LEN];
const ORDER_LEN: usize = 10_240;
static ORDER_AT: AtomicUsize = AtomicUsize::new(0);

/// The `u32` at `offset` of `page`, as an atomic.
fn word_at(page: &'static Page, offset: usize) -> &'static AtomicU32 {
    assert!(offset <= 4096 - 4 && offset.is_multiple_of(4));
    // SAFETY: aligned, in bounds of a static page that lives forever and is only
    // ever accessed through raw pointers or atomics (see `Page`).
    unsafe { AtomicU32::from_ptr((page.addr() + offset) as *mut u32) }
}

/// `port`'s event word, if the array this guest handed over covers it.
pub fn word(port: u32) -> Option<&'static AtomicU32> {
    let p = port as usize;
    let page = p / WORDS_PER_PAGE;
    (page < PAGES.load(Ordering::Acquire).min(ARRAY_PAGES))
        .then(|| word_at(&ARRAY[page], 4 * (p % WORDS_PER_PAGE)))
}

/// The control block's `ready` word.
pub fn ready() -> &'static AtomicU32 {
    word_at(&CONTROL, 0)
}

/// The control block's `head[q]`.
pub fn head(q: usize) -> &'static AtomicU32 {
    word_at(&CONTROL, 8 + 4 * (q % QUEUES))
}

/// The gfn of the control block page.
pub fn control_gfn() -> u64 {
    (CONTROL.addr() >> 12) as u64
}

/// The gfn of array page `i` (of this guest's own).
pub fn array_gfn(i: usize) -> u64 {
    (ARRAY[i % ARRAY_PAGES].addr() >> 12) as u64
}

/// `HYPERVISOR_event_channel_op(cmd, &arg)` on a stack copy of `bytes`.
fn op<const N: usize>(cmd: u32, bytes: [u8; N]) -> (i64, [u8; N]) {
    hypercall::with_arg(bytes, |a| hypercall::event_channel_op(cmd, a))
}

/// `EVTCHNOP_init_control(vcpu, gfn, offset)`: the result and `link_bits` as
/// the hypervisor left it (0xaa if it did not write the structure back).
pub fn init_control_raw(vcpu: u32, gfn: u64, offset: u32) -> (i64, u8) {
    let arg = EvtchnInitControl {
        control_gfn: gfn,
        offset,
        vcpu,
        link_bits: 0xaa,
        pad: [0; 7],
    };
    let (rc, out) = op(EVTCHNOP_INIT_CONTROL, arg.to_bytes());
    (rc, EvtchnInitControl::from_bytes(&out).link_bits)
}

/// Registers vCPU 0's control block (this module's page, offset 0); the
/// guest is on FIFO from here if it succeeds. Returns the result and
/// `link_bits`.
pub fn init() -> (i64, u8) {
    let r = init_control_raw(0, control_gfn(), 0);
    if r.0 == 0 {
        ACTIVE.store(true, Ordering::Release);
    }
    r
}

/// `EVTCHNOP_expand_array(gfn)`.
pub fn expand_raw(gfn: u64) -> i64 {
    op(EVTCHNOP_EXPAND_ARRAY, EvtchnExpandArray { array_gfn: gfn }.to_bytes()).0
}

/// Hands over the next array page of this guest's own; its words are
/// cleared first (every port unmasked).
pub fn expand() -> i64 {
    let i = PAGES.load(Ordering::Acquire);
    if i >= ARRAY_PAGES {
        return -1;
    }
    ARRAY[i].fill(0, 4096, 0);
    let rc = expand_raw(array_gfn(i));
    if rc == 0 {
        PAGES.store(i + 1, Ordering::Release);
    }
    rc
}

/// Ports the array covers.
pub fn capacity() -> u32 {
    (PAGES.load(Ordering::Acquire).min(ARRAY_PAGES) * WORDS_PER_PAGE) as u32
}

/// `EVTCHNOP_set_priority(port, priority)`.
pub fn set_priority(port: u32, priority: u32) -> i64 {
    op(EVTCHNOP_SET_PRIORITY, EvtchnSetPriority { port, priority }.to_bytes()).0
}

/// Whether `init_control` has succeeded.
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Sets `port`'s MASKED bit (no hypercall, as Linux's mask).
pub fn mask(port: u32) {
    if let Some(w) = word(port) {
        w.fetch_or(MASKED, Ordering::SeqCst);
    }
}

/// Linux's `evtchn_fifo_unmask`: clears MASKED and, if the port is pending,
/// asks the hypervisor to link it (`EVTCHNOP_unmask`). Returns that call's
/// result, or 0 if none was needed.
pub fn unmask(port: u32) -> i64 {
    let Some(w) = word(port) else { return 0 };
    w.fetch_and(!MASKED, Ordering::SeqCst);
    if w.load(Ordering::SeqCst) & PENDING != 0 {
        events::unmask(port)
    } else {
        0
    }
}

/// Starts (clearing) or stops the order log.
pub fn log_order(on: bool) {
    if on {
        ORDER_AT.store(0, Ordering::SeqCst);
    }
    LOGGING.store(on, Ordering::SeqCst);
}

/// The ports consumed while logging, in order (at most the log's size).
pub fn logged() -> impl Iterator<Item = u32> {
    let n = ORDER_AT.load(Ordering::SeqCst).min(ORDER_LEN);
    ORDER[..n].iter().map(|a| a.load(Ordering::SeqCst))
}

/// Events counted on `port` since the last take (reset; the count
/// [`crate::events`] keeps of the same events too).
pub fn take(port: u32) -> u32 {
    events::take(port);
    COUNTS
        .get(port as usize)
        .map_or(0, |c| u32::from(c.swap(0, Ordering::SeqCst)))
}

/// Heads or links seen that named a port beyond the array.
pub fn bad_links() -> u32 {
    BAD_LINKS.load(Ordering::SeqCst)
}

/// Linux's `clear_linked`: clears LINKED and the LINK field, returns the link.
fn clear_linked(w: &AtomicU32) -> u32 {
    let mut old = w.load(Ordering::SeqCst);
    loop {
        let new = old & !(LINKED | LINK_MASK);
        match w.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return old & LINK_MASK,
            Err(now) => old = now,
        }
    }
}

/// Takes one event from queue `q` (Linux's `consume_one_event`).
fn consume_one(q: usize, ready: &mut u32) -> u32 {
    let mut port = HEADS[q].load(Ordering::SeqCst);
    if port == 0 {
        port = head(q).load(Ordering::SeqCst);
    }
    let Some(w) = word(port).filter(|_| port != 0) else {
        BAD_LINKS.fetch_add(1, Ordering::SeqCst);
        HEADS[q].store(0, Ordering::SeqCst);
        *ready &= !(1 << q);
        return 0;
    };
    let next = clear_linked(w);
    if next == 0 {
        *ready &= !(1 << q);
    }
    HEADS[q].store(next, Ordering::SeqCst);
    let now = w.load(Ordering::SeqCst);
    if now & PENDING == 0 || now & MASKED != 0 {
        return 0;
    }
    w.fetch_and(!PENDING, Ordering::SeqCst);
    if let Some(c) = COUNTS.get(port as usize) {
        c.fetch_add(1, Ordering::SeqCst);
    }
    if LOGGING.load(Ordering::SeqCst) {
        let i = ORDER_AT.fetch_add(1, Ordering::SeqCst);
        if let Some(slot) = ORDER.get(i) {
            slot.store(port, Ordering::SeqCst);
        }
    }
    events::record(port);
    1
}

/// Consumes every ready queue of vCPU 0 (clearing `evtchn_upcall_pending`
/// first); returns how many events it counted. At most a bounded number of
/// steps, so a corrupted queue cannot hang the guest.
pub fn collect() -> u32 {
    shared::upcall_pending_of(0).store(0, Ordering::SeqCst);
    let mut taken = 0;
    let mut ready = ready().swap(0, Ordering::SeqCst);
    let mut steps = 0;
    while ready != 0 && steps < 4 * PORTS {
        let q = ready.trailing_zeros() as usize;
        if q >= QUEUES {
            break;
        }
        taken += consume_one(q, &mut ready);
        ready |= self::ready().swap(0, Ordering::SeqCst);
        steps += 1;
    }
    taken
}
