//! The FIFO event-channel ABI: per-vCPU priority queues of pending ports,
//! linked through the guest's own memory (Xen's `xen/common/event_fifo.c`;
//! layout in `public/event_channel.h`, "FIFO-based event channel ABI").
//!
//! # What
//!
//! Each port has a 32-bit *event word* in the domain's event array, which
//! the guest hands over a page at a time (`EVTCHNOP_expand_array`: 1024
//! words a page, at most 128 pages, so up to 131,072 ports): PENDING,
//! MASKED, LINKED, BUSY, and a 17-bit LINK naming the next port of its
//! queue. Each vCPU has a *control block* (`EVTCHNOP_init_control`): a
//! `ready` word (bit `q`: queue `q` has events) and the head port of each of
//! its 16 queues, one per priority (0 highest, 7 by default, 15 lowest).
//!
//! Raising a port sets PENDING and, if the port is not MASKED and LINKED was
//! clear, appends it to the queue of its vCPU and priority: its number goes
//! into the LINK of the queue's tail word if that word is still LINKED (the
//! guest has not consumed it yet), and otherwise becomes the queue's head;
//! then the queue's `ready` bit is set and, if it was clear, the vCPU's
//! events are marked pending (Xen's `vcpu_mark_events_pending`: the upcall
//! flag in `vcpu_info`, and a kick). The guest consumes from the heads
//! (Linux's `consume_one_event`: clear LINKED and LINK with
//! compare-and-exchange, the old LINK is the next head; handle the port if
//! still PENDING and not MASKED). Unmasking relinks a pending port.
//!
//! The pieces, as Xen splits them: [`Fifo`] is one domain's
//! `evtchn_fifo_domain` and its vCPUs' `evtchn_fifo_vcpu` (the frames of the
//! event array and of the control blocks, and each queue's tail);
//! [`PortFifo`] is what Xen keeps per port in `struct evtchn` (priority, the
//! queue it was last linked on, pending state saved while the array does not
//! reach it), which [`crate::Table`] keeps with each port; [`FifoMem`]
//! reaches the guest's frames, with atomics. The table ties them together
//! and is what the kernel calls ([`crate::Table::init_control`],
//! [`crate::Table::fifo_mut`], ...); this module's operations take the
//! memory as an argument, so they are tested with fakes that interleave a
//! guest's steps with keel's accesses.
//!
//! # Invariants
//!
//! - keel never follows anything the guest can write: it reads event words
//!   only for their flag bits and never their LINK, never reads a head, and
//!   reaches ports only through the numbers it is given and the tails it
//!   keeps itself. So whatever the guest writes, every operation makes a
//!   bounded number of memory accesses (at most [`MAX_ACCESSES`]).
//! - Every access is to a frame the kernel handed over (an event-array page
//!   or a control block's frame), at a 4-aligned offset below 4096.
//! - A queue's tail is 0 or the port keel linked there last; when that port
//!   is linked again, anywhere, the tail it was is reset to 0 first (Xen's
//!   `fifo_lastq`), so no later link writes into a word that has moved.
//! - Priorities are at most 15; a control block lies within its page
//!   (offset at most 4024 and 8-aligned).
//! - Nothing panics, whatever the ports, vCPUs or memory contents.
//!
//! # Locking
//!
//! None inside, and the queues need none of their own. Xen locks each queue
//! (two in `evtchn_fifo_set_pending` when a port moves) because it delivers
//! under the channel's lock only; keel calls every operation here under the
//! domain's table lock (the kernel's `spin::Mutex<Table>`), the one lock that
//! serializes every delivery, unmask, close and priority change of the
//! domain, so the tails and `lastq` never race among themselves. The guest
//! is not serialized with anything: it changes its words at any time, which
//! is what the atomics and the compare-and-exchange protocol are for.
//!
//! # Hazards
//!
//! - Of a LINKED word the guest may only set or clear MASKED, clear PENDING,
//!   and clear LINKED (with LINK). keel sets BUSY on the tail word while it
//!   links to it and a guest's unmask waits for BUSY to clear, so the link's
//!   compare-and-exchange fails at most 4 times against a guest that keeps
//!   to that; keel then gives up as Xen does (the event is lost, which only a
//!   guest breaking the protocol can cause, and only for itself).
//! - A vCPU without a control block drops its events, PENDING untouched, as
//!   Xen does: a guest must not unmask a port before its vCPU's
//!   `init_control`.
//! - A port the event array does not reach yet keeps its pending state in
//!   its [`PortFifo`] until `expand_array` covers it, which raises it again.
//!   Xen never clears that saved state; keel clears it when it raises the
//!   port again and when the port is closed, so a closed port does not fire
//!   once its page arrives.
//! - Priority changes and vCPU moves apply to later links only: an event
//!   already linked is consumed from the queue it is on (on the old vCPU, at
//!   the old priority), as in Xen.
//! - A port whose word is still LINKED after it was closed is *busy*: not
//!   free for allocation until the guest has consumed it (Xen's
//!   `evtchn_is_busy`), or it could be linked twice.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU32, Ordering};

use keel_hypercall::abi::Errno;
use keel_hypercall::abi::evtchn::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_CONTROL_BLOCK_SIZE, EVTCHN_FIFO_EVENT_WORDS_PER_PAGE,
    EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_PENDING,
    EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN,
};

use crate::Port;

#[cfg(test)]
pub(crate) mod guest;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

/// The PENDING bit of an event word.
pub const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
/// The MASKED bit of an event word.
pub const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;
/// The LINKED bit of an event word.
pub const LINKED: u32 = 1 << EVTCHN_FIFO_LINKED;
/// The BUSY bit of an event word.
pub const BUSY: u32 = 1 << EVTCHN_FIFO_BUSY;
/// The LINK field of an event word.
pub const LINK_MASK: u32 = EVTCHN_FIFO_LINK_MASK;
/// What `EVTCHNOP_init_control` reports in `link_bits`.
pub const LINK_BITS: u8 = EVTCHN_FIFO_LINK_BITS as u8;
/// The most guest-memory accesses one operation makes, whatever the guest
/// does: [`Fifo::set_pending`] makes at most 13 (PENDING, MASKED, LINKED;
/// at most 9 to link to the tail or write the head; `ready`), and
/// [`Fifo::unmask`] 2 more.
pub const MAX_ACCESSES: usize = 15;

/// Queues per vCPU.
const QUEUES: usize = EVTCHN_FIFO_MAX_QUEUES as usize;
/// Event-array pages at most.
const MAX_PAGES: usize = EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize;
/// A guest frame's size, for the control block's bounds.
const PAGE_SIZE: u32 = 4096;
/// The largest offset of a control block within its frame: 4024.
const MAX_CONTROL_OFFSET: u32 = PAGE_SIZE - EVTCHN_FIFO_CONTROL_BLOCK_SIZE;
/// Offsets within a control block: `ready`, then (after a reserved word)
/// the heads.
const CONTROL_READY: usize = 0;
const CONTROL_HEAD: usize = 8;
/// Tries of the link's compare-and-exchange once BUSY is set (Xen's).
const LINK_TRIES: u32 = 4;

/// Atomic access to 32-bit words of guest frames: the kernel implements it
/// over the frames it checked and pinned, the tests over fakes.
///
/// `frame` is the kernel's own handle for a frame (the machine frame number
/// it pinned for `init_control` or `expand_array`), passed back unchanged;
/// `offset` is a byte offset within it, always a multiple of 4 below 4096.
/// Each method is one atomic operation on the little-endian `u32` there,
/// sequentially consistent (the guest races on these words from other
/// CPUs; Xen's bit operations and `cmpxchg` are full barriers). An
/// implementation must not panic, whatever the arguments: for a handle it
/// does not know, it reads 0 and writes nothing.
pub trait FifoMem {
    /// The word.
    fn load(&self, frame: u64, offset: usize) -> u32;
    /// Writes the word.
    fn store(&self, frame: u64, offset: usize, val: u32);
    /// ORs `val` into the word; returns the old word.
    fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32;
    /// ANDs `val` into the word; returns the old word.
    fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32;
    /// Replaces the word with `new` if it is `current`: `Ok(current)`, or
    /// `Err(word)` with the word found.
    fn compare_exchange(
        &self,
        frame: u64,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<u32, u32>;
}

macro_rules! forward_fifo_mem {
    ($($ptr:ty),*) => {$(
        impl<T: FifoMem + ?Sized> FifoMem for $ptr {
            fn load(&self, frame: u64, offset: usize) -> u32 {
                (**self).load(frame, offset)
            }
            fn store(&self, frame: u64, offset: usize, val: u32) {
                (**self).store(frame, offset, val);
            }
            fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32 {
                (**self).fetch_or(frame, offset, val)
            }
            fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32 {
                (**self).fetch_and(frame, offset, val)
            }
            fn compare_exchange(
                &self,
                frame: u64,
                offset: usize,
                current: u32,
                new: u32,
            ) -> Result<u32, u32> {
                (**self).compare_exchange(frame, offset, current, new)
            }
        }
    )*};
}

forward_fifo_mem!(&T, Box<T>, Arc<T>);

/// What raising a port asks of the kernel (Xen's `evtchn_fifo_set_pending`
/// tail).
#[must_use = "`mark` names a vCPU whose events must be marked pending"]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Raised {
    /// Mark this vCPU's events pending (Xen's `vcpu_mark_events_pending`):
    /// set its `vcpu_info.evtchn_upcall_pending`, and if that was clear,
    /// kick it (the upcall vector, or a wake-up).
    pub mark: Option<u32>,
    /// The port's PENDING bit was clear and is now set: wake the vCPUs
    /// polling it (Xen's `evtchn_check_pollers`).
    pub newly_pending: bool,
}

impl Raised {
    /// Nothing to do.
    pub const NONE: Raised = Raised {
        mark: None,
        newly_pending: false,
    };
}

/// A queue: a vCPU and a priority (Xen's `fifo_lastq`, the queue a port was
/// last linked on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct QueueId {
    vcpu: u32,
    priority: u8,
}

/// The FIFO state of one port, kept with the port (Xen keeps it in `struct
/// evtchn`): its priority, the queue it was last linked on, and its pending
/// state while the event array does not reach it.
///
/// The last queue outlives the port's binding, as in Xen: a port closed
/// while it was a queue's tail must still reset that tail when it is next
/// linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortFifo {
    /// At most `EVTCHN_FIFO_PRIORITY_MIN`.
    priority: u8,
    lastq: QueueId,
    saved_pending: bool,
}

impl Default for PortFifo {
    fn default() -> Self {
        Self::NEW
    }
}

impl PortFifo {
    /// A port never used: default priority, last on vCPU 0's queue 0 (Xen's
    /// zeroed `fifo_lastq`), nothing pending.
    pub const NEW: PortFifo = PortFifo {
        priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8,
        lastq: QueueId {
            vcpu: 0,
            priority: 0,
        },
        saved_pending: false,
    };

    /// The priority the port's next link uses.
    #[must_use]
    pub const fn priority(&self) -> u32 {
        self.priority as u32
    }

    /// Whether the port was raised while the event array did not reach it.
    #[must_use]
    pub const fn saved_pending(&self) -> bool {
        self.saved_pending
    }

    /// Xen's `evtchn_fifo_init` (binding a port) and the priority half of
    /// `setup_ports` (switching to FIFO): the default priority.
    pub fn set_default_priority(&mut self) {
        self.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
    }

    /// Xen's `evtchn_fifo_set_priority`: later links use `priority`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `priority` is above `EVTCHN_FIFO_PRIORITY_MIN` (15).
    pub fn set_priority(&mut self, priority: u32) -> Result<(), Errno> {
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        // At most 15 (checked above).
        self.priority = priority as u8;
        Ok(())
    }

    /// Records that the port was raised while the array did not reach it
    /// (as Xen's `setup_ports` does for ports pending under 2-level).
    pub fn save_pending(&mut self) {
        self.saved_pending = true;
    }

    /// Forgets the saved pending state (it is being raised, or the port
    /// closed, or the domain left FIFO).
    pub fn clear_saved_pending(&mut self) {
        self.saved_pending = false;
    }
}

/// An event word or control-block field: a frame and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Addr {
    frame: u64,
    offset: usize,
}

/// A vCPU's control block: its frame and offset (at most 4024, 8-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ControlBlock {
    frame: u64,
    offset: usize,
}

impl ControlBlock {
    fn ready(self) -> Addr {
        Addr {
            frame: self.frame,
            offset: self.offset + CONTROL_READY,
        }
    }

    fn head(self, priority: u8) -> Addr {
        Addr {
            frame: self.frame,
            offset: self.offset + CONTROL_HEAD + 4 * usize::from(priority),
        }
    }
}

/// One vCPU's FIFO state (Xen's `evtchn_fifo_vcpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FifoVcpu {
    control: Option<ControlBlock>,
    /// Per queue, the port keel linked there last, or 0.
    tails: [Port; QUEUES],
}

/// One domain's FIFO state (Xen's `evtchn_fifo_domain` and each vCPU's
/// `evtchn_fifo_vcpu`): the event-array pages, and per vCPU its control
/// block and queue tails. It exists from the domain's first
/// `init_control`; see the module documentation.
#[derive(Debug)]
pub struct Fifo {
    /// The event array's frames: page `i` holds ports `1024 * i..`. Its
    /// capacity covers [`MAX_PAGES`] plus one frame per vCPU, so
    /// [`Fifo::into_frames`] never allocates.
    pages: Vec<u64>,
    vcpus: Vec<FifoVcpu>,
}

/// The checks of `EVTCHNOP_init_control` that need no state, in Xen's
/// order, for a domain with `nr_vcpus` vCPUs.
///
/// # Errors
///
/// `ENOENT` if there is no vCPU `vcpu`; `EINVAL` if a control block at
/// `offset` would cross the end of its page (offset above 4024) or `offset`
/// is not a multiple of 8.
pub fn check_init_control(nr_vcpus: u32, vcpu: u32, offset: u32) -> Result<(), Errno> {
    if vcpu >= nr_vcpus {
        return Err(Errno::ENOENT);
    }
    if offset > MAX_CONTROL_OFFSET || !offset.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The outcome of one try to write a link (Xen's `try_set_link`).
enum Link {
    /// The tail word now links to the port.
    Linked,
    /// The tail word is not LINKED: the guest consumed it, the queue is
    /// empty.
    Unlinked,
    /// The word changed under us; `w` holds what it is now.
    Raced,
}

impl Fifo {
    /// The state of a domain switching to FIFO: no event-array pages, no
    /// control blocks, every queue empty.
    ///
    /// # Errors
    ///
    /// `ENOMEM` if it cannot be allocated.
    pub fn new(nr_vcpus: u32) -> Result<Fifo, Errno> {
        let n = usize::try_from(nr_vcpus).map_err(|_| Errno::ENOMEM)?;
        let mut pages = Vec::new();
        pages
            .try_reserve_exact(MAX_PAGES.saturating_add(n))
            .map_err(|_| Errno::ENOMEM)?;
        let mut vcpus = Vec::new();
        vcpus.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
        vcpus.resize(
            n,
            FifoVcpu {
                control: None,
                tails: [0; QUEUES],
            },
        );
        Ok(Fifo { pages, vcpus })
    }

    /// `EVTCHNOP_init_control` for `vcpu`: its control block is at `offset`
    /// in `frame`. On error the frame was not taken.
    ///
    /// # Errors
    ///
    /// In Xen's order: `ENOENT` if there is no vCPU `vcpu`; `EINVAL` for a
    /// bad offset ([`check_init_control`]); `EINVAL` if the vCPU has a
    /// control block already.
    pub fn init_control(&mut self, vcpu: u32, offset: u32, frame: u64) -> Result<(), Errno> {
        let nr_vcpus = u32::try_from(self.vcpus.len()).unwrap_or(u32::MAX);
        check_init_control(nr_vcpus, vcpu, offset)?;
        let v = self.vcpu_mut(vcpu).ok_or(Errno::ENOENT)?;
        if v.control.is_some() {
            return Err(Errno::EINVAL);
        }
        v.control = Some(ControlBlock {
            frame,
            // At most 4024 (checked).
            offset: offset as usize,
        });
        Ok(())
    }

    /// Whether `vcpu` has a control block.
    #[must_use]
    pub fn has_control_block(&self, vcpu: u32) -> bool {
        self.vcpu(vcpu).is_some_and(|v| v.control.is_some())
    }

    /// The check of `EVTCHNOP_expand_array` before its frame is looked at.
    ///
    /// # Errors
    ///
    /// `ENOSPC` if the array has its 128 pages.
    pub fn check_expand_array(&self) -> Result<(), Errno> {
        if self.pages.len() >= MAX_PAGES {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// `EVTCHNOP_expand_array`: `frame` is the array's next page. Returns
    /// the ports it covers, whose saved pending state the caller raises
    /// again (Xen's `add_page_to_event_array`). On error the frame was not
    /// taken.
    ///
    /// # Errors
    ///
    /// `ENOSPC` if the array has its 128 pages.
    pub fn expand_array(&mut self, frame: u64) -> Result<Range<Port>, Errno> {
        self.check_expand_array()?;
        let start = self.nr_ports();
        // Within the capacity reserved by `new`: no allocation.
        self.pages.push(frame);
        Ok(start..self.nr_ports())
    }

    /// Ports the event array reaches (Xen's `num_evtchns`): 1024 per page.
    #[must_use]
    pub fn nr_ports(&self) -> Port {
        // At most 128 pages (invariant): 131,072 ports.
        let pages = u32::try_from(self.pages.len()).unwrap_or(0);
        pages * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
    }

    /// Every frame handle held: the event-array pages, then the control
    /// blocks' frames (one per vCPU that has one; a frame given twice
    /// appears twice).
    pub fn frames(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages
            .iter()
            .copied()
            .chain(self.vcpus.iter().filter_map(|v| Some(v.control?.frame)))
    }

    /// Xen's `evtchn_fifo_destroy`: drops the state and hands back every
    /// frame handle it held ([`Fifo::frames`]), for the kernel to unpin.
    /// Does not allocate.
    #[must_use = "the frames are pinned: unpin them"]
    pub fn into_frames(self) -> Vec<u64> {
        let Fifo { mut pages, vcpus } = self;
        for cb in vcpus.iter().filter_map(|v| v.control) {
            // Within the capacity reserved by `new` (one per vCPU).
            pages.push(cb.frame);
        }
        pages
    }

    /// Xen's `evtchn_fifo_set_pending`: raises `port`, whose FIFO state is
    /// `pf`, on `vcpu`'s queue of the port's priority. See the module
    /// documentation; the caller checks that the port is in use.
    ///
    /// - Beyond the event array: the pending state is saved in `pf` for
    ///   [`Fifo::expand_array`], and nothing else happens.
    /// - No control block for `vcpu` (or no such vCPU): the event is dropped.
    /// - Otherwise PENDING is set; if the port is not MASKED and LINKED was
    ///   clear, the port is linked at the queue's tail (or made its head,
    ///   then its `ready` bit is set).
    pub fn set_pending<M: FifoMem + ?Sized>(
        &mut self,
        mem: &M,
        port: Port,
        vcpu: u32,
        pf: &mut PortFifo,
    ) -> Raised {
        let Some(word) = self.word(port) else {
            pf.save_pending();
            return Raised::NONE;
        };
        let Some(cb) = self.vcpu(vcpu).and_then(|v| v.control) else {
            return Raised::NONE;
        };
        let newly_pending = mem.fetch_or(word.frame, word.offset, PENDING) & PENDING == 0;
        let q = QueueId {
            vcpu,
            // At most 15 already (PortFifo's invariant); the clamp keeps
            // every head within the control block regardless.
            priority: pf.priority.min(EVTCHN_FIFO_PRIORITY_MIN as u8),
        };
        let mut linked = true;
        if mem.load(word.frame, word.offset) & MASKED == 0
            && mem.fetch_or(word.frame, word.offset, LINKED) & LINKED == 0
        {
            // If the port was its last queue's tail, the guest has consumed
            // it (it was not LINKED), so that queue is empty: forget the
            // tail, or a later link there would write into this word, which
            // is about to sit at the end of another queue (or at the head
            // of that one again).
            if let Some(tail) = self.tail_mut(pf.lastq)
                && *tail == port
            {
                *tail = 0;
            }
            pf.lastq = q;
            let tail = self.tail_mut(q).map_or(0, |t| *t);
            linked = tail != 0 && self.word(tail).is_some_and(|tw| set_link(mem, tw, port));
            if !linked {
                let head = cb.head(q.priority);
                mem.store(head.frame, head.offset, port);
            }
            if let Some(t) = self.tail_mut(q) {
                *t = port;
            }
        }
        let bit = 1u32 << q.priority;
        let ready = cb.ready();
        let mark = !linked && mem.fetch_or(ready.frame, ready.offset, bit) & bit == 0;
        Raised {
            mark: mark.then_some(vcpu),
            newly_pending,
        }
    }

    /// Xen's `evtchn_fifo_clear_pending`, done when a port is freed: clears
    /// PENDING only (the guest unlinks the word and ignores it), and the
    /// saved pending state.
    pub fn clear_pending<M: FifoMem + ?Sized>(&self, mem: &M, port: Port, pf: &mut PortFifo) {
        pf.saved_pending = false;
        if let Some(w) = self.word(port) {
            mem.fetch_and(w.frame, w.offset, !PENDING);
        }
    }

    /// Xen's `evtchn_fifo_unmask` (`EVTCHNOP_unmask`): clears MASKED and,
    /// if the port is pending, raises it again on `vcpu` (the port's notify
    /// vCPU), which links it unless it is linked already.
    pub fn unmask<M: FifoMem + ?Sized>(
        &mut self,
        mem: &M,
        port: Port,
        vcpu: u32,
        pf: &mut PortFifo,
    ) -> Raised {
        let Some(w) = self.word(port) else {
            return Raised::NONE;
        };
        mem.fetch_and(w.frame, w.offset, !MASKED);
        if mem.load(w.frame, w.offset) & PENDING == 0 {
            return Raised::NONE;
        }
        self.set_pending(mem, port, vcpu, pf)
    }

    /// Xen's `evtchn_fifo_is_pending`: false beyond the array.
    #[must_use]
    pub fn is_pending<M: FifoMem + ?Sized>(&self, mem: &M, port: Port) -> bool {
        self.word(port)
            .is_some_and(|w| mem.load(w.frame, w.offset) & PENDING != 0)
    }

    /// Xen's `evtchn_fifo_is_masked`: true beyond the array.
    #[must_use]
    pub fn is_masked<M: FifoMem + ?Sized>(&self, mem: &M, port: Port) -> bool {
        self.word(port)
            .is_none_or(|w| mem.load(w.frame, w.offset) & MASKED != 0)
    }

    /// Xen's `evtchn_fifo_is_busy`: the word is LINKED, so the port is still
    /// on a queue and must not be allocated. False beyond the array.
    #[must_use]
    pub fn is_busy<M: FifoMem + ?Sized>(&self, mem: &M, port: Port) -> bool {
        self.word(port)
            .is_some_and(|w| mem.load(w.frame, w.offset) & LINKED != 0)
    }

    // ---- Private helpers. ----

    /// `port`'s event word, if the array reaches it (Xen's
    /// `evtchn_fifo_word_from_port`).
    fn word(&self, port: Port) -> Option<Addr> {
        let page = port / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
        let index = port % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
        let frame = *self.pages.get(usize::try_from(page).ok()?)?;
        Some(Addr {
            frame,
            offset: 4 * usize::try_from(index).ok()?,
        })
    }

    fn vcpu(&self, vcpu: u32) -> Option<&FifoVcpu> {
        self.vcpus.get(usize::try_from(vcpu).ok()?)
    }

    fn vcpu_mut(&mut self, vcpu: u32) -> Option<&mut FifoVcpu> {
        self.vcpus.get_mut(usize::try_from(vcpu).ok()?)
    }

    fn tail_mut(&mut self, q: QueueId) -> Option<&mut Port> {
        self.vcpu_mut(q.vcpu)?
            .tails
            .get_mut(usize::from(q.priority))
    }
}

/// Xen's `try_set_link`: if the tail word `w` (last read as `*w`) is still
/// LINKED, replaces its LINK with `link` and clears BUSY, in one
/// compare-and-exchange.
fn try_set_link<M: FifoMem + ?Sized>(mem: &M, tail: Addr, w: &mut u32, link: Port) -> Link {
    if *w & LINKED == 0 {
        return Link::Unlinked;
    }
    let new = (*w & !(BUSY | LINK_MASK)) | (link & LINK_MASK);
    match mem.compare_exchange(tail.frame, tail.offset, *w, new) {
        Ok(_) => Link::Linked,
        Err(now) => {
            *w = now;
            Link::Raced
        }
    }
}

/// Xen's `evtchn_fifo_set_link`: links the tail word to `link` if it is
/// still LINKED. True if linked; false if the guest had consumed the tail
/// (the queue is empty: the caller writes the head). After a first race,
/// sets BUSY to hold off the guest's unmask and tries [`LINK_TRIES`] more
/// times; if all fail, gives up and answers true, as Xen does (the event
/// is lost; only a guest breaking the protocol gets there). At most 9
/// accesses, or 8 when it answers false.
fn set_link<M: FifoMem + ?Sized>(mem: &M, tail: Addr, link: Port) -> bool {
    let mut w = mem.load(tail.frame, tail.offset);
    match try_set_link(mem, tail, &mut w, link) {
        Link::Linked => return true,
        Link::Unlinked => return false,
        Link::Raced => {}
    }
    mem.fetch_or(tail.frame, tail.offset, BUSY);
    w = mem.load(tail.frame, tail.offset);
    for _ in 0..LINK_TRIES {
        match try_set_link(mem, tail, &mut w, link) {
            Link::Linked => return true,
            Link::Unlinked => {
                mem.fetch_and(tail.frame, tail.offset, !BUSY);
                return false;
            }
            Link::Raced => {}
        }
    }
    mem.fetch_and(tail.frame, tail.offset, !BUSY);
    true
}

/// An in-memory [`FifoMem`] of frames `0..n`, one 4 KiB page of atomics
/// each, for tests of this crate and of its users. Other handles read 0 and
/// ignore writes, as do offsets that are unaligned or beyond the page.
#[derive(Debug)]
pub struct PageMem {
    pages: Vec<Box<[AtomicU32]>>,
}

impl PageMem {
    /// `frames` zeroed pages, handles `0..frames`.
    #[must_use]
    pub fn new(frames: usize) -> PageMem {
        let words = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize;
        PageMem {
            pages: (0..frames)
                .map(|_| (0..words).map(|_| AtomicU32::new(0)).collect())
                .collect(),
        }
    }

    fn cell(&self, frame: u64, offset: usize) -> Option<&AtomicU32> {
        if !offset.is_multiple_of(4) {
            return None;
        }
        self.pages
            .get(usize::try_from(frame).ok()?)?
            .get(offset / 4)
    }
}

impl FifoMem for PageMem {
    fn load(&self, frame: u64, offset: usize) -> u32 {
        self.cell(frame, offset)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    fn store(&self, frame: u64, offset: usize, val: u32) {
        if let Some(c) = self.cell(frame, offset) {
            c.store(val, Ordering::SeqCst);
        }
    }

    fn fetch_or(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.cell(frame, offset)
            .map_or(0, |c| c.fetch_or(val, Ordering::SeqCst))
    }

    fn fetch_and(&self, frame: u64, offset: usize, val: u32) -> u32 {
        self.cell(frame, offset)
            .map_or(0, |c| c.fetch_and(val, Ordering::SeqCst))
    }

    fn compare_exchange(
        &self,
        frame: u64,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<u32, u32> {
        self.cell(frame, offset).map_or(Err(0), |c| {
            c.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
        })
    }
}
